//! Crash-storm isolation: the throughput of healthy plugins while 1% of the
//! plugins crash in a loop, against the same load with no crashes.

use crate::harness::{Bench, CRASH_FRIENDLY, Row};
use crate::throughput::{IN_FLIGHT, load};
use anyhow::Result;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Twice: with the default exponential backoff (what a plugin gets unless its
/// configuration says otherwise), its intensity never running out, which is
/// the figure judged; and with the crashing plugins restarted at once, as
/// fast as they crash (the worst case, reported: each crash costs a few
/// hundred microseconds of a core, so ten plugins crashing back to back take
/// a share of the machine that no isolation gives back).
pub async fn run(probe: &Path, plugins: usize, total: usize) -> Result<Vec<Row>> {
    let mut rows = storm(probe, plugins, total, WORST_CASE, CRASH_FRIENDLY).await?;
    let crashing = (plugins / 100).max(1);
    let mut config = String::from("[host]\nmax-restarts = 4_000_000_000\nwindow = \"1s\"\n");
    for i in 0..crashing {
        config += &format!(
            "[plugins.p{i:05}.restart]\nmax-restarts = 4_000_000_000\nwindow = \"1s\"\nmax-attempts = 1\n"
        );
    }
    rows.extend(
        storm(
            probe,
            plugins,
            total,
            "default exponential backoff",
            &config,
        )
        .await?,
    );
    Ok(rows)
}

async fn storm(
    probe: &Path,
    plugins: usize,
    total: usize,
    policy: &str,
    config: &str,
) -> Result<Vec<Row>> {
    let names: Vec<String> = (0..plugins).map(|i| format!("p{i:05}")).collect();
    let files: Vec<_> = names
        .iter()
        .map(|n| (n.clone(), probe.to_path_buf()))
        .collect();
    let bench = Bench::start(&files, config, "memory").await?;
    let crashing = (plugins / 100).max(1);
    let (storm, healthy) = names.split_at(crashing);
    let message = b"echo 0123456789abcdef0123456789abcdef0123456789abcdef0123456789";
    let sup = &bench.host.supervisor;
    load(sup, healthy, message, total / 10, IN_FLIGHT).await?; // warm-up
    // Calm and stormy phases take turns, in the order calm-storm,
    // storm-calm, ..., so that drift in the machine's speed falls on both.
    let (mut calm, mut stormy) = (Phase::default(), Phase::default());
    let mut crashes = 0;
    for phase in 0..PHASES * 2 {
        if (phase % 2 == 0) == (phase / 2 % 2 == 0) {
            calm.add(
                load(sup, healthy, message, total, IN_FLIGHT)
                    .await?
                    .per_second,
                total,
            );
            continue;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = storm
            .iter()
            .map(|name| {
                let (stop, count, sup, name) =
                    (stop.clone(), count.clone(), sup.clone(), name.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok((rx, _)) = sup.send(&name, b"crash".to_vec(), None) {
                            let _ = rx.await;
                            count.fetch_add(1, Ordering::Relaxed);
                        } else {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        let measured = load(sup, healthy, message, total, IN_FLIGHT).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        stormy.add(measured?.per_second, total);
        crashes += count.load(Ordering::Relaxed);
    }
    bench.stop().await;
    let kept = stormy.per_second() / calm.per_second();
    let row = Row::new(
        format!(
            "crash storm: {crashing} of {plugins} plugins crash-looping ({policy}), echo to the other {}",
            healthy.len()
        ),
        format!(
            "{:.0}/s ({crashes} crashes meanwhile)",
            stormy.per_second()
        ),
    )
    .comparator(
        format!("same load, no crashes: {:.0}/s", calm.per_second()),
        format!("{:.0}% kept", kept * 100.0),
    )
    .json(json!({
        "policy": policy,
        "plugins": plugins,
        "crashing": crashing,
        "messages_per_phase": total,
        "phases": PHASES,
        "calm_per_second": calm.per_second(),
        "storm_per_second": stormy.per_second(),
        "crashes": crashes,
        "kept": kept,
    }));
    Ok(vec![if policy == WORST_CASE {
        Row {
            target: format!("reported: the worst case; {:.0}% kept", kept * 100.0),
            ..row
        }
    } else {
        row.target("healthy throughput ≥ 95% of the no-crash run", kept >= 0.95)
    }])
}

/// Calm and stormy phases, each (even, for the alternating order).
const PHASES: usize = 4;

/// The policy under which crashing plugins restart as fast as they crash.
const WORST_CASE: &str = "immediate backoff";

/// Messages and seconds over a run's phases.
#[derive(Default)]
struct Phase {
    messages: f64,
    seconds: f64,
}

impl Phase {
    fn add(&mut self, per_second: f64, messages: usize) {
        self.messages += messages as f64;
        self.seconds += messages as f64 / per_second;
    }

    fn per_second(&self) -> f64 {
        self.messages / self.seconds
    }
}
