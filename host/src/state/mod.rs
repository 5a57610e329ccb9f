//! The state backend: where plugin key-value state, durable timers, crash
//! reports and dead letters live.
//!
//! Invariants every backend keeps:
//! - A [`Commit`] is applied all or nothing, and [`StateBackend::commit`]
//!   resolves only once it is durable (redb: fsynced; memory: applied).
//! - Commits may be grouped: many commits share one write transaction and one
//!   fsync, and each waiter is released after its own commit is in.
//! - Plugins are namespaces: nothing one plugin writes is visible under another
//!   plugin's name.
//! - A commit carries an optional fencing token: a backend shared by several
//!   hosts refuses a commit whose token is older than the one it has seen for
//!   that plugin, so a host that lost ownership of a plugin cannot write.
//!   Single-host backends record each plugin's highest token and enforce the
//!   same rule.
//! - Each plugin's commits are applied in the order they were submitted (a
//!   backend may interleave plugins for fairness), and a commit with a
//!   [`Chain`] is refused when a chained commit of the same plugin that it may
//!   have read from failed (see [`view`]): nothing durable rests on a write
//!   that never was.

pub mod ids;
mod lists;
pub mod memory;
pub mod postgres;
mod queues;
pub mod redb;
pub mod view;

use anyhow::Result;
use futures::future::BoxFuture;
use std::time::{SystemTime, UNIX_EPOCH};

/// How a refused fence begins its error: the node no longer owns the
/// plugin (DESIGN.md, "Cluster mode"); the plugin is stopped, not restarted.
pub const OWNER_LOST: &str = "owner-lost";

/// A write to one key: `Some(value)` sets it, `None` deletes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// Bucket identifier.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// New value, or `None` to delete.
    pub value: Option<Vec<u8>>,
}

/// A durable timer: `message` is delivered to `plugin` at `due_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerRecord {
    /// Host-unique id.
    pub id: u64,
    /// Target plugin.
    pub plugin: String,
    /// Due time, milliseconds since the Unix epoch.
    pub due_ms: u64,
    /// The message.
    pub message: Vec<u8>,
}

/// Kinds of per-plugin records kept in a bounded list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// Crash reports.
    Crash = 1,
    /// Dead letters.
    DeadLetter = 2,
}

/// A record appended to a plugin's bounded list (the oldest are dropped past `keep`).
#[derive(Debug, Clone)]
pub struct Record {
    /// Which list.
    pub kind: RecordKind,
    /// Host-unique id (see [`StateBackend::next_id`]); lists are ordered by id.
    pub id: u64,
    /// The record, serialized (JSON).
    pub body: Vec<u8>,
    /// How many records of this kind the plugin keeps.
    pub keep: usize,
    /// How many bytes of records of this kind the plugin keeps (the newest
    /// record is kept whatever its size).
    pub keep_bytes: u64,
}

/// One transaction of one plugin: everything a call wrote, applied atomically.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// The plugin.
    pub plugin: String,
    /// Key-value writes, in order.
    pub writes: Vec<Write>,
    /// Timers to add (`send-after` in the call's outbox).
    pub add_timers: Vec<TimerRecord>,
    /// Timers whose message this commit completes.
    pub remove_timers: Vec<u64>,
    /// Records to append.
    pub records: Vec<Record>,
    /// Records to remove (kind, id), e.g. a replayed dead letter.
    pub remove_records: Vec<(RecordKind, u64)>,
    /// Fencing token of the writer (see the module doc).
    pub fence: Option<u64>,
    /// Its place among the plugin's pipelined commits, if it is one.
    pub chain: Option<Chain>,
    /// Answers to keep for `Idempotency-Key`s (replacing any kept under
    /// the same key).
    pub answers: Vec<StoredAnswer>,
    /// Drops the plugin's kept answers older than this (milliseconds since
    /// the Unix epoch): they are past its `idempotency-window`.
    pub prune_answers_before: Option<u64>,
}

/// The answer to a message sent with an `Idempotency-Key`, kept so that a
/// retry gets it again instead of a second delivery (DESIGN.md,
/// "Idempotency keys, precisely"). Kept per plugin and key; its bytes count
/// in the plugin's [`Usage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    /// The key.
    pub key: String,
    /// SHA-256 of the message body, hex: the same key with another body is refused.
    pub body_sha256: String,
    /// HTTP status: 200, 422 or 500.
    pub status: u16,
    /// The answer's body.
    pub body: Vec<u8>,
    /// When it was answered, milliseconds since the Unix epoch.
    pub time_ms: u64,
}

impl StoredAnswer {
    /// The bytes it counts for in [`Usage`].
    pub fn size(&self) -> u64 {
        entry_size(&self.key, self.body.len())
    }
}

/// Where a pipelined commit stands among its plugin's commits (see [`view`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain {
    /// This commit's number, increasing over the host's life.
    pub seq: u64,
    /// The oldest commit it may have read from that was not yet durable when
    /// it was made; its own `seq` when there was none.
    pub after: u64,
}

/// The chained commits a backend failed, per plugin: the newest failed `seq`.
/// A chained commit that reaches back to one of them is refused (the module
/// doc's last rule). Only failures are kept, so this stays small.
#[derive(Debug, Default, Clone)]
pub(crate) struct Failures(std::collections::HashMap<String, u64>);

impl Failures {
    /// Refuses `c` if it may have read from a failed commit.
    pub(crate) fn check(&self, c: &Commit) -> Result<(), String> {
        match (c.chain, self.0.get(&c.plugin)) {
            (Some(chain), Some(&failed)) if chain.after <= failed => Err(format!(
                "commit refused: it read from an earlier commit of plugin {} that failed",
                c.plugin
            )),
            _ => Ok(()),
        }
    }

    /// Records that a commit of `plugin` failed.
    pub(crate) fn record(&mut self, plugin: &str, chain: Option<Chain>) {
        if let Some(chain) = chain {
            let failed = self.0.entry(plugin.to_string()).or_default();
            *failed = (*failed).max(chain.seq);
        }
    }
}

impl Commit {
    /// A commit for `plugin` with nothing in it.
    pub fn new(plugin: &str) -> Commit {
        Commit {
            plugin: plugin.to_string(),
            ..Commit::default()
        }
    }

    /// Whether applying it changes the plugin's [`Usage`].
    pub fn changes_usage(&self) -> bool {
        !(self.writes.is_empty()
            && self.add_timers.is_empty()
            && self.remove_timers.is_empty()
            && self.answers.is_empty()
            && self.prune_answers_before.is_none())
    }

    /// Whether applying it would change nothing.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
            && self.add_timers.is_empty()
            && self.remove_timers.is_empty()
            && self.records.is_empty()
            && self.remove_records.is_empty()
            && self.answers.is_empty()
            && self.prune_answers_before.is_none()
    }
}

/// What a plugin's committed state uses, for quotas: its keys and values,
/// and its durable timers, whose messages count in `bytes` too, as do the
/// answers kept for its idempotency keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Keys across all buckets.
    pub keys: u64,
    /// Bytes of keys and values across all buckets, plus timer messages and
    /// kept answers.
    pub bytes: u64,
    /// Pending durable timers (`send-after`).
    pub timers: u64,
}

/// A place to keep plugin state. See the module doc for the invariants.
///
/// Reads are async, so a backend that waits on the network (a database)
/// never holds a runtime thread; a local backend may answer inline or move a
/// long scan to a blocking thread. Writes ([`StateBackend::commit`],
/// [`StateBackend::reset`]) are queued when called, so their order is the
/// order of the calls, and resolve once applied.
#[async_trait::async_trait]
pub trait StateBackend: Send + Sync + 'static {
    /// Reads one committed value.
    async fn get(&self, plugin: &str, bucket: &str, key: &str) -> Result<Option<Vec<u8>>>;
    /// Committed keys of a bucket in key order, starting after `after`, at most `limit`.
    async fn list_keys(
        &self,
        plugin: &str,
        bucket: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>>;
    /// Every committed `(bucket, key, value size)` of a plugin.
    async fn list_all(&self, plugin: &str) -> Result<Vec<(String, String, u64)>>;
    /// What a plugin's committed state uses.
    async fn usage(&self, plugin: &str) -> Result<Usage>;
    /// Applies a commit; resolves once it is durable.
    fn commit(&self, commit: Commit) -> BoxFuture<'static, Result<()>>;
    /// A plugin's pending timers (read when the plugin is first registered).
    async fn timers(&self, plugin: &str) -> Result<Vec<TimerRecord>>;
    /// Cluster mode: the messages other nodes' commits put in the inbox of
    /// `plugin` (which this node owns) since it was last read by
    /// [`StateBackend::timers`] or this, oldest first; each is returned
    /// once (or again, after a take whose answer was lost). Other backends
    /// have no inbox.
    async fn take_inbox(&self, _plugin: &str) -> Result<Vec<TimerRecord>> {
        Ok(Vec::new())
    }
    /// A plugin's records of one kind, newest first, at most `limit` after skipping `skip`.
    async fn records(
        &self,
        plugin: &str,
        kind: RecordKind,
        skip: usize,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>>;
    /// How many records of one kind a plugin has (without reading them).
    async fn record_count(&self, plugin: &str, kind: RecordKind) -> Result<usize>;
    /// One record of a plugin by id.
    async fn record(&self, plugin: &str, kind: RecordKind, id: u64) -> Result<Option<Vec<u8>>>;
    /// The answer kept for a plugin's idempotency key, if any (however old:
    /// the caller judges the window).
    async fn answer(&self, plugin: &str, key: &str) -> Result<Option<StoredAnswer>>;
    /// Deletes every key and timer of a plugin (state reset); its crash
    /// reports, dead letters and kept answers stay.
    fn reset(&self, plugin: &str) -> BoxFuture<'static, Result<()>>;
    /// Why this backend cannot store `key`, if it cannot (beyond the
    /// keyvalue limits every backend has).
    fn check_key(&self, _key: &str) -> Result<(), String> {
        Ok(())
    }
    /// A new id for a record or timer, unique in this store and increasing
    /// over this process's life (see [`ids`]).
    fn next_id(&self) -> u64;
    /// A short name for logs: `redb:PATH`, `memory`, or the PostgreSQL URL
    /// without its password.
    fn describe(&self) -> String;
    /// Finishes queued commits and releases the store (the redb file lock,
    /// the PostgreSQL advisory lock); later operations fail. Called at the
    /// end of a graceful shutdown.
    async fn close(&self) {}
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The size a key-value pair counts for in quotas.
pub(crate) fn entry_size(key: &str, value_len: usize) -> u64 {
    (key.len() + value_len) as u64
}

/// Applies committed usage changes to a backend's cache of usage per plugin
/// (`None`: forget the plugin's figure, to be read again).
pub(crate) fn settle_usage(
    cache: &mut std::collections::HashMap<String, Usage>,
    deltas: std::collections::HashMap<String, Option<Delta>>,
) {
    for (plugin, delta) in deltas {
        match delta {
            None => {
                cache.remove(&plugin);
            }
            Some(delta) => {
                if let Some(u) = cache.get_mut(&plugin) {
                    *u = u.plus(delta);
                }
            }
        }
    }
}

/// A change in a plugin's [`Usage`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta {
    /// Change in the number of keys.
    pub keys: i64,
    /// Change in bytes of keys and values (and timer messages).
    pub bytes: i64,
    /// Change in the number of timers.
    pub timers: i64,
}

impl Delta {
    /// What writing `key` does to usage: its value had `old` bytes and gets
    /// `new` (`None`: absent before, or deleted).
    pub fn of_write(key: &str, old: Option<usize>, new: Option<usize>) -> Delta {
        let size = |len: Option<usize>| len.map_or(0, |n| entry_size(key, n) as i64);
        Delta {
            keys: i64::from(new.is_some()) - i64::from(old.is_some()),
            bytes: size(new) - size(old),
            timers: 0,
        }
    }

    /// What replacing a kept answer of `old` bytes by one of `new` bytes
    /// (`None`: none there, or dropped) does to usage.
    pub fn of_answer(old: Option<u64>, new: Option<u64>) -> Delta {
        Delta {
            keys: 0,
            bytes: new.unwrap_or(0) as i64 - old.unwrap_or(0) as i64,
            timers: 0,
        }
    }

    /// What adding (`sign` 1) or removing (`sign` -1) a timer whose message
    /// has `message_len` bytes does to usage.
    pub fn of_timer(message_len: usize, sign: i64) -> Delta {
        Delta {
            keys: 0,
            bytes: sign * message_len as i64,
            timers: sign,
        }
    }
}

impl std::ops::AddAssign for Delta {
    fn add_assign(&mut self, other: Delta) {
        self.keys += other.keys;
        self.bytes += other.bytes;
        self.timers += other.timers;
    }
}

impl Usage {
    /// This usage changed by `delta`.
    pub fn plus(self, delta: Delta) -> Usage {
        Usage {
            keys: self.keys.saturating_add_signed(delta.keys),
            bytes: self.bytes.saturating_add_signed(delta.bytes),
            timers: self.timers.saturating_add_signed(delta.timers),
        }
    }
}

/// Opens the backend a [`crate::config::StateLocation`] names.
pub async fn open(
    location: &crate::config::StateLocation,
) -> Result<std::sync::Arc<dyn StateBackend>> {
    use crate::config::StateLocation;
    Ok(match location {
        StateLocation::Memory => std::sync::Arc::new(memory::MemoryBackend::new()),
        StateLocation::Redb(path) => {
            let path = path.clone();
            let b = tokio::task::spawn_blocking(move || redb::RedbBackend::open(&path)).await??;
            std::sync::Arc::new(b)
        }
        StateLocation::Postgres(url) => {
            std::sync::Arc::new(postgres::PostgresBackend::open(url).await?)
        }
    })
}

/// The behaviour every backend must show, run by the unit tests against the
/// memory and redb backends and by the integration tests against a real
/// PostgreSQL. Public for those; not an API.
#[doc(hidden)]
pub mod conformance;
