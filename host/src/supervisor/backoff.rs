//! The backoff schedule: a pure function of the policy, the number of
//! consecutive crashes and a random number, so it is tested without sleeping.

use crate::config::{BackoffKind, RestartPolicy};
use std::time::Duration;

/// The delay before restart number `consecutive` (1 = the first restart after a
/// healthy run). `unit` is a random number in `[0, 1)` that spreads the delay
/// by `±jitter`.
pub fn delay(policy: &RestartPolicy, consecutive: u32, unit: f64) -> Duration {
    let base = match policy.backoff {
        BackoffKind::Immediate => return Duration::ZERO,
        BackoffKind::Fixed => policy.initial,
        BackoffKind::Exponential => {
            let exp = consecutive.saturating_sub(1).min(64) as i32;
            let secs = policy.initial.as_secs_f64() * policy.multiplier.powi(exp);
            secs_or_max(secs.min(policy.max.as_secs_f64()))
        }
    };
    let spread = 1.0 + policy.jitter * (2.0 * unit - 1.0);
    secs_or_max((base.as_secs_f64() * spread).max(0.0)).min(policy.max.max(base))
}

/// `secs` as a duration, saturating instead of panicking on a value no
/// `Duration` holds (the configuration bounds `restart.max`; this guards the
/// float arithmetic anyway).
fn secs_or_max(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, HostOverrides};

    fn policy() -> RestartPolicy {
        let dir = tempfile::tempdir().unwrap();
        Config::load(dir.path(), &HostOverrides::default())
            .unwrap()
            .plugin("x")
            .unwrap()
            .restart
    }

    #[test]
    fn exponential_doubles_up_to_max() {
        let mut p = policy();
        p.jitter = 0.0;
        let ms: Vec<u128> = (1..=12).map(|n| delay(&p, n, 0.5).as_millis()).collect();
        assert_eq!(
            ms,
            [
                100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000
            ]
        );
    }

    #[test]
    fn jitter_spreads_both_ways_within_bounds() {
        let p = policy();
        assert_eq!(delay(&p, 1, 0.0).as_millis(), 90);
        assert_eq!(delay(&p, 1, 0.5).as_millis(), 100);
        assert!(delay(&p, 1, 0.999_999).as_millis() >= 109);
        assert_eq!(delay(&p, 50, 0.999).as_millis(), 30000, "never past max");
    }

    #[test]
    fn hole04_huge_delays_saturate_instead_of_panicking() {
        let mut p = policy();
        p.initial = Duration::MAX;
        p.max = Duration::MAX;
        p.multiplier = 1000.0;
        p.jitter = 1.0;
        assert_eq!(delay(&p, 64, 0.999), Duration::MAX);
    }

    #[test]
    fn immediate_and_fixed() {
        let mut p = policy();
        p.backoff = BackoffKind::Immediate;
        assert_eq!(delay(&p, 7, 0.3), Duration::ZERO);
        p.backoff = BackoffKind::Fixed;
        p.jitter = 0.0;
        assert_eq!(delay(&p, 1, 0.3), delay(&p, 9, 0.9));
    }
}
