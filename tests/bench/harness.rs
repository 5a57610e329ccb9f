//! What the figures share: hosts in-process on a temporary folder, the raw
//! instance layer as a comparator, timing statistics and the result rows.

use anyhow::{Context, Result, anyhow};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasm_sup::compile::{self, Compiled};
use wasm_sup::config::{Config, HostOverrides};
use wasm_sup::host::{self, Host, RunOptions};
use wasm_sup::instance::{PluginEnv, PluginInstance};
use wasm_sup::mailbox::{Directory, Outcome};
use wasm_sup::state::memory::MemoryBackend;
use wasm_sup::state::view::StateView;

/// A host running in this process on a folder of its own.
pub struct Bench {
    pub host: Host,
    /// The folder, removed when the bench is dropped.
    _dir: tempfile::TempDir,
}

impl Bench {
    /// Starts a host on a new folder holding `plugins` (name, component
    /// path) and `config` as `wasm-sup.toml`; `state` is `memory` or a path.
    pub async fn start(plugins: &[(String, PathBuf)], config: &str, state: &str) -> Result<Bench> {
        let dir = tempfile::tempdir()?;
        for (name, path) in plugins {
            std::fs::copy(path, dir.path().join(format!("{name}.wasm")))
                .with_context(|| format!("copy {}", path.display()))?;
        }
        std::fs::write(dir.path().join("wasm-sup.toml"), config)?;
        let state = if state == "redb" {
            dir.path().join("state.redb").display().to_string()
        } else {
            state.to_string()
        };
        let opts = RunOptions {
            overrides: HostOverrides {
                state: Some(state),
                admin: None,
                ..Default::default()
            },
            admin_token: None,
        };
        let (host, _) = host::start(dir.path(), &opts).await?;
        Ok(Bench { host, _dir: dir })
    }

    /// Sends `message` to `plugin` and waits for its outcome.
    pub async fn call(&self, plugin: &str, message: &[u8]) -> Result<Outcome> {
        let (rx, _) = self
            .host
            .supervisor
            .send(plugin, message.to_vec(), None)
            .map_err(|e| anyhow!("send to {plugin}: {e:?}"))?;
        rx.await.context("no outcome")
    }

    pub async fn stop(self) {
        self.host.shutdown().await;
    }
}

/// Settings for benchmarks that crash on purpose: restarts at once, with
/// neither the plugin's intensity nor the host's budget ever running out.
pub const CRASH_FRIENDLY: &str = r#"
[host]
max-restarts = 4_000_000_000
window = "1s"
[defaults.restart]
backoff = "immediate"
max-restarts = 4_000_000_000
window = "1s"
max-attempts = 1
cooldown = "off"
"#;

/// The comparator "raw wasmtime": the host's instance layer alone (a new
/// Store with its WASI context and limits, `InstancePre::instantiate`, typed
/// calls), with a memory backend and no supervisor, mailbox or commit.
pub struct Raw {
    pub compiled: Arc<Compiled>,
    pub env: Arc<PluginEnv>,
}

impl Raw {
    pub fn new(component: &Path, name: &str) -> Result<Raw> {
        Raw::with_engine(component, name, &host_engine()?, "")
    }

    /// On an engine of the caller's (the limit-overhead figure's metering),
    /// with `config` as the folder's `wasm-sup.toml`.
    pub fn with_engine(
        component: &Path,
        name: &str,
        engine: &wasmtime::Engine,
        config: &str,
    ) -> Result<Raw> {
        let linker = compile::linker(engine)?;
        let compiled = compile::compile(engine, &linker, &std::fs::read(component)?)?;
        Ok(Raw {
            compiled,
            env: plugin_env(name, config)?,
        })
    }

    /// A new instance, `init` run.
    pub async fn start(&self) -> Result<PluginInstance> {
        start_instance(self.compiled.clone(), &self.env).await
    }
}

/// The engine `wasm-sup run` makes with the default settings.
pub fn host_engine() -> Result<wasmtime::Engine> {
    wasm_sup::engine::engine(false, wasm_sup::config::DEFAULT_INSTANCE_POOL)
}

/// What plugin `name` runs with outside a host: its settings from `config`
/// (as a folder's `wasm-sup.toml`), a memory backend, an empty directory.
pub fn plugin_env(name: &str, config: &str) -> Result<Arc<PluginEnv>> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("wasm-sup.toml"), config)?;
    let config = Config::load(dir.path(), &HostOverrides::default())?;
    Ok(Arc::new(PluginEnv {
        name: name.to_string(),
        config: Arc::new(config.plugin(name)?),
        state: Arc::new(StateView::new(name, Arc::new(MemoryBackend::new()))),
        directory: Directory::new(),
        output_dropped: Default::default(),
    }))
}

/// A new instance of `compiled`, `init` run.
pub async fn start_instance(
    compiled: Arc<Compiled>,
    env: &Arc<PluginEnv>,
) -> Result<PluginInstance> {
    let mut instance = PluginInstance::start(compiled, env.clone(), 1, 0)
        .await
        .map_err(|e| anyhow!("start: {e:?}"))?;
    instance
        .init()
        .await
        .map_err(|e| anyhow!("init: {e:?}"))?
        .map_err(|e| anyhow!("init: {e}"))?;
    Ok(instance)
}

/// Median and 99th percentile of some timings.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    pub p50: Duration,
    pub p99: Duration,
}

impl Spread {
    pub fn of(mut samples: Vec<Duration>) -> Spread {
        assert!(!samples.is_empty(), "no samples");
        samples.sort();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Spread {
            p50: at(0.50),
            p99: at(0.99),
        }
    }

    /// The median turn's p50 and the median turn's p99 of turns taken
    /// round by round with a comparator.
    pub fn median_of(turns: &[Spread]) -> Spread {
        let pick = |f: fn(&Spread) -> Duration| {
            let mut v: Vec<Duration> = turns.iter().map(f).collect();
            v.sort();
            v[v.len() / 2]
        };
        Spread {
            p50: pick(|s| s.p50),
            p99: pick(|s| s.p99),
        }
    }
}

/// Turns a figure and its comparators take, round by round, so that drift
/// in the machine's speed falls on all alike; the median turn counts.
pub const TURNS: usize = 5;

/// The median of some figures (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty(), "no figures");
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times `f` `n` times.
pub async fn time_each<F, Fut>(n: usize, mut f: F) -> Result<Vec<Duration>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f().await?;
        out.push(t.elapsed());
    }
    Ok(out)
}

/// One line of the results: a figure, its comparator, and its target.
#[derive(Debug, Clone)]
pub struct Row {
    pub figure: String,
    pub value: String,
    pub comparator: String,
    pub ratio: String,
    pub target: String,
    /// Erlang/OTP's figure in the same run, and ours against it ("-" where
    /// there is none).
    pub otp: String,
    pub vs_otp: String,
    /// Whether the target is met; `None` where there is no target.
    pub met: Option<bool>,
    pub json: serde_json::Value,
}

impl Row {
    pub fn new(figure: impl Into<String>, value: impl Into<String>) -> Row {
        Row {
            figure: figure.into(),
            value: value.into(),
            comparator: "-".into(),
            ratio: "-".into(),
            target: "-".into(),
            otp: "-".into(),
            vs_otp: "-".into(),
            met: None,
            json: json!({}),
        }
    }

    pub fn comparator(mut self, comparator: impl Into<String>, ratio: impl Into<String>) -> Row {
        self.comparator = comparator.into();
        self.ratio = ratio.into();
        self
    }

    /// Erlang/OTP's figure in the same run (see [`crate::otp`]), and ours
    /// against it.
    pub fn otp(mut self, value: impl Into<String>, vs: impl Into<String>) -> Row {
        self.otp = value.into();
        self.vs_otp = vs.into();
        self
    }

    pub fn target(mut self, target: impl Into<String>, met: bool) -> Row {
        self.target = target.into();
        self.met = Some(match self.met {
            Some(m) => m && met,
            None => met,
        });
        self
    }

    pub fn json(mut self, json: serde_json::Value) -> Row {
        self.json = json;
        self
    }
}

/// A duration for a table cell, in µs or ms.
pub fn show(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 10.0 {
        format!("{us:.2} µs")
    } else if us < 1000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

pub fn us(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6 * 10.0).round() / 10.0
}
