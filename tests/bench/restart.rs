//! Crash → ready: a trap in `handle`, then a message that reads state,
//! answered by the new instance after its `init`. Comparators: the raw
//! instance layer (new Store, instantiate, `init`, the same read) and a
//! process restart (spawn a native worker that loads its state from a file).

use crate::harness::{Bench, CRASH_FRIENDLY, Raw, Row, Spread, show, time_each, us};
use crate::otp::{self, Otp};
use anyhow::{Result, bail};
use serde_json::json;
use std::path::Path;
use std::process::{Command, Stdio};
use wasm_sup::mailbox::Outcome;

/// The process comparator's worker: loads the count from `state` and prints
/// it (what a supervised process does before it can serve).
pub fn worker(state: &Path) -> Result<()> {
    let text = std::fs::read_to_string(state)?;
    let count: u64 = text.trim().parse()?;
    println!("{count}");
    Ok(())
}

pub async fn run(probe: &Path, rounds: usize, otp: Option<&Otp>) -> Result<Vec<Row>> {
    let bench = Bench::start(
        &[("p".into(), probe.to_path_buf())],
        CRASH_FRIENDLY,
        "memory",
    )
    .await?;
    bench.call("p", b"set count 41").await?;
    // Sent from a task of the host's runtime, as the admin API's requests and
    // other plugins' messages are: a sender on a thread outside the runtime
    // would add its own wake-ups (about 20 µs each here) to every round.
    let (bench, supervised) = tokio::spawn(async move {
        // Warm up: the first restarts fault in code and allocator pages.
        for _ in 0..rounds.min(20) {
            crash_and_read(&bench).await?;
        }
        let spread = Spread::of(time_each(rounds, || crash_and_read(&bench)).await?);
        Ok::<_, anyhow::Error>((bench, spread))
    })
    .await??;
    bench.stop().await;

    let raw = Raw::new(probe, "p")?;
    let raw_spread = Spread::of(
        time_each(rounds, || async {
            let mut i = raw.start().await?;
            // Ok or Err("missing"): either way a read through the backend.
            let _ = i
                .handle(b"get count")
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            Ok(())
        })
        .await?,
    );

    let dir = tempfile::tempdir()?;
    let state = dir.path().join("count");
    std::fs::write(&state, "41\n")?;
    let exe = std::env::current_exe()?;
    let spawns = (rounds / 4).max(10);
    let process = Spread::of(
        time_each(spawns, || async {
            let out = Command::new(&exe)
                .arg("--worker")
                .arg(&state)
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()?;
            if !out.status.success() || out.stdout != b"41\n" {
                bail!("worker failed: {out:?}");
            }
            Ok(())
        })
        .await?,
    );

    let vs_raw = supervised.p50.as_secs_f64() / raw_spread.p50.as_secs_f64();
    let vs_process = process.p50.as_secs_f64() / supervised.p50.as_secs_f64();
    // Erlang/OTP: a gen_server under one_for_one, its state in ETS.
    let beam = otp::figure(otp, &["restart", &rounds.to_string()])?;
    let beam_us = |k: &str| beam.as_ref().and_then(|v| v[k].as_f64());
    let mut row = Row::new(
        "crash → ready (backoff immediate), p50 / p99",
        format!("{} / {}", show(supervised.p50), show(supervised.p99)),
    );
    if let (Some(p50), Some(p99)) = (beam_us("p50_us"), beam_us("p99_us")) {
        let micros = |x: f64| show(std::time::Duration::from_secs_f64(x / 1e6));
        row = row.otp(
            format!("{} / {}", micros(p50), micros(p99)),
            format!("{:.2}× OTP's p50", us(supervised.p50) / p50),
        );
    }
    Ok(vec![
        row.comparator(
            format!(
                "raw instance layer {} / {}; process restart {} / {}",
                show(raw_spread.p50),
                show(raw_spread.p99),
                show(process.p50),
                show(process.p99)
            ),
            format!("{vs_raw:.2}× raw; {vs_process:.0}× faster than a process"),
        )
        .target(
            "p50 ≤ 50 µs, p99 ≤ 500 µs; ≤ 2× raw; ≥ 20× faster than a process",
            us(supervised.p50) <= 50.0
                && us(supervised.p99) <= 500.0
                && vs_raw <= 2.0
                && vs_process >= 20.0,
        )
        .json(json!({
            "rounds": rounds,
            "supervised_us": {"p50": us(supervised.p50), "p99": us(supervised.p99)},
            "raw_us": {"p50": us(raw_spread.p50), "p99": us(raw_spread.p99)},
            "process_us": {"p50": us(process.p50), "p99": us(process.p99)},
            "ratio_vs_raw": vs_raw,
            "times_faster_than_process": vs_process,
            "otp_us": {"p50": beam_us("p50_us"), "p99": beam_us("p99_us")},
        })),
    ])
}

/// One crash of the plugin, then a read answered by its next instance.
async fn crash_and_read(bench: &Bench) -> Result<()> {
    match bench.call("p", b"unreachable").await? {
        Outcome::DeadLettered { .. } => {}
        other => bail!("crash: {other:?}"),
    }
    match bench.call("p", b"get count").await? {
        Outcome::Reply(v) if v == b"41" => Ok(()),
        other => bail!("read after restart: {other:?}"),
    }
}
