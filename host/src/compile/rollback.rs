//! Rollback markers: which version of a plugin was rolled back, kept on disk
//! (`cache/rollbacks/NAME.json`) so that the same bytes are not started again
//! until the file changes, across host restarts too. The good version itself
//! is kept in the compile cache. Markers are owner-only files
//! ([`crate::private_files`]).

use crate::private_files;
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
        private_files::create_dir(parent)?;
    }
    let json = serde_json::to_vec(marker).expect("a marker serializes");
    private_files::write(&p, &p.with_extension("json.tmp"), &[&json])
}

/// Forgets `plugin`'s marker (its file changed).
pub fn clear(cache_dir: &Path, plugin: &str) {
    let _ = std::fs::remove_file(path(cache_dir, plugin));
}

/// The first 12 hex digits of a SHA-256, for log lines.
pub fn short(sha256: &str) -> &str {
    &sha256[..sha256.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hole12_markers_are_owner_only_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let marker = Rollback {
            bad_sha256: "b".repeat(64),
            good_sha256: "g".repeat(64),
            reason: "crashed in probation".into(),
            time_ms: 1,
        };
        write(&cache, "p", &marker).unwrap();
        assert_eq!(read(&cache, "p"), Some(marker));
        let mode = |p: &Path| private_files::mode(p).unwrap();
        assert_eq!(mode(&cache), private_files::DIR_MODE);
        assert_eq!(mode(&cache.join("rollbacks")), private_files::DIR_MODE);
        assert_eq!(mode(&path(&cache, "p")), private_files::FILE_MODE);
        clear(&cache, "p");
        assert_eq!(read(&cache, "p"), None);
    }
}
