//! Where an error is: every configuration error reads
//! ``FILE:LINE: [TABLE] key `K`: message``.
//!
//! The place comes from the parser, never from scanning the text: an error
//! while deserializing carries its byte span (from toml) and its key path
//! (from `serde_path_to_error`), and an error found after parsing carries the
//! span of a [`toml::Spanned`] value. Dotted keys (`restart.initial = "1s"`)
//! and inline tables (`restart = { initial = "1s" }`) are placed like any
//! other key, and named by the table they belong to (`[defaults.restart]`).
//! This module owns the format of the message and nothing else.

use anyhow::Result;
use serde::de::DeserializeOwned;
use std::ops::Range;
use std::path::Path;

/// Which kind of file is parsed: it decides which keys are tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `DIR/wasm-sup.toml`: `[host]`, `[defaults]`, `[plugins.NAME]`, `[groups.NAME]`.
    Host,
    /// `DIR/NAME.toml`: the keys of one plugin at the top level.
    Plugin,
}

/// The plugin keys that are tables of their own (`[defaults.restart]`).
pub(super) const PLUGIN_SUBTABLES: [&str; 3] = ["restart", "health", "state"];

/// Parses one TOML file into `T`; errors read ``FILE:LINE: [TABLE] key `K`: message``.
pub fn parse_file<T: DeserializeOwned>(path: &Path, src: &str, kind: FileKind) -> Result<T> {
    let de = toml::Deserializer::parse(src).map_err(|e| syntax(path, src, &e))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let keys: Vec<String> = e
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Unknown => Some("?".to_string()),
                _ => None,
            })
            // The fields `Spanned` reads its value through.
            .filter(|k| !k.starts_with("$__serde_spanned"))
            .collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let (table, key) = split(&keys, kind);
        anyhow::anyhow!(at(
            path,
            src,
            e.inner().span(),
            &table.join("."),
            key,
            e.inner().message().trim()
        ))
    })
}

/// A file that is not TOML: the parser's message at its line, with the
/// line's text (the parser knows no key yet; the text shows which one).
fn syntax(path: &Path, src: &str, e: &toml::de::Error) -> anyhow::Error {
    let text = e
        .span()
        .and_then(|span| src.lines().nth(line(src, span.start) - 1))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let what = match text {
        Some(t) if t.chars().count() > 60 => {
            format!(
                "not valid TOML (`{}…`)",
                t.chars().take(60).collect::<String>()
            )
        }
        Some(t) => format!("not valid TOML (`{t}`)"),
        None => "not valid TOML".to_string(),
    };
    anyhow::anyhow!(at(
        path,
        src,
        e.span(),
        "",
        None,
        &format!("{what}: {}", e.message().trim())
    ))
}

/// Splits a key path into the table it is in and the key: tables are the
/// top-level keys of `wasm-sup.toml`, `plugins.NAME` and `groups.NAME`, and a
/// plugin's `restart`, `health` and `state`; what follows the key (the index
/// of a `dirs` entry, an entry of `config`) names no table.
fn split<'k>(keys: &[&'k str], kind: FileKind) -> (Vec<&'k str>, Option<&'k str>) {
    if kind == FileKind::Host && keys.len() == 1 {
        // A top-level key of wasm-sup.toml is a table, known or not.
        return (keys.to_vec(), None);
    }
    let is_table = |prefix: &[&str]| match (kind, prefix) {
        (FileKind::Host, [_]) | (FileKind::Host, ["plugins" | "groups", _]) => true,
        (FileKind::Host, ["defaults", sub]) | (FileKind::Host, ["plugins", _, sub]) => {
            PLUGIN_SUBTABLES.contains(sub)
        }
        (FileKind::Plugin, [sub]) => PLUGIN_SUBTABLES.contains(sub),
        _ => false,
    };
    let mut n = 0;
    while n + 1 < keys.len() && is_table(&keys[..=n]) {
        n += 1;
    }
    (keys[..n].to_vec(), keys.get(n).copied())
}

/// ``FILE:LINE: [TABLE] key `K`: message``, leaving out what is unknown.
pub fn at(
    path: &Path,
    src: &str,
    span: Option<Range<usize>>,
    table: &str,
    key: Option<&str>,
    message: &str,
) -> String {
    let mut s = path.display().to_string();
    if let Some(span) = span {
        s += &format!(":{}", line(src, span.start));
    }
    s.push(':');
    if !table.is_empty() {
        s += &format!(" [{table}]");
    }
    if let Some(key) = key {
        s += &format!(" key `{key}`");
    }
    if table.is_empty() && key.is_none() {
        // `FILE:LINE: message`, not `FILE:LINE:: message`.
        s.pop();
    }
    format!("{s}: {message}")
}

/// The 1-based line of byte `offset` of `src`.
fn line(src: &str, offset: usize) -> usize {
    let end = offset.min(src.len());
    src.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_split_into_table_and_key() {
        use FileKind::*;
        let cases: &[(FileKind, &[&str], &str, Option<&str>)] = &[
            (Host, &["default"], "default", None),
            (Host, &["host", "admin"], "host", Some("admin")),
            (
                Host,
                &["defaults", "restart", "max"],
                "defaults.restart",
                Some("max"),
            ),
            (Host, &["defaults", "restart"], "defaults", Some("restart")),
            (
                Host,
                &["defaults", "dirs", "mode"],
                "defaults",
                Some("dirs"),
            ),
            (
                Host,
                &["defaults", "config", "n"],
                "defaults",
                Some("config"),
            ),
            (
                Host,
                &["plugins", "a", "state", "max-keys"],
                "plugins.a.state",
                Some("max-keys"),
            ),
            (
                Host,
                &["plugins", "a", "memory"],
                "plugins.a",
                Some("memory"),
            ),
            (Host, &["groups", "g", "window"], "groups.g", Some("window")),
            (Plugin, &["memroy"], "", Some("memroy")),
            (Plugin, &["restart", "max"], "restart", Some("max")),
            (Plugin, &["env", "LANG"], "", Some("env")),
        ];
        for (kind, keys, table, key) in cases {
            let (t, k) = split(keys, *kind);
            assert_eq!((t.join(".").as_str(), k), (*table, *key), "{keys:?}");
        }
    }

    #[test]
    fn lines_count_from_one() {
        assert_eq!(line("a\nb\nc", 0), 1);
        assert_eq!(line("a\nb\nc", 2), 2);
        assert_eq!(line("a\nb\nc", 99), 3);
    }
}
