//! The circuit breaker of one plugin (DESIGN.md, "Restart policy"): after a
//! plugin used up its intensity it is `failed` (open) for `cooldown`, then
//! tried again (half-open). One clean `init` plus `reset-after` of healthy
//! running time closes the breaker; a crash during the trial opens it again
//! with the cooldown doubled, up to `cooldown-max`. Pure logic over
//! `Instant`s, tested without a runtime.

use crate::config::RestartPolicy;
use std::time::{Duration, Instant};

/// See the module doc.
#[derive(Debug, Clone)]
pub struct Breaker {
    base: Option<Duration>,
    max: Duration,
    reset_after: Duration,
    /// The cooldown of the last opening, while the breaker is not closed.
    cooldown: Option<Duration>,
    /// When the current half-open trial began.
    trial: Option<Instant>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(policy: &RestartPolicy) -> Breaker {
        Breaker {
            base: policy.cooldown,
            max: policy.cooldown_max,
            reset_after: policy.reset_after,
            cooldown: None,
            trial: None,
        }
    }

    /// Takes new settings (a new configuration), keeping the state.
    pub fn set_policy(&mut self, policy: &RestartPolicy) {
        let state = (self.cooldown, self.trial);
        *self = Breaker::new(policy);
        (self.cooldown, self.trial) = state;
    }

    /// Opens the breaker: the plugin failed (over its intensity, or in its
    /// trial). Returns the cooldown before the next attempt, or `None` when
    /// cooldowns are off (the plugin stays failed).
    pub fn open(&mut self) -> Option<Duration> {
        let base = self.base?;
        let next = match self.cooldown {
            Some(last) => last.saturating_mul(2).min(self.max),
            None => base.min(self.max),
        };
        self.cooldown = Some(next);
        self.trial = None;
        Some(next)
    }

    /// The cooldown is over: a trial begins.
    pub fn half_open(&mut self, now: Instant) {
        self.trial = Some(now);
    }

    /// Whether a half-open trial is under way.
    pub fn in_trial(&self) -> bool {
        self.trial.is_some()
    }

    /// When a trial whose instance has run since `running_since` closes the
    /// breaker.
    pub fn closes_at(&self, running_since: Option<Instant>) -> Option<Instant> {
        self.trial?;
        Some(crate::config::instant_after(
            running_since?,
            self.reset_after,
        ))
    }

    /// Closes the breaker if the trial's instance has run healthily for
    /// `reset-after`; returns whether it did.
    pub fn close_if_due(&mut self, running_since: Option<Instant>, now: Instant) -> bool {
        match self.closes_at(running_since) {
            Some(at) if now >= at => {
                self.reset();
                true
            }
            _ => false,
        }
    }

    /// Closes the breaker and forgets its cooldown (an operator's start).
    pub fn reset(&mut self) {
        self.cooldown = None;
        self.trial = None;
    }

    /// `"open"`, `"half-open"` or `None` (closed), given whether the plugin is
    /// failed now.
    pub fn state(&self, failed: bool) -> Option<&'static str> {
        if failed && self.cooldown.is_some() {
            Some("open")
        } else if self.trial.is_some() {
            Some("half-open")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(cooldown: Option<u64>, max: u64) -> RestartPolicy {
        let mut p = crate::config::default_restart();
        p.cooldown = cooldown.map(Duration::from_secs);
        p.cooldown_max = Duration::from_secs(max);
        p.reset_after = Duration::from_secs(60);
        p
    }

    #[test]
    fn trials_that_crash_double_the_cooldown_up_to_the_max() {
        let mut b = Breaker::new(&policy(Some(60), 300));
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        assert_eq!(b.open(), Some(secs(60)));
        assert_eq!(b.state(true), Some("open"));
        b.half_open(t0);
        assert!(b.in_trial());
        assert_eq!(b.state(false), Some("half-open"));
        assert_eq!(b.open(), Some(secs(120)), "a crash in the trial doubles it");
        b.half_open(t0);
        assert_eq!(b.open(), Some(secs(240)));
        b.half_open(t0);
        assert_eq!(b.open(), Some(secs(300)), "capped at cooldown-max");
        b.half_open(t0);
        assert_eq!(b.open(), Some(secs(300)));
    }

    #[test]
    fn a_trial_that_runs_reset_after_closes_it() {
        let mut b = Breaker::new(&policy(Some(60), 600));
        let t0 = Instant::now();
        b.open();
        b.half_open(t0);
        let up = t0 + Duration::from_secs(1);
        assert_eq!(b.closes_at(Some(up)), Some(up + Duration::from_secs(60)));
        assert!(!b.close_if_due(Some(up), up + Duration::from_secs(59)));
        assert!(b.close_if_due(Some(up), up + Duration::from_secs(60)));
        assert_eq!(b.state(false), None);
        assert_eq!(b.open(), Some(Duration::from_secs(60)), "back to the base");
    }

    #[test]
    fn hole04_a_huge_reset_after_does_not_panic() {
        let mut p = policy(Some(60), 600);
        p.reset_after = Duration::MAX;
        let mut b = Breaker::new(&p);
        let t0 = Instant::now();
        b.open();
        b.half_open(t0);
        assert!(b.closes_at(Some(t0)).is_some_and(|at| at > t0));
        assert!(!b.close_if_due(Some(t0), t0 + Duration::from_secs(3600)));
    }

    #[test]
    fn cooldown_off_stays_failed() {
        let mut b = Breaker::new(&policy(None, 600));
        assert_eq!(b.open(), None);
        assert_eq!(b.state(true), None);
    }
}
