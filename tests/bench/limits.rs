//! Limit overhead: CPU-bound guests on engines with fuel and epoch
//! instrumentation on and off: a sieve of Eratosthenes (`primes N` of the
//! probe: tight loops of loads and stores), std's sort of pseudo-random
//! numbers (`sort N`: branches, calls and swaps, as library code), and the
//! worst case, an empty loop (`burn N`), where the checks are most of the work.

use crate::harness::{Raw, Row, Spread, show};
use anyhow::{Result, anyhow};
use serde_json::json;
use std::path::Path;
use wasm_sup::engine::{Metering, engine_with};

pub async fn run(probe: &Path, iterations: u64, rounds: usize) -> Result<Vec<Row>> {
    let mut rows = overhead(probe, &format!("primes {iterations}"), rounds, true).await?;
    rows.extend(overhead(probe, &format!("sort {}", iterations / 10), rounds, true).await?);
    rows.extend(overhead(probe, &format!("burn {iterations}"), rounds, false).await?);
    Ok(rows)
}

/// No fuel limit: the engines with fuel count it, none runs out.
const UNMETERED: &str = "[defaults]\nfuel = 0\ntimeout = \"60s\"\nmemory = \"256MiB\"\n";

/// One workload on the four engines; `judged`: whether the target applies.
async fn overhead(probe: &Path, message: &str, rounds: usize, judged: bool) -> Result<Vec<Row>> {
    // The four engines take turns, round by round, so that drift in the
    // machine's speed falls on all of them alike.
    let mut instances = Vec::new();
    for (fuel, epoch) in [(false, false), (true, false), (false, true), (true, true)] {
        let engine = engine_with(false, Metering { fuel, epoch }, 0)?;
        let raw = Raw::with_engine(probe, "probe", &engine, UNMETERED)?;
        let instance = raw.start().await?;
        instances.push((raw, instance));
    }
    let mut samples = vec![Vec::with_capacity(rounds); instances.len()];
    for _ in 0..rounds {
        for (i, (_, instance)) in instances.iter_mut().enumerate() {
            let t = std::time::Instant::now();
            instance
                .handle(message.as_bytes())
                .await
                .map_err(|e| anyhow!("{e:?}"))?
                .map_err(|e| anyhow!("{e}"))?;
            samples[i].push(t.elapsed());
        }
    }
    let times: Vec<_> = samples.into_iter().map(|s| Spread::of(s).p50).collect();
    let base = times[0].as_secs_f64();
    let over = |i: usize| (times[i].as_secs_f64() / base - 1.0) * 100.0;
    let row = Row::new(
        format!("limit overhead, CPU-bound guest (`{message}`), p50 of {rounds}"),
        format!(
            "neither {}; fuel {} (+{:.0}%); epoch {} (+{:.0}%); both {} (+{:.0}%)",
            show(times[0]),
            show(times[1]),
            over(1),
            show(times[2]),
            over(2),
            show(times[3]),
            over(3)
        ),
    )
    .comparator(
        "the same guest with neither".to_string(),
        format!("epoch +{:.0}%", over(2)),
    )
    .json(json!({
        "message": message,
        "neither_us": times[0].as_secs_f64() * 1e6,
        "fuel_us": times[1].as_secs_f64() * 1e6,
        "epoch_us": times[2].as_secs_f64() * 1e6,
        "both_us": times[3].as_secs_f64() * 1e6,
        "fuel_overhead_percent": over(1),
        "epoch_overhead_percent": over(2),
        "both_overhead_percent": over(3),
    }));
    Ok(vec![if judged {
        row.target("epoch overhead ≤ 15%; fuel reported", over(2) <= 15.0)
    } else {
        Row {
            target: "reported: the worst case, an empty loop".into(),
            ..row
        }
    }])
}
