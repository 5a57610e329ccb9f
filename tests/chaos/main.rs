//! `wasm-sup-chaos`: the chaos soak. Runs the real `wasm-sup` binary on a
//! folder of probe plugins (healthy counters beside crash-loopers, memory
//! bombs, floods and one spinner), sends it a steady load of messages from
//! loopback clients while upgrading and removing plugin files at random, and
//! checks that:
//!
//! - the host never exits, and `/healthz` answers at every checkpoint;
//! - at every quiet checkpoint every plugin is `running` again, and the
//!   host's resident memory and file descriptors are within +10% of the
//!   first checkpoint's (taken after a warm-up: the first tenth of the load);
//! - every acknowledged increment (`incr c` answered 200) is in the final
//!   count, and the count holds no increment that was refused (503, 429,
//!   404): acknowledged ≤ final ≤ acknowledged + unknown outcomes;
//! - the healthy counters answered 200 to every message;
//! - the host stops gracefully (SIGTERM, exit 0) at the end.
//!
//! The healthy counters' p99 latency is reported for every run and judged
//! (≤ 10 ms) only in the full one. Run it through `scripts/chaos.sh`, which
//! builds it: by default the full run (100 plugins, 1,000,000 messages over
//! about 600 s); `--ci` is the size CI runs (100 plugins, 60,000 messages
//! over about 60 s). Writes `target/chaos/chaos.json` (`chaos-ci.json`) and
//! the host's JSON log beside it.
//!
//! Modules: `fleet` (the plugins, their settings and the chaos done to the
//! folder), `host` (the child process and what is read of it), `load` (the
//! senders and what they were answered).

mod fleet;
mod host;
mod load;

use anyhow::{Context, Result, bail};
use fleet::{Fleet, Kind};
use host::{HostProcess, Usage};
use load::{Load, SENDERS, spread};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How big a run is.
#[derive(Debug, Clone)]
struct Sizes {
    /// The full run: the p99 is judged.
    full: bool,
    plugins: usize,
    messages: u64,
    /// Load time the messages are spread over (quiet checkpoints excluded).
    seconds: f64,
    /// Quiet checkpoints, evenly spaced in messages; the first is the baseline.
    checkpoints: u64,
}

const FULL: Sizes = Sizes {
    full: true,
    plugins: 100,
    messages: 1_000_000,
    seconds: 600.0,
    checkpoints: 10,
};

const CI: Sizes = Sizes {
    full: false,
    plugins: 100,
    messages: 60_000,
    seconds: 60.0,
    checkpoints: 4,
};

/// Growth allowed over the first checkpoint's resident memory and descriptors.
const GROWTH: f64 = 1.10;
/// The healthy counters' p99 target, judged in the full run.
const P99_TARGET_US: u32 = 10_000;
/// Time given to idle client connections to close before a checkpoint reads
/// the host's descriptors.
const SETTLE: Duration = Duration::from_secs(2);

fn usage() -> ! {
    eprintln!(
        "usage: wasm-sup-chaos [--ci] [--seconds S] [--messages N] [--plugins N] [--checkpoints N]\n\
         (default: the full run, {} plugins, {} messages over {} s; --seconds alone keeps its rate)",
        FULL.plugins, FULL.messages, FULL.seconds
    );
    std::process::exit(2);
}

fn main() -> Result<ExitCode> {
    let mut sizes = FULL;
    let mut args = std::env::args().skip(1);
    let (mut seconds, mut messages) = (None, None);
    let number = |v: Option<String>| -> f64 {
        v.and_then(|v| v.replace('_', "").parse().ok())
            .filter(|n: &f64| *n > 0.0)
            .unwrap_or_else(|| usage())
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--ci" => sizes = CI,
            "--seconds" => seconds = Some(number(args.next())),
            "--messages" => messages = Some(number(args.next()) as u64),
            "--plugins" => sizes.plugins = number(args.next()) as usize,
            "--checkpoints" => sizes.checkpoints = (number(args.next()) as u64).max(2),
            _ => usage(),
        }
    }
    if let Some(s) = seconds {
        // The same rate over another length of time, unless told the count.
        let rate = sizes.messages as f64 / sizes.seconds;
        sizes.messages = messages.unwrap_or((rate * s) as u64);
        sizes.seconds = s;
        sizes.full = sizes.full && s >= FULL.seconds;
    } else if let Some(m) = messages {
        sizes.seconds *= m as f64 / sizes.messages as f64;
        sizes.messages = m;
        sizes.full = sizes.full && m >= FULL.messages;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let passed = runtime.block_on(run(&sizes))?;
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One named check and whether it held.
struct Check {
    name: String,
    ok: bool,
    detail: String,
}

/// One quiet checkpoint.
struct Checkpoint {
    at: Duration,
    messages: u64,
    usage: Usage,
    healthz: bool,
    /// Time until every plugin was running again.
    recovered: Duration,
    /// Healthy counters' p50, p99 and max (µs) since the previous checkpoint.
    latency: (u32, u32, u32),
    crashes: f64,
}

async fn run(sizes: &Sizes) -> Result<bool> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the tests crate has no parent folder")?;
    let out = root.join("target/chaos");
    let stem = if sizes.full { "chaos" } else { "chaos-ci" };
    let dir = out.join(format!("{stem}-plugins"));
    std::fs::create_dir_all(&out)?;
    let fleet = Arc::new(Fleet::create(
        &dir,
        Path::new(wasm_sup_tests::PROBE),
        sizes.plugins,
    )?);
    let rate = sizes.messages as f64 / sizes.seconds;
    eprintln!(
        "chaos: {} plugins ({} counters, {} crash-loopers, {} memory bombs, {} floods, 1 spinner), \
         {} messages at {rate:.0}/s, {} checkpoints",
        fleet.plugins.len(),
        fleet.count(Kind::Counter),
        fleet.count(Kind::Looper),
        fleet.count(Kind::Bomb),
        fleet.count(Kind::Flood),
        sizes.messages,
        sizes.checkpoints,
    );
    let started = Instant::now();
    let log = out.join(format!("{stem}-host.log"));
    let host = Arc::new(HostProcess::start(&wasm_sup_bin()?, &dir, &log).await?);
    let startup = started.elapsed();
    eprintln!(
        "host {} ready in {:.1} s; log {}",
        host.pid,
        startup.as_secs_f64(),
        log.display()
    );

    let load = Arc::new(Load::new(
        fleet.clone(),
        host.base.clone(),
        sizes.messages,
        rate,
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..SENDERS)
        .map(|k| tokio::spawn(load.clone().sender(k as u64)))
        .collect();
    let spinner = tokio::spawn(spin(load.clone(), stop.clone()));
    let chaos = tokio::spawn(act(load.clone(), stop.clone()));

    let mut checks = Vec::new();
    let mut checkpoints: Vec<Checkpoint> = Vec::new();
    let load_started = Instant::now();
    let mut paused = Duration::ZERO;
    let mut died = None;
    let mut final_guard = None;
    'run: for k in 1..=sizes.checkpoints {
        let target = sizes.messages * k / sizes.checkpoints;
        while load.done.load(Ordering::Relaxed) < target {
            if let Some(status) = host.exited() {
                died = Some(status);
                break 'run;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let quiet = Instant::now();
        let guard = load.gate.write().await;
        let at = load_started.elapsed() - paused;
        match checkpoint(&host, &load, at).await {
            Ok(c) => {
                eprintln!(
                    "checkpoint {k}/{}: {:.0} s, {} messages, RSS {} MiB, {} fds ({} sockets), \
                     recovered in {:.1} s, counters p99 {:.2} ms",
                    sizes.checkpoints,
                    at.as_secs_f64(),
                    c.messages,
                    c.usage.rss_kib / 1024,
                    c.usage.fds,
                    c.usage.sockets,
                    c.recovered.as_secs_f64(),
                    f64::from(c.latency.1) / 1000.0
                );
                checkpoints.push(c);
            }
            Err(e) => {
                checks.push(Check {
                    name: format!("checkpoint {k}"),
                    ok: false,
                    detail: format!("{e:#}"),
                });
                if let Some(status) = host.exited() {
                    died = Some(status);
                }
                break 'run;
            }
        }
        if k == sizes.checkpoints {
            final_guard = Some(guard);
        } else {
            load.resume();
            drop(guard);
            paused += quiet.elapsed();
        }
    }
    stop.store(true, Ordering::SeqCst);
    let load_seconds = (load_started.elapsed() - paused).as_secs_f64();

    checks.push(Check {
        name: "the host never exited".into(),
        ok: died.is_none() && host.exited().is_none(),
        detail: match died.or_else(|| host.exited()) {
            Some(status) => format!("it exited: {status}; log tail:\n{}", host.log_tail(20)),
            None => format!("alive through {} checkpoints", checkpoints.len()),
        },
    });
    if died.is_none() && final_guard.is_some() {
        checks.extend(checkpoint_checks(&checkpoints));
        checks.extend(verify(&load).await?);
    }
    let metrics = host
        .metrics(&[
            ("wasm_sup_crashes_total", "cause"),
            ("wasm_sup_restarts_total", ""),
            ("wasm_sup_upgrades_total", "result"),
            ("wasm_sup_messages_total", "outcome"),
            ("wasm_sup_guest_output_dropped_bytes_total", ""),
            ("wasm_sup_log_lines_dropped_total", ""),
        ])
        .await
        .unwrap_or_default();
    drop(final_guard);
    for task in [spinner, chaos] {
        task.abort();
    }
    for task in senders {
        task.abort();
    }
    if host.exited().is_none() {
        let code = host.stop(Duration::from_secs(60));
        checks.push(Check {
            name: "graceful stop exits 0".into(),
            ok: matches!(code, Ok(Some(0))),
            detail: format!("{code:?}"),
        });
    }

    let latency = spread(load.all_latencies());
    let report = Report {
        sizes,
        startup,
        load_seconds,
        wall: started.elapsed(),
        load: &load,
        latency,
        checkpoints: &checkpoints,
        checks: &checks,
        metrics: &metrics,
        log: &log,
    };
    report.print();
    let path = out.join(format!("{stem}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&report.json())?)?;
    eprintln!("wrote {}", path.display());
    Ok(checks.iter().all(|c| c.ok))
}

/// The spinner's sender: one `spin` at a time, a few seconds apart.
async fn spin(load: Arc<Load>, stop: Arc<AtomicBool>) {
    let i = load.fleet.of(Kind::Spinner)[0];
    let mut rng = StdRng::seed_from_u64(1_000_001);
    while !stop.load(Ordering::SeqCst) {
        {
            let _running = load.gate.read().await;
            if stop.load(Ordering::SeqCst) {
                return;
            }
            load.send(i, "spin".to_string()).await;
        }
        let pause = rng.random_range(1000..3000);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// The chaos: an upgrade or a removal every 0.5 to 2.5 s.
async fn act(load: Arc<Load>, stop: Arc<AtomicBool>) {
    let mut rng = StdRng::seed_from_u64(1_000_002);
    while !stop.load(Ordering::SeqCst) {
        let pause = rng.random_range(500..2500);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let _running = load.gate.read().await;
        if stop.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = load.fleet.act(&mut rng) {
            eprintln!("chaos: {e:#}");
        }
    }
}

/// A quiet checkpoint (the caller holds the gate): every removed file put
/// back, every plugin running again, idle client connections closed; then
/// the host's resources.
async fn checkpoint(host: &HostProcess, load: &Load, at: Duration) -> Result<Checkpoint> {
    load.fleet.readd_all()?;
    let names: Vec<&str> = load.fleet.plugins.iter().map(|p| p.name.as_str()).collect();
    let recovered = host
        .wait_all_running(&names, Duration::from_secs(60))
        .await?;
    tokio::time::sleep(SETTLE).await;
    let usage = host.usage()?;
    let healthz = host.healthz().await;
    let crashes = host
        .metrics(&[("wasm_sup_crashes_total", "")])
        .await?
        .values()
        .sum();
    Ok(Checkpoint {
        at,
        messages: load.done.load(Ordering::Relaxed),
        usage,
        healthz,
        recovered,
        latency: spread(load.take_interval()),
        crashes,
    })
}

/// `/healthz` at every checkpoint; resources within [`GROWTH`] of the first.
fn checkpoint_checks(checkpoints: &[Checkpoint]) -> Vec<Check> {
    let mut checks = vec![Check {
        name: "/healthz answered 200 at every checkpoint".into(),
        ok: checkpoints.iter().all(|c| c.healthz),
        detail: format!(
            "{} of {}",
            checkpoints.iter().filter(|c| c.healthz).count(),
            checkpoints.len()
        ),
    }];
    let Some(base) = checkpoints.first() else {
        return checks;
    };
    let worst = |f: fn(&Usage) -> u64| checkpoints.iter().map(|c| f(&c.usage)).max();
    let rss = worst(|u| u.rss_kib).unwrap_or(0);
    let fds = worst(|u| u.fds).unwrap_or(0);
    checks.push(Check {
        name: "resident memory within +10% of the first checkpoint".into(),
        ok: rss as f64 <= base.usage.rss_kib as f64 * GROWTH,
        detail: format!(
            "first {} KiB, largest {rss} KiB ({:+.1}%)",
            base.usage.rss_kib,
            (rss as f64 / base.usage.rss_kib as f64 - 1.0) * 100.0
        ),
    });
    checks.push(Check {
        name: "file descriptors within +10% of the first checkpoint".into(),
        ok: fds as f64 <= base.usage.fds as f64 * GROWTH,
        detail: format!("first {}, largest {fds}", base.usage.fds),
    });
    checks
}

/// The final counts against what was acknowledged and sent; the healthy
/// counters' answers.
async fn verify(load: &Load) -> Result<Vec<Check>> {
    let mut wrong = Vec::new();
    let (mut acked, mut unknown, mut counted) = (0, 0, 0);
    for (i, plugin) in load.fleet.plugins.iter().enumerate() {
        let tally = &load.tallies[i];
        let a = tally.acked.load(Ordering::Relaxed);
        let u = tally.unknown.load(Ordering::Relaxed);
        let (status, body) = load
            .ask(&plugin.name, "get c")
            .await
            .with_context(|| format!("get c from {}", plugin.name))?;
        let value = match (status, body.as_str()) {
            (200, v) => v
                .parse::<u64>()
                .with_context(|| format!("{}: count {v:?}", plugin.name))?,
            (422, "missing") => 0,
            _ => bail!("{}: get c answered {status}: {body}", plugin.name),
        };
        if value < a || value > a + u {
            wrong.push(format!(
                "{}: {value} not in {a}..={} (acknowledged..=acknowledged + unknown)",
                plugin.name,
                a + u
            ));
        }
        acked += a;
        unknown += u;
        counted += value;
    }
    let counter_errors: Vec<String> = load
        .fleet
        .of(Kind::Counter)
        .into_iter()
        .filter_map(|i| {
            let errors = load.tallies[i].errors.load(Ordering::Relaxed);
            (errors > 0).then(|| format!("{}: {errors}", load.fleet.plugins[i].name))
        })
        .collect();
    let counter_acked: u64 = load
        .fleet
        .of(Kind::Counter)
        .into_iter()
        .map(|i| load.tallies[i].acked.load(Ordering::Relaxed))
        .sum();
    Ok(vec![
        Check {
            name: "every acknowledged increment is in the final count".into(),
            ok: wrong.is_empty() && acked > 0,
            detail: if wrong.is_empty() {
                format!(
                    "{counted} counted: {acked} acknowledged + {} of {unknown} of unknown outcome",
                    counted - acked
                )
            } else {
                wrong.join("; ")
            },
        },
        Check {
            name: "healthy counters answered 200 to every message".into(),
            ok: counter_errors.is_empty() && counter_acked > 0,
            detail: if counter_errors.is_empty() {
                format!("{counter_acked} messages")
            } else {
                format!("errors: {}", counter_errors.join(", "))
            },
        },
    ])
}

/// The `wasm-sup` binary beside this one.
fn wasm_sup_bin() -> Result<PathBuf> {
    let bin = std::env::current_exe()?.with_file_name("wasm-sup");
    if !bin.is_file() {
        bail!(
            "{} is missing: build it first (scripts/chaos.sh does)",
            bin.display()
        );
    }
    Ok(bin)
}

struct Report<'a> {
    sizes: &'a Sizes,
    startup: Duration,
    load_seconds: f64,
    wall: Duration,
    load: &'a Load,
    latency: (u32, u32, u32),
    checkpoints: &'a [Checkpoint],
    checks: &'a [Check],
    metrics: &'a std::collections::BTreeMap<String, f64>,
    log: &'a Path,
}

impl Report<'_> {
    fn sent(&self) -> u64 {
        self.load.done.load(Ordering::Relaxed)
    }

    fn metric_sum(&self, prefix: &str) -> f64 {
        self.metrics
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }

    fn p99_verdict(&self) -> &'static str {
        match (self.sizes.full, self.latency.1 <= P99_TARGET_US) {
            (false, _) => "not judged (not the full run)",
            (true, true) => "met",
            (true, false) => "NOT MET",
        }
    }

    fn print(&self) {
        let ms = |us: u32| f64::from(us) / 1000.0;
        let done = self.load.fleet.done();
        let statuses = self.load.statuses.lock().expect("status lock").clone();
        println!(
            "\nchaos soak ({}): {} plugins, {} messages in {:.0} s of load ({:.0}/s), {:.0} s in all",
            if self.sizes.full {
                "full run"
            } else {
                "short run"
            },
            self.load.fleet.plugins.len(),
            self.sent(),
            self.load_seconds,
            self.sent() as f64 / self.load_seconds,
            self.wall.as_secs_f64()
        );
        println!("answers: {statuses:?}");
        println!(
            "healthy counters' latency: p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms; p99 ≤ 10 ms: {}",
            ms(self.latency.0),
            ms(self.latency.1),
            ms(self.latency.2),
            self.p99_verdict()
        );
        println!(
            "crashes {:.0} ({}), restarts {:.0}; upgrades {} renamed + {} in place \
             (host: {}), removals {} (re-added {})",
            self.metric_sum("wasm_sup_crashes_total"),
            self.labelled("wasm_sup_crashes_total"),
            self.metric_sum("wasm_sup_restarts_total"),
            done.upgrades_renamed,
            done.upgrades_in_place,
            self.labelled("wasm_sup_upgrades_total"),
            done.removals,
            done.readds
        );
        println!(
            "| checkpoint | load time | messages | RSS | fds (sockets) | back to running | counters p50 / p99 / max | crashes so far |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for (k, c) in self.checkpoints.iter().enumerate() {
            println!(
                "| {} | {:.0} s | {} | {:.1} MiB | {} ({}) | {:.1} s | {:.2} / {:.2} / {:.1} ms | {:.0} |",
                k + 1,
                c.at.as_secs_f64(),
                c.messages,
                c.usage.rss_kib as f64 / 1024.0,
                c.usage.fds,
                c.usage.sockets,
                c.recovered.as_secs_f64(),
                ms(c.latency.0),
                ms(c.latency.1),
                ms(c.latency.2),
                c.crashes
            );
        }
        for c in self.checks {
            println!(
                "{} {}: {}",
                if c.ok { "ok  " } else { "FAIL" },
                c.name,
                c.detail
            );
        }
    }

    /// `a 3, b 4` for a metric's samples by label.
    fn labelled(&self, metric: &str) -> String {
        self.metrics
            .iter()
            .filter_map(|(k, v)| {
                let label = k.strip_prefix(metric)?.split_once('=')?.1;
                Some(format!("{} {v:.0}", label.trim_end_matches('}')))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn json(&self) -> serde_json::Value {
        let done = self.load.fleet.done();
        let tallies = |kind: Kind| {
            let of = self.load.fleet.of(kind);
            let sum = |f: fn(&load::Tally) -> u64| -> u64 {
                of.iter().map(|&i| f(&self.load.tallies[i])).sum()
            };
            json!({
                "plugins": of.len(),
                "increments_sent": sum(|t| t.sent.load(Ordering::Relaxed)),
                "increments_acknowledged": sum(|t| t.acked.load(Ordering::Relaxed)),
                "increments_unknown": sum(|t| t.unknown.load(Ordering::Relaxed)),
                "errors": sum(|t| t.errors.load(Ordering::Relaxed)),
            })
        };
        json!({
            "full": self.sizes.full,
            "machine": format!(
                "{} cores, {}",
                std::thread::available_parallelism().map_or(0, |n| n.get()),
                std::env::consts::ARCH
            ),
            "plugins": self.load.fleet.plugins.len(),
            "messages_planned": self.sizes.messages,
            "messages_sent": self.sent(),
            "load_seconds": self.load_seconds,
            "rate_per_second": self.sent() as f64 / self.load_seconds,
            "wall_seconds": self.wall.as_secs_f64(),
            "host_ready_seconds": self.startup.as_secs_f64(),
            "answers": *self.load.statuses.lock().expect("status lock"),
            "by_kind": {
                "counter": tallies(Kind::Counter),
                "looper": tallies(Kind::Looper),
                "bomb": tallies(Kind::Bomb),
                "flood": tallies(Kind::Flood),
                "spinner": tallies(Kind::Spinner),
            },
            "counters_latency_ms": {
                "p50": f64::from(self.latency.0) / 1000.0,
                "p99": f64::from(self.latency.1) / 1000.0,
                "max": f64::from(self.latency.2) / 1000.0,
                "p99_target_ms": P99_TARGET_US / 1000,
                "verdict": self.p99_verdict(),
            },
            "chaos": {
                "upgrades_renamed": done.upgrades_renamed,
                "upgrades_in_place": done.upgrades_in_place,
                "removals": done.removals,
                "readds": done.readds,
            },
            "metrics": self.metrics,
            "checkpoints": self.checkpoints.iter().map(|c| json!({
                "load_seconds": c.at.as_secs_f64(),
                "messages": c.messages,
                "rss_kib": c.usage.rss_kib,
                "fds": c.usage.fds,
                "sockets": c.usage.sockets,
                "healthz": c.healthz,
                "recovered_seconds": c.recovered.as_secs_f64(),
                "counters_ms": [
                    f64::from(c.latency.0) / 1000.0,
                    f64::from(c.latency.1) / 1000.0,
                    f64::from(c.latency.2) / 1000.0,
                ],
                "crashes": c.crashes,
            })).collect::<Vec<_>>(),
            "checks": self.checks.iter().map(|c| json!({
                "check": c.name, "ok": c.ok, "detail": c.detail,
            })).collect::<Vec<_>>(),
            "host_log": self.log.display().to_string(),
            "host_log_bytes": std::fs::metadata(self.log).map_or(0, |m| m.len()),
            "passed": self.checks.iter().all(|c| c.ok),
        })
    }
}
