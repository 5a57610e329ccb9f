//! Limit overhead: a CPU-bound guest (`burn N` of the probe) on engines with
//! fuel and epoch instrumentation on and off.

use crate::harness::{Raw, Row, Spread, show};
use anyhow::{Result, anyhow};
use serde_json::json;
use std::path::Path;
use wasm_sup::engine::{Metering, engine_with};

pub async fn run(probe: &Path, iterations: u64, rounds: usize) -> Result<Vec<Row>> {
    let message = format!("burn {iterations}");
    let mut times = Vec::new();
    for (fuel, epoch) in [(false, false), (true, false), (false, true), (true, true)] {
        let engine = engine_with(false, Metering { fuel, epoch }, 0)?;
        let raw = Raw::with_engine(probe, "probe", &engine)?;
        // Fuel is per call: the default (1e9) would run out.
        let mut instance = raw.start().await?;
        let mut samples = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let t = std::time::Instant::now();
            instance
                .handle(message.as_bytes())
                .await
                .map_err(|e| anyhow!("{e:?}"))?
                .map_err(|e| anyhow!("{e}"))?;
            samples.push(t.elapsed());
        }
        let spread = Spread::of(samples);
        times.push(spread.p50);
    }
    let base = times[0].as_secs_f64();
    let over = |i: usize| (times[i].as_secs_f64() / base - 1.0) * 100.0;
    Ok(vec![
        Row::new(
            format!("limit overhead, CPU-bound guest (`burn {iterations}`), p50 of {rounds}"),
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
        .target("epoch overhead ≤ 15%; fuel reported", over(2) <= 15.0)
        .json(json!({
            "iterations": iterations,
            "neither_us": times[0].as_secs_f64() * 1e6,
            "fuel_us": times[1].as_secs_f64() * 1e6,
            "epoch_us": times[2].as_secs_f64() * 1e6,
            "both_us": times[3].as_secs_f64() * 1e6,
            "fuel_overhead_percent": over(1),
            "epoch_overhead_percent": over(2),
            "both_overhead_percent": over(3),
        })),
    ])
}
