//! What happens after an instance ended: one pure decision.
//!
//! [`judge`] combines the plugin's own policy ([`RestartTracker`]: restart
//! type, intensity, backoff), its circuit breaker ([`Breaker`]), the host's
//! restart budget ([`Budget`]), its supervision group ([`Tree`]) and the
//! upgrade rollback window into one [`Verdict`]. It reads and updates only
//! those values: no instance, no mailbox, no clock of its own, no runtime. The
//! child ([`super::child`]) carries the verdict out (reports, dead letters,
//! status, the group's job, the backoff wait) in one place.

use super::breaker::Breaker;
use super::budget::Budget;
use super::policy::{Decision, Ending, RestartTracker};
use super::status::Status;
use super::tree::{GroupRestart, Plan, Tree};
use std::time::{Duration, Instant};

/// A plugin's restart history: what the decision reads and updates.
#[derive(Debug)]
pub(super) struct Restarts {
    /// Restart type, intensity window and backoff count.
    pub(super) tracker: RestartTracker,
    /// The circuit breaker of a `failed` plugin.
    pub(super) breaker: Breaker,
}

/// How an instance ended, as the decision sees it.
#[derive(Debug, Clone)]
pub(super) struct Ended<'a> {
    /// The plugin.
    pub(super) plugin: &'a str,
    /// Normal exit or crash.
    pub(super) ending: Ending,
    /// The crash cause, or `normal-exit`.
    pub(super) cause: &'a str,
    /// One line for reasons: `cause: message`, or `normal exit`.
    pub(super) text: String,
    /// When the instance started running, if it did.
    pub(super) up_since: Option<Instant>,
    /// Now.
    pub(super) now: Instant,
    /// A random number in `[0, 1)` for the backoff's jitter.
    pub(super) jitter: f64,
    /// The current version is an upgrade still within `upgrade-probation`,
    /// with a good version to go back to.
    pub(super) can_roll_back: bool,
}

/// What the child does next.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Next {
    /// Start a new instance alone, after `delay`.
    Restart(Duration),
    /// Restart with its group: the coordinator stops the group's `stop`,
    /// waits `delay` (the crashed plugin's backoff), starts its `start` (this
    /// plugin included) in order.
    Together {
        /// The crashed plugin's backoff.
        delay: Duration,
        /// What restarts with it.
        group: GroupRestart,
    },
    /// Stop taking messages: `failed` or `stopped`, for `reason`.
    Park {
        /// `Failed` or `Stopped`.
        status: Status,
        /// Why, as the admin API shows it.
        reason: String,
        /// When a `failed` plugin is tried again (its cooldown), if it is.
        retry_at: Option<Instant>,
        /// The host's restart budget was exhausted: the error to log.
        exhausted: Option<String>,
    },
}

/// The decision after an instance ended.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Verdict {
    /// What the plugin's own policy said, for its crash report (after a
    /// rollback: restart now).
    pub(super) decision: Decision,
    /// Go back to the last good version first (its upgrade crash-looped
    /// within `upgrade-probation`).
    pub(super) roll_back: bool,
    /// What happens next.
    pub(super) next: Next,
    /// A group's auto-shutdown this normal exit sets off: the group and the
    /// members to stop.
    pub(super) shutdown: Option<(String, Vec<String>)>,
}

impl Verdict {
    /// Whether the instance will be started again (alone or with its group).
    pub(super) fn restarts(&self) -> bool {
        !matches!(self.next, Next::Park { .. })
    }

    /// Whether the message in flight, delivered `attempts` times of
    /// `max_attempts`, is dead-lettered (else it goes back to the front of
    /// the mailbox). A plugin that stops after a normal exit answers it 503
    /// `stopped` with everything queued, whatever the attempts.
    pub(super) fn dead_letters(&self, ending: Ending, attempts: u32, max_attempts: u32) -> bool {
        let stops_normally = ending == Ending::Normal && self.decision == Decision::Stop;
        !stops_normally
            && (attempts >= max_attempts || (!self.restarts() && ending == Ending::Crash))
    }
}

/// Decides what follows an instance's end (see the module doc).
pub(super) fn judge(
    restarts: &mut Restarts,
    ended: &Ended<'_>,
    budget: &Budget,
    tree: &mut Tree,
) -> Verdict {
    let now = ended.now;
    // A crash in a half-open trial opens the breaker again, unless the trial
    // had already run long enough to close it.
    let trial_crash = ended.ending == Ending::Crash
        && restarts.breaker.in_trial()
        && !restarts.breaker.close_if_due(ended.up_since, now);
    let mut decision = if trial_crash {
        Decision::Reopen
    } else {
        restarts
            .tracker
            .decide(ended.ending, now, ended.up_since, ended.jitter)
    };
    let mut roll_back = false;
    if matches!(decision, Decision::GiveUp { .. }) && ended.can_roll_back {
        roll_back = true;
        restarts.tracker.reset();
        decision = Decision::Restart(Duration::ZERO);
    }
    let shutdown = match (ended.ending, decision) {
        (Ending::Normal, Decision::Stop) => tree.on_normal_exit(ended.plugin),
        _ => None,
    };
    let next = match decision {
        Decision::Restart(delay) => restart(ended, delay, budget, tree),
        Decision::Stop => Next::Park {
            status: Status::Stopped,
            reason: format!(
                "{} (restart type {:?})",
                ended.text,
                restarts.tracker.policy().kind
            )
            .to_lowercase(),
            retry_at: None,
            exhausted: None,
        },
        Decision::GiveUp {
            restarts: n,
            window,
        } => {
            let reason = format!(
                "{n} restarts within {window:?} exceed max-restarts ({}); last: {}",
                restarts.tracker.policy().max_restarts,
                ended.text
            );
            fail(&mut restarts.breaker, now, reason)
        }
        Decision::Reopen => fail(
            &mut restarts.breaker,
            now,
            format!(
                "crashed in its half-open trial after a cooldown; last: {}",
                ended.text
            ),
        ),
    };
    Verdict {
        decision,
        roll_back,
        next,
        shutdown,
    }
}

/// A restart the policy allows: every restart counts against the host's
/// budget too (past it the plugin is not restarted); within it, the plugin's
/// group decides what restarts with it.
fn restart(ended: &Ended<'_>, delay: Duration, budget: &Budget, tree: &mut Tree) -> Next {
    let now = ended.now;
    let who = format!("plugin `{}`", ended.plugin);
    let exhausted = match budget.restart(&who, ended.cause, now) {
        Err(why) => Some(why),
        Ok(()) => {
            let plan = tree.on_restart(ended.plugin, now, |group| {
                budget
                    .restart(
                        &format!("group `{group}`, escalating"),
                        "its intensity exceeded",
                        now,
                    )
                    .is_ok()
            });
            match plan {
                Plan::Alone => return Next::Restart(delay),
                Plan::Together(group) => return Next::Together { delay, group },
                Plan::GiveUp { group } => Some(format!(
                    "group {group} escalated to the root past the host's restart budget"
                )),
            }
        }
    };
    Next::Park {
        status: Status::Stopped,
        reason: "not restarted: the host's restart budget is exhausted".to_string(),
        retry_at: None,
        exhausted,
    }
}

/// The plugin fails: opens the breaker and schedules the next attempt
/// (unless cooldowns are off); the reason says when.
fn fail(breaker: &mut Breaker, now: Instant, mut reason: String) -> Next {
    let retry_at = breaker.open().map(|cooldown| {
        reason.push_str(&format!("; next attempt in {cooldown:?} (cooldown)"));
        crate::config::instant_after(now, cooldown)
    });
    Next::Park {
        status: Status::Failed,
        reason,
        retry_at,
        exhausted: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, HostOverrides};

    /// A plugin's history under `[defaults.restart]` `settings`.
    fn history(settings: &str) -> (Restarts, Tree) {
        let config = load(&format!("[defaults.restart]\njitter = 0.0\n{settings}"));
        let policy = config.plugin("p").unwrap().restart;
        (
            Restarts {
                breaker: Breaker::new(&policy),
                tracker: RestartTracker::new(policy),
            },
            Tree::new(&config.groups),
        )
    }

    fn load(toml: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("wasm-sup.toml"), toml).unwrap();
        Config::load(dir.path(), &HostOverrides::default()).unwrap()
    }

    fn ended(plugin: &str, ending: Ending, now: Instant) -> Ended<'_> {
        Ended {
            plugin,
            ending,
            cause: if ending == Ending::Crash {
                "trap"
            } else {
                "normal-exit"
            },
            text: "trap: boom".to_string(),
            up_since: Some(now),
            now,
            jitter: 0.0,
            can_roll_back: false,
        }
    }

    fn crash(plugin: &str, now: Instant) -> Ended<'_> {
        ended(plugin, Ending::Crash, now)
    }

    fn roomy() -> Budget {
        Budget::new(1000, Duration::from_secs(60))
    }

    #[test]
    fn within_the_intensity_it_restarts_after_the_backoff_and_past_it_fails() {
        let (mut r, mut tree) =
            history("max-restarts = 2\ninitial = \"100ms\"\ncooldown = \"off\"");
        let budget = roomy();
        let t = Instant::now();
        let first = judge(&mut r, &crash("p", t), &budget, &mut tree);
        assert_eq!(first.next, Next::Restart(Duration::from_millis(100)));
        let second = judge(&mut r, &crash("p", t), &budget, &mut tree);
        assert_eq!(second.next, Next::Restart(Duration::from_millis(200)));
        let third = judge(&mut r, &crash("p", t), &budget, &mut tree);
        assert!(matches!(
            third.decision,
            Decision::GiveUp { restarts: 3, .. }
        ));
        match &third.next {
            Next::Park {
                status: Status::Failed,
                reason,
                retry_at: None,
                ..
            } => assert!(
                reason.starts_with("3 restarts within 60s exceed max-restarts (2)"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
        // A crashed message is dead-lettered once nothing restarts.
        assert!(third.dead_letters(Ending::Crash, 1, 2));
        assert!(!second.dead_letters(Ending::Crash, 1, 2));
        assert!(second.dead_letters(Ending::Crash, 2, 2));
    }

    #[test]
    fn a_failed_plugin_gets_a_cooldown_and_a_crash_in_its_trial_reopens_the_breaker() {
        let (mut r, mut tree) = history("max-restarts = 0\ncooldown = \"10s\"");
        let budget = roomy();
        let t = Instant::now();
        let failed = judge(&mut r, &crash("p", t), &budget, &mut tree);
        match &failed.next {
            Next::Park {
                status: Status::Failed,
                retry_at,
                reason,
                ..
            } => {
                assert_eq!(*retry_at, Some(t + Duration::from_secs(10)));
                assert!(
                    reason.ends_with("next attempt in 10s (cooldown)"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        // The trial starts; a crash in it fails again with a doubled cooldown.
        r.breaker.half_open(t);
        r.tracker.reset();
        let reopened = judge(&mut r, &crash("p", t), &budget, &mut tree);
        assert_eq!(reopened.decision, Decision::Reopen);
        match reopened.next {
            Next::Park {
                status: Status::Failed,
                retry_at,
                ..
            } => assert_eq!(retry_at, Some(t + Duration::from_secs(20))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_trial_that_outlived_reset_after_closes_the_breaker_instead() {
        let (mut r, mut tree) =
            history("max-restarts = 5\ncooldown = \"10s\"\nreset-after = \"1s\"");
        let t = Instant::now();
        r.breaker.open();
        r.breaker.half_open(t);
        let mut late = crash("p", t + Duration::from_secs(2));
        late.up_since = Some(t);
        let v = judge(&mut r, &late, &roomy(), &mut tree);
        assert!(matches!(v.next, Next::Restart(_)), "{v:?}");
        assert!(!r.breaker.in_trial());
    }

    #[test]
    fn past_the_hosts_budget_it_stops_and_says_why() {
        let (mut r, mut tree) = history("max-restarts = 10");
        let budget = Budget::new(1, Duration::from_secs(60));
        let t = Instant::now();
        assert!(matches!(
            judge(&mut r, &crash("p", t), &budget, &mut tree).next,
            Next::Restart(_)
        ));
        let v = judge(&mut r, &crash("p", t), &budget, &mut tree);
        match &v.next {
            Next::Park {
                status: Status::Stopped,
                reason,
                exhausted: Some(why),
                ..
            } => {
                assert_eq!(
                    reason,
                    "not restarted: the host's restart budget is exhausted"
                );
                assert!(why.contains("plugin `p`"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        // Its message is dead-lettered: nothing will handle it.
        assert!(v.dead_letters(Ending::Crash, 1, 5));
    }

    #[test]
    fn within_the_rollback_window_giving_up_rolls_back_and_restarts_now() {
        let (mut r, mut tree) = history("max-restarts = 0");
        let t = Instant::now();
        let mut e = crash("p", t);
        e.can_roll_back = true;
        let v = judge(&mut r, &e, &roomy(), &mut tree);
        assert!(v.roll_back);
        assert_eq!(v.decision, Decision::Restart(Duration::ZERO));
        assert_eq!(v.next, Next::Restart(Duration::ZERO));
        // Outside the window the same crash fails the plugin.
        let (mut r, mut tree) = history("max-restarts = 0\ncooldown = \"off\"");
        let v = judge(&mut r, &crash("p", t), &roomy(), &mut tree);
        assert!(!v.roll_back);
        assert!(matches!(
            v.next,
            Next::Park {
                status: Status::Failed,
                ..
            }
        ));
    }

    #[test]
    fn restart_types_decide_whether_an_exit_restarts() {
        let (mut r, mut tree) = history("type = \"transient\"");
        let t = Instant::now();
        let normal = judge(&mut r, &ended("p", Ending::Normal, t), &roomy(), &mut tree);
        assert_eq!(normal.decision, Decision::Stop);
        match &normal.next {
            Next::Park {
                status: Status::Stopped,
                reason,
                ..
            } => assert_eq!(reason, "trap: boom (restart type transient)"),
            other => panic!("{other:?}"),
        }
        // A transient plugin's normal exit answers its message 503, whatever
        // the attempts: it is never dead-lettered.
        assert!(!normal.dead_letters(Ending::Normal, 5, 1));
        let crashed = judge(&mut r, &crash("p", t), &roomy(), &mut tree);
        assert!(crashed.restarts());
        let (mut r, mut tree) = history("type = \"temporary\"");
        let temp = judge(&mut r, &crash("p", t), &roomy(), &mut tree);
        assert!(!temp.restarts());
        assert!(temp.dead_letters(Ending::Crash, 1, 3));
    }

    #[test]
    fn a_group_restarts_its_members_together() {
        let config = load(
            "[groups.g]\nstrategy = \"one-for-all\"\nmembers = [\"a\", \"b\", \"c\"]\n\
             [defaults.restart]\njitter = 0.0\ninitial = \"50ms\"\n",
        );
        let policy = config.plugin("b").unwrap().restart;
        let mut r = Restarts {
            breaker: Breaker::new(&policy),
            tracker: RestartTracker::new(policy),
        };
        let mut tree = Tree::new(&config.groups);
        let v = judge(&mut r, &crash("b", Instant::now()), &roomy(), &mut tree);
        match v.next {
            Next::Together {
                delay,
                group: GroupRestart { stop, start, .. },
            } => {
                assert_eq!(delay, Duration::from_millis(50));
                assert_eq!(stop, ["c", "a"]);
                assert_eq!(start, ["a", "b", "c"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_significant_members_normal_exit_shuts_its_group_down() {
        let config = load(
            "[groups.g]\nmembers = [\"a\", \"b\"]\nauto-shutdown = \"any-significant\"\n\
             significant = [\"a\"]\n[plugins.a.restart]\ntype = \"transient\"\n",
        );
        let policy = config.plugin("a").unwrap().restart;
        let mut r = Restarts {
            breaker: Breaker::new(&policy),
            tracker: RestartTracker::new(policy),
        };
        let mut tree = Tree::new(&config.groups);
        let v = judge(
            &mut r,
            &ended("a", Ending::Normal, Instant::now()),
            &roomy(),
            &mut tree,
        );
        let (group, stop) = v.shutdown.expect("an auto-shutdown");
        assert_eq!(group, "g");
        assert!(stop.contains(&"b".to_string()), "{stop:?}");
    }
}
