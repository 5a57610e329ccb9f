//! The host under test: the real `wasm-sup run DIR --admin ADDR --log-format
//! json` as a child process, with its JSON log in a file; what the run reads
//! of it from outside (resident memory and file descriptors from `/proc`,
//! `/healthz`, plugin statuses, `/metrics`); whether it is still alive; and
//! its graceful stop.

use anyhow::{Context, Result, anyhow, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct HostProcess {
    child: Mutex<Child>,
    pub pid: u32,
    pub base: String,
    pub http: reqwest::Client,
    pub log: PathBuf,
}

/// The host's resources at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub rss_kib: u64,
    pub fds: u64,
    /// Of `fds`, the sockets (admin connections and listeners).
    pub sockets: u64,
}

impl HostProcess {
    /// Starts the host and waits until every plugin is running (`/readyz`).
    pub async fn start(bin: &Path, dir: &Path, log: &Path) -> Result<HostProcess> {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let child = Command::new(bin)
            .arg("run")
            .arg(dir)
            .arg("--admin")
            .arg(addr.to_string())
            .args(["--log-format", "json"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .context("spawn wasm-sup")?;
        let host = HostProcess {
            pid: child.id(),
            child: Mutex::new(child),
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if let Ok(r) = host.http.get(format!("{}/readyz", host.base)).send().await
                && r.status().is_success()
            {
                return Ok(host);
            }
            if let Some(status) = host.exited() {
                bail!("wasm-sup exited ({status}) before it was ready");
            }
            if Instant::now() > deadline {
                bail!("wasm-sup was not ready within 300 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `Some` once the process has exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.child
            .lock()
            .expect("child lock")
            .try_wait()
            .ok()
            .flatten()
    }

    pub fn usage(&self) -> Result<Usage> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS")?;
        let (mut fds, mut sockets) = (0, 0);
        for entry in std::fs::read_dir(format!("/proc/{}/fd", self.pid))? {
            let Ok(entry) = entry else { continue };
            fds += 1;
            let target = std::fs::read_link(entry.path()).unwrap_or_default();
            if target.to_string_lossy().starts_with("socket:") {
                sockets += 1;
            }
        }
        Ok(Usage {
            rss_kib,
            fds,
            sockets,
        })
    }

    pub async fn healthz(&self) -> bool {
        let r = self.http.get(format!("{}/healthz", self.base)).send().await;
        r.is_ok_and(|r| r.status().is_success())
    }

    /// Each plugin's status, by name.
    pub async fn statuses(&self) -> Result<BTreeMap<String, String>> {
        let r = self
            .http
            .get(format!("{}/v1/plugins", self.base))
            .send()
            .await?;
        let json: serde_json::Value = r.json().await?;
        let list = json["plugins"]
            .as_array()
            .ok_or_else(|| anyhow!("no plugin list: {json}"))?;
        Ok(list
            .iter()
            .map(|p| {
                let field = |k: &str| p[k].as_str().unwrap_or("?").to_string();
                (field("name"), field("status"))
            })
            .collect())
    }

    /// Waits until all of `names`, and only they, are `running`.
    pub async fn wait_all_running(&self, names: &[&str], within: Duration) -> Result<Duration> {
        let started = Instant::now();
        loop {
            let statuses = self.statuses().await?;
            let odd: Vec<String> = names
                .iter()
                .filter(|n| statuses.get(**n).map(String::as_str) != Some("running"))
                .map(|n| format!("{n}: {}", statuses.get(*n).map_or("absent", |s| s)))
                .collect();
            if odd.is_empty() && statuses.len() == names.len() {
                return Ok(started.elapsed());
            }
            if started.elapsed() > within {
                bail!(
                    "plugins not all running after {within:?}: {odd:?} ({} plugins listed)",
                    statuses.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `/metrics` summed by one label of each metric wanted (`metric{label=value}`),
    /// or over all its samples (`metric`) where the label is `""`.
    pub async fn metrics(&self, wanted: &[(&str, &str)]) -> Result<BTreeMap<String, f64>> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?;
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).context("parse /metrics")?;
        let mut out = BTreeMap::new();
        for s in scrape.samples {
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => continue,
            };
            for (metric, label) in wanted {
                if s.metric == *metric {
                    let key = match s.labels.get(label) {
                        Some(by) => format!("{metric}{{{label}={by}}}"),
                        None => metric.to_string(),
                    };
                    *out.entry(key).or_insert(0.0) += value;
                }
            }
        }
        Ok(out)
    }

    /// SIGTERM, then waits for the exit; returns its code.
    pub fn stop(&self, within: Duration) -> Result<Option<i32>> {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()?;
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return Ok(status.code());
            }
            if Instant::now() > deadline {
                bail!("wasm-sup did not exit within {within:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let mut child = self.child.lock().expect("child lock");
        if child.try_wait().ok().flatten().is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
