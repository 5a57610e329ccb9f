//! A plugin's view of its own state while its commits are pipelined.
//!
//! The worker does not wait for one call's commit to be durable before it runs
//! the next call: the commit goes to the backend, the reply waits in the
//! worker until the commit resolves, and the next call runs at once, so many
//! calls of one plugin share one fsync. The next call must still read what the
//! previous one wrote. This view keeps the writes of commits submitted and not
//! yet resolved ("pending") in front of the backend's committed state, and the
//! plugin's usage (committed plus pending) for its quota.
//!
//! Invariants:
//! - Reads see, newest first: the call's own writes (kept by the call's
//!   [`crate::instance::txn::Txn`]), pending commits, committed state.
//! - Every commit submitted here carries a [`Chain`] whose `after` is the
//!   oldest commit still pending: if any commit it may have read from fails,
//!   the backend refuses it too (see [`super::Failures`]).
//! - A failed commit empties the view (pending writes and usage): the worker
//!   resolves every commit in flight before its next call, and usage is read
//!   again from committed state.
//! - Usage is loaded from the backend only while no pending commit changes
//!   it (writes, timers added or removed), so the figure never counts a
//!   change twice or misses one.
//! - Only the plugin's worker writes through its view, one call at a time;
//!   admin reads go to the backend and see committed state only.

use super::{Chain, Commit, Delta, StateBackend, Usage};
use anyhow::Result;
use futures::future::BoxFuture;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// See the module doc.
pub struct StateView {
    plugin: String,
    backend: Arc<dyn StateBackend>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The newest pending value of each written `(bucket, key)`.
    writes: BTreeMap<(String, String), PendingWrite>,
    /// The `seq` of every pending commit, oldest first.
    pending: VecDeque<u64>,
    /// Committed plus pending usage, once loaded.
    usage: Option<Usage>,
}

/// A write of a pending commit.
struct PendingWrite {
    /// The commit's `seq`.
    seq: u64,
    /// The value (`None`: deleted).
    value: Option<Vec<u8>>,
}

/// Commit numbers, unique over the host's life (see [`Chain`]).
static NEXT_SEQ: AtomicU64 = AtomicU64::new(1);

impl StateView {
    /// The view of `plugin`'s state in `backend`, with nothing pending.
    pub fn new(plugin: &str, backend: Arc<dyn StateBackend>) -> StateView {
        StateView {
            plugin: plugin.to_string(),
            backend,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The backend behind the view.
    pub fn backend(&self) -> &Arc<dyn StateBackend> {
        &self.backend
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every change below is a few map operations that cannot panic half-way.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value of `key`, pending writes first.
    pub fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>> {
        if let Some(w) = self
            .lock()
            .writes
            .get(&(bucket.to_string(), key.to_string()))
        {
            return Ok(w.value.clone());
        }
        self.backend.get(&self.plugin, bucket, key)
    }

    /// Every key of `bucket`, pending writes included, in order.
    pub fn keys(&self, bucket: &str) -> Result<BTreeSet<String>> {
        let mut keys: BTreeSet<String> = self
            .backend
            .list_keys(&self.plugin, bucket, None, usize::MAX)?
            .into_iter()
            .collect();
        let g = self.lock();
        let from = (bucket.to_string(), String::new());
        for ((b, k), w) in g.writes.range(from..) {
            if b != bucket {
                break;
            }
            if w.value.is_some() {
                keys.insert(k.clone());
            } else {
                keys.remove(k);
            }
        }
        Ok(keys)
    }

    /// The plugin's usage, pending commits included.
    pub fn usage(&self) -> Result<Usage> {
        let mut g = self.lock();
        Self::loaded(&mut g, &*self.backend, &self.plugin)
    }

    fn loaded(g: &mut Inner, backend: &dyn StateBackend, plugin: &str) -> Result<Usage> {
        if let Some(u) = g.usage {
            return Ok(u);
        }
        debug_assert!(
            g.writes.is_empty(),
            "usage is kept while writes are pending"
        );
        let u = backend.usage(plugin)?;
        g.usage = Some(u);
        Ok(u)
    }

    /// Submits a call's commit (`delta`: what it changes in usage, against
    /// this view). Its writes are visible to the next call at once. Returns
    /// the commit's `seq`, to hand to [`StateView::settle`], and a future that
    /// resolves once the commit is durable (or failed). A commit with nothing
    /// in it goes nowhere: it resolves at once, with `seq` 0; so does one that
    /// cannot be submitted because the plugin's usage cannot be read, with
    /// that error.
    pub fn submit(
        &self,
        mut commit: Commit,
        delta: Delta,
    ) -> (u64, BoxFuture<'static, Result<()>>) {
        if commit.is_empty() {
            return (0, Box::pin(async { Ok(()) }));
        }
        let mut g = self.lock();
        let usage = if !commit.changes_usage() {
            g.usage
        } else {
            // Load before anything is pending (see the module doc).
            match Self::loaded(&mut g, &*self.backend, &self.plugin) {
                Ok(u) => Some(u),
                Err(e) => return (0, Box::pin(async move { Err(e) })),
            }
        };
        let seq = NEXT_SEQ.fetch_add(1, Ordering::Relaxed);
        commit.chain = Some(Chain {
            seq,
            after: g.pending.front().copied().unwrap_or(seq),
        });
        g.usage = usage.map(|u| u.plus(delta));
        for w in &commit.writes {
            let pending = PendingWrite {
                seq,
                value: w.value.clone(),
            };
            g.writes.insert((w.bucket.clone(), w.key.clone()), pending);
        }
        g.pending.push_back(seq);
        // Submitted under the lock, so commits reach the backend in `seq` order.
        let durable = self.backend.commit(commit);
        (seq, durable)
    }

    /// Records how commit `seq` resolved: once durable its writes are read
    /// from the backend; a failure empties the view (see the module doc).
    pub fn settle(&self, seq: u64, durable: bool) {
        if seq == 0 {
            return;
        }
        let mut g = self.lock();
        if durable {
            g.pending.retain(|s| *s != seq);
            g.writes.retain(|_, w| w.seq != seq);
        } else {
            *g = Inner::default();
        }
    }

    /// Deletes every key of the plugin. Call with nothing pending.
    pub async fn reset(&self) -> Result<()> {
        let r = self.backend.reset(&self.plugin).await;
        *self.lock() = Inner::default();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Write;
    use crate::state::memory::MemoryBackend;

    /// What key-value writes alone change in usage.
    fn kv(keys: i64, bytes: i64) -> Delta {
        Delta {
            keys,
            bytes,
            timers: 0,
        }
    }

    /// The usage of keys and values alone.
    fn kv_usage(keys: u64, bytes: u64) -> Usage {
        Usage {
            keys,
            bytes,
            timers: 0,
        }
    }

    fn write(key: &str, value: Option<&str>) -> Commit {
        let mut c = Commit::new("p");
        c.writes.push(Write {
            bucket: "default".into(),
            key: key.into(),
            value: value.map(|v| v.as_bytes().to_vec()),
        });
        c
    }

    /// A backend that holds every commit until released, to see the pending
    /// state a real group commit would leave between calls.
    struct Held {
        inner: MemoryBackend,
        queue: Mutex<Vec<(Commit, tokio::sync::oneshot::Sender<Result<()>>)>>,
    }

    impl Held {
        fn release(&self, fail: bool) {
            for (c, tx) in std::mem::take(&mut *self.queue.lock().unwrap()) {
                let r = if fail {
                    Err(anyhow::anyhow!("disk full"))
                } else {
                    futures::executor::block_on(self.inner.commit(c))
                };
                let _ = tx.send(r);
            }
        }
    }

    impl StateBackend for Held {
        fn get(&self, p: &str, b: &str, k: &str) -> Result<Option<Vec<u8>>> {
            self.inner.get(p, b, k)
        }
        fn list_keys(&self, p: &str, b: &str, a: Option<&str>, l: usize) -> Result<Vec<String>> {
            self.inner.list_keys(p, b, a, l)
        }
        fn list_all(&self, p: &str) -> Result<Vec<(String, String, u64)>> {
            self.inner.list_all(p)
        }
        fn usage(&self, p: &str) -> Result<Usage> {
            self.inner.usage(p)
        }
        fn commit(&self, c: Commit) -> BoxFuture<'static, Result<()>> {
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.queue.lock().unwrap().push((c, tx));
            Box::pin(async move { rx.await? })
        }
        fn timers(&self) -> Result<Vec<crate::state::TimerRecord>> {
            self.inner.timers()
        }
        fn records(
            &self,
            p: &str,
            k: crate::state::RecordKind,
            s: usize,
            l: usize,
        ) -> Result<Vec<(u64, Vec<u8>)>> {
            self.inner.records(p, k, s, l)
        }
        fn record(&self, p: &str, k: crate::state::RecordKind, id: u64) -> Result<Option<Vec<u8>>> {
            self.inner.record(p, k, id)
        }
        fn reset(&self, p: &str) -> BoxFuture<'static, Result<()>> {
            self.inner.reset(p)
        }
        fn describe(&self) -> String {
            "held".into()
        }
    }

    fn held() -> (Arc<Held>, StateView) {
        let b = Arc::new(Held {
            inner: MemoryBackend::new(),
            queue: Mutex::new(Vec::new()),
        });
        let view = StateView::new("p", b.clone());
        (b, view)
    }

    #[tokio::test]
    async fn pending_writes_are_read_before_they_are_durable_and_then_from_the_backend() {
        let (b, view) = held();
        let one = kv(1, 2);
        let (s1, d1) = view.submit(write("a", Some("1")), one);
        let (s2, d2) = view.submit(write("b", Some("2")), one);
        let (s3, d3) = view.submit(write("a", None), kv(-1, -2));
        assert_eq!(view.get("default", "a").unwrap(), None);
        assert_eq!(view.get("default", "b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(
            view.keys("default")
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            ["b"]
        );
        assert_eq!(view.usage().unwrap(), kv_usage(1, 2));
        assert_eq!(
            b.inner.get("p", "default", "b").unwrap(),
            None,
            "not durable yet"
        );
        b.release(false);
        for (s, d) in [(s1, d1), (s2, d2), (s3, d3)] {
            d.await.unwrap();
            view.settle(s, true);
        }
        assert!(view.lock().writes.is_empty());
        assert_eq!(view.get("default", "b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(view.usage().unwrap(), b.inner.usage("p").unwrap());
    }

    #[tokio::test]
    async fn a_commit_that_read_from_a_failed_one_is_refused_by_the_backend() {
        // The memory backend applies at once; a failed first commit is made by
        // an old fencing token, and the second, chained to it, must not land.
        let backend: Arc<dyn StateBackend> = Arc::new(MemoryBackend::new());
        let mut fenced = Commit::new("p");
        fenced.fence = Some(5);
        backend.commit(fenced).await.unwrap();
        let view = StateView::new("p", backend.clone());
        let mut first = write("a", Some("1"));
        first.fence = Some(1);
        let (s1, d1) = view.submit(first, kv(1, 2));
        let (s2, d2) = view.submit(write("b", Some("2")), kv(1, 2));
        assert!(d1.await.is_err());
        view.settle(s1, false);
        let refused = d2.await.unwrap_err().to_string();
        assert!(refused.contains("earlier commit"), "{refused}");
        view.settle(s2, false);
        assert_eq!(backend.get("p", "default", "b").unwrap(), None);
        // A commit made after the failure was seen is accepted.
        let (s3, d3) = view.submit(write("c", Some("3")), kv(1, 2));
        d3.await.unwrap();
        view.settle(s3, true);
        assert_eq!(
            backend.get("p", "default", "c").unwrap(),
            Some(b"3".to_vec())
        );
        assert_eq!(view.usage().unwrap(), kv_usage(1, 2));
    }

    #[tokio::test]
    async fn a_failure_empties_the_view() {
        let (b, view) = held();
        let (s1, d1) = view.submit(write("a", Some("1")), kv(1, 2));
        assert_eq!(view.get("default", "a").unwrap(), Some(b"1".to_vec()));
        b.release(true);
        assert!(d1.await.is_err());
        view.settle(s1, false);
        assert_eq!(view.get("default", "a").unwrap(), None);
        assert_eq!(view.usage().unwrap(), Usage::default());
    }
}
