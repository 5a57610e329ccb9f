//! A file's way to a running plugin, the same at startup ([`super::boot`])
//! and later ([`super::reconcile`]):
//!
//! - [`load_file`] reads it through the folder capability (never past
//!   `[host] max-plugin-file`, see [`crate::discovery::PluginDir::read`]),
//!   honours a rollback marker, and compiles through the cache. Blocking: the
//!   callers run it with [`blocking`] on tokio's blocking pool.
//! - [`Folder::admit`] turns what it loaded into a new plugin: refused while
//!   the instance pool is full, otherwise counted, cleared of an earlier
//!   refusal, announced and started.
//!
//! It does not log refusals: the callers do, at startup in the summary and
//! later once per trouble (see [`super::notes`]).

use super::{Folder, Known};
use crate::compile::rollback::{self, Rollback};
use crate::compile::{Loaded, Loader, Origin, sha256_hex};
use crate::discovery::{Found, PluginDir, PluginSpec};
use anyhow::{Result, anyhow};
use std::path::Path;

/// The outcome of loading a file.
pub(super) enum FileLoad {
    /// The file holds the bytes already loaded: nothing to do.
    Unchanged,
    /// A component to run.
    Ready(Ready),
}

/// A component loaded from a file, ready to run.
pub(super) struct Ready {
    /// The component to run: the file's, or the good version a rollback
    /// marker names when the file still holds the rolled-back one.
    pub(super) loaded: Loaded,
    /// SHA-256 of the file's bytes.
    pub(super) file_sha256: String,
    /// The marker, when the good version is loaded instead of the file.
    pub(super) rolled_back: Option<Rollback>,
}

/// Loads `found`; `current` is the SHA-256 of the bytes already running.
pub(super) fn load_file(
    dir: &PluginDir,
    loader: &Loader,
    cache_dir: &Path,
    found: &Found,
    current: Option<&str>,
) -> Result<FileLoad> {
    let bytes = dir.read(found)?;
    let file_sha256 = sha256_hex(&bytes);
    if current == Some(file_sha256.as_str()) {
        return Ok(FileLoad::Unchanged);
    }
    if let Some(marker) = rollback::read(cache_dir, &found.name) {
        if marker.bad_sha256 != file_sha256 {
            // The file changed since the rollback: try it.
            rollback::clear(cache_dir, &found.name);
        } else if let Some(good) = loader.load_cached(&marker.good_sha256) {
            tracing::warn!(
                plugin = %found.name,
                "{} holds version {}, which was rolled back ({}): running version {} from the compile cache; replace the file with a fixed build",
                found.path.display(),
                rollback::short(&marker.bad_sha256),
                marker.reason,
                rollback::short(&marker.good_sha256),
            );
            return Ok(FileLoad::Ready(Ready {
                loaded: Loaded {
                    compiled: good,
                    origin: Origin::Cache,
                    rebuilt: None,
                    on_demand: None,
                },
                file_sha256,
                rolled_back: Some(marker),
            }));
        } else {
            tracing::warn!(
                plugin = %found.name,
                "{} holds version {}, which was rolled back, but the good version is no longer in the compile cache: starting the file's version",
                found.path.display(),
                rollback::short(&marker.bad_sha256),
            );
            rollback::clear(cache_dir, &found.name);
        }
    }
    let loaded = loader
        .load(&bytes)
        .map_err(|e| anyhow!("{}: {e:#}", found.path.display()))?;
    Ok(FileLoad::Ready(Ready {
        loaded,
        file_sha256,
        rolled_back: None,
    }))
}

/// Runs a load on tokio's blocking pool; a panic in it is an error of that
/// file, not the end of the watcher.
pub(super) async fn blocking(
    load: impl FnOnce() -> Result<FileLoad> + Send + 'static,
) -> Result<FileLoad> {
    tokio::task::spawn_blocking(load)
        .await
        .unwrap_or_else(|e| Err(anyhow!("loading it failed: {e}")))
}

impl Folder {
    /// The one way a loaded component becomes a new plugin, at startup and
    /// later. While the instance pool is full it is not started and the
    /// reason is returned, for the caller to refuse the file. Otherwise it is
    /// taken as [`Folder::accept_load`] says, `announce` logs it (given where
    /// the code came from), and it starts and is remembered.
    pub(super) fn admit(
        &mut self,
        spec: &PluginSpec,
        found: &Found,
        ready: Ready,
        announce: impl FnOnce(Origin),
    ) -> Result<(), String> {
        if let Some(why) = self.pool_full() {
            return Err(why);
        }
        let Ready {
            loaded,
            file_sha256,
            rolled_back,
        } = ready;
        self.accept_load(&spec.name, found, &loaded);
        announce(loaded.origin);
        self.supervisor
            .start_plugin(spec, loaded.compiled, rolled_back);
        self.known.insert(
            spec.name.clone(),
            Known {
                signature: found.signature,
                sha256: file_sha256,
                loaded: true,
                config: Some(spec.config.clone()),
            },
        );
        Ok(())
    }

    /// A file loaded well, for a new plugin or an upgrade: counted in the
    /// compile cache metric (a rebuilt entry logged), and no longer refused.
    pub(super) fn accept_load(&mut self, plugin: &str, found: &Found, loaded: &Loaded) {
        self.note_load(plugin, loaded);
        self.clear_refusal(&found.path);
        self.publish_refused();
    }

    /// Why one more plugin cannot start: every slot of the instance pool is
    /// taken (each plugin holds one instance).
    fn pool_full(&self) -> Option<String> {
        let pool = self.host.instance_pool;
        (pool > 0 && self.supervisor.plugin_count() >= pool as usize).then(|| {
            format!(
                "not started: the instance pool is full ({pool} plugins running; [host] instance-pool = {pool}): raise instance-pool in wasm-sup.toml and restart the host, or remove a plugin"
            )
        })
    }

    /// Counts a load in the compile cache metric; logs a rebuilt entry.
    fn note_load(&self, plugin: &str, loaded: &Loaded) {
        if let Some(why) = &loaded.rebuilt {
            tracing::warn!(plugin, "compile cache entry rebuilt: {why}");
        }
        if let Some(why) = &loaded.on_demand {
            tracing::warn!(
                plugin,
                "runs outside the instance pool, on the on-demand engine (slower restarts): {why}"
            );
        }
        let result = match (loaded.origin, &loaded.rebuilt) {
            (Origin::Memory, _) => "shared",
            (Origin::Cache, _) => "hit",
            (Origin::Compiled, Some(_)) => "rebuilt",
            (Origin::Compiled, None) => "miss",
        };
        self.supervisor
            .metrics()
            .compile_cache
            .get_or_create(&crate::metrics::CacheLabels { result })
            .inc();
    }
}
