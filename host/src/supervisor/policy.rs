//! Restart decisions: OTP restart types, the intensity window and the backoff
//! count. Pure logic over `Instant`s, tested without a runtime.

use super::backoff;
use crate::config::{RestartPolicy, RestartType};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How an instance ended, as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// `wasi:cli/exit` with success.
    Normal,
    /// Any crash.
    Crash,
}

/// What to do after an instance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start a new instance after this delay.
    Restart(Duration),
    /// Do not restart: the restart type says so (`stopped`).
    Stop,
    /// Intensity exceeded (`failed`).
    GiveUp {
        /// Restarts counted in the window.
        restarts: u32,
        /// The window.
        window: Duration,
    },
    /// A crash in a half-open trial after a cooldown (`failed` again; see
    /// [`super::breaker`]).
    Reopen,
}

impl Decision {
    /// One line for crash reports and logs.
    pub fn describe(&self) -> String {
        match self {
            Decision::Restart(d) if d.is_zero() => "restart now".to_string(),
            Decision::Restart(d) => format!("restart in {d:?}"),
            Decision::Stop => "stop (restart type)".to_string(),
            Decision::GiveUp { restarts, window } => {
                format!("failed: {restarts} restarts within {window:?} exceed max-restarts")
            }
            Decision::Reopen => "failed: crashed in its half-open trial".to_string(),
        }
    }
}

/// The restart history of one plugin.
#[derive(Debug)]
pub struct RestartTracker {
    policy: RestartPolicy,
    /// Times of restarts within the window.
    recent: VecDeque<Instant>,
    /// Crashes since the last healthy run of `reset-after`.
    consecutive: u32,
}

impl RestartTracker {
    /// A fresh history.
    pub fn new(policy: RestartPolicy) -> RestartTracker {
        RestartTracker {
            policy,
            recent: VecDeque::new(),
            consecutive: 0,
        }
    }

    /// Decides after an instance that had been running since `up_since` ended.
    /// `unit` is a random number in `[0, 1)` for jitter.
    pub fn decide(
        &mut self,
        ending: Ending,
        now: Instant,
        up_since: Option<Instant>,
        unit: f64,
    ) -> Decision {
        let restart = match (self.policy.kind, ending) {
            (RestartType::Permanent, _) => true,
            (RestartType::Transient, Ending::Crash) => true,
            (RestartType::Transient, Ending::Normal) | (RestartType::Temporary, _) => false,
        };
        if !restart {
            return Decision::Stop;
        }
        if up_since.is_some_and(|t| now.duration_since(t) >= self.policy.reset_after) {
            self.consecutive = 0;
        }
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.policy.window)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        let restarts = self.recent.len() as u32;
        if restarts > self.policy.max_restarts {
            return Decision::GiveUp {
                restarts,
                window: self.policy.window,
            };
        }
        self.consecutive += 1;
        Decision::Restart(backoff::delay(&self.policy, self.consecutive, unit))
    }

    /// Forgets the history (an operator's start or restart).
    pub fn reset(&mut self) {
        self.recent.clear();
        self.consecutive = 0;
    }

    /// Takes a new policy (a new configuration), keeping the history.
    pub fn set_policy(&mut self, policy: RestartPolicy) {
        self.policy = policy;
    }

    /// The policy.
    pub fn policy(&self) -> &RestartPolicy {
        &self.policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackoffKind;

    fn policy() -> RestartPolicy {
        let mut p = crate::config::default_restart();
        p.jitter = 0.0;
        p
    }

    #[test]
    fn intensity_exceeded_within_window_fails() {
        let mut t = RestartTracker::new(policy());
        let t0 = Instant::now();
        let mut ds = Vec::new();
        for i in 0..6 {
            ds.push(t.decide(Ending::Crash, t0 + Duration::from_secs(i), None, 0.5));
        }
        assert_eq!(ds[0], Decision::Restart(Duration::from_millis(100)));
        assert_eq!(ds[4], Decision::Restart(Duration::from_millis(1600)));
        assert_eq!(
            ds[5],
            Decision::GiveUp {
                restarts: 6,
                window: Duration::from_secs(60)
            }
        );
    }

    #[test]
    fn restarts_outside_the_window_are_forgotten() {
        let mut t = RestartTracker::new(policy());
        let t0 = Instant::now();
        for i in 0..20 {
            let d = t.decide(Ending::Crash, t0 + Duration::from_secs(i * 13), None, 0.5);
            assert!(matches!(d, Decision::Restart(_)), "crash {i}: {d:?}");
        }
    }

    #[test]
    fn healthy_uptime_resets_the_backoff() {
        let mut t = RestartTracker::new(policy());
        let t0 = Instant::now();
        t.decide(Ending::Crash, t0, None, 0.5);
        let d = t.decide(Ending::Crash, t0 + Duration::from_secs(1), Some(t0), 0.5);
        assert_eq!(d, Decision::Restart(Duration::from_millis(200)));
        let later = t0 + Duration::from_secs(100);
        let d = t.decide(
            Ending::Crash,
            later,
            Some(later - Duration::from_secs(61)),
            0.5,
        );
        assert_eq!(d, Decision::Restart(Duration::from_millis(100)));
    }

    #[test]
    fn restart_types() {
        let now = Instant::now();
        let mut p = policy();
        p.kind = RestartType::Transient;
        let mut t = RestartTracker::new(p.clone());
        assert_eq!(t.decide(Ending::Normal, now, None, 0.5), Decision::Stop);
        assert!(matches!(
            t.decide(Ending::Crash, now, None, 0.5),
            Decision::Restart(_)
        ));
        p.kind = RestartType::Temporary;
        let mut t = RestartTracker::new(p.clone());
        assert_eq!(t.decide(Ending::Crash, now, None, 0.5), Decision::Stop);
        p.kind = RestartType::Permanent;
        p.backoff = BackoffKind::Immediate;
        let mut t = RestartTracker::new(p);
        assert_eq!(
            t.decide(Ending::Normal, now, None, 0.5),
            Decision::Restart(Duration::ZERO)
        );
    }
}
