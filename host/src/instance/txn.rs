//! The transaction of one export call: buffered key-value writes and the outbox.
//!
//! Reads inside the call see the call's own writes first, then the plugin's
//! [`StateView`] (earlier calls' commits, pending or durable). When the call
//! returns, [`Txn::into_commit`] turns the buffer into one [`Commit`], its
//! change in usage and the messages to release after it is durable; when the call
//! traps, times out or exits, the instance and its `Txn` are dropped, which
//! discards the writes and frees every mailbox slot the outbox reserved.

use crate::config::StateQuota;
use crate::mailbox::Reservation;
use crate::state::view::StateView;
use crate::state::{Commit, Delta, TimerRecord, Usage, Write, fresh_id};
use std::collections::BTreeMap;

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
    /// Change in keys and bytes against the view.
    delta: Delta,
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
    pub fn get(
        &self,
        view: &StateView,
        bucket: &str,
        key: &str,
    ) -> anyhow::Result<Option<Vec<u8>>> {
        match self.writes.get(&(bucket.to_string(), key.to_string())) {
            Some(v) => Ok(v.clone()),
            None => view.get(bucket, key),
        }
    }

    /// Buffers a write, refusing it if it would take the plugin past its quota.
    pub fn write(
        &mut self,
        view: &StateView,
        quota: &StateQuota,
        bucket: &str,
        key: &str,
        value: Option<Vec<u8>>,
    ) -> Result<(), WriteError> {
        let old = self
            .get(view, bucket, key)
            .map_err(WriteError::Backend)?
            .map(|v| v.len());
        let change = Delta::of_write(key, old, value.as_ref().map(Vec::len));
        if change.keys > 0 || change.bytes > 0 {
            let Usage { keys, bytes } = view.usage().map_err(WriteError::Backend)?;
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
    pub fn keys(&self, view: &StateView, bucket: &str) -> anyhow::Result<Vec<String>> {
        let mut keys = view.keys(bucket)?;
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

    /// Adds a message to the outbox.
    pub fn send(&mut self, out: Outgoing) {
        self.outbox.push(out);
    }

    /// Schedules a durable timer, written with the commit.
    pub fn send_after(&mut self, plugin: &str, due_ms: u64, message: Vec<u8>) {
        self.timers.push(TimerRecord {
            id: fresh_id(),
            plugin: plugin.to_string(),
            due_ms,
            message,
        });
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
