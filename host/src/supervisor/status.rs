//! What the admin API shows of a plugin ([`PluginInfo`]) and its one writer,
//! [`StatusBoard`]: the child publishes its status, restarts, health and
//! version through the board, and the supervisor's handle reads copies.
//! Nothing else writes a plugin's info. The board also publishes each change
//! of the plugin's life to the host's [`Events`], so the event stream and
//! the info cannot disagree.

use crate::compile::rollback::Rollback;
use crate::config::{PluginConfig, RestartType};
use crate::crash::Cause;
use crate::events::{EventKind, Events};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A plugin's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Instantiating and running `init`.
    Starting,
    /// Taking messages.
    Running,
    /// Waiting to restart after a crash; messages wait.
    Backoff,
    /// Over its restart intensity; messages are refused.
    Failed,
    /// Stopped (by its restart type, an operator, or shutdown).
    Stopped,
}

impl Status {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Starting => "starting",
            Status::Running => "running",
            Status::Backoff => "backoff",
            Status::Failed => "failed",
            Status::Stopped => "stopped",
        }
    }
}

/// What the admin API shows of a plugin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginInfo {
    /// Name.
    pub name: String,
    /// Status.
    pub status: Status,
    /// Instance generation (1 = first start).
    pub generation: u64,
    /// Restarts since the host started.
    pub restarts: u32,
    /// Cause of the last crash.
    pub last_crash: Option<Cause>,
    /// Why it is failed or stopped, if it is.
    pub reason: Option<String>,
    /// Seconds the current instance has been running.
    pub uptime_secs: Option<f64>,
    /// When the current instance started running, microseconds since the
    /// Unix epoch.
    pub started_at_us: Option<u64>,
    /// Messages queued.
    pub mailbox_depth: usize,
    /// SHA-256 of the loaded component.
    pub sha256: String,
    /// Restart type.
    pub restart_type: RestartType,
    /// The limits it runs under.
    pub limits: LimitsInfo,
    /// A new configuration waits for the plugin's next start.
    pub config_pending: bool,
    /// The last upgrade that was rolled back, while the file still holds it.
    pub rollback: Option<Rollback>,
    /// The circuit breaker, when not closed: `open` (failed, a retry is
    /// scheduled) or `half-open` (on trial after a cooldown).
    #[serde(default, deserialize_with = "circuit_state")]
    pub circuit: CircuitState,
    /// Seconds until the next attempt (backoff, or a failed plugin's cooldown).
    pub next_attempt_secs: Option<f64>,
    /// The last health answer of the running instance (`healthy`,
    /// `degraded: why`, `unhealthy (n/threshold): why`).
    pub health: Option<String>,
    /// Cluster mode: the node that runs it (`null` while no node does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(skip)]
    pub(super) running_since: Option<Instant>,
    #[serde(skip)]
    pub(super) retry_at: Option<Instant>,
}

impl PluginInfo {
    /// A plugin's status before its first start.
    pub(super) fn fresh(
        name: &str,
        config: &PluginConfig,
        sha256: &str,
        rollback: Option<Rollback>,
    ) -> PluginInfo {
        PluginInfo {
            name: name.to_string(),
            status: Status::Starting,
            generation: 0,
            restarts: 0,
            last_crash: None,
            reason: None,
            uptime_secs: None,
            started_at_us: None,
            mailbox_depth: 0,
            sha256: sha256.to_string(),
            restart_type: config.restart.kind,
            limits: LimitsInfo::of(config),
            config_pending: false,
            rollback,
            circuit: None,
            next_attempt_secs: None,
            health: None,
            owner: None,
            running_since: None,
            retry_at: None,
        }
    }

    /// Its health for load balancers and metrics: `None` when it is not
    /// running; a running plugin not yet probed, or without a `health`
    /// export, is healthy.
    pub fn health_level(&self) -> Option<HealthLevel> {
        (self.status == Status::Running).then(|| match self.health.as_deref() {
            Some(l) if l.starts_with("unhealthy") => HealthLevel::Unhealthy,
            Some(l) if l.starts_with("degraded") => HealthLevel::Degraded,
            _ => HealthLevel::Healthy,
        })
    }
}

/// A running plugin's health ([`PluginInfo::health_level`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthLevel {
    /// Healthy (or not probed).
    Healthy,
    /// Working, with a problem.
    Degraded,
    /// Answered `unhealthy` `threshold` times in a row.
    Unhealthy,
}

impl HealthLevel {
    /// Every level, in order.
    pub const ALL: [HealthLevel; 3] = [
        HealthLevel::Healthy,
        HealthLevel::Degraded,
        HealthLevel::Unhealthy,
    ];

    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthLevel::Healthy => "healthy",
            HealthLevel::Degraded => "degraded",
            HealthLevel::Unhealthy => "unhealthy",
        }
    }
}

/// [`PluginInfo::circuit`]. An alias, so that serde's derive does not take
/// the `'static` for a borrow from the input.
pub type CircuitState = Option<&'static str>;

/// Reads [`PluginInfo::circuit`] back (the CLI): one of the breaker's names.
fn circuit_state<'de, D: serde::Deserializer<'de>>(d: D) -> Result<CircuitState, D::Error> {
    const STATES: [&str; 2] = ["open", "half-open"];
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) => STATES
            .into_iter()
            .find(|known| *known == s)
            .map(Some)
            .ok_or_else(|| serde::de::Error::unknown_variant(&s, &STATES)),
    }
}

/// A plugin's limits, as the admin API shows them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LimitsInfo {
    /// Max linear memory, bytes.
    pub memory: u64,
    /// Fuel per call (`null`: unmetered).
    pub fuel: Option<u64>,
    /// Wall clock per call, milliseconds.
    pub timeout_ms: u64,
    /// Largest message, bytes.
    pub max_message: u64,
    /// Largest reply, bytes.
    pub max_reply: u64,
    /// Mailbox capacity.
    pub mailbox: usize,
}

impl LimitsInfo {
    pub(super) fn of(c: &PluginConfig) -> LimitsInfo {
        LimitsInfo {
            memory: c.memory,
            fuel: c.fuel,
            timeout_ms: c.timeout.as_millis() as u64,
            max_message: c.max_message,
            max_reply: c.max_reply,
            mailbox: c.mailbox,
        }
    }
}

/// What the child knows of its plugin beyond the status, published with it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Facts {
    /// Instance generation.
    pub(super) generation: u64,
    /// Restarts since the host started.
    pub(super) restarts: u32,
    /// When the current instance started running.
    pub(super) running_since: Option<Instant>,
    /// When a `failed` plugin is tried again.
    pub(super) retry_at: Option<Instant>,
    /// The circuit breaker's state for the admin API.
    pub(super) circuit: Option<&'static str>,
}

/// The one writer of a plugin's [`PluginInfo`] (shared with the handle,
/// which reads copies).
#[derive(Debug, Clone)]
pub(super) struct StatusBoard {
    info: Arc<Mutex<PluginInfo>>,
    events: Events,
}

impl StatusBoard {
    pub(super) fn new(info: PluginInfo, events: Events) -> StatusBoard {
        StatusBoard {
            info: Arc::new(Mutex::new(info)),
            events,
        }
    }

    /// Publishes `kind` for this plugin (`name`: read under the lock already held).
    fn emit(&self, name: &str, kind: EventKind) {
        self.events.publish(name, kind);
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, PluginInfo> {
        self.info.lock()
    }

    /// Reads the info without copying it.
    pub(super) fn read<R>(&self, f: impl FnOnce(&PluginInfo) -> R) -> R {
        f(&self.lock())
    }

    /// A copy of the info.
    pub(super) fn snapshot(&self) -> PluginInfo {
        self.lock().clone()
    }

    /// A new status, with `reason` (failed or stopped) and the child's facts.
    pub(super) fn publish(&self, status: Status, reason: Option<String>, facts: Facts) {
        let mut i = self.lock();
        let changed = i.status != status;
        i.status = status;
        i.reason = reason;
        i.generation = facts.generation;
        i.restarts = facts.restarts;
        let running = status == Status::Running;
        i.running_since = if running { facts.running_since } else { None };
        i.started_at_us = running.then(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64)
        });
        match status {
            Status::Backoff => {}
            Status::Failed => i.retry_at = facts.retry_at,
            _ => i.retry_at = None,
        }
        i.circuit = facts.circuit;
        if !running {
            i.health = None;
        }
        let event = match status {
            _ if !changed => None,
            Status::Running => Some(EventKind::Started {
                generation: i.generation,
                sha256: i.sha256.clone(),
            }),
            Status::Failed => Some(EventKind::Failed {
                reason: i.reason.clone().unwrap_or_default(),
                retry_in_secs: i
                    .retry_at
                    .map(|at| at.saturating_duration_since(Instant::now()).as_secs_f64()),
            }),
            Status::Stopped => Some(EventKind::Stopped {
                reason: i.reason.clone(),
            }),
            Status::Starting | Status::Backoff => None,
        };
        if let Some(kind) = event {
            self.emit(&i.name, kind);
        }
    }

    /// A restart was decided: restarted at once (`until` is `None`, only the
    /// count changes) or waiting `until` in backoff.
    pub(super) fn restarting(&self, delay: Duration, until: Option<Instant>, facts: Facts) {
        {
            let mut i = self.lock();
            i.restarts = facts.restarts;
            self.emit(
                &i.name,
                EventKind::Restarting {
                    restarts: facts.restarts,
                    delay_ms: delay.as_millis() as u64,
                },
            );
        }
        if let Some(until) = until {
            self.lock().retry_at = Some(until);
            self.publish(Status::Backoff, None, facts);
        }
    }

    /// An instance crashed in `call`; `report` is its crash report's id and
    /// `decision` what the restart policy made of it.
    pub(super) fn crashed(&self, cause: Cause, call: &str, decision: String, report: Option<u64>) {
        let mut i = self.lock();
        i.last_crash = Some(cause);
        let generation = i.generation;
        self.emit(
            &i.name,
            EventKind::Crashed {
                generation,
                cause: cause.as_str().to_string(),
                call: call.to_string(),
                decision,
                report,
            },
        );
    }

    /// A message was dead-lettered as `id` after deliveries with `causes`.
    pub(super) fn dead_lettered(&self, id: u64, causes: Vec<String>) {
        let i = self.lock();
        self.emit(
            &i.name,
            EventKind::DeadLettered {
                dead_letter: id,
                causes,
            },
        );
    }

    /// The circuit breaker's state changed while the status did not.
    pub(super) fn circuit(&self, circuit: Option<&'static str>) {
        self.lock().circuit = circuit;
    }

    /// A health answer's label; returns whether it differs from the last.
    pub(super) fn health(&self, label: String) -> bool {
        let mut i = self.lock();
        let changed = i.health.as_deref() != Some(label.as_str());
        if changed {
            self.emit(
                &i.name,
                EventKind::Health {
                    health: label.clone(),
                },
            );
        }
        i.health = Some(label);
        changed
    }

    /// The version running, and the rollback that put it there, if any:
    /// an upgrade, or a rollback.
    pub(super) fn version(&self, sha256: &str, rollback: Option<Rollback>) {
        let mut i = self.lock();
        let kind = match &rollback {
            Some(r) => EventKind::RolledBack {
                from: r.bad_sha256.clone(),
                to: r.good_sha256.clone(),
                reason: r.reason.clone(),
            },
            None => EventKind::Upgraded {
                from: std::mem::take(&mut i.sha256),
                to: sha256.to_string(),
            },
        };
        self.emit(&i.name, kind);
        i.sha256 = sha256.to_string();
        i.rollback = rollback;
    }

    /// The file holds the version running again: no rollback to show.
    pub(super) fn clear_rollback(&self) {
        self.lock().rollback = None;
    }

    /// A new configuration waits for the next start.
    pub(super) fn config_pending(&self) {
        self.lock().config_pending = true;
    }

    /// A new configuration is in force.
    pub(super) fn configured(&self, config: &PluginConfig) {
        let mut i = self.lock();
        i.limits = LimitsInfo::of(config);
        i.restart_type = config.restart.kind;
        i.config_pending = false;
    }

    /// The plugin's task has ended (removed, or the host shut down).
    pub(super) fn ended(&self) {
        let mut i = self.lock();
        if i.status != Status::Stopped {
            i.status = Status::Stopped;
            self.emit(
                &i.name,
                EventKind::Stopped {
                    reason: Some("its task ended (removed, or the host is shutting down)".into()),
                },
            );
        }
    }
}
