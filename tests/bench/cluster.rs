//! Durable messages across a cluster: `plugins` counters (one durable
//! `wasi:keyvalue` write per message) on three real `wasm-sup` nodes that
//! share one PostgreSQL, each message sent over HTTP to the node that owns
//! its plugin (as a load balancer that knows the owners would), 128 in
//! flight. Comparator: raw PostgreSQL, one durable single-row transaction
//! per write from 1 and from 16 connections, on the same private server in
//! the same run.
//!
//! Placement is the rendezvous placement the nodes settle on; the figure
//! waits for it (up to [`SETTLE`]) and reports the plugins per node. The
//! same load is then sent over HTTP to one host with `--state postgres://`,
//! which tells the cluster's cost apart from the cost of HTTP.

use crate::harness::{Row, us};
use crate::nodes::{LEASE, Node, ready, spawn, start};
use crate::throughput::{Load, closed_loop, durable_value, raw_postgres};
use anyhow::{Context, Result, bail};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Messages in flight at once.
const IN_FLIGHT: usize = 128;
/// How long to wait for placement to settle.
const SETTLE: Duration = Duration::from_secs(150);

/// Each plugin's owner, read from node `via`'s cluster-wide list (`None`
/// until every plugin has one).
async fn owners(http: &reqwest::Client, via: &Node) -> Result<Option<BTreeMap<String, String>>> {
    let v: serde_json::Value = http
        .get(format!("http://{}/v1/plugins", via.addr))
        .send()
        .await?
        .json()
        .await?;
    let mut out = BTreeMap::new();
    for p in v["plugins"].as_array().context("a plugin list")? {
        let (Some(name), Some(owner)) = (p["name"].as_str(), p["owner"].as_str()) else {
            return Ok(None);
        };
        if p["status"] != "running" {
            return Ok(None);
        }
        out.insert(name.to_string(), owner.to_string());
    }
    Ok(Some(out))
}

/// The node rendezvous hashing gives `unit` (the highest SHA-256 of `unit
/// NUL node`), as the nodes compute it.
fn rendezvous(unit: &str, nodes: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let key = |n: &&&str| <[u8; 32]>::from(Sha256::digest(format!("{unit}\0{n}").as_bytes()));
    nodes
        .iter()
        .max_by_key(key)
        .map(|n| n.to_string())
        .unwrap_or_default()
}

pub async fn run(bin: &Path, counter: &Path, total: usize, plugins: usize) -> Result<Vec<Row>> {
    let pg = wasm_sup_tests::postgres::Postgres::start();
    let url = pg.database().await;
    let dir = tempfile::tempdir()?;
    let names: Vec<String> = (0..plugins).map(|i| format!("c{i:03}")).collect();
    for n in &names {
        std::fs::copy(counter, dir.path().join(format!("{n}.wasm")))?;
    }
    std::fs::write(
        dir.path().join("wasm-sup.toml"),
        format!("[host]\nlease = \"{}ms\"\n", LEASE.as_millis()),
    )?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(IN_FLIGHT)
        .build()?;
    // The compile cache is filled first (the nodes share the folder's), so
    // the nodes load in about a second and start on the rendezvous
    // placement rather than rebalancing to it one unit per lease.
    let warm = start(bin, dir.path(), &["--state", "memory"], "warm")?;
    ready(&http, &warm).await?;
    drop(warm);
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(spawn(bin, dir.path(), &url, &format!("n{i}"))?);
    }
    for n in &nodes {
        ready(&http, n).await?;
    }
    let node_names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    let expected: BTreeMap<String, String> = names
        .iter()
        .map(|p| (p.clone(), rendezvous(p, &node_names)))
        .collect();
    let waited = Instant::now();
    let placed = loop {
        let now = owners(&http, &nodes[0]).await?;
        match now {
            Some(o) if o == expected => break o,
            Some(o) if waited.elapsed() > SETTLE => {
                eprintln!(
                    "   placement did not reach the rendezvous one within {SETTLE:?}; measuring as it is"
                );
                break o;
            }
            _ if waited.elapsed() > SETTLE * 2 => {
                bail!("plugins without an owner after {:?}", SETTLE * 2)
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for o in placed.values() {
        *per_node.entry(o.clone()).or_default() += 1;
    }
    eprintln!(
        "   placement {per_node:?} after {:.1}s",
        waited.elapsed().as_secs_f64()
    );
    let addr: BTreeMap<String, String> = nodes
        .iter()
        .map(|n| (n.name.clone(), n.addr.clone()))
        .collect();
    let targets: Vec<(String, String)> = names
        .iter()
        .map(|p| (p.clone(), addr[&placed[p]].clone()))
        .collect();
    load(&http, &targets, total / 10).await?;
    let l = load(&http, &targets, total).await?;
    drop(nodes);
    // The same load over HTTP on one host with its state in PostgreSQL:
    // what the cluster costs beside what HTTP and one process cost.
    let single_url = pg.database().await;
    let single = start(bin, dir.path(), &["--state", &single_url], "single")?;
    ready(&http, &single).await?;
    let targets: Vec<(String, String)> = names
        .iter()
        .map(|p| (p.clone(), single.addr.clone()))
        .collect();
    load(&http, &targets, total / 10).await?;
    let one_host = load(&http, &targets, total).await?;
    drop(single);
    let raw1 = raw_postgres(&pg, total.min(1_000), 1).await?;
    let raw16 = raw_postgres(&pg, total.min(10_000), 16).await?;
    let ratio = l.per_second / raw16;
    Ok(vec![
        Row::new(
            format!("messages/s with one durable write each, {plugins} plugins on 3 cluster nodes (one PostgreSQL)"),
            durable_value(&l),
        )
        .comparator(
            format!(
                "raw PostgreSQL, one durable single-row transaction per write: {raw1:.0}/s from 1 connection, {raw16:.0}/s from 16"
            ),
            format!(
                "{ratio:.1}× raw from 16 connections; one host over HTTP: {}",
                durable_value(&one_host)
            ),
        )
        .target(
            "≥ 2× raw from 16 connections, p99 ≤ 20 ms".to_string(),
            ratio >= 2.0 && us(l.latency.p99) <= 20_000.0,
        )
        .json(json!({
            "messages": total,
            "plugins": plugins,
            "in_flight": IN_FLIGHT,
            "plugins_per_node": per_node,
            "per_second": l.per_second,
            "latency_us": {"p50": us(l.latency.p50), "p99": us(l.latency.p99)},
            "raw_postgres_per_second": {"connections_1": raw1, "connections_16": raw16},
            "one_host_over_http": {
                "per_second": one_host.per_second,
                "latency_us": {"p50": us(one_host.latency.p50), "p99": us(one_host.latency.p99)},
            },
        })),
    ])
}

/// `total` messages spread over `targets` (plugin, owner's address),
/// [`IN_FLIGHT`] at a time, each answered 200.
async fn load(http: &reqwest::Client, targets: &[(String, String)], total: usize) -> Result<Load> {
    let targets = Arc::new(targets.to_vec());
    let http = http.clone();
    closed_loop(total, IN_FLIGHT, move |i| {
        let (targets, http) = (targets.clone(), http.clone());
        async move {
            let (plugin, addr) = &targets[i % targets.len()];
            let r = http
                .post(format!("http://{addr}/v1/plugins/{plugin}/messages"))
                .body("hello")
                .send()
                .await?;
            let status = r.status();
            let body = r.bytes().await?;
            if status != 200 {
                bail!("{plugin}: {status} {}", String::from_utf8_lossy(&body));
            }
            Ok(())
        }
    })
    .await
}
