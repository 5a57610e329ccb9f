//! `wasm-sup run`: wires the stages together. Loads the configuration, opens
//! the state backend, compiles every plugin once, starts the supervisor and the
//! admin API, and shuts everything down gracefully on SIGINT/SIGTERM.

use crate::compile;
use crate::config::{Config, HostOverrides};
use crate::discovery;
use crate::engine::{self, EpochTicker};
use crate::supervisor::SupervisorHandle;
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Options of `wasm-sup run`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Settings from the command line.
    pub overrides: HostOverrides,
    /// Bearer token the admin API requires (needed for a non-loopback address).
    pub admin_token: Option<String>,
}

/// A started host: the supervisor, plus what must live as long as it.
pub struct Host {
    /// The supervisor.
    pub supervisor: SupervisorHandle,
    /// The plugin files that were refused, with why.
    pub refused: Vec<discovery::Refused>,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").finish_non_exhaustive()
    }
}

/// Loads DIR and starts every plugin in it. Must run inside a tokio runtime.
pub async fn start(dir: &Path, opts: &RunOptions) -> Result<(Host, Config)> {
    let config = load(dir, opts)?;
    let host = start_loaded(&config).await?;
    Ok((host, config))
}

/// Reads DIR's configuration and checks what must hold before anything starts.
fn load(dir: &Path, opts: &RunOptions) -> Result<Config> {
    if !dir.is_dir() {
        bail!(
            "{} is not a directory: pass the plugin directory, e.g. `wasm-sup run ./plugins`",
            dir.display()
        );
    }
    let config = Config::load(dir, &opts.overrides)?;
    if !config.host.admin.ip().is_loopback() && opts.admin_token.is_none() {
        bail!(
            "refusing to serve the admin API on {} without a token: pass --token-file FILE (or set WASM_SUP_ADMIN_TOKEN), or bind to loopback with --admin 127.0.0.1:PORT",
            config.host.admin
        );
    }
    Ok(config)
}

/// Starts every plugin of a loaded configuration.
async fn start_loaded(config: &Config) -> Result<Host> {
    let dir = config.dir.as_path();
    let backend = crate::state::open(&config.host.state)?;
    tracing::info!(state = %backend.describe(), dir = %dir.display(), "starting");
    let engine = engine::engine(config.host.coredumps.is_some())?;
    let ticker = EpochTicker::start(&engine, config.host.epoch_tick)?;
    let linker = compile::linker(&engine)?;
    let (specs, mut refused) = discovery::discover(config)
        .with_context(|| format!("failed to read plugin directory {}", dir.display()))?;
    for name in config.configured_plugins() {
        if !specs.iter().any(|s| s.name == name) {
            tracing::warn!(
                plugin = name,
                "[plugins.{name}] is configured but there is no {name}.wasm"
            );
        }
    }
    let supervisor = SupervisorHandle::new(config.host.clone(), backend)?;
    let total = specs.len();
    for (i, spec) in specs.into_iter().enumerate() {
        let started = std::time::Instant::now();
        let (e, l, path) = (engine.clone(), linker.clone(), spec.path.clone());
        let compiled = tokio::task::spawn_blocking(move || compile::compile_file(&e, &l, &path))
            .await
            .context("compile task panicked")?;
        match compiled {
            Ok(c) => {
                tracing::info!(plugin = %spec.name, progress = format!("{}/{total}", i + 1), compile_ms = started.elapsed().as_millis() as u64, "loaded");
                supervisor.start_plugin(&spec, c);
            }
            Err(e) => refused.push(discovery::Refused {
                path: spec.path.clone(),
                reason: format!("{e:#}"),
            }),
        }
    }
    supervisor
        .metrics()
        .plugins_refused
        .set(refused.len() as i64);
    for r in &refused {
        tracing::error!(
            "refused {}: {}",
            r.path.display(),
            r.reason
                .trim_start_matches(&format!("{}: ", r.path.display()))
        );
    }
    if total == 0 && refused.is_empty() {
        tracing::warn!(
            "no plugins in {}: drop NAME.wasm components there",
            dir.display()
        );
    }
    Ok(Host {
        supervisor,
        refused,
        _ticker: ticker,
    })
}

/// Runs the host until a signal: the whole of `wasm-sup run`.
pub async fn run(dir: &Path, opts: RunOptions) -> Result<()> {
    // The admin address is taken before any plugin starts, so a port in use
    // stops the host before it has run anything.
    let config = load(dir, &opts)?;
    let admin = config.host.admin;
    let listener = TcpListener::bind(admin).await.with_context(|| {
        format!(
            "failed to listen on {admin} for the admin API: is another wasm-sup running? pass --admin ADDR"
        )
    })?;
    let host = start_loaded(&config).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "admin API listening on http://{addr}");
    let mut app = crate::admin::router(host.supervisor.clone());
    if let Some(token) = opts.admin_token.clone() {
        app = crate::admin::require_token(app, token);
    }
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    wait_for_signal().await;
    tracing::info!("shutting down: press Ctrl-C again to exit at once");
    tokio::spawn(async {
        wait_for_signal().await;
        eprintln!("second signal: exiting at once (committed state is intact)");
        std::process::exit(130);
    });
    host.supervisor.shutdown().await;
    server.abort();
    let backend = Arc::clone(host.supervisor.backend());
    drop(host);
    drop(backend);
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
