//! Plugin names: what a valid one is, and [`PluginName`], a name that has
//! been checked.
//!
//! A plugin's name is its file stem, 1–64 characters of `[a-z0-9_-]` starting
//! with a letter or digit; `wasm-sup` is reserved. Group names follow the same
//! rules. This module is a leaf: it imports nothing from the crate, so
//! configuration, discovery and the admin API can all use it.

use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::fmt;
use std::path::Path;

/// Longest plugin name, in bytes (all of them ASCII).
pub const MAX_NAME_LEN: usize = 64;

/// Checks a plugin (or group) name; the error says what a valid name is.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    let first_ok = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if name.is_empty() || name.len() > MAX_NAME_LEN || !ok_chars || !first_ok {
        return Err(format!(
            "{name:?} is not a valid plugin name: use 1-64 characters of a-z, 0-9, _ and -, starting with a letter or digit"
        ));
    }
    if name == "wasm-sup" {
        return Err("\"wasm-sup\" is reserved: rename the file".to_string());
    }
    Ok(())
}

/// The plugin name of a file called `file_name`: `None` if it is not a
/// `.wasm` file, else the name or why the file cannot be a plugin.
pub fn name_of(file_name: &str) -> Option<Result<String, String>> {
    let (stem, ext) = file_name.rsplit_once('.')?;
    if !ext.eq_ignore_ascii_case("wasm") {
        return None;
    }
    if ext != "wasm" {
        return Some(Err(format!(
            "the extension must be `.wasm` in lower case: rename it to {stem}.wasm"
        )));
    }
    Some(validate_name(stem).map(|()| stem.to_string()))
}

/// The plugin name a file at `path` would have, or why it cannot be one.
pub fn plugin_name(path: &Path) -> Result<String, String> {
    let file_name = path
        .file_name()
        .and_then(|s| s.to_str())
        .ok_or_else(|| "the file name is not UTF-8".to_string())?;
    name_of(file_name).unwrap_or_else(|| Err("a plugin file is named NAME.wasm".to_string()))
}

/// A valid plugin name: it can only be built through [`validate_name`].
///
/// Deserializes from a string (refusing an invalid one), serializes as one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct PluginName(String);

/// Why a string is not a [`PluginName`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidName(pub String);

impl fmt::Display for InvalidName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidName {}

impl PluginName {
    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a `String`.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl TryFrom<String> for PluginName {
    type Error = InvalidName;
    fn try_from(s: String) -> Result<Self, InvalidName> {
        validate_name(&s).map_err(InvalidName)?;
        Ok(PluginName(s))
    }
}

impl TryFrom<&str> for PluginName {
    type Error = InvalidName;
    fn try_from(s: &str) -> Result<Self, InvalidName> {
        PluginName::try_from(s.to_string())
    }
}

impl std::str::FromStr for PluginName {
    type Err = InvalidName;
    fn from_str(s: &str) -> Result<Self, InvalidName> {
        PluginName::try_from(s)
    }
}

impl Serialize for PluginName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl fmt::Display for PluginName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for PluginName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for PluginName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<PluginName> for String {
    fn from(n: PluginName) -> String {
        n.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_plugin_name_is_checked_when_built_and_read() {
        let n: PluginName = "counter".parse().unwrap();
        assert_eq!((n.as_str(), n.to_string()), ("counter", "counter".into()));
        let set: std::collections::BTreeSet<PluginName> = [n.clone()].into();
        assert!(
            set.contains("counter"),
            "Borrow<str> looks names up by &str"
        );
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"counter\"");
        assert_eq!(
            serde_json::from_str::<PluginName>("\"counter\"").unwrap(),
            n
        );
        let e = serde_json::from_str::<PluginName>("\"Counter\"").unwrap_err();
        assert!(e.to_string().contains("not a valid plugin name"), "{e}");
        assert!(PluginName::try_from("wasm-sup").is_err());
    }

    #[test]
    fn file_names() {
        assert_eq!(
            plugin_name(Path::new("d/counter.wasm")),
            Ok("counter".into())
        );
        assert!(
            plugin_name(Path::new("x.WASM"))
                .unwrap_err()
                .contains("rename it to x.wasm")
        );
        assert!(plugin_name(Path::new("x.txt")).is_err());
        assert_eq!(name_of("notes.txt"), None);
    }
}
