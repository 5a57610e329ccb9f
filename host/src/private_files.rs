//! Files and folders only the user running wasm-sup may read: everything the
//! host writes of its own (the state file, coredumps, the compile cache and
//! rollback markers, in `DIR/.wasm-sup` by default) is created through this
//! module, folders 0700 and files 0600. They hold plugin state and memory
//! images, which other users of the machine have no business reading.
//!
//! A folder that exists already keeps its mode (it may be one the operator
//! chose for `[host] state`); a file is made owner-only whenever it is opened
//! or written here, so files left by an older version are tightened too.
//! Unix only, like the rest of the host.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of every file the host writes.
pub const FILE_MODE: u32 = 0o600;
/// The mode of every folder the host creates.
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` and its missing parents, owner-only.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// Opens `path` to read and write, creating it if missing, and makes it
/// owner-only. `truncate` empties it; otherwise its contents are kept.
pub fn open(path: &Path, truncate: bool) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .mode(FILE_MODE)
        .open(path)?;
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

/// Writes `parts` to `path` through `tmp` (written, synced, renamed over
/// `path`), so that a reader never sees half a file. `tmp` is removed if
/// anything fails.
pub fn write(path: &Path, tmp: &Path, parts: &[&[u8]]) -> io::Result<()> {
    let result = (|| {
        let mut f = open(tmp, true)?;
        for p in parts {
            f.write_all(p)?;
        }
        f.sync_all()?;
        std::fs::rename(tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    result
}

/// The permission bits of `path` (for tests and checks).
pub fn mode(path: &Path) -> io::Result<u32> {
    Ok(std::fs::symlink_metadata(path)?.permissions().mode() & 0o777)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hole12_folders_and_files_are_owner_only() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        create_dir(&dir).unwrap();
        assert_eq!(mode(&root.path().join("a")).unwrap(), DIR_MODE);
        assert_eq!(mode(&dir).unwrap(), DIR_MODE);
        let file = dir.join("f");
        write(&file, &dir.join("f.tmp"), &[b"ab", b"c"]).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"abc");
        assert_eq!(mode(&file).unwrap(), FILE_MODE);
        assert!(!dir.join("f.tmp").exists());
        // A file made readable by everyone (an older version) is tightened
        // when it is opened, and keeps its contents.
        std::fs::set_permissions(&file, Permissions::from_mode(0o644)).unwrap();
        drop(open(&file, false).unwrap());
        assert_eq!(mode(&file).unwrap(), FILE_MODE);
        assert_eq!(std::fs::read(&file).unwrap(), b"abc");
    }
}
