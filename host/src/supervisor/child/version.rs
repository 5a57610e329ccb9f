//! Which version of a plugin runs, and which one a crash-looping upgrade goes
//! back to (DESIGN.md, "Drop-in": upgrade and rollback).
//!
//! A version is *good* when an instance of it completed `init` and, if it was
//! itself an upgrade, it outlived its `upgrade-probation` or never crashed. An
//! upgrade remembers the good version it replaced; while the new one is on
//! probation, exceeding its restart intensity rolls it back. Pure bookkeeping
//! over `Instant`s: the child writes the rollback marker and the status.

use crate::compile::Compiled;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The version running and the one to roll back to.
pub(super) struct Versions {
    /// The version the next instance starts.
    pub(super) current: Arc<Compiled>,
    /// The version to roll back to if an upgrade crash-loops.
    good: Option<Arc<Compiled>>,
    /// When the current version was upgraded to, while that matters.
    upgraded_at: Option<Instant>,
    /// Whether an instance of the current version has completed `init`.
    started_ok: bool,
    /// Whether the current version has crashed since it was upgraded to.
    crashed: bool,
}

impl Versions {
    pub(super) fn new(current: Arc<Compiled>) -> Versions {
        Versions {
            current,
            good: None,
            upgraded_at: None,
            started_ok: false,
            crashed: false,
        }
    }

    /// An instance of the current version completed `init`.
    pub(super) fn started(&mut self) {
        self.started_ok = true;
    }

    /// An instance of the current version crashed.
    pub(super) fn crashed(&mut self) {
        self.crashed = true;
    }

    /// Switches to `new`, remembering the current version as good when it
    /// is (`failed`: the plugin is failed now). Returns the version replaced.
    pub(super) fn upgrade(
        &mut self,
        new: Arc<Compiled>,
        failed: bool,
        probation: Duration,
        now: Instant,
    ) -> Arc<Compiled> {
        let proven = self
            .upgraded_at
            .is_none_or(|t| now.duration_since(t) >= probation);
        if self.started_ok && !failed && (proven || !self.crashed) {
            self.good = Some(self.current.clone());
        }
        self.upgraded_at = Some(now);
        self.started_ok = false;
        self.crashed = false;
        std::mem::replace(&mut self.current, new)
    }

    /// Whether a crash past the intensity should roll the current version back.
    pub(super) fn can_roll_back(&self, now: Instant, probation: Duration) -> bool {
        self.good.is_some()
            && self
                .upgraded_at
                .is_some_and(|t| now.duration_since(t) <= probation)
    }

    /// Goes back to the good version; returns the bad one.
    pub(super) fn roll_back(&mut self) -> Arc<Compiled> {
        let good = self.good.take().expect("can_roll_back checked it");
        self.upgraded_at = None;
        self.started_ok = true;
        self.crashed = false;
        std::mem::replace(&mut self.current, good)
    }
}
