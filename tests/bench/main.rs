//! `wasm-sup-bench`: every performance figure of the project, each beside
//! the comparator it is judged against, measured in one run. Run it through
//! `scripts/bench.sh`, which builds it; `--smoke` runs every figure at a tiny
//! size (CI checks that the harness works, never how fast anything is).
//!
//! Writes a markdown table and a JSON file into `target/bench/`
//! (`bench.md`, `bench.json`, or `bench-smoke.*`).
//!
//! Figures run in-process where they measure the supervisor (restarts,
//! throughput, crash storms) and against the real `wasm-sup` binary where
//! they measure a whole process (memory per instance, host start).

mod cluster;
mod density;
mod failover;
mod harness;
mod limits;
mod nodes;
mod otp;
mod restart;
mod startup;
mod storm;
mod throughput;

use anyhow::{Context, Result, bail};
use harness::Row;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How big each figure is.
struct Sizes {
    restart_rounds: usize,
    echo_messages: usize,
    durable_messages: usize,
    durable_plugins: usize,
    density_plugins: usize,
    cold_rounds: usize,
    start_plugins: usize,
    burn_iterations: u64,
    burn_rounds: usize,
    storm_plugins: usize,
    storm_messages: usize,
    failover_runs: usize,
}

const FULL: Sizes = Sizes {
    restart_rounds: 2_000,
    echo_messages: 100_000,
    durable_messages: 100_000,
    durable_plugins: 100,
    density_plugins: 10_000,
    cold_rounds: 5,
    start_plugins: 1_000,
    burn_iterations: 5_000_000,
    burn_rounds: 21,
    storm_plugins: 1_000,
    storm_messages: 120_000,
    failover_runs: 20,
};

const SMOKE: Sizes = Sizes {
    restart_rounds: 20,
    echo_messages: 2_000,
    durable_messages: 300,
    durable_plugins: 10,
    density_plugins: 10,
    cold_rounds: 1,
    start_plugins: 10,
    burn_iterations: 100_000,
    burn_rounds: 2,
    storm_plugins: 100,
    storm_messages: 2_000,
    failover_runs: 2,
};

const FIGURES: &[&str] = &[
    "restart",
    "echo",
    "durable",
    "durable-pg",
    "density",
    "cold",
    "start",
    "limits",
    "storm",
    "failover",
    "durable-cluster",
];

fn usage() -> ! {
    eprintln!(
        "usage: wasm-sup-bench [--smoke] [--only FIGURE,...] [--density PLUGINS]   (figures: {})",
        FIGURES.join(", ")
    );
    std::process::exit(2);
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut smoke = false;
    let mut only: Option<Vec<String>> = None;
    let mut density: Option<usize> = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--worker" => {
                let state = args.next().unwrap_or_else(|| usage());
                return restart::worker(Path::new(&state));
            }
            "--smoke" => smoke = true,
            "--density" => {
                let n = args.next().and_then(|n| n.parse().ok());
                density = Some(n.unwrap_or_else(|| usage()));
            }
            "--only" => {
                let list = args.next().unwrap_or_else(|| usage());
                let names: Vec<String> = list.split(',').map(str::to_string).collect();
                if let Some(bad) = names.iter().find(|n| !FIGURES.contains(&n.as_str())) {
                    eprintln!("error: no figure named {bad:?}");
                    usage();
                }
                only = Some(names);
            }
            _ => usage(),
        }
    }
    let mut sizes = if smoke { SMOKE } else { FULL };
    if let Some(n) = density {
        sizes.density_plugins = n;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    // On a worker thread of the runtime, as the host's own senders (admin
    // requests, other plugins) are: not on a thread outside it that every
    // reply has to wake.
    let rows = runtime.block_on(run(&sizes, only.as_deref()))?;
    report(&rows, smoke, started.elapsed().as_secs_f64())
}

async fn run(sizes: &Sizes, only: Option<&[String]>) -> Result<Vec<Row>> {
    let wanted = |f: &str| only.is_none_or(|o| o.iter().any(|x| x == f));
    let probe = Path::new(wasm_sup_tests::PROBE);
    let minimal = Path::new(wasm_sup_tests::MINIMAL);
    let counter = Path::new(wasm_sup_tests::COUNTER);
    let bin = wasm_sup_bin()?;
    let otp = otp::Otp::new()?;
    let otp = otp.as_ref();
    let mut rows = Vec::new();
    for figure in FIGURES.iter().filter(|f| wanted(f)) {
        eprintln!("== {figure}");
        let t = Instant::now();
        let new = match *figure {
            "restart" => restart::run(probe, sizes.restart_rounds, otp).await,
            "echo" => throughput::echo(minimal, sizes.echo_messages, otp).await,
            "durable" => {
                throughput::durable(counter, sizes.durable_messages, sizes.durable_plugins, otp)
                    .await
            }
            "durable-pg" => {
                throughput::durable_postgres(counter, sizes.durable_messages, sizes.durable_plugins)
                    .await
            }
            "density" => density::run(&bin, counter, sizes.density_plugins, otp).await,
            "cold" => startup::cold(counter, sizes.cold_rounds).await,
            "start" => startup::host_start(&bin, counter, sizes.start_plugins).await,
            "limits" => limits::run(probe, sizes.burn_iterations, sizes.burn_rounds).await,
            "storm" => storm::run(probe, sizes.storm_plugins, sizes.storm_messages).await,
            "failover" => failover::run(&bin, probe, sizes.failover_runs).await,
            "durable-cluster" => {
                cluster::run(&bin, counter, sizes.durable_messages, sizes.durable_plugins).await
            }
            _ => unreachable!("checked against FIGURES"),
        }
        .with_context(|| format!("figure {figure}"))?;
        for row in &new {
            eprintln!(
                "   {}: {} ({:.1}s)",
                row.figure,
                row.value,
                t.elapsed().as_secs_f64()
            );
        }
        rows.extend(new);
    }
    Ok(rows)
}

/// The `wasm-sup` binary beside this one.
fn wasm_sup_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("wasm-sup");
    if !bin.is_file() {
        bail!(
            "{} is missing: build it first (scripts/bench.sh does)",
            bin.display()
        );
    }
    Ok(bin)
}

fn report(rows: &[Row], smoke: bool, seconds: f64) -> Result<()> {
    let machine = format!(
        "{} cores, {} (wasm-sup {})",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::env::consts::ARCH,
        env!("CARGO_PKG_VERSION"),
    );
    let mut md = String::from(
        "| figure | result | comparator (same run) | ratio | Erlang/OTP (same run) | vs OTP | target | met |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "-",
        };
        md += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.figure, r.value, r.comparator, r.ratio, r.otp, r.vs_otp, r.target, met
        );
    }
    md += &format!(
        "\n{} run on {machine}, {seconds:.0} s in all.\n",
        if smoke { "Smoke" } else { "Full" }
    );
    let json = json!({
        "smoke": smoke,
        "machine": machine,
        "seconds": seconds,
        "figures": rows.iter().map(|r| json!({
            "figure": r.figure,
            "result": r.value,
            "comparator": r.comparator,
            "ratio": r.ratio,
            "otp": r.otp,
            "vs_otp": r.vs_otp,
            "target": r.target,
            "met": r.met,
            "data": r.json,
        })).collect::<Vec<_>>(),
    });
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out)?;
    let stem = if smoke { "bench-smoke" } else { "bench" };
    std::fs::write(out.join(format!("{stem}.md")), &md)?;
    std::fs::write(
        out.join(format!("{stem}.json")),
        serde_json::to_string_pretty(&json)?,
    )?;
    println!("{md}");
    eprintln!("wrote target/bench/{stem}.md and {stem}.json");
    Ok(())
}
