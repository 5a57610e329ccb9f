//! Rollback markers: which version of a plugin was rolled back, kept on disk
//! (`cache/rollbacks/NAME.json`) so that the same bytes are not started again
//! until the file changes, across host restarts too. The good version itself
//! is kept in the compile cache.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A rolled-back upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    /// SHA-256 of the version that was rolled back.
    pub bad_sha256: String,
    /// SHA-256 of the version running instead.
    pub good_sha256: String,
    /// Why.
    pub reason: String,
    /// When, milliseconds since the Unix epoch.
    pub time_ms: u64,
}

fn path(cache_dir: &Path, plugin: &str) -> PathBuf {
    cache_dir.join("rollbacks").join(format!("{plugin}.json"))
}

/// The marker of `plugin`, if there is a readable one.
pub fn read(cache_dir: &Path, plugin: &str) -> Option<Rollback> {
    let bytes = std::fs::read(path(cache_dir, plugin)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Records a rollback of `plugin`.
pub fn write(cache_dir: &Path, plugin: &str, marker: &Rollback) -> std::io::Result<()> {
    let p = path(cache_dir, plugin);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = p.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec(marker).expect("a marker serializes"),
    )?;
    std::fs::rename(&tmp, &p)
}

/// Forgets `plugin`'s marker (its file changed).
pub fn clear(cache_dir: &Path, plugin: &str) {
    let _ = std::fs::remove_file(path(cache_dir, plugin));
}

/// The first 12 hex digits of a SHA-256, for log lines.
pub fn short(sha256: &str) -> &str {
    &sha256[..sha256.len().min(12)]
}
