//! The defaults of every key: one named function (or `DEFAULT_*` constant)
//! per default, read when a layer leaves the key unset.
//!
//! If one changes, update the configuration reference, docs/configuration.md
//! (its `default` columns), and DESIGN.md. Owns nothing else: the types these
//! fill in are [`super::resolved`]'s.

use super::resolved::{HealthPolicy, RestartPolicy, StateQuota};
use super::values::{BackoffKind, RestartType};
use std::num::NonZeroU32;
use std::time::Duration;

pub(crate) fn default_memory() -> u64 {
    64 << 20
}
pub(crate) fn default_fuel() -> u64 {
    1_000_000_000
}
pub(crate) fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
pub(crate) fn default_reply_timeout() -> Duration {
    Duration::from_secs(30)
}
pub(crate) fn default_idempotency_window() -> Duration {
    Duration::from_secs(24 * 3600)
}
pub(crate) fn default_max_message() -> u64 {
    1 << 20
}
pub(crate) fn default_max_reply() -> u64 {
    1 << 20
}
pub(crate) fn default_mailbox() -> usize {
    1024
}
pub(crate) fn default_output() -> u64 {
    64 << 10
}
pub(crate) fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(5)
}
pub(crate) fn default_upgrade_probation() -> Duration {
    Duration::from_secs(30)
}
/// The default restart policy (DESIGN.md's `[defaults.restart]`).
pub(crate) fn default_restart() -> RestartPolicy {
    RestartPolicy {
        kind: RestartType::Permanent,
        backoff: BackoffKind::Exponential,
        initial: Duration::from_millis(100),
        max: Duration::from_secs(30),
        multiplier: 2.0,
        jitter: 0.1,
        max_restarts: 5,
        window: Duration::from_secs(60),
        reset_after: Duration::from_secs(60),
        max_attempts: NonZeroU32::new(2).expect("2 is not zero"),
        cooldown: Some(Duration::from_secs(60)),
        cooldown_max: Duration::from_secs(600),
    }
}
pub(crate) fn default_health() -> HealthPolicy {
    HealthPolicy {
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(1),
        threshold: NonZeroU32::new(3).expect("3 is not zero"),
    }
}
pub(crate) fn default_state_quota() -> StateQuota {
    StateQuota {
        max_keys: 100_000,
        max_bytes: 64 << 20,
    }
}
/// Default admin API address.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9070";
pub(crate) fn default_root_max_restarts() -> u32 {
    100
}
pub(crate) fn default_root_window() -> Duration {
    Duration::from_secs(60)
}
pub(crate) fn default_epoch_tick() -> Duration {
    Duration::from_millis(10)
}
pub(crate) fn default_crash_reports() -> usize {
    100
}
/// `[host] instance-pool` by default.
pub const DEFAULT_INSTANCE_POOL: u32 = 1000;

pub(crate) fn default_compile_cache() -> u64 {
    1 << 30
}
pub(crate) fn default_dead_letters() -> usize {
    1000
}
pub(crate) fn default_max_plugin_file() -> u64 {
    256 << 20
}

/// A cluster node's lease without renewal (`[host] lease`).
pub const DEFAULT_LEASE: std::time::Duration = std::time::Duration::from_secs(10);
