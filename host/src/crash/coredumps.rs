//! Wasm coredumps of crashed instances (`[host] coredumps = "SIZE"`): one file
//! per crash, `PLUGIN-REPORTID.coredump`, in the coredump folder, the oldest
//! deleted once the folder is over its budget. Written by the crash report's
//! task ([`super::store::write_report`]), off the restart path. Open one with
//! any tool that reads the wasm coredump format (e.g. `wasmgdb`). The folder
//! and its files are owner-only ([`crate::private_files`]): a coredump holds
//! the guest's memory.

use crate::private_files;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Stores one coredump and trims the folder to `budget` bytes. Returns the
/// file, or `None` when the dump alone is over the budget.
pub fn store(
    dir: &Path,
    budget: u64,
    plugin: &str,
    id: u64,
    dump: &[u8],
) -> Result<Option<PathBuf>> {
    if dump.len() as u64 > budget {
        tracing::warn!(
            size = dump.len(),
            budget,
            "coredump larger than the coredumps budget; not kept"
        );
        return Ok(None);
    }
    private_files::create_dir(dir)
        .with_context(|| format!("failed to create coredump folder {}", dir.display()))?;
    let path = dir.join(format!("{plugin}-{id}.coredump"));
    private_files::write(&path, &path.with_extension("coredump.tmp"), &[dump])
        .with_context(|| format!("failed to write {}", path.display()))?;
    trim(dir, budget)?;
    Ok(path.exists().then_some(path))
}

/// Deletes the oldest coredumps until the folder holds at most `budget` bytes.
fn trim(dir: &Path, budget: u64) -> Result<()> {
    let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "coredump"))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((m.modified().ok()?, m.len(), e.path()))
        })
        .collect();
    files.sort();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    for (_, len, path) in files {
        if total <= budget {
            break;
        }
        std::fs::remove_file(&path)
            .with_context(|| format!("failed to delete {}", path.display()))?;
        total -= len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::private_files;

    #[test]
    fn keeps_the_newest_within_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let a = super::store(dir.path(), 25, "p", 1, &[0; 10])
            .unwrap()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = super::store(dir.path(), 25, "p", 2, &[0; 10])
            .unwrap()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let c = super::store(dir.path(), 25, "p", 3, &[0; 10])
            .unwrap()
            .unwrap();
        assert!(!a.exists() && b.exists() && c.exists());
        assert_eq!(private_files::mode(&c).unwrap(), private_files::FILE_MODE);
        assert_eq!(
            super::store(dir.path(), 25, "p", 4, &[0; 26]).unwrap(),
            None
        );
    }
}
