//! `wasm-sup run`: wires the stages together. Loads the configuration, opens
//! the state backend, loads every plugin (through the compile cache), starts
//! the supervisor, the folder watcher and the admin API, and shuts everything
//! down gracefully on SIGINT/SIGTERM.

use crate::cluster::Cluster;
use crate::compile;
use crate::config::{Config, HostOverrides};
use crate::discovery;
use crate::engine::{self, EpochTicker};
use crate::supervisor::SupervisorHandle;
use crate::watch::Folder;
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
    /// The plugin files refused at startup, with why.
    pub refused: Vec<discovery::Refused>,
    /// Cluster mode: this node of the cluster.
    pub cluster: Option<Cluster>,
    watcher: Option<tokio::task::JoinHandle<()>>,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").finish_non_exhaustive()
    }
}

impl Host {
    /// Graceful shutdown: stop watching the folder, then the supervisor's
    /// shutdown (DESIGN.md, "Shutdown").
    pub async fn shutdown(&self) {
        if let Some(w) = &self.watcher {
            w.abort();
        }
        self.supervisor.shutdown().await;
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(w) = &self.watcher {
            w.abort();
        }
    }
}

/// Loads DIR and starts every plugin in it. Must run inside a tokio runtime.
pub async fn start(dir: &Path, opts: &RunOptions) -> Result<(Host, Config)> {
    let config = load(dir, opts)?;
    let host = start_loaded(&config, opts, |_, _| {}).await?;
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

/// Starts every plugin of a loaded configuration, then watches the folder.
/// `serving` gets the supervisor (and, in cluster mode, the joined cluster)
/// before the first plugin loads, so the admin API can answer (`loading`)
/// while plugins compile.
async fn start_loaded(
    config: &Config,
    opts: &RunOptions,
    serving: impl FnOnce(&SupervisorHandle, Option<&Cluster>),
) -> Result<Host> {
    let dir = config.dir.as_path();
    // A cluster node fences its commits by the epochs the cluster gives.
    let (backend, clustered) = match &config.host.cluster {
        Some(c) => {
            let pg =
                Arc::new(crate::state::postgres::PostgresBackend::open_clustered(&c.url).await?);
            (pg.clone() as Arc<dyn crate::state::StateBackend>, Some(pg))
        }
        None => (crate::state::open(&config.host.state).await?, None),
    };
    tracing::info!(state = %backend.describe(), dir = %dir.display(), "starting");
    let metering = engine::Metering {
        fuel: config.host.fuel_metering,
        epoch: true,
    };
    if !metering.fuel {
        tracing::warn!(
            "[host] fuel-metering = false: plugins' `fuel` limits are not enforced; their `timeout` still stops a runaway call"
        );
    }
    let coredumps = config.host.coredumps.is_some();
    let engine = engine::engine_with(coredumps, metering, config.host.instance_pool)?;
    // A component over the pool's per-module limits runs on an engine that
    // allocates on demand (DESIGN.md, "Engines"); one ticker serves both.
    let fallback = (config.host.instance_pool > 0)
        .then(|| engine::engine_with(coredumps, metering, 0))
        .transpose()?;
    let engines: Vec<&wasmtime::Engine> = std::iter::once(&engine).chain(&fallback).collect();
    let ticker = EpochTicker::start(&engines, config.host.epoch_tick)?;
    let cache = config
        .host
        .compile_cache
        .map(|budget| (config.host.cache_dir.as_path(), budget));
    let loader = match compile::Loader::new(&engine, fallback.as_ref(), cache) {
        Ok(l) => l,
        Err(e) if cache.is_some() => {
            tracing::warn!(
                "compile cache off: {e:#}: set [host] state to a writable place, or compile-cache = \"off\""
            );
            compile::Loader::new(&engine, fallback.as_ref(), None)?
        }
        Err(e) => return Err(e),
    };
    let plugin_dir = discovery::PluginDir::open(dir, config.host.max_plugin_file)
        .with_context(|| format!("failed to open plugin directory {}", dir.display()))?;
    let supervisor = SupervisorHandle::new(config.host.clone(), backend, &config.groups)?;
    supervisor.begin_loading();
    let cluster = match (&config.host.cluster, clustered) {
        (Some(c), Some(pg)) => Some(Cluster::join(c.clone(), pg, supervisor.clone()).await?),
        _ => None,
    };
    serving(&supervisor, cluster.as_ref());
    let mut folder = Folder::new(
        plugin_dir,
        loader,
        supervisor.clone(),
        config,
        opts.overrides.clone(),
    );
    // Events from before the startup load is done are kept and acted on.
    let events = config.host.watch.then(|| folder.events());
    let refused = folder.load_all(config).await?;
    let watcher = events.map(|events| {
        tracing::info!(dir = %dir.display(), "watching the plugin folder for changes");
        tokio::spawn(folder.watch(events))
    });
    Ok(Host {
        supervisor,
        refused,
        cluster,
        watcher,
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
    let addr = listener.local_addr()?;
    // The admin API answers from before the first plugin loads: /healthz at
    // once, /readyz and messages with `loading` until the load is over.
    let mut server = None;
    // READY=1 goes with the admin API's first answer (crate::systemd).
    let mut systemd = None;
    let host = start_loaded(&config, &opts, |supervisor, cluster| {
        let mut app = crate::admin::router(supervisor.clone());
        if let Some(cluster) = cluster {
            app = app.layer(axum::middleware::from_fn_with_state(
                cluster.clone(),
                crate::cluster::middleware,
            ));
        }
        if let Some(token) = opts.admin_token.clone() {
            app = crate::admin::require_token(app, token);
        }
        server = Some(tokio::spawn(crate::admin::serve(listener, app)));
        tracing::info!(%addr, "admin API listening on http://{addr}");
        systemd = Some(crate::systemd::Systemd::ready(supervisor));
    })
    .await;
    let host = match host {
        Ok(host) => host,
        Err(e) => {
            if let Some(server) = server {
                server.abort();
            }
            return Err(e);
        }
    };

    let gave_up = tokio::select! {
        _ = wait_for_signal() => None,
        why = host.supervisor.budget().exhausted() => Some(why),
    };
    match &gave_up {
        None => tracing::info!("shutting down: press Ctrl-C again to exit at once"),
        Some(why) => tracing::error!("giving up: {why}; stopping every plugin"),
    }
    if let Some(systemd) = &mut systemd {
        systemd.stopping(&match &gave_up {
            None => "stopping: finishing calls in flight".to_string(),
            Some(why) => format!("giving up: {why}"),
        });
    }
    tokio::spawn(async {
        wait_for_signal().await;
        // Written from a thread of its own: a stderr nobody reads must not
        // keep the host from exiting.
        std::thread::spawn(|| {
            eprintln!("second signal: exiting at once (committed state is intact)")
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::process::exit(130);
    });
    // A cluster node hands its units over first, with the admin API up to
    // forward what arrives meanwhile (DESIGN.md, "Cluster, precisely").
    if let Some(cluster) = &host.cluster {
        cluster.drain().await;
    }
    host.shutdown().await;
    if let Some(server) = server {
        server.abort();
    }
    let backend = Arc::clone(host.supervisor.backend());
    drop(host);
    drop(backend);
    tracing::info!("stopped");
    match gave_up {
        None => Ok(()),
        Some(why) => Err(GaveUp(why).into()),
    }
}

/// `wasm-sup run` ended because the host's restart budget was exhausted.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GaveUp(pub String);

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
