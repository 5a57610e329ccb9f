//! Crash-storm isolation: the throughput of healthy plugins while 1% of the
//! plugins crash in a loop, against the same load with no crashes.

use crate::harness::{Bench, CRASH_FRIENDLY, Row};
use crate::throughput::{IN_FLIGHT, load};
use anyhow::Result;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Twice: with the crashing plugins restarted at once (the worst case), and
/// with the default exponential backoff (what a plugin gets unless its
/// configuration says otherwise), their intensity never running out.
pub async fn run(probe: &Path, plugins: usize, total: usize) -> Result<Vec<Row>> {
    let mut rows = storm(probe, plugins, total, "immediate backoff", CRASH_FRIENDLY).await?;
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
    let calm = load(sup, healthy, message, total, IN_FLIGHT).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let crashes = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for name in storm {
        let (stop, crashes, sup, name) = (stop.clone(), crashes.clone(), sup.clone(), name.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok((rx, _)) = sup.send(&name, b"crash".to_vec()) {
                    let _ = rx.await;
                    crashes.fetch_add(1, Ordering::Relaxed);
                } else {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    let stormy = load(sup, healthy, message, total, IN_FLIGHT).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let stormy = stormy?;
    bench.stop().await;
    let kept = stormy.per_second / calm.per_second;
    let crashes = crashes.load(Ordering::Relaxed);
    Ok(vec![
        Row::new(
            format!(
                "crash storm: {crashing} of {plugins} plugins crash-looping ({policy}), echo to the other {}",
                healthy.len()
            ),
            format!("{:.0}/s ({crashes} crashes meanwhile)", stormy.per_second),
        )
        .comparator(
            format!("same load, no crashes: {:.0}/s", calm.per_second),
            format!("{:.0}% kept", kept * 100.0),
        )
        .target("healthy throughput ≥ 95% of the no-crash run", kept >= 0.95)
        .json(json!({
            "policy": policy,
            "plugins": plugins,
            "crashing": crashing,
            "messages": total,
            "calm_per_second": calm.per_second,
            "storm_per_second": stormy.per_second,
            "crashes": crashes,
            "kept": kept,
        })),
    ])
}
