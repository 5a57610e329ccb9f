//! "Log once" bookkeeping of the watcher: the refusals and errors it has
//! logged, by what they are about ([`Topic`]), so that the folder's rescans
//! every few seconds do not repeat them. A trouble is logged again only when
//! its line changes, or after it was resolved and came back.
//!
//! Owns only the memory of what was logged; what is refused, and the
//! `plugins_refused` gauge, belong to [`super::Folder`].

use std::collections::BTreeMap;
use std::path::PathBuf;

/// What a logged trouble is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Topic {
    /// `wasm-sup.toml` as a whole (or a `NAME.toml` that fails to load).
    Config,
    /// `[host]` or `[groups]` changed: they take effect only at a restart.
    Host,
    /// The plugin folder cannot be read.
    Folder,
    /// One plugin's configuration.
    PluginConfig(String),
    /// One file in the folder.
    File(PathBuf),
}

/// The line last logged about each topic still in trouble.
#[derive(Debug, Default)]
pub(super) struct Notes {
    logged: BTreeMap<Topic, String>,
}

impl Notes {
    /// Logs `line` at error level unless it is what was last logged about
    /// `topic`.
    pub(super) fn error_once(&mut self, topic: Topic, line: String) {
        if self.logged.get(&topic) != Some(&line) {
            tracing::error!("{line}");
            self.logged.insert(topic, line);
        }
    }

    /// Logs `line` at warning level unless it is what was last logged about
    /// `topic`.
    pub(super) fn warn_once(&mut self, topic: Topic, line: &str) {
        if self.logged.get(&topic).map(String::as_str) != Some(line) {
            tracing::warn!("{line}");
            self.logged.insert(topic, line.to_string());
        }
    }

    /// `topic`'s trouble is over: the next one is logged again. Returns
    /// whether there was one.
    pub(super) fn resolved(&mut self, topic: &Topic) -> bool {
        self.logged.remove(topic).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::{Notes, Topic};
    use std::path::PathBuf;

    #[test]
    fn a_trouble_is_remembered_until_resolved() {
        let mut notes = Notes::default();
        let file = Topic::File(PathBuf::from("d/a.wasm"));
        notes.error_once(file.clone(), "refused d/a.wasm: bad".into());
        assert_eq!(
            notes.logged.get(&file).map(String::as_str),
            Some("refused d/a.wasm: bad")
        );
        // Topics do not collide, even when their text would.
        assert!(!notes.resolved(&Topic::PluginConfig("a".into())));
        assert!(!notes.resolved(&Topic::Config));
        notes.warn_once(Topic::Host, "host changed");
        assert!(notes.resolved(&Topic::Host));
        assert!(!notes.resolved(&Topic::Host));
        assert!(notes.resolved(&file));
        assert!(!notes.resolved(&file));
    }
}
