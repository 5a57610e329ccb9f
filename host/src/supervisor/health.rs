//! Health probes (DESIGN.md, "Health"): how the answers of `health.check`
//! are judged. The child runs the probe between calls every
//! `health.interval`; this module keeps the streak of `unhealthy` answers and
//! turns a probe into a crash when the plugin must be restarted. A reason
//! given by the guest is kept cut to [`guest_text::MAX_KEPT_BYTES`].

use crate::crash::{Cause, Crash, Exit};
use crate::guest_text::{self, MAX_KEPT_BYTES};
use crate::instance::Health;
use std::time::Duration;

/// What the last probes said.
#[derive(Debug, Default)]
pub(super) struct Probes {
    /// `unhealthy` answers in a row.
    streak: u32,
}

impl Probes {
    /// Judges one answer: `Ok(label)` to show in status and metrics, or the
    /// crash that restarts the plugin after `threshold` unhealthy answers.
    pub(super) fn judge(&mut self, answer: Health, threshold: u32) -> Result<String, Exit> {
        match answer {
            Health::Healthy => {
                self.streak = 0;
                Ok("healthy".to_string())
            }
            Health::Degraded(why) => {
                self.streak = 0;
                Ok(format!(
                    "degraded: {}",
                    guest_text::cap(&why, MAX_KEPT_BYTES)
                ))
            }
            Health::Unhealthy(why) => {
                let why = guest_text::cap(&why, MAX_KEPT_BYTES);
                self.streak += 1;
                if self.streak >= threshold {
                    self.streak = 0;
                    return Err(unhealthy(format!(
                        "health check answered unhealthy {threshold} times in a row: {why}"
                    )));
                }
                Ok(format!("unhealthy ({}/{threshold}): {why}", self.streak))
            }
        }
    }

    /// A new instance starts with a clean slate.
    pub(super) fn reset(&mut self) {
        self.streak = 0;
    }
}

/// A probe that did not return: a timeout is the cause `unhealthy`; any other
/// crash (a trap) is itself.
pub(super) fn failed_probe(exit: Exit, timeout: Duration) -> Exit {
    match exit {
        Exit::Crashed(c) if c.cause == Cause::Timeout => Exit::Crashed(Crash {
            cause: Cause::Unhealthy,
            message: format!(
                "health check did not answer within its timeout of {timeout:?} (config key `health.timeout`)"
            ),
            ..c
        }),
        other => other,
    }
}

fn unhealthy(message: String) -> Exit {
    Exit::Crashed(Crash {
        cause: Cause::Unhealthy,
        message,
        backtrace: Vec::new(),
        fuel_used: 0,
        memory_bytes: 0,
        coredump: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_unhealthy_answers_in_a_row_crash() {
        let mut p = Probes::default();
        let bad = || Health::Unhealthy("db down".into());
        assert_eq!(p.judge(bad(), 3).unwrap(), "unhealthy (1/3): db down");
        assert_eq!(p.judge(bad(), 3).unwrap(), "unhealthy (2/3): db down");
        let Err(Exit::Crashed(c)) = p.judge(bad(), 3) else {
            panic!("the third unhealthy answer restarts it");
        };
        assert_eq!(c.cause, Cause::Unhealthy);
        assert!(
            c.message.contains("3 times in a row: db down"),
            "{}",
            c.message
        );
    }

    #[test]
    fn a_healthy_or_degraded_answer_breaks_the_streak() {
        let mut p = Probes::default();
        let bad = || Health::Unhealthy("x".into());
        p.judge(bad(), 2).unwrap();
        assert_eq!(
            p.judge(Health::Degraded("slow".into()), 2).unwrap(),
            "degraded: slow"
        );
        p.judge(bad(), 2).unwrap();
        assert_eq!(p.judge(Health::Healthy, 2).unwrap(), "healthy");
        assert!(p.judge(bad(), 2).is_ok());
    }

    #[test]
    fn hole09_a_long_reason_is_kept_cut() {
        let mut p = Probes::default();
        let long = "x".repeat(8 << 20);
        let label = p.judge(Health::Degraded(long.clone()), 2).unwrap();
        assert!(label.len() < MAX_KEPT_BYTES + 64, "{} bytes", label.len());
        assert!(label.ends_with("[cut: 8388608 bytes in all]"), "{label}");
        let label = p.judge(Health::Unhealthy(long.clone()), 2).unwrap();
        assert!(label.len() < MAX_KEPT_BYTES + 64, "{} bytes", label.len());
        let Err(Exit::Crashed(c)) = p.judge(Health::Unhealthy(long), 2) else {
            panic!("the second unhealthy answer restarts it");
        };
        assert!(
            c.message.len() < MAX_KEPT_BYTES + 128,
            "{} bytes",
            c.message.len()
        );
    }
}
