//! Crash → ready: a trap in `handle`, then a message that reads state,
//! answered by the new instance after its `init`. Comparators: the raw
//! instance layer (new Store, instantiate, `init`, the same read) and a
//! process restart (spawn a native worker that loads its state from a file);
//! and Erlang/OTP's. Ours, the raw layer's and OTP's take turns, round by
//! round; the median turn counts.

use crate::harness::{Bench, CRASH_FRIENDLY, Raw, Row, Spread, TURNS, show, time_each, us};
use crate::otp::{self, Otp};
use anyhow::{Result, bail};
use serde_json::json;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
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
    let mut bench = Bench::start(
        &[("p".into(), probe.to_path_buf())],
        CRASH_FRIENDLY,
        "memory",
    )
    .await?;
    bench.call("p", b"set count 41").await?;
    let raw = Raw::new(probe, "p")?;
    let per_turn = rounds.div_ceil(TURNS).max(1);
    let beam_arg = per_turn.to_string();
    let (mut ours, mut raws, mut beams) = (Vec::new(), Vec::new(), Vec::new());
    for turn in 0..TURNS {
        // Sent from a task of the host's runtime, as the admin API's
        // requests and other plugins' messages are: a sender on a thread
        // outside the runtime would add its own wake-ups (about 20 µs each
        // here) to every round.
        let (b, spread) = tokio::spawn(async move {
            if turn == 0 {
                // Warm up: the first restarts fault in code and allocator pages.
                for _ in 0..rounds.min(20) {
                    crash_and_read(&bench).await?;
                }
            }
            let spread = Spread::of(time_each(per_turn, || crash_and_read(&bench)).await?);
            Ok::<_, anyhow::Error>((bench, spread))
        })
        .await??;
        bench = b;
        ours.push(spread);
        raws.push(Spread::of(
            time_each(per_turn, || async {
                let mut i = raw.start().await?;
                // Ok or Err("missing"): either way a read through the backend.
                let _ = i
                    .handle(b"get count")
                    .await
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                Ok(())
            })
            .await?,
        ));
        // Erlang/OTP: a gen_server under one_for_one, its state in ETS.
        if let Some(v) = otp::turn(otp, &["restart", &beam_arg])? {
            let at = |k: &str| Duration::from_secs_f64(v[k].as_f64().unwrap_or(0.0) / 1e6);
            beams.push(Spread {
                p50: at("p50_us"),
                p99: at("p99_us"),
            });
        }
    }
    bench.stop().await;
    let supervised = Spread::median_of(&ours);
    let raw_spread = Spread::median_of(&raws);
    let beam = (!beams.is_empty()).then(|| Spread::median_of(&beams));

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
    let mut row = Row::new(
        "crash → ready (backoff immediate), p50 / p99",
        format!("{} / {}", show(supervised.p50), show(supervised.p99)),
    );
    if let Some(b) = beam {
        row = row.otp(
            format!("{} / {}", show(b.p50), show(b.p99)),
            format!("{:.2}× OTP's p50", us(supervised.p50) / us(b.p50)),
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
            "p50 ≤ OTP's in the same run (50 µs without it), p99 ≤ 250 µs; ≤ 1.5× raw; ≥ 20× faster than a process",
            us(supervised.p50) <= beam.map_or(50.0, |b| us(b.p50))
                && us(supervised.p99) <= 250.0
                && vs_raw <= 1.5
                && vs_process >= 20.0,
        )
        .json(json!({
            "rounds": rounds,
            "supervised_us": {"p50": us(supervised.p50), "p99": us(supervised.p99)},
            "raw_us": {"p50": us(raw_spread.p50), "p99": us(raw_spread.p99)},
            "process_us": {"p50": us(process.p50), "p99": us(process.p99)},
            "ratio_vs_raw": vs_raw,
            "times_faster_than_process": vs_process,
            "turns": TURNS,
            "turns_us": ours.iter().map(|t| [us(t.p50), us(t.p99)]).collect::<Vec<_>>(),
            "otp_us": beam.map(|b| json!({"p50": us(b.p50), "p99": us(b.p99)})),
            "otp_turns_us": beams.iter().map(|t| [us(t.p50), us(t.p99)]).collect::<Vec<_>>(),
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
