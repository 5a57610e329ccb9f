//! Loading one plugin file: read it through the folder capability (never past
//! `[host] max-plugin-file`, see [`crate::discovery::PluginDir::read`]),
//! honour a rollback marker, and compile through the cache. Blocking; the
//! callers run it on tokio's blocking pool.

use crate::compile::{Loaded, Loader, Origin, sha256_hex};
use crate::discovery::{Found, PluginDir};
use crate::supervisor::rollback::{self, Rollback};
use anyhow::{Result, anyhow};
use std::path::Path;

/// The outcome of loading a file.
pub(super) enum FileLoad {
    /// The file holds the bytes already loaded: nothing to do.
    Unchanged,
    /// A component to run.
    Ready {
        /// The component to run: the file's, or the good version a rollback
        /// marker names when the file still holds the rolled-back one.
        loaded: Loaded,
        /// SHA-256 of the file's bytes.
        file_sha256: String,
        /// The marker, when the good version is loaded instead of the file.
        rolled_back: Option<Rollback>,
    },
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
            return Ok(FileLoad::Ready {
                loaded: Loaded {
                    compiled: good,
                    origin: Origin::Cache,
                    rebuilt: None,
                    on_demand: None,
                },
                file_sha256,
                rolled_back: Some(marker),
            });
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
    Ok(FileLoad::Ready {
        loaded,
        file_sha256,
        rolled_back: None,
    })
}
