//! Idle density: N counter plugins in the real `wasm-sup` binary, each having
//! handled one message, and the resident memory each adds.

use crate::harness::Row;
use crate::otp::{self, Otp};
use anyhow::{Context, Result, bail};
use serde_json::json;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `wasm-sup run` on a folder, with its admin API on a free port.
pub struct Process {
    pub child: Child,
    pub addr: std::net::SocketAddr,
    pub http: reqwest::Client,
}

impl Process {
    pub async fn start(bin: &Path, dir: &Path) -> Result<Process> {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        // Its log goes beside the folder, to be shown if it fails.
        let log = dir.with_extension("log");
        let child = Command::new(bin)
            .arg("run")
            .arg(dir)
            .arg("--admin")
            .arg(addr.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("spawn wasm-sup")?;
        let mut p = Process {
            child,
            addr,
            http: reqwest::Client::new(),
        };
        p.wait_ready(Duration::from_secs(600), &log).await?;
        Ok(p)
    }

    /// Waits until GET /readyz answers 200 (every plugin running).
    async fn wait_ready(&mut self, within: Duration, log: &Path) -> Result<()> {
        let deadline = Instant::now() + within;
        let url = format!("http://{}/readyz", self.addr);
        loop {
            if let Ok(r) = self.http.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(5).collect();
                bail!("wasm-sup exited ({status}) before it was ready: {tail:?}");
            }
            if Instant::now() > deadline {
                bail!("wasm-sup never became ready");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn send(&self, plugin: &str, message: &str) -> Result<()> {
        let url = format!("http://{}/v1/plugins/{plugin}/messages", self.addr);
        let r = self.http.post(url).body(message.to_string()).send().await?;
        if !r.status().is_success() {
            bail!("{plugin}: HTTP {}", r.status());
        }
        Ok(())
    }

    /// Resident set size, KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS")
    }

    pub fn stop(mut self) -> Result<()> {
        Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status()?;
        self.child.wait()?;
        Ok(())
    }
}

/// Writes `wasm-sup.toml` with an instance pool big enough for `plugins`.
pub fn pool_for(dir: &Path, plugins: usize) -> Result<()> {
    let pool = plugins.max(wasm_sup::config::DEFAULT_INSTANCE_POOL as usize);
    std::fs::write(
        dir.join("wasm-sup.toml"),
        format!("[host]\ninstance-pool = {pool}\n"),
    )?;
    Ok(())
}

/// RSS of a host with `n` counters that each handled one message.
async fn rss_with(bin: &Path, counter: &Path, n: usize) -> Result<(u64, Duration)> {
    let dir = tempfile::tempdir()?;
    for i in 0..n {
        std::fs::copy(counter, dir.path().join(format!("c{i:05}.wasm")))?;
    }
    pool_for(dir.path(), n)?;
    let started = Instant::now();
    let p = Process::start(bin, dir.path()).await?;
    let ready = started.elapsed();
    let names: Vec<String> = (0..n).map(|i| format!("c{i:05}")).collect();
    for chunk in names.chunks(64) {
        let sends = chunk.iter().map(|name| p.send(name, "hello"));
        for r in futures::future::join_all(sends).await {
            r?;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = p.rss_kib()?;
    p.stop()?;
    Ok((rss, ready))
}

pub async fn run(bin: &Path, counter: &Path, n: usize, otp: Option<&Otp>) -> Result<Vec<Row>> {
    let (base, _) = rss_with(bin, counter, 1).await?;
    let (rss, ready) = rss_with(bin, counter, n).await?;
    let per = (rss.saturating_sub(base)) as f64 / (n - 1) as f64;
    // Erlang/OTP: as many idle gen_servers, each having handled one call.
    // Below a thousand the noise of the VM's own memory swamps the figure.
    let beam = match n >= 1000 {
        true => otp::figure(otp, &["density", &n.to_string()])?,
        false => None,
    };
    let beam_kib = beam.as_ref().and_then(|v| v["kib_per_instance"].as_f64());
    let otp_cells = beam_kib.map(|k| {
        (
            format!("{k:.1} KiB per idle gen_server"),
            format!("{:.1}× OTP's", per / k),
        )
    });
    let row = Row::new(
        format!("idle density: {n} counter plugins, one message each"),
        format!(
            "{:.0} KiB resident per instance ({} MiB in all; ready in {:.1} s)",
            per,
            rss / 1024,
            ready.as_secs_f64()
        ),
    )
    .target(
        "10,000 instances; ≤ 48 KiB each",
        per <= 48.0 && n >= 10_000,
    )
    .json(json!({
        "plugins": n,
        "rss_kib": rss,
        "rss_kib_one_plugin": base,
        "kib_per_instance": per,
        "ready_seconds": ready.as_secs_f64(),
        "otp_kib_per_instance": beam_kib,
    }));
    Ok(vec![match otp_cells {
        Some((value, vs)) => row.otp(value, vs),
        None => row,
    }])
}
