//! The startup load as senders and probes see it (DESIGN.md, "Operating it"):
//! the admin API answers while plugins still compile, `/readyz` says
//! `loading N/M` until the load is over, and a message for a plugin that is
//! still loading gets 503 `loading` with a `Retry-After`, never a hang. So
//! does a message for a file dropped in later, while it settles and compiles.

use std::collections::BTreeSet;
use std::time::Duration;

/// What a sender to a plugin still loading is told to wait.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The state of the startup load.
#[derive(Debug)]
pub(super) struct Loading {
    /// Whether the startup load is under way.
    active: bool,
    /// Whether the folder has been read (the names below are known).
    found: bool,
    /// Plugins found and not yet started or refused.
    waiting: BTreeSet<String>,
    total: usize,
    /// Files added after the startup load, settling or compiling.
    arriving: BTreeSet<String>,
}

impl Loading {
    /// No load under way: a supervisor used without a folder is ready as soon
    /// as its plugins run.
    pub(super) fn idle() -> Loading {
        Loading {
            active: false,
            found: false,
            waiting: BTreeSet::new(),
            total: 0,
            arriving: BTreeSet::new(),
        }
    }

    pub(super) fn begin(&mut self) {
        self.reset(true);
    }

    pub(super) fn found(&mut self, names: impl IntoIterator<Item = String>) {
        self.waiting = names.into_iter().collect();
        self.total = self.waiting.len();
        self.found = true;
    }

    pub(super) fn done_with(&mut self, name: &str) {
        self.waiting.remove(name);
    }

    pub(super) fn end(&mut self) {
        self.reset(false);
    }

    /// A startup load begins (`active`) or is over; the files arriving
    /// after it are kept either way.
    fn reset(&mut self, active: bool) {
        self.active = active;
        self.found = false;
        self.waiting.clear();
        self.total = 0;
    }

    /// The files added since the startup load that are not loaded yet.
    pub(super) fn arriving(&mut self, names: BTreeSet<String>) {
        self.arriving = names;
    }

    /// Whether `name` is a file added since the startup load, still loading.
    pub(super) fn is_arriving(&self, name: &str) -> bool {
        self.arriving.contains(name)
    }

    /// `(loaded, total)` while the load is under way.
    pub(super) fn progress(&self) -> Option<(usize, usize)> {
        self.active
            .then(|| (self.total - self.waiting.len(), self.total))
    }

    /// Whether a message for `name`, which has no child yet, should be told
    /// to come back: it is still loading, or the folder is not read yet.
    pub(super) fn holds(&self, name: &str) -> bool {
        (self.active && (!self.found || self.waiting.contains(name))) || self.is_arriving(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_and_who_is_held() {
        let mut l = Loading::idle();
        assert_eq!(l.progress(), None);
        assert!(!l.holds("a"));
        l.begin();
        assert!(
            l.holds("anything"),
            "before the folder is read, any name may come"
        );
        l.found(["a".to_string(), "b".to_string()]);
        assert_eq!(l.progress(), Some((0, 2)));
        assert!(l.holds("a") && !l.holds("zzz"));
        l.done_with("a");
        assert_eq!(l.progress(), Some((1, 2)));
        assert!(!l.holds("a"));
        l.end();
        assert_eq!(l.progress(), None);
        assert!(!l.holds("b"));
    }
}
