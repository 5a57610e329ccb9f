//! Discovery: the plugin directory into a list of [`PluginSpec`]s.
//!
//! Owns plugin naming: a plugin's name is its file stem, 1–64 characters of
//! `[a-z0-9_-]` starting with a letter or digit, and `wasm-sup` is reserved. A
//! file that cannot be a plugin is not an error of the directory: it comes back
//! as a [`Refused`] entry with one line saying why, and the others load.

use crate::config::{Config, PluginConfig};
use std::path::{Path, PathBuf};

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
#[derive(Debug, Clone)]
pub struct Refused {
    /// The file.
    pub path: PathBuf,
    /// One line: what is wrong and how to fix it.
    pub reason: String,
}

/// Checks a plugin (or group) name.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    let first_ok = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if name.is_empty() || name.len() > 64 || !ok_chars || !first_ok {
        return Err(format!(
            "{name:?} is not a valid plugin name: use 1-64 characters of a-z, 0-9, _ and -, starting with a letter or digit"
        ));
    }
    if name == "wasm-sup" {
        return Err("\"wasm-sup\" is reserved: rename the file".to_string());
    }
    Ok(())
}

/// Scans `config.dir` for `*.wasm` files, in name order.
///
/// Returns the specs to load and the files refused (bad names, not regular
/// files). Other files are ignored. An invalid `NAME.toml` is an error: at
/// startup a bad configuration file stops the host.
pub fn discover(config: &Config) -> anyhow::Result<(Vec<PluginSpec>, Vec<Refused>)> {
    let mut specs = Vec::new();
    let mut refused = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&config.dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .collect();
    entries.sort();
    for path in entries {
        match plugin_name(&path) {
            Ok(name) => specs.push(PluginSpec {
                config: config.plugin(&name)?,
                name,
                path,
            }),
            Err(reason) => refused.push(Refused { path, reason }),
        }
    }
    Ok((specs, refused))
}

/// The plugin name of a `.wasm` file, or why the file cannot be a plugin.
pub fn plugin_name(path: &Path) -> Result<String, String> {
    if !path.is_file() {
        return Err("not a regular file".to_string());
    }
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| "the file name is not UTF-8".to_string())?;
    validate_name(name)?;
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HostOverrides;

    #[test]
    fn names() {
        for ok in ["counter", "a", "0x", "my_plugin-2", &"a".repeat(64)] {
            assert_eq!(validate_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "Counter",
            "-x",
            "_x",
            "a.b",
            "wasm-sup",
            "naïve",
            &"a".repeat(65),
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn discovers_wasm_files_and_refuses_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.wasm"), b"").unwrap();
        std::fs::write(dir.path().join("a.wasm"), b"").unwrap();
        std::fs::write(dir.path().join("Bad Name.wasm"), b"").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"").unwrap();
        std::fs::create_dir(dir.path().join("sub.wasm")).unwrap();
        let config = Config::load(dir.path(), &HostOverrides::default()).unwrap();
        let (specs, refused) = discover(&config).unwrap();
        let names: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(refused.len(), 2);
        assert!(
            refused
                .iter()
                .any(|r| r.reason.contains("not a valid plugin name"))
        );
        assert!(
            refused
                .iter()
                .any(|r| r.reason.contains("not a regular file"))
        );
    }
}
