//! Failover time in cluster mode: three real `wasm-sup` nodes on the test
//! setup's PostgreSQL with a 2 s lease; kill -9 the node that owns the
//! plugin, and time until a surviving node first answers 200 for it. The
//! killed node is started again (same name) before the next run. The
//! target (DESIGN.md, "Cluster mode"): at most lease + 2 s.

use crate::harness::{Row, show};
use crate::nodes::{LEASE, owner, ready, spawn};
use anyhow::{Context, Result, bail};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub async fn run(bin: &Path, probe: &Path, runs: usize) -> Result<Vec<Row>> {
    let dir = tempfile::tempdir()?;
    std::fs::copy(probe, dir.path().join("kv.wasm"))?;
    std::fs::write(
        dir.path().join("wasm-sup.toml"),
        format!("[host]\nlease = \"{}ms\"\n", LEASE.as_millis()),
    )?;
    let pg = wasm_sup_tests::postgres::Postgres::shared();
    let url = pg.database().await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let dir_path: PathBuf = dir.path().to_path_buf();
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(spawn(bin, &dir_path, &url, &format!("n{i}"))?);
    }
    for n in &nodes {
        ready(&http, n).await?;
    }
    let mut samples = Vec::new();
    for run in 0..runs {
        // Wait for an owner, and for every node to know it.
        let deadline = Instant::now() + Duration::from_secs(30);
        let victim = loop {
            if let Some(o) = owner(&http, &nodes[0]).await? {
                break o;
            }
            if Instant::now() > deadline {
                bail!("run {run}: kv has no owner");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let at = nodes
            .iter()
            .position(|n| n.name == victim)
            .context("owner is one of the nodes")?;
        let survivor = nodes[(at + 1) % nodes.len()].addr.clone();
        let killed = Instant::now();
        let mut dead = nodes.remove(at);
        dead.child.kill()?;
        dead.child.wait()?;
        let took = loop {
            let r = http
                .post(format!("http://{survivor}/v1/plugins/kv/messages"))
                .body("incr n")
                .send()
                .await;
            if r.is_ok_and(|r| r.status() == 200) {
                break killed.elapsed();
            }
            if killed.elapsed() > Duration::from_secs(60) {
                bail!("run {run}: no answer within 60 s of the kill");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        eprintln!("   run {run}: {} took over in {}", survivor, show(took));
        samples.push(took);
        let name = dead.name.clone();
        drop(dead);
        let again = spawn(bin, &dir_path, &url, &name)?;
        ready(&http, &again).await?;
        nodes.insert(at, again);
    }
    samples.sort();
    let p50 = samples[samples.len() / 2];
    let max = *samples.last().context("runs")?;
    let target = LEASE + Duration::from_secs(2);
    Ok(vec![
        Row::new(
            format!("failover: kill -9 of the owner → first 200 through another node, {runs} runs (lease 2 s)"),
            format!("p50 {}, max {}", show(p50), show(max)),
        )
        .comparator("wasmCloud: about 2 minutes to reschedule after a host dies", "-")
        .target(format!("max ≤ lease + 2 s = {}", show(target)), max <= target)
        .json(json!({
            "runs": runs,
            "lease_ms": LEASE.as_millis() as u64,
            "p50_ms": p50.as_secs_f64() * 1e3,
            "max_ms": max.as_secs_f64() * 1e3,
            "samples_ms": samples.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>(),
        })),
    ])
}
