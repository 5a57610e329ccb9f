//! The admin API's contract as Rust types: every JSON body the server sends
//! and every query it takes, `Serialize + Deserialize`, shared by the server
//! ([`super`]) and the CLI, which reads answers back as these types. Renaming
//! a field here renames it on the wire and in the CLI at once.
//!
//! Types the rest of the host already has are reused as they are: a plugin's
//! [`PluginInfo`] (with [`Status`], [`LimitsInfo`] and its [`Rollback`]
//! marker), the host's [`BudgetInfo`], the tree's [`GroupInfo`], a
//! [`CrashReport`] and its [`MessageInfo`].
//!
//! Fields of the bodies that were JSON literals before these types are
//! declared in alphabetical order, the order they had on the wire. This
//! module holds data only: no handler, no I/O.

use serde::{Deserialize, Serialize};

pub use crate::compile::rollback::Rollback;
pub use crate::crash::{CrashReport, MessageInfo};
pub use crate::supervisor::budget::BudgetInfo;
pub use crate::supervisor::tree::GroupInfo;
pub use crate::supervisor::{HealthLevel, LimitsInfo, Operation, PluginInfo, Status};

/// `GET /healthz` answers this text (200) while the process serves at all.
pub const HEALTHZ: &str = "ok\n";

/// `GET /readyz` answers this text (200) when every plugin runs; else 503
/// with [`NotReady`].
pub const READY: &str = "ready\n";

/// Every error answer: `{"error": "what went wrong and what to do"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The message.
    pub error: String,
}

/// The 503 body of `GET /readyz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotReady {
    /// Always `false`.
    pub ready: bool,
    /// Why not.
    #[serde(flatten)]
    pub why: Unready,
}

/// Why the host is not ready.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Unready {
    /// The startup load is still running.
    Loading {
        /// `loading DONE/TOTAL`.
        reason: String,
        /// `loading`.
        status: String,
    },
    /// Some plugins are not running.
    Waiting {
        /// Each plugin that is not running.
        not_running: Vec<NotRunning>,
    },
}

/// A plugin that keeps the host from being ready.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotRunning {
    /// The plugin.
    pub name: String,
    /// Its status.
    pub status: Status,
}

/// `GET /v1/plugins`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginList {
    /// The host's restart budget.
    pub budget: BudgetInfo,
    /// The supervision tree's groups.
    pub groups: Vec<GroupInfo>,
    /// Every plugin, in start order.
    pub plugins: Vec<PluginInfo>,
}

/// `POST /v1/plugins/{name}/restart|stop|start` and `…/state/reset`, done.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OperationAck {
    /// The plugin.
    pub name: String,
    /// Always `true` (a failure is an error answer).
    pub ok: bool,
    /// What was done.
    pub operation: Operation,
    /// The plugin afterwards (`null` if it was removed meanwhile).
    pub plugin: Option<PluginInfo>,
}

/// `POST /v1/plugins/restart|stop|start`: 200 when every plugin did it,
/// 207 otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationAll {
    /// Whether every plugin did it.
    pub ok: bool,
    /// What was asked.
    pub operation: Operation,
    /// Each plugin, in start order.
    pub plugins: Vec<PluginDone>,
}

/// One plugin's part of an [`OperationAll`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginDone {
    /// Why it was not done, if it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The plugin.
    pub name: String,
    /// Whether it was done.
    pub ok: bool,
}

/// The 500 body of `POST /v1/plugins/{name}/messages`: the message crashed
/// the plugin on every delivery and was dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLettered {
    /// The crash cause of each delivery.
    pub causes: Vec<String>,
    /// The dead letter's id.
    pub dead_letter: u64,
}

/// The 503 body of a message the plugin cannot take (failed, stopped, the
/// host shutting down); `Retry-After` goes with it when a retry is scheduled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unavailable {
    /// Why.
    pub reason: String,
    /// Seconds until the plugin's next attempt, if one is scheduled.
    pub retry_after_secs: Option<u64>,
    /// The plugin's status.
    pub status: String,
}

/// `?offset=&limit=` of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// Records to skip, newest first.
    #[serde(default)]
    pub offset: usize,
    /// Most records to return (default 20, at most [`MAX_PAGE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// Most records one page returns.
pub const MAX_PAGE: usize = 1000;

impl Page {
    /// The page size asked for, within 1..=[`MAX_PAGE`].
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(20).clamp(1, MAX_PAGE)
    }

    /// `next_offset` of a page that has `more` after it.
    pub fn next(&self, more: bool) -> Option<usize> {
        more.then_some(self.offset + self.limit())
    }
}

/// `GET /v1/plugins/{name}/crashes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrashList {
    /// Newest first.
    pub crashes: Vec<CrashReport>,
    /// The plugin.
    pub name: String,
    /// The offset of the next page, if there is one.
    pub next_offset: Option<usize>,
    /// This page's offset.
    pub offset: usize,
}

/// `GET /v1/plugins/{name}/dead-letters`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterList {
    /// Newest first.
    pub dead_letters: Vec<DeadLetterInfo>,
    /// The plugin.
    pub name: String,
    /// The offset of the next page, if there is one.
    pub next_offset: Option<usize>,
    /// This page's offset.
    pub offset: usize,
}

/// A dead letter as the API lists it: its message described, not whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterInfo {
    /// Cause of each delivery.
    pub causes: Vec<String>,
    /// Dead-letter id.
    pub id: u64,
    /// The message.
    pub message: MessageInfo,
    /// Crash report ids of each delivery.
    pub reports: Vec<u64>,
    /// Unix time, milliseconds.
    pub time_ms: u64,
}

impl From<crate::crash::DeadLetter> for DeadLetterInfo {
    fn from(d: crate::crash::DeadLetter) -> DeadLetterInfo {
        DeadLetterInfo {
            id: d.id,
            time_ms: d.time_ms,
            message: MessageInfo::of(&d.message, d.causes.len() as u32),
            causes: d.causes,
            reports: d.reports,
        }
    }
}

/// `POST /v1/plugins/{name}/dead-letters/{id}/replay`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replayed {
    /// The plugin.
    pub name: String,
    /// The dead letter queued again (and removed).
    pub replayed: u64,
}

/// `POST /v1/plugins/{name}/dead-letters/{id}/drop` (or `DELETE …/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    /// The dead letter deleted.
    pub dropped: u64,
    /// The plugin.
    pub name: String,
}

/// `?bucket=&key=` of `GET /v1/plugins/{name}/state`: with a key, one value
/// as bytes (bucket `default` unless named).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyQuery {
    /// The bucket.
    pub bucket: Option<String>,
    /// The key.
    pub key: Option<String>,
}

/// `GET /v1/plugins/{name}/state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateList {
    /// Every key, by bucket and key.
    pub keys: Vec<StateEntry>,
    /// The plugin.
    pub name: String,
    /// What the plugin's state takes.
    pub usage: StateUsage,
}

/// Values up to this size are shown in the state listing.
pub const LISTED_VALUE_BYTES: u64 = 4096;

/// One key of a [`StateList`], with its value when it is at most
/// [`LISTED_VALUE_BYTES`]: `text` if UTF-8, else `hex`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateEntry {
    /// The bucket.
    pub bucket: String,
    /// The value as hex, when small and not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hex: Option<String>,
    /// The key.
    pub key: String,
    /// The value's size, bytes.
    pub size: u64,
    /// The value as text, when small and UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl StateEntry {
    /// An entry of `size` bytes, showing `value` when it is given.
    pub fn new(bucket: String, key: String, size: u64, value: Option<Vec<u8>>) -> StateEntry {
        let (mut text, mut hex) = (None, None);
        match value.map(String::from_utf8) {
            Some(Ok(t)) => text = Some(t),
            Some(Err(e)) => hex = Some(crate::crash::hex(e.as_bytes())),
            None => {}
        }
        StateEntry {
            bucket,
            hex,
            key,
            size,
            text,
        }
    }
}

/// A plugin's state usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateUsage {
    /// Bytes of keys and values, plus timer messages.
    pub bytes: u64,
    /// Keys across all buckets.
    pub keys: u64,
}

/// `?confirm=NAME` (or `true`) of a state reset; the same may come as a JSON
/// body `{"confirm": "NAME"}` or `{"confirm": true}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Confirm {
    /// The plugin's name again, or `true`.
    pub confirm: Option<serde_json::Value>,
}

impl Confirm {
    /// Whether this confirms resetting `name`.
    pub fn confirms(&self, name: &str) -> bool {
        match &self.confirm {
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::String(s)) => s == name || s == "true" || s == "yes",
            _ => false,
        }
    }
}

/// Any non-2xx JSON answer, as a client reads it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Refusal {
    /// An error with a message.
    Error(ErrorBody),
    /// The message was dead-lettered (500).
    DeadLettered(DeadLettered),
    /// The plugin cannot take messages (503).
    Unavailable(Unavailable),
    /// The host is not ready (503 of `/readyz`).
    NotReady(NotReady),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The bodies that were JSON literals keep their shape.
    #[test]
    fn bodies_keep_their_wire_shape() {
        let ready = NotReady {
            ready: false,
            why: Unready::Loading {
                reason: "loading 1/2".into(),
                status: "loading".into(),
            },
        };
        assert_eq!(
            serde_json::to_value(&ready).unwrap(),
            json!({"ready": false, "status": "loading", "reason": "loading 1/2"})
        );
        let waiting = json!({"ready": false, "not_running": [{"name": "p", "status": "failed"}]});
        let back: NotReady = serde_json::from_value(waiting.clone()).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), waiting);

        let all = OperationAll {
            ok: false,
            operation: Operation::ResetState,
            plugins: vec![
                PluginDone {
                    error: None,
                    name: "a".into(),
                    ok: true,
                },
                PluginDone {
                    error: Some("no".into()),
                    name: "b".into(),
                    ok: false,
                },
            ],
        };
        assert_eq!(
            serde_json::to_string(&all).unwrap(),
            r#"{"ok":false,"operation":"state-reset","plugins":[{"name":"a","ok":true},{"error":"no","name":"b","ok":false}]}"#
        );
        let entry = StateEntry::new("b".into(), "k".into(), 2, Some(vec![0xff, 0]));
        assert_eq!(
            serde_json::to_string(&entry).unwrap(),
            r#"{"bucket":"b","hex":"ff00","key":"k","size":2}"#
        );
        let refusal: Refusal =
            serde_json::from_str(r#"{"dead_letter":3,"causes":["trap"]}"#).unwrap();
        assert!(matches!(refusal, Refusal::DeadLettered(_)));
        let refusal: Refusal =
            serde_json::from_str(r#"{"status":"failed","reason":"r","retry_after_secs":null}"#)
                .unwrap();
        assert!(matches!(refusal, Refusal::Unavailable(_)));
    }

    #[test]
    fn a_confirmation_repeats_the_name_or_says_true() {
        let c = |v| Confirm { confirm: Some(v) };
        assert!(c(json!("p")).confirms("p"));
        assert!(c(json!(true)).confirms("p"));
        assert!(!c(json!("q")).confirms("p"));
        assert!(!c(json!(1)).confirms("p"));
        assert!(!Confirm::default().confirms("p"));
    }
}

/// `GET /health` (200 or 503): whether every permanent plugin runs and none
/// is unhealthy, with each plugin's part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    /// The plugins, in start order.
    pub plugins: Vec<PluginHealth>,
    /// Why the host is unhealthy while it still loads (`loading N/M`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `healthy` (200) or `unhealthy` (503).
    pub status: HostHealth,
}

/// [`HealthReport::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostHealth {
    /// Every permanent plugin runs and none is unhealthy.
    Healthy,
    /// Otherwise.
    Unhealthy,
}

/// One plugin's health: `GET /v1/plugins/{name}/health` (200 for healthy or
/// degraded, 503 otherwise) and an entry of [`HealthReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginHealth {
    /// The last health answer in full (`degraded: why`), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// `null` when the plugin is not running; a running plugin not yet
    /// probed, or without a `health` export, is `healthy`.
    pub health: Option<HealthLevel>,
    /// The plugin.
    pub name: String,
    /// Its status.
    pub status: Status,
}

impl PluginHealth {
    /// A plugin's health from its info.
    pub fn of(p: &PluginInfo) -> PluginHealth {
        let health = p.health_level();
        PluginHealth {
            detail: p.health.clone().filter(|_| health.is_some()),
            health,
            name: p.name.clone(),
            status: p.status,
        }
    }

    /// Whether a load balancer should send it traffic (200).
    pub fn serves(&self) -> bool {
        matches!(
            self.health,
            Some(HealthLevel::Healthy | HealthLevel::Degraded)
        )
    }
}

/// `GET /v1/events?plugin=NAME`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventQuery {
    /// Only this plugin's events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
}

pub use crate::events::{Event, EventKind};
