//! The memory backend (`--state memory`): atomic, not durable. Everything is
//! lost when the host exits; commits are applied under one lock, and reads
//! answer inline (a few map operations under the same lock).

use super::lists::{ListSizes, size_of};
use super::*;
use anyhow::bail;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};

type Key = (String, String, String);

#[derive(Default)]
struct Inner {
    kv: BTreeMap<Key, Vec<u8>>,
    timers: BTreeMap<u64, TimerRecord>,
    records: BTreeMap<(String, u8, u64), Vec<u8>>,
    /// The size of each record list, kept as records come and go.
    sizes: ListSizes,
    answers: BTreeMap<(String, String), StoredAnswer>,
    /// The highest fencing token seen, per plugin.
    fence: HashMap<String, u64>,
    failures: Failures,
}

/// See the module doc.
#[derive(Default)]
pub struct MemoryBackend {
    inner: Mutex<Inner>,
    ids: ids::ClockIds,
}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> MemoryBackend {
        MemoryBackend::default()
    }

    fn apply(&self, c: Commit) -> Result<()> {
        let mut g = self.inner.lock();
        if let Err(refused) = g.failures.check(&c) {
            g.failures.record(&c.plugin, c.chain);
            bail!(refused);
        }
        if let Some(f) = c.fence {
            let fence = g.fence.get(&c.plugin).copied().unwrap_or(0);
            if f < fence {
                g.failures.record(&c.plugin, c.chain);
                bail!("commit refused: fencing token {f} is older than {fence}");
            }
            g.fence.insert(c.plugin.clone(), f);
        }
        for w in c.writes {
            let k = (c.plugin.clone(), w.bucket, w.key);
            match w.value {
                Some(v) => g.kv.insert(k, v),
                None => g.kv.remove(&k),
            };
        }
        for id in c.remove_timers {
            g.timers.remove(&id);
        }
        for t in c.add_timers {
            g.timers.insert(t.id, t);
        }
        let Inner { records, sizes, .. } = &mut *g;
        for (kind, id) in c.remove_records {
            if let Some(body) = records.remove(&(c.plugin.clone(), kind as u8, id)) {
                sizes.removed(&c.plugin, kind as u8, body.len());
            }
        }
        for r in c.records {
            let kind = r.kind as u8;
            let list = (c.plugin.clone(), kind, 0)..=(c.plugin.clone(), kind, u64::MAX);
            let size = sizes.get(&c.plugin, kind, || {
                Ok(size_of(records.range(list.clone()).map(|(_, b)| b.len())))
            })?;
            size.add(r.body.len());
            if let Some(old) = records.insert((c.plugin.clone(), kind, r.id), r.body) {
                size.remove(old.len());
            }
            while size.over(r.keep, r.keep_bytes) {
                let Some((oldest, body)) = records.range(list.clone()).next() else {
                    break;
                };
                let (oldest, len) = (oldest.clone(), body.len());
                records.remove(&oldest);
                size.remove(len);
            }
        }
        if let Some(before) = c.prune_answers_before {
            g.answers
                .retain(|(p, _), a| *p != c.plugin || a.time_ms >= before);
        }
        for a in c.answers {
            g.answers.insert((c.plugin.clone(), a.key.clone()), a);
        }
        Ok(())
    }

    fn plugin_range<'a>(
        g: &'a Inner,
        plugin: &str,
    ) -> impl Iterator<Item = (&'a Key, &'a Vec<u8>)> + 'a {
        let plugin = plugin.to_string();
        g.kv.range((plugin.clone(), String::new(), String::new())..)
            .take_while(move |((p, _, _), _)| *p == plugin)
    }
}

#[async_trait::async_trait]
impl StateBackend for MemoryBackend {
    async fn get(&self, plugin: &str, bucket: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let k = (plugin.to_string(), bucket.to_string(), key.to_string());
        Ok(self.inner.lock().kv.get(&k).cloned())
    }

    async fn list_keys(
        &self,
        plugin: &str,
        bucket: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        let g = self.inner.lock();
        let start = (
            plugin.to_string(),
            bucket.to_string(),
            after.unwrap_or("").to_string(),
        );
        Ok(g.kv
            .range(start..)
            .take_while(|((p, b, _), _)| p == plugin && b == bucket)
            .map(|((_, _, k), _)| k.clone())
            .filter(|k| after.is_none_or(|a| k.as_str() > a))
            .take(limit)
            .collect())
    }

    async fn list_all(&self, plugin: &str) -> Result<Vec<(String, String, u64)>> {
        let g = self.inner.lock();
        Ok(Self::plugin_range(&g, plugin)
            .map(|((_, b, k), v)| (b.clone(), k.clone(), v.len() as u64))
            .collect())
    }

    async fn usage(&self, plugin: &str) -> Result<Usage> {
        let g = self.inner.lock();
        let kv = Self::plugin_range(&g, plugin)
            .map(|((_, _, k), v)| Delta::of_write(k, None, Some(v.len())));
        let timers = g
            .timers
            .values()
            .filter(|t| t.plugin == plugin)
            .map(|t| Delta::of_timer(t.message.len(), 1));
        let answers = g
            .answers
            .iter()
            .filter(|((p, _), _)| p == plugin)
            .map(|(_, a)| Delta::of_answer(None, Some(a.size())));
        Ok(kv
            .chain(timers)
            .chain(answers)
            .fold(Usage::default(), Usage::plus))
    }

    fn commit(&self, commit: Commit) -> BoxFuture<'static, Result<()>> {
        let r = self.apply(commit);
        Box::pin(async move { r })
    }

    async fn timers(&self, plugin: &str) -> Result<Vec<TimerRecord>> {
        let g = self.inner.lock();
        Ok(g.timers
            .values()
            .filter(|t| t.plugin == plugin)
            .cloned()
            .collect())
    }

    async fn records(
        &self,
        plugin: &str,
        kind: RecordKind,
        skip: usize,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        let g = self.inner.lock();
        let (p, k) = (plugin.to_string(), kind as u8);
        Ok(g.records
            .range((p.clone(), k, 0)..=(p, k, u64::MAX))
            .rev()
            .skip(skip)
            .take(limit)
            .map(|((_, _, id), body)| (*id, body.clone()))
            .collect())
    }

    async fn record_count(&self, plugin: &str, kind: RecordKind) -> Result<usize> {
        let g = self.inner.lock();
        let (p, k) = (plugin.to_string(), kind as u8);
        Ok(g.records
            .range((p.clone(), k, 0)..=(p, k, u64::MAX))
            .count())
    }

    async fn record(&self, plugin: &str, kind: RecordKind, id: u64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .inner
            .lock()
            .records
            .get(&(plugin.to_string(), kind as u8, id))
            .cloned())
    }

    async fn answer(&self, plugin: &str, key: &str) -> Result<Option<StoredAnswer>> {
        let k = (plugin.to_string(), key.to_string());
        Ok(self.inner.lock().answers.get(&k).cloned())
    }

    fn next_id(&self) -> u64 {
        self.ids.next()
    }

    fn reset(&self, plugin: &str) -> BoxFuture<'static, Result<()>> {
        let mut g = self.inner.lock();
        g.kv.retain(|(p, _, _), _| p != plugin);
        g.timers.retain(|_, t| t.plugin != plugin);
        Box::pin(async { Ok(()) })
    }

    fn describe(&self) -> String {
        "memory".to_string()
    }
}
