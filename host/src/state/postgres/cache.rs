//! Committed values this host has read or written, kept in memory so that
//! a point read does not cost a round trip to the database.
//!
//! Sound because this host is the database's only writer (the advisory
//! lock): every change goes through its committer, which brings the cache
//! up to date after COMMIT returned ([`ValueCache::committed`]). A read that
//! missed fills the cache only if no commit or reset of that plugin was
//! applied while it ran (each plugin has an epoch, bumped by every one), so
//! a slow read never puts back a value a commit replaced. A group whose
//! outcome is unknown forgets its plugins' values.
//!
//! Bounded: values over [`MAX_VALUE`] are not kept, and past [`BUDGET`]
//! bytes in all the cache drops whole plugins' values until it is under
//! three quarters of it. A small map of our own: what it needs (per-plugin
//! epochs and a fill that can be refused) is not what a general-purpose
//! cache crate offers.

use std::collections::HashMap;

/// Largest value kept, bytes.
const MAX_VALUE: usize = 64 << 10;
/// Bytes of keys and values kept in all.
const BUDGET: usize = 64 << 20;

#[derive(Default)]
struct Plugin {
    epoch: u64,
    values: HashMap<(String, String), Option<Vec<u8>>>,
    bytes: usize,
}

/// See the module doc.
#[derive(Default)]
pub(super) struct ValueCache {
    plugins: HashMap<String, Plugin>,
    bytes: usize,
}

fn size(bucket: &str, key: &str, value: &Option<Vec<u8>>) -> usize {
    bucket.len() + key.len() + value.as_ref().map_or(0, Vec::len) + 32
}

impl ValueCache {
    /// The committed value of a key if it is kept (`Some(None)`: known to be
    /// absent); otherwise the plugin's epoch, to hand to [`ValueCache::fill`].
    pub(super) fn get(
        &self,
        plugin: &str,
        bucket: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, u64> {
        let Some(p) = self.plugins.get(plugin) else {
            return Err(0);
        };
        match p.values.get(&(bucket.to_string(), key.to_string())) {
            Some(v) => Ok(v.clone()),
            None => Err(p.epoch),
        }
    }

    /// Keeps a value read from the database when the read began, if no
    /// commit of the plugin was applied since (`epoch` from [`ValueCache::get`]).
    pub(super) fn fill(
        &mut self,
        plugin: &str,
        bucket: &str,
        key: &str,
        value: &Option<Vec<u8>>,
        epoch: u64,
    ) {
        if self.plugins.get(plugin).map_or(0, |p| p.epoch) == epoch {
            self.put(plugin, bucket, key, value.clone());
        }
    }

    fn put(&mut self, plugin: &str, bucket: &str, key: &str, value: Option<Vec<u8>>) {
        let p = self.plugins.entry(plugin.to_string()).or_default();
        let k = (bucket.to_string(), key.to_string());
        if let Some(old) = p.values.remove(&k) {
            let n = size(bucket, key, &old);
            p.bytes -= n;
            self.bytes -= n;
        }
        if value.as_ref().is_some_and(|v| v.len() > MAX_VALUE) {
            return;
        }
        let n = size(bucket, key, &value);
        p.values.insert(k, value);
        p.bytes += n;
        self.bytes += n;
        if self.bytes > BUDGET {
            self.shrink();
        }
    }

    /// Drops whole plugins' values until under three quarters of the budget.
    fn shrink(&mut self) {
        for p in self.plugins.values_mut() {
            if self.bytes <= BUDGET / 4 * 3 {
                break;
            }
            self.bytes -= p.bytes;
            p.bytes = 0;
            p.values.clear();
        }
    }

    /// The plugin's epoch: it moves on with every commit and reset.
    pub(super) fn epoch(&self, plugin: &str) -> u64 {
        self.plugins.get(plugin).map_or(0, |p| p.epoch)
    }

    /// Forgets every value and moves every epoch on (the lock was lost:
    /// another host may have written).
    pub(super) fn forget_all(&mut self) {
        for p in self.plugins.values_mut() {
            p.epoch += 1;
            p.bytes = 0;
            p.values.clear();
        }
        self.bytes = 0;
    }

    /// A commit of `plugin` was applied: the epoch moves on.
    pub(super) fn bump(&mut self, plugin: &str) {
        self.plugins.entry(plugin.to_string()).or_default().epoch += 1;
    }

    /// Applies a committed write (after [`ValueCache::bump`]).
    pub(super) fn committed(
        &mut self,
        plugin: &str,
        bucket: &str,
        key: &str,
        value: Option<Vec<u8>>,
    ) {
        self.put(plugin, bucket, key, value);
    }

    /// Forgets every value of `plugin` (a reset, or a group whose outcome
    /// is unknown) and moves its epoch on.
    pub(super) fn forget(&mut self, plugin: &str) {
        let p = self.plugins.entry(plugin.to_string()).or_default();
        p.epoch += 1;
        self.bytes -= p.bytes;
        p.bytes = 0;
        p.values.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_raced_with_a_commit_is_not_kept() {
        let mut c = ValueCache::default();
        let epoch = c.get("p", "b", "k").unwrap_err();
        // A commit lands while the read runs…
        c.bump("p");
        c.committed("p", "b", "k", Some(b"new".to_vec()));
        // …so the read's older value is not kept.
        c.fill("p", "b", "k", &Some(b"old".to_vec()), epoch);
        assert_eq!(c.get("p", "b", "k"), Ok(Some(b"new".to_vec())));
        // A read with nothing in between is kept, absence too.
        let epoch = c.get("p", "b", "gone").unwrap_err();
        c.fill("p", "b", "gone", &None, epoch);
        assert_eq!(c.get("p", "b", "gone"), Ok(None));
        c.forget("p");
        assert!(c.get("p", "b", "k").is_err());
        assert_eq!(c.bytes, 0);
    }

    #[test]
    fn large_values_are_not_kept_and_the_budget_holds() {
        let mut c = ValueCache::default();
        c.bump("p");
        c.committed("p", "b", "big", Some(vec![0; MAX_VALUE + 1]));
        assert!(c.get("p", "b", "big").is_err());
        for i in 0..(BUDGET / MAX_VALUE) + 10 {
            c.bump(&format!("p{i}"));
            c.committed(&format!("p{i}"), "b", "k", Some(vec![0; MAX_VALUE]));
        }
        assert!(c.bytes <= BUDGET);
    }
}
