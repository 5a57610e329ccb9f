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
//! - Backend reads are async and the lock is never held across one: a read
//!   takes what it needs of the pending writes first, then awaits the
//!   backend. A write goes from pending to durable before it leaves the
//!   view, so a read that looked at the pending writes first never misses it.

use super::{Chain, Commit, Delta, StateBackend, Usage};
use anyhow::Result;
use futures::future::BoxFuture;
use parking_lot::{Mutex, MutexGuard};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// A pending commit drops expired answers, by an amount only the
    /// backend knows: usage is read again once nothing is pending.
    reload_usage: bool,
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

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    /// The value of `key`, pending writes first.
    pub async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let pending = self
            .lock()
            .writes
            .get(&(bucket.to_string(), key.to_string()))
            .map(|w| w.value.clone());
        match pending {
            Some(value) => Ok(value),
            None => self.backend.get(&self.plugin, bucket, key).await,
        }
    }

    /// Every key of `bucket`, pending writes included, in order.
    pub async fn keys(&self, bucket: &str) -> Result<BTreeSet<String>> {
        // Pending writes first (see the module doc): `true` sets, `false` deletes.
        let pending: Vec<(String, bool)> = {
            let g = self.lock();
            let from = (bucket.to_string(), String::new());
            g.writes
                .range(from..)
                .take_while(|((b, _), _)| b == bucket)
                .map(|((_, k), w)| (k.clone(), w.value.is_some()))
                .collect()
        };
        let mut keys: BTreeSet<String> = self
            .backend
            .list_keys(&self.plugin, bucket, None, usize::MAX)
            .await?
            .into_iter()
            .collect();
        for (k, set) in pending {
            if set {
                keys.insert(k);
            } else {
                keys.remove(&k);
            }
        }
        Ok(keys)
    }

    /// The plugin's usage, pending commits included.
    pub async fn usage(&self) -> Result<Usage> {
        {
            let g = self.lock();
            if let Some(u) = g.usage {
                return Ok(u);
            }
            debug_assert!(
                g.writes.is_empty(),
                "usage is kept while writes are pending"
            );
        }
        // Not loaded, so no pending commit changes usage (see the module
        // doc): the committed figure is the whole figure.
        let u = self.backend.usage(&self.plugin).await?;
        let mut g = self.lock();
        Ok(*g.usage.get_or_insert(u))
    }

    /// Submits a call's commit (`delta`: what it changes in usage, against
    /// this view). Its writes are visible to the next call at once. Returns
    /// the commit's `seq`, to hand to [`StateView::settle`], and a future that
    /// resolves once the commit is durable (or failed). A commit with nothing
    /// in it goes nowhere: it resolves at once, with `seq` 0; so does one that
    /// cannot be submitted because the plugin's usage cannot be read, with
    /// that error.
    pub async fn submit(
        &self,
        mut commit: Commit,
        delta: Delta,
    ) -> (u64, BoxFuture<'static, Result<()>>) {
        if commit.is_empty() {
            return (0, Box::pin(async { Ok(()) }));
        }
        if commit.changes_usage() {
            // Load before anything that changes it is pending (see the module doc).
            if let Err(e) = self.usage().await {
                return (0, Box::pin(async move { Err(e) }));
            }
        }
        let mut g = self.lock();
        let seq = NEXT_SEQ.fetch_add(1, Ordering::Relaxed);
        commit.chain = Some(Chain {
            seq,
            after: g.pending.front().copied().unwrap_or(seq),
        });
        // Kept answers count in usage too; one that replaces an expired
        // answer counts twice until usage is read again.
        let answers = commit.answers.iter().map(|a| a.size()).sum();
        g.usage = g
            .usage
            .map(|u| u.plus(delta).plus(Delta::of_answer(None, Some(answers))));
        g.reload_usage |= commit.prune_answers_before.is_some();
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
            if g.reload_usage && g.pending.is_empty() {
                g.usage = None;
                g.reload_usage = false;
            }
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
        async fn release(&self, fail: bool) {
            let queued = std::mem::take(&mut *self.queue.lock());
            for (c, tx) in queued {
                let r = if fail {
                    Err(anyhow::anyhow!("disk full"))
                } else {
                    self.inner.commit(c).await
                };
                let _ = tx.send(r);
            }
        }
    }

    #[async_trait::async_trait]
    impl StateBackend for Held {
        async fn get(&self, p: &str, b: &str, k: &str) -> Result<Option<Vec<u8>>> {
            self.inner.get(p, b, k).await
        }
        async fn list_keys(
            &self,
            p: &str,
            b: &str,
            a: Option<&str>,
            l: usize,
        ) -> Result<Vec<String>> {
            self.inner.list_keys(p, b, a, l).await
        }
        async fn list_all(&self, p: &str) -> Result<Vec<(String, String, u64)>> {
            self.inner.list_all(p).await
        }
        async fn usage(&self, p: &str) -> Result<Usage> {
            self.inner.usage(p).await
        }
        fn commit(&self, c: Commit) -> BoxFuture<'static, Result<()>> {
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.queue.lock().push((c, tx));
            Box::pin(async move { rx.await? })
        }
        async fn timers(&self, p: &str) -> Result<Vec<crate::state::TimerRecord>> {
            self.inner.timers(p).await
        }
        async fn records(
            &self,
            p: &str,
            k: crate::state::RecordKind,
            s: usize,
            l: usize,
        ) -> Result<Vec<(u64, Vec<u8>)>> {
            self.inner.records(p, k, s, l).await
        }
        async fn record_count(&self, p: &str, k: crate::state::RecordKind) -> Result<usize> {
            self.inner.record_count(p, k).await
        }
        async fn record(
            &self,
            p: &str,
            k: crate::state::RecordKind,
            id: u64,
        ) -> Result<Option<Vec<u8>>> {
            self.inner.record(p, k, id).await
        }
        async fn answer(&self, p: &str, k: &str) -> Result<Option<crate::state::StoredAnswer>> {
            self.inner.answer(p, k).await
        }
        fn reset(&self, p: &str) -> BoxFuture<'static, Result<()>> {
            self.inner.reset(p)
        }
        fn next_id(&self) -> u64 {
            self.inner.next_id()
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
        let (s1, d1) = view.submit(write("a", Some("1")), one).await;
        let (s2, d2) = view.submit(write("b", Some("2")), one).await;
        let (s3, d3) = view.submit(write("a", None), kv(-1, -2)).await;
        assert_eq!(view.get("default", "a").await.unwrap(), None);
        assert_eq!(view.get("default", "b").await.unwrap(), Some(b"2".to_vec()));
        assert_eq!(
            view.keys("default")
                .await
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            ["b"]
        );
        assert_eq!(view.usage().await.unwrap(), kv_usage(1, 2));
        assert_eq!(
            b.inner.get("p", "default", "b").await.unwrap(),
            None,
            "not durable yet"
        );
        b.release(false).await;
        for (s, d) in [(s1, d1), (s2, d2), (s3, d3)] {
            d.await.unwrap();
            view.settle(s, true);
        }
        assert!(view.lock().writes.is_empty());
        assert_eq!(view.get("default", "b").await.unwrap(), Some(b"2".to_vec()));
        assert_eq!(
            view.usage().await.unwrap(),
            b.inner.usage("p").await.unwrap()
        );
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
        let (s1, d1) = view.submit(first, kv(1, 2)).await;
        let (s2, d2) = view.submit(write("b", Some("2")), kv(1, 2)).await;
        assert!(d1.await.is_err());
        view.settle(s1, false);
        let refused = d2.await.unwrap_err().to_string();
        assert!(refused.contains("earlier commit"), "{refused}");
        view.settle(s2, false);
        assert_eq!(backend.get("p", "default", "b").await.unwrap(), None);
        // A commit made after the failure was seen is accepted.
        let (s3, d3) = view.submit(write("c", Some("3")), kv(1, 2)).await;
        d3.await.unwrap();
        view.settle(s3, true);
        assert_eq!(
            backend.get("p", "default", "c").await.unwrap(),
            Some(b"3".to_vec())
        );
        assert_eq!(view.usage().await.unwrap(), kv_usage(1, 2));
    }

    #[tokio::test]
    async fn a_failure_empties_the_view() {
        let (b, view) = held();
        let (s1, d1) = view.submit(write("a", Some("1")), kv(1, 2)).await;
        assert_eq!(view.get("default", "a").await.unwrap(), Some(b"1".to_vec()));
        b.release(true).await;
        assert!(d1.await.is_err());
        view.settle(s1, false);
        assert_eq!(view.get("default", "a").await.unwrap(), None);
        assert_eq!(view.usage().await.unwrap(), Usage::default());
    }
}
