//! Messages per second through `handle`: an echo with no state writes
//! (comparator: the raw instance layer calling `handle` in a loop), and a
//! count with one durable `wasi:keyvalue` write per message, for one plugin
//! and for 100 (comparator: raw redb, one durable transaction per write),
//! and the same count on PostgreSQL (comparator: raw PostgreSQL, one durable
//! single-row transaction per write from 1 and from 16 connections, on the
//! same private server in the same run).

use crate::harness::{Bench, Raw, Row, Spread, TURNS, median, show, us};
use crate::otp::{self, Otp};
use anyhow::{Result, anyhow, bail};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use wasm_sup::mailbox::Outcome;
use wasm_sup::supervisor::SupervisorHandle;

/// Messages in flight at once: senders that each wait for their reply.
pub const IN_FLIGHT: usize = 256;

/// Messages in flight at once for the durable figures. In a closed loop the
/// reply latency is about the senders in flight divided by the throughput, so
/// this many keeps every group commit full without queueing replies for
/// longer than the p99 target.
const DURABLE_IN_FLIGHT: usize = 128;

/// The result of one load run.
pub struct Load {
    pub per_second: f64,
    pub latency: Spread,
}

impl Load {
    /// The median turn's rate, p50 and p99.
    pub fn median_of(turns: &[Load]) -> Load {
        Load {
            per_second: median(turns.iter().map(|l| l.per_second).collect()),
            latency: Spread::median_of(&turns.iter().map(|l| l.latency).collect::<Vec<_>>()),
        }
    }
}

/// The median of the OTP comparator's durable turns (rate, p50, p99), as
/// it printed them; `None` without a comparator.
fn median_beam(turns: &[serde_json::Value]) -> Option<serde_json::Value> {
    if turns.is_empty() {
        return None;
    }
    let of = |k: &str| median(turns.iter().map(|t| t[k].as_f64().unwrap_or(0.0)).collect());
    Some(json!({
        "per_second": of("per_second"),
        "p50_us": of("p50_us"),
        "p99_us": of("p99_us"),
        "turns": turns,
    }))
}

/// `total` requests, `in_flight` at a time (each sender waits for its
/// answer before the next), the `i`th made by `send(i)`, each of which must
/// succeed; the rate and the latency spread.
pub async fn closed_loop<F, Fut>(total: usize, in_flight: usize, send: F) -> Result<Load>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let (next, send) = (next.clone(), send.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let t = Instant::now();
                send(i).await?;
                latencies.push(t.elapsed());
            }
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = started.elapsed();
    Ok(Load {
        per_second: total as f64 / elapsed.as_secs_f64(),
        latency: Spread::of(latencies),
    })
}

/// Sends `total` copies of `message` spread over `targets`, `in_flight` at a
/// time, each a reply that must be Ok.
pub async fn load(
    supervisor: &SupervisorHandle,
    targets: &[String],
    message: &[u8],
    total: usize,
    in_flight: usize,
) -> Result<Load> {
    let targets = Arc::new(targets.to_vec());
    let message = Arc::new(message.to_vec());
    let sup = supervisor.clone();
    closed_loop(total, in_flight, move |i| {
        let (targets, message, sup) = (targets.clone(), message.clone(), sup.clone());
        async move {
            let target = &targets[i % targets.len()];
            let (rx, _) = sup
                .send(target, message.to_vec(), None)
                .map_err(|e| anyhow!("send to {target}: {e:?}"))?;
            match rx.await? {
                Outcome::Reply(_) => Ok(()),
                other => bail!("{target}: {other:?}"),
            }
        }
    })
    .await
}

pub async fn echo(minimal: &Path, total: usize, otp: Option<&Otp>) -> Result<Vec<Row>> {
    let message = [b'x'; 64];
    let bench = Bench::start(&[("echo".into(), minimal.to_path_buf())], "", "redb").await?;
    let names = vec!["echo".to_string()];
    let sup = &bench.host.supervisor;
    load(sup, &names, &message, total / 10, IN_FLIGHT).await?; // warm-up
    let raw = Raw::new(minimal, "echo")?;
    let mut instance = raw.start().await?;
    // Supervised and raw take turns, round by round, so that drift in the
    // machine's speed falls on both alike; the median round of each counts.
    let (mut supervised_rates, mut raw_rates, mut otp_rates) = (Vec::new(), Vec::new(), Vec::new());
    let (total_arg, senders) = (total.to_string(), IN_FLIGHT.to_string());
    for _ in 0..TURNS {
        // Erlang/OTP takes its turn too: one gen_server, as many callers.
        if let Some(v) = otp::turn(otp, &["echo", &total_arg, &senders])? {
            otp_rates.push(v["per_second"].as_f64().unwrap_or(0.0));
        }
        supervised_rates.push(
            load(sup, &names, &message, total, IN_FLIGHT)
                .await?
                .per_second,
        );
        let started = Instant::now();
        for _ in 0..total {
            instance
                .handle(&message)
                .await
                .map_err(|e| anyhow!("{e:?}"))?
                .map_err(|e| anyhow!("{e}"))?;
            instance.take_txn();
        }
        raw_rates.push(total as f64 / started.elapsed().as_secs_f64());
    }
    bench.stop().await;
    let (per_second, raw_rate) = (median(supervised_rates), median(raw_rates));
    let overhead = Duration::from_secs_f64(1.0 / per_second - 1.0 / raw_rate);
    let otp_rate = (!otp_rates.is_empty()).then(|| median(otp_rates));
    let mut row = Row::new(
        "messages/s through `handle`, 64-byte echo, no state writes, one plugin",
        format!("{:.0}/s", per_second),
    );
    if let Some(o) = otp_rate {
        row = row.otp(
            format!("{o:.0}/s (one gen_server, {IN_FLIGHT} callers)"),
            format!("{:.2}× OTP", per_second / o),
        );
    }
    Ok(vec![
        row.comparator(
            format!("raw `handle` in a loop: {raw_rate:.0}/s"),
            format!(
                "{:.2}× raw; +{} per message",
                per_second / raw_rate,
                show(overhead)
            ),
        )
        .target(
            "≥ 200k/s and ≥ OTP's in the same run; ≤ 2 µs per message over raw",
            per_second >= 200_000.0
                && otp_rate.is_none_or(|o| per_second >= o)
                && us(overhead) <= 2.0,
        )
        .json(json!({
            "messages_per_round": total,
            "per_second": per_second,
            "raw_per_second": raw_rate,
            "rounds": TURNS,
            "overhead_us": us(overhead),
            "otp_per_second": otp_rate,
        })),
    ])
}

pub async fn durable(
    counter: &Path,
    total: usize,
    plugins: usize,
    otp: Option<&Otp>,
) -> Result<Vec<Row>> {
    let names: Vec<String> = (0..plugins).map(|i| format!("c{i:03}")).collect();
    let files: Vec<_> = names
        .iter()
        .map(|n| (n.clone(), counter.to_path_buf()))
        .collect();
    let per_turn = total.div_ceil(TURNS).max(1);
    // Erlang/OTP: counters writing to mnesia through a batching committer
    // that replies after the log's fsync, as many senders in flight; its
    // turns alternate with ours.
    let (turn_arg, senders) = (per_turn.to_string(), DURABLE_IN_FLIGHT.to_string());
    let mut figures = Vec::new();
    for n in [1, plugins] {
        let bench = Bench::start(&files[..n], "", "redb").await?;
        let sup = &bench.host.supervisor;
        let targets = &names[..n];
        warm_up(&bench, targets, total).await?;
        let (mut ours, mut beams) = (Vec::new(), Vec::new());
        for _ in 0..TURNS {
            ours.push(load(sup, targets, b"hello", per_turn, DURABLE_IN_FLIGHT).await?);
            let args = ["durable", turn_arg.as_str(), &n.to_string(), &senders];
            if let Some(v) = otp::turn(otp, &args)? {
                beams.push(v);
            }
        }
        bench.stop().await;
        figures.push((Load::median_of(&ours), median_beam(&beams)));
    }
    let raw = raw_redb(total.min(2_000))?;
    let row = |label: &str, l: &Load, target: f64, beam: &Option<serde_json::Value>| {
        let mut row = Row::new(
            format!("messages/s with one durable `wasi:keyvalue` write each, {label}"),
            durable_value(l),
        );
        if let Some(b) = beam {
            let rate = b["per_second"].as_f64().unwrap_or(0.0);
            let p99 = b["p99_us"].as_f64().unwrap_or(0.0);
            row = row.otp(
                format!(
                    "{rate:.0}/s; p99 {} (mnesia, batching committer, fsync)",
                    show(Duration::from_secs_f64(p99 / 1e6))
                ),
                format!("{:.2}× OTP", l.per_second / rate),
            );
        }
        row.comparator(
            format!("raw redb, one durable transaction per write: {raw:.0}/s"),
            format!("{:.1}× raw redb", l.per_second / raw),
        )
        .target(
            format!("≥ {}k/s, p99 ≤ 5 ms", target / 1000.0),
            l.per_second >= target && us(l.latency.p99) <= 5_000.0,
        )
        .json(json!({
            "messages": total,
            "turns": TURNS,
            "in_flight": DURABLE_IN_FLIGHT,
            "per_second": l.per_second,
            "latency_us": {"p50": us(l.latency.p50), "p99": us(l.latency.p99)},
            "raw_redb_per_second": raw,
            "otp": beam,
        }))
    };
    Ok(vec![
        row("one plugin", &figures[0].0, 20_000.0, &figures[0].1),
        row(
            &format!("{plugins} plugins"),
            &figures[1].0,
            50_000.0,
            &figures[1].1,
        ),
    ])
}

/// A durable figure's result: rate and reply latency.
pub fn durable_value(l: &Load) -> String {
    format!(
        "{:.0}/s; reply p50 / p99 {} / {} ({DURABLE_IN_FLIGHT} senders in flight)",
        l.per_second,
        show(l.latency.p50),
        show(l.latency.p99)
    )
}

/// A tenth of `total` counts spread over `targets`, before measuring
/// (instances started, usage loaded, pages cached).
async fn warm_up(bench: &Bench, targets: &[String], total: usize) -> Result<()> {
    let sup = &bench.host.supervisor;
    load(sup, targets, b"hello", total / 10, DURABLE_IN_FLIGHT).await?;
    Ok(())
}

/// `total` counts spread over `targets` after a warm-up.
async fn measure(bench: &Bench, targets: &[String], total: usize) -> Result<Load> {
    warm_up(bench, targets, total).await?;
    load(
        &bench.host.supervisor,
        targets,
        b"hello",
        total,
        DURABLE_IN_FLIGHT,
    )
    .await
}

/// The durable figures with the state in PostgreSQL (`--state
/// postgres://…`), on a private server started for the run.
pub async fn durable_postgres(counter: &Path, total: usize, plugins: usize) -> Result<Vec<Row>> {
    let pg = wasm_sup_tests::postgres::Postgres::start();
    let names: Vec<String> = (0..plugins).map(|i| format!("c{i:03}")).collect();
    let files: Vec<_> = names
        .iter()
        .map(|n| (n.clone(), counter.to_path_buf()))
        .collect();
    let bench = Bench::start(&files[..1], "", &pg.database().await).await?;
    let one = measure(&bench, &names[..1], total).await?;
    bench.stop().await;
    let bench = Bench::start(&files, "", &pg.database().await).await?;
    let many = measure(&bench, &names, total).await?;
    bench.stop().await;
    let raw1 = raw_postgres(&pg, total.min(1_000), 1).await?;
    let raw16 = raw_postgres(&pg, total.min(10_000), 16).await?;
    let row = |label: &str, l: &Load| {
        let ratio = l.per_second / raw16;
        Row::new(
            format!("messages/s with one durable write each on PostgreSQL, {label}"),
            durable_value(l),
        )
        .comparator(
            format!(
                "raw PostgreSQL, one durable single-row transaction per write: {raw1:.0}/s from 1 connection, {raw16:.0}/s from 16"
            ),
            format!("{ratio:.1}× raw from 16 connections"),
        )
        .target(
            "≥ 2× raw from 16 connections, p99 ≤ 20 ms".to_string(),
            ratio >= 2.0 && us(l.latency.p99) <= 20_000.0,
        )
        .json(json!({
            "messages": total,
            "in_flight": DURABLE_IN_FLIGHT,
            "per_second": l.per_second,
            "latency_us": {"p50": us(l.latency.p50), "p99": us(l.latency.p99)},
            "raw_postgres_per_second": {"connections_1": raw1, "connections_16": raw16},
        }))
    };
    Ok(vec![
        row("one plugin", &one),
        row(&format!("{plugins} plugins"), &many),
    ])
}

/// Durable single-row transactions per second straight into PostgreSQL
/// from `connections` connections (each its own row, as each plugin writes
/// its own key), `n` in all.
pub async fn raw_postgres(
    pg: &wasm_sup_tests::postgres::Postgres,
    n: usize,
    connections: usize,
) -> Result<f64> {
    let url = pg.database().await;
    pg.connect(&url)
        .await
        .batch_execute("CREATE TABLE kv (k text PRIMARY KEY, v bytea NOT NULL)")
        .await?;
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(pg.connect(&url).await);
    }
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(c, client)| {
            tokio::spawn(async move {
                let st = client
                    .prepare("INSERT INTO kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v")
                    .await?;
                let key = format!("c{c}");
                for i in 0..n / connections {
                    client.execute(&st, &[&key, &i.to_string().into_bytes()]).await?;
                }
                Ok::<_, anyhow::Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok((n / connections * connections) as f64 / started.elapsed().as_secs_f64())
}

/// Durable single-write transactions per second straight into redb.
fn raw_redb(n: usize) -> Result<f64> {
    const T: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("kv");
    let dir = tempfile::tempdir()?;
    let db = redb::Database::create(dir.path().join("raw.redb"))?;
    let started = Instant::now();
    for i in 0..n {
        let w = db.begin_write()?;
        w.open_table(T)?.insert("count", i.to_string().as_bytes())?;
        w.commit()?;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}
