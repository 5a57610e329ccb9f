//! The transaction of one export call: buffered key-value writes and the outbox.
//!
//! Reads inside the call see the call's own writes first, then the plugin's
//! [`StateView`] (earlier calls' commits, pending or durable). When the call
//! returns, [`Txn::into_commit`] turns the buffer into one [`Commit`], its
//! change in usage and the messages to release after it is durable; when the call
//! traps, times out or exits, the instance and its `Txn` are dropped, which
//! discards the writes and frees every mailbox slot the outbox reserved.
//!
//! Bounds a guest meets here (DESIGN.md, "Decisions for the second wave"):
//! a call's outbox (`send` and `send-after` together) holds at most
//! [`MAX_OUTBOX_MESSAGES`] messages and [`OUTBOX_BYTES_PER_MAX_MESSAGE`] ×
//! `max-message` bytes; a plugin holds at most [`MAX_TIMERS`] timers, whose
//! messages count against `state.max-bytes`; a delay is at most
//! [`MAX_DELAY_MS`]. Past them `send`/`send-after` are refused, never a crash.

use crate::config::StateQuota;
use crate::mailbox::Reservation;
use crate::state::view::StateView;
use crate::state::{Commit, Delta, TimerRecord, Usage, Write};
use std::collections::BTreeMap;

/// Messages one call may send (`send` and `send-after` together).
pub const MAX_OUTBOX_MESSAGES: usize = 1024;
/// A call's outbox holds at most this many times the plugin's `max-message` bytes.
pub const OUTBOX_BYTES_PER_MAX_MESSAGE: u64 = 16;
/// Durable timers one plugin may hold.
pub const MAX_TIMERS: u64 = 10_000;
/// The longest `send-after` delay: 366 days.
pub const MAX_DELAY_MS: u64 = 366 * 24 * 60 * 60 * 1000;

/// Why a `send` or `send-after` was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum SendRefusal {
    /// An outbox or timer bound is reached (`mailbox-full`).
    Full,
    /// The message or delay is too large (`too-large`).
    TooLarge,
}

/// A message a call sends, released only if the call commits.
#[derive(Debug)]
pub enum Outgoing {
    /// `mailbox.send`: a slot already reserved in the target's mailbox.
    Send {
        /// Target plugin.
        to: String,
        /// The reserved slot.
        slot: Reservation,
        /// The message.
        message: Vec<u8>,
    },
}

/// See the module doc.
#[derive(Debug, Default)]
pub struct Txn {
    writes: BTreeMap<(String, String), Option<Vec<u8>>>,
    outbox: Vec<Outgoing>,
    timers: Vec<TimerRecord>,
    /// Change in keys, bytes and timers against the view.
    delta: Delta,
    /// Bytes of the messages in the outbox and timers.
    outbox_bytes: u64,
}

/// A call's transaction, ready to submit.
#[derive(Debug)]
pub struct Finished {
    /// Its writes and timers.
    pub commit: Commit,
    /// What it changes in the plugin's usage.
    pub delta: Delta,
    /// The messages to release once it is durable.
    pub outbox: Vec<Outgoing>,
}

/// Why a write was refused.
#[derive(Debug)]
pub enum WriteError {
    /// Over the plugin's `[state]` quota.
    Quota(String),
    /// The backend failed to read the old value.
    Backend(anyhow::Error),
}

impl Txn {
    /// The value of `key` as this call sees it.
    pub async fn get(
        &self,
        view: &StateView,
        bucket: &str,
        key: &str,
    ) -> anyhow::Result<Option<Vec<u8>>> {
        match self.writes.get(&(bucket.to_string(), key.to_string())) {
            Some(v) => Ok(v.clone()),
            None => view.get(bucket, key).await,
        }
    }

    /// Buffers a write, refusing it if it would take the plugin past its quota.
    pub async fn write(
        &mut self,
        view: &StateView,
        quota: &StateQuota,
        bucket: &str,
        key: &str,
        value: Option<Vec<u8>>,
    ) -> Result<(), WriteError> {
        let old = self
            .get(view, bucket, key)
            .await
            .map_err(WriteError::Backend)?
            .map(|v| v.len());
        let change = Delta::of_write(key, old, value.as_ref().map(Vec::len));
        if change.keys > 0 || change.bytes > 0 {
            let Usage { keys, bytes, .. } = view.usage().await.map_err(WriteError::Backend)?;
            let keys_after = keys as i64 + self.delta.keys + change.keys;
            let bytes_after = bytes as i64 + self.delta.bytes + change.bytes;
            if keys_after > quota.max_keys as i64 {
                return Err(WriteError::Quota(format!(
                    "quota exceeded: {keys_after} keys, the plugin's limit is {} (config key state.max-keys)",
                    quota.max_keys
                )));
            }
            if bytes_after > quota.max_bytes as i64 {
                return Err(WriteError::Quota(format!(
                    "quota exceeded: {bytes_after} bytes of keys and values, the plugin's limit is {} (config key state.max-bytes)",
                    quota.max_bytes
                )));
            }
        }
        self.delta += change;
        self.writes
            .insert((bucket.to_string(), key.to_string()), value);
        Ok(())
    }

    /// Keys of `bucket` as this call sees them, in order.
    pub async fn keys(&self, view: &StateView, bucket: &str) -> anyhow::Result<Vec<String>> {
        let mut keys = view.keys(bucket).await?;
        for ((b, k), v) in &self.writes {
            if b == bucket {
                if v.is_some() {
                    keys.insert(k.clone());
                } else {
                    keys.remove(k);
                }
            }
        }
        Ok(keys.into_iter().collect())
    }

    /// Whether one more message of `len` bytes fits the call's outbox, for a
    /// plugin whose `max-message` is `max_message`.
    pub fn outbox_has_room(&self, len: usize, max_message: u64) -> bool {
        let bytes = self.outbox_bytes.saturating_add(len as u64);
        self.outbox.len() + self.timers.len() < MAX_OUTBOX_MESSAGES
            && bytes <= max_message.saturating_mul(OUTBOX_BYTES_PER_MAX_MESSAGE)
    }

    /// Adds a message to the outbox; the caller checked
    /// [`Txn::outbox_has_room`].
    pub fn send(&mut self, out: Outgoing) {
        let Outgoing::Send { message, .. } = &out;
        self.outbox_bytes = self.outbox_bytes.saturating_add(message.len() as u64);
        self.outbox.push(out);
    }

    /// Adds a message for a plugin another node owns, written with the
    /// commit into its inbox (a timer of that plugin, due at once); the
    /// caller checked [`Txn::outbox_has_room`].
    pub fn send_to_inbox(&mut self, t: TimerRecord) {
        self.outbox_bytes = self.outbox_bytes.saturating_add(t.message.len() as u64);
        self.timers.push(t);
    }

    /// Schedules a durable timer `delay_ms` from `now_ms`, written with the
    /// commit, if it is within the bounds of the module doc and the plugin's
    /// quota (`max_message` is its `max-message`).
    #[expect(
        clippy::too_many_arguments,
        reason = "the plugin's bounds are read here, where the timer is made"
    )]
    pub async fn send_after(
        &mut self,
        view: &StateView,
        quota: &StateQuota,
        max_message: u64,
        plugin: &str,
        now_ms: u64,
        delay_ms: u64,
        message: Vec<u8>,
    ) -> anyhow::Result<Result<(), SendRefusal>> {
        if message.len() as u64 > max_message || delay_ms > MAX_DELAY_MS {
            return Ok(Err(SendRefusal::TooLarge));
        }
        if !self.outbox_has_room(message.len(), max_message) {
            return Ok(Err(SendRefusal::Full));
        }
        let change = Delta::of_timer(message.len(), 1);
        let after = view.usage().await?.plus(self.delta).plus(change);
        if after.timers > MAX_TIMERS || after.bytes > quota.max_bytes {
            return Ok(Err(SendRefusal::Full));
        }
        self.delta += change;
        self.outbox_bytes = self.outbox_bytes.saturating_add(message.len() as u64);
        self.timers.push(TimerRecord {
            id: view.backend().next_id(),
            plugin: plugin.to_string(),
            due_ms: now_ms.saturating_add(delay_ms),
            message,
        });
        Ok(Ok(()))
    }

    /// The commit of this call (its writes and timers), its change in usage
    /// and the messages to release once it is durable.
    pub fn into_commit(self, plugin: &str) -> Finished {
        let mut commit = Commit::new(plugin);
        commit.writes = self
            .writes
            .into_iter()
            .map(|((bucket, key), value)| Write { bucket, key, value })
            .collect();
        commit.add_timers = self.timers;
        Finished {
            commit,
            delta: self.delta,
            outbox: self.outbox,
        }
    }
}
