//! Discovery: the plugin directory into a list of [`PluginSpec`]s.
//!
//! Owns what counts as a plugin file; what counts as a plugin name (the file
//! stem) is [`crate::name`]'s. The folder is read through a cap-std [`Dir`]
//! handle, so a symlink is followed only while it stays inside DIR. What is in
//! the folder, and what happens to it:
//!
//! - `NAME.wasm`, a regular file or a symlink to one inside DIR: a plugin.
//! - A file whose name starts with `.` (editors' and `rsync`'s temporary
//!   files, the state folder `.wasm-sup`), other extensions, and
//!   sub-folders: ignored.
//! - Refused, with one line saying why: a `.wasm` name that is not a valid
//!   plugin name, an extension in another case (`NAME.WASM`), a symlink that
//!   leads outside DIR or nowhere, a `NAME.wasm` that is not a regular file,
//!   a file that cannot be read, and one larger than `[host] max-plugin-file`
//!   (never read past the limit).

use crate::config::values::format_size;
use crate::config::{Config, PluginConfig};
use crate::name::name_of;
/// Re-exported from [`crate::name`], where plugin naming lives.
use cap_std::fs::{Dir, MetadataExt};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// One plugin to load: its file and its resolved configuration.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// The plugin's name (file stem).
    pub name: String,
    /// The `.wasm` file.
    pub path: PathBuf,
    /// Resolved settings.
    pub config: PluginConfig,
}

/// A file that was not loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The file.
    pub path: PathBuf,
    /// One line: what is wrong and how to fix it.
    pub reason: String,
}

/// What identifies one state of a file without reading it: when any of these
/// change, the file is read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    /// Size in bytes.
    pub len: u64,
    /// Last modification.
    pub modified: Option<SystemTime>,
    /// Inode (changes when a file is replaced by `mv`).
    pub ino: u64,
}

/// A plugin file found in DIR.
#[derive(Debug, Clone)]
pub struct Found {
    /// The plugin's name.
    pub name: String,
    /// DIR/NAME.wasm.
    pub path: PathBuf,
    /// Its signature when scanned.
    pub signature: Signature,
}

/// One look at the plugin directory.
#[derive(Debug)]
pub struct Scan {
    /// Plugin files, in name order.
    pub found: Vec<Found>,
    /// Files that look like plugins but cannot be, with why.
    pub refused: Vec<Refused>,
}

/// The plugin directory, opened as a capability: nothing outside it is read.
#[derive(Debug)]
pub struct PluginDir {
    path: PathBuf,
    dir: Dir,
    max_file: u64,
}

impl PluginDir {
    /// Opens `path`, whose plugin files are read up to `max_file` bytes
    /// (`[host] max-plugin-file`).
    pub fn open(path: &Path, max_file: u64) -> std::io::Result<PluginDir> {
        Ok(PluginDir {
            path: path.to_path_buf(),
            dir: Dir::open_ambient_dir(path, cap_std::ambient_authority())?,
            max_file,
        })
    }

    /// Lists the plugin files, and refuses what cannot be one.
    pub fn scan(&self) -> std::io::Result<Scan> {
        let mut found = Vec::new();
        let mut refused = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for entry in self.dir.entries()? {
            let Ok(entry) = entry else { continue };
            match entry.file_name().into_string() {
                Ok(n) => names.push(n),
                Err(raw) => {
                    if Path::new(&raw)
                        .extension()
                        .is_some_and(|e| e.eq_ignore_ascii_case("wasm"))
                    {
                        refused.push(Refused {
                            path: self.path.join(&raw),
                            reason: "the file name is not UTF-8: rename it to NAME.wasm".into(),
                        });
                    }
                }
            }
        }
        names.sort();
        for file_name in names {
            let path = self.path.join(&file_name);
            match self.classify(&file_name) {
                Some(Ok((name, signature))) => found.push(Found {
                    name,
                    path,
                    signature,
                }),
                Some(Err(reason)) => refused.push(Refused { path, reason }),
                None => {}
            }
        }
        Ok(Scan { found, refused })
    }

    /// A plugin (name and signature), a refusal, or `None` for a file that
    /// is not meant to be a plugin.
    fn classify(&self, file_name: &str) -> Option<Result<(String, Signature), String>> {
        if file_name.starts_with('.') {
            return None;
        }
        let stem = match name_of(file_name)? {
            Ok(stem) => stem,
            Err(why) => return Some(Err(why)),
        };
        let link = self
            .dir
            .symlink_metadata(file_name)
            .is_ok_and(|m| m.file_type().is_symlink());
        let meta = match self.dir.metadata(file_name) {
            Ok(m) => m,
            Err(e) if link && e.kind() == std::io::ErrorKind::NotFound => {
                return Some(Err(
                    "is a broken symlink: point it at a component inside the folder".into(),
                ));
            }
            Err(e) if link => {
                return Some(Err(format!(
                    "is a symlink that leads outside the plugin folder ({e}): wasm-sup follows only relative symlinks that stay inside it; copy the file in instead"
                )));
            }
            Err(e) => return Some(Err(format!("cannot read it: {e}"))),
        };
        if !meta.is_file() {
            return Some(Err("not a regular file".to_string()));
        }
        Some(Ok((
            stem.to_string(),
            Signature {
                len: meta.len(),
                modified: meta.modified().ok().map(|t| t.into_std()),
                ino: meta.ino(),
            },
        )))
    }

    /// Reads a plugin file (through the capability: a symlink that leads
    /// outside DIR is not followed), refusing one larger than
    /// `[host] max-plugin-file` without reading more than that.
    pub fn read(&self, found: &Found) -> anyhow::Result<Vec<u8>> {
        let cannot = |e: std::io::Error| {
            let fix = if e.kind() == std::io::ErrorKind::PermissionDenied {
                ": make it readable by the user running wasm-sup"
            } else {
                ""
            };
            anyhow::anyhow!("{}: cannot read the file: {e}{fix}", found.path.display())
        };
        let too_large = |len: u64| {
            anyhow::anyhow!(
                "{}: the file is {len} bytes, more than `[host] max-plugin-file` ({} = {} bytes): raise max-plugin-file in wasm-sup.toml, or make the build smaller",
                found.path.display(),
                format_size(self.max_file),
                self.max_file
            )
        };
        let mut file = self
            .dir
            .open(format!("{}.wasm", found.name))
            .map_err(cannot)?;
        let len = file.metadata().map_err(cannot)?.len();
        if len > self.max_file {
            return Err(too_large(len));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        // The file may grow while it is read: never read past the limit.
        (&mut file)
            .take(self.max_file.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(cannot)?;
        if bytes.len() as u64 > self.max_file {
            return Err(too_large(bytes.len() as u64));
        }
        Ok(bytes)
    }

    /// The folder's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What [`discover`] found: plugins to load, each with its file, and refusals.
#[derive(Debug)]
pub struct Discovered {
    /// Plugins to load, in name order.
    pub specs: Vec<(PluginSpec, Found)>,
    /// Files that cannot be plugins, with why.
    pub refused: Vec<Refused>,
}

/// Scans `config.dir` for plugins, in name order, with their configuration.
///
/// An invalid `NAME.toml` is an error: at startup a bad configuration file
/// stops the host.
pub fn discover(config: &Config, dir: &PluginDir) -> anyhow::Result<Discovered> {
    let scan = dir.scan()?;
    let mut specs = Vec::new();
    for found in scan.found {
        specs.push((
            PluginSpec {
                config: config.plugin(&found.name)?,
                name: found.name.clone(),
                path: found.path.clone(),
            },
            found,
        ));
    }
    Ok(Discovered {
        specs,
        refused: scan.refused,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HostOverrides;

    #[test]
    fn discovers_wasm_files_and_refuses_what_cannot_be_one() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(p.join("b.wasm"), b"").unwrap();
        std::fs::write(p.join("a.wasm"), b"").unwrap();
        std::fs::write(p.join("Bad Name.wasm"), b"").unwrap();
        std::fs::write(p.join("shout.WASM"), b"").unwrap();
        std::fs::write(p.join("notes.txt"), b"").unwrap();
        std::fs::write(p.join(".hidden.wasm"), b"").unwrap();
        std::fs::write(outside.path().join("x.wasm"), b"").unwrap();
        std::fs::create_dir(p.join("sub.wasm")).unwrap();
        std::fs::create_dir(p.join("folder")).unwrap();
        std::os::unix::fs::symlink("a.wasm", p.join("link.wasm")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("x.wasm"), p.join("escape.wasm")).unwrap();
        std::os::unix::fs::symlink("../x.wasm", p.join("up.wasm")).unwrap();
        std::os::unix::fs::symlink("gone.wasm", p.join("broken.wasm")).unwrap();
        let config = Config::load(p, &HostOverrides::default()).unwrap();
        let plugin_dir = PluginDir::open(p, 1 << 20).unwrap();
        let Discovered { specs, refused } = discover(&config, &plugin_dir).unwrap();
        let names: Vec<_> = specs.iter().map(|s| s.0.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "link"]);
        let why = |f: &str| {
            refused
                .iter()
                .find(|r| r.path == p.join(f))
                .map(|r| r.reason.clone())
                .unwrap_or_else(|| panic!("{f} not refused: {refused:?}"))
        };
        assert!(why("Bad Name.wasm").contains("not a valid plugin name"));
        assert!(why("shout.WASM").contains("rename it to shout.wasm"));
        assert!(why("sub.wasm").contains("not a regular file"));
        assert!(why("escape.wasm").contains("leads outside the plugin folder"));
        assert!(why("up.wasm").contains("leads outside the plugin folder"));
        assert!(why("broken.wasm").contains("broken symlink"));
        assert_eq!(refused.len(), 6, "{refused:?}");
        // A symlink inside the folder is read through.
        let link = &specs[2].1;
        assert_eq!(plugin_dir.read(link).unwrap(), b"");
    }

    #[test]
    fn a_file_over_max_plugin_file_is_refused_naming_size_limit_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(
            p.join("wasm-sup.toml"),
            "[host]\nmax-plugin-file = \"1KiB\"\n",
        )
        .unwrap();
        std::fs::write(p.join("big.wasm"), vec![0u8; 2049]).unwrap();
        std::fs::write(p.join("small.wasm"), vec![0u8; 1024]).unwrap();
        let config = Config::load(p, &HostOverrides::default()).unwrap();
        assert_eq!(config.host.max_plugin_file, 1024);
        let plugin_dir = PluginDir::open(p, config.host.max_plugin_file).unwrap();
        let Discovered { specs, .. } = discover(&config, &plugin_dir).unwrap();
        let err = plugin_dir.read(&specs[0].1).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}: the file is 2049 bytes, more than `[host] max-plugin-file` (1KiB = 1024 bytes): raise max-plugin-file in wasm-sup.toml, or make the build smaller",
                p.join("big.wasm").display()
            )
        );
        assert_eq!(plugin_dir.read(&specs[1].1).unwrap().len(), 1024);
    }
}
