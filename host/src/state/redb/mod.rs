//! The redb backend (the default): one file, fsynced on every commit, with group
//! commit.
//!
//! Reads open their own read transaction. Writes go through one committer
//! thread: it takes every operation waiting on its channel, queues them per
//! plugin, and makes a group by taking them in turns, one per plugin a round,
//! up to [`MAX_GROUP`] operations and [`GROUP_BYTES`]; it applies the group in
//! one write transaction, commits it with one fsync, and only then answers
//! each waiter. Taking turns keeps each plugin's commits in order and means
//! one plugin's storm of large commits (or of crash reports and dead letters)
//! delays another plugin's commit by one group at most, not by the whole
//! backlog ([`queues`] makes the groups). In a group that holds more than one plugin's commits, each
//! plugin's share is bounded ([`SHARE_OPS`] operations, [`SHARE_BYTES`]
//! bytes, beyond its first operation), so the group another plugin's commit
//! rides in, and its fsync, stay small however hard one plugin writes. A
//! plugin writing alone fills the whole group: nobody waits for it then. A commit refused on its own (an old fencing token, or a chain
//! that reaches back to a failed commit) is answered with its error and left
//! out of the group. The tables are opened once per group, not once per
//! commit.
//!
//! Reads open their own read transaction too. A point read (`get`,
//! `record`, usage once cached) is one B-tree lookup in a local file and is
//! answered inline; a read that scans (`list_keys`, `list_all`, `records`,
//! `timers`, the first `usage` of a plugin) runs on a blocking thread, so a
//! large plugin never holds a runtime thread.
//!
//! The state file and the folder the host creates for it are owner-only
//! ([`crate::private_files`]): they hold every plugin's state and crash data.

use super::lists::{ListSizes, size_of};
use super::queues::{self, Op, Queues, Waiter};
use super::*;
use ::redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use anyhow::{Context, anyhow};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

const KV: TableDefinition<(&str, &str, &str), &[u8]> = TableDefinition::new("kv");
const TIMERS: TableDefinition<u64, (&str, u64, &[u8])> = TableDefinition::new("timers");
const RECORDS: TableDefinition<(&str, u8, u64), &[u8]> = TableDefinition::new("records");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// A kept answer: (body SHA-256, status, body, time in ms).
type AnswerValue = (&'static str, u16, &'static [u8], u64);
/// Kept answers by (plugin, key).
const ANSWERS: TableDefinition<(&str, &str), AnswerValue> = TableDefinition::new("answers");
/// The META entry holding the highest record or timer id written.
const IDS: &str = "ids";

/// See the module doc.
pub struct RedbBackend {
    db: RwLock<Option<Arc<Database>>>,
    path: PathBuf,
    tx: Mutex<Option<mpsc::Sender<(Op, Waiter)>>>,
    committer: Mutex<Option<std::thread::JoinHandle<()>>>,
    usage: Arc<Mutex<HashMap<String, Usage>>>,
    ids: ids::ClockIds,
}

impl RedbBackend {
    /// Opens (or creates) the state file at `path`, creating its folder.
    pub fn open(path: &Path) -> Result<RedbBackend> {
        if let Some(parent) = path.parent() {
            crate::private_files::create_dir(parent)
                .with_context(|| format!("failed to create state folder {}", parent.display()))?;
        }
        let file = crate::private_files::open(path, false)
            .with_context(|| format!("failed to open state file {}", path.display()))?;
        let db = Database::builder().create_file(file).map_err(|e| {
            anyhow!(
                "failed to open state file {}: {e} (is another wasm-sup using it? stop it or pass --state PATH)",
                path.display()
            )
        })?;
        let w = db.begin_write()?;
        w.open_table(KV)?;
        w.open_table(TIMERS)?;
        w.open_table(RECORDS)?;
        w.open_table(ANSWERS)?;
        let floor = w.open_table(META)?.get(IDS)?.map_or(0, |g| g.value());
        w.commit()?;
        let db = Arc::new(db);
        let usage = Arc::new(Mutex::new(HashMap::new()));
        let (tx, rx) = mpsc::channel();
        let committer = {
            let db = db.clone();
            let usage = usage.clone();
            std::thread::Builder::new()
                .name("wasm-sup-commit".into())
                .spawn(move || committer(&db, &usage, rx))
                .context("failed to start the state committer thread")?
        };
        Ok(RedbBackend {
            db: RwLock::new(Some(db)),
            path: path.to_path_buf(),
            tx: Mutex::new(Some(tx)),
            committer: Mutex::new(Some(committer)),
            usage,
            ids: ids::ClockIds::above(floor),
        })
    }

    fn submit(&self, op: Op) -> BoxFuture<'static, Result<()>> {
        let tx = self.tx.lock();
        queues::submit(op, |item| {
            tx.as_ref().is_some_and(|tx| tx.send(item).is_ok())
        })
    }

    /// The open database, or an error once closed.
    fn db(&self) -> Result<Arc<Database>> {
        self.db
            .read()
            .clone()
            .ok_or_else(|| anyhow!("state backend is closed"))
    }

    /// Runs a read that scans on a blocking thread (see the module doc). A
    /// panic in it is resumed here, as if the read had run inline.
    async fn scan<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Database) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.db()?;
        match tokio::task::spawn_blocking(move || read(&db)).await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(anyhow!("state read was cancelled: {e}")),
        }
    }

    fn scan_usage(db: &Database, plugin: &str) -> Result<Usage> {
        let r = db.begin_read()?;
        let t = r.open_table(KV)?;
        let mut u = Usage::default();
        for item in t.range((plugin, "", "")..)? {
            let (k, v) = item?;
            let (p, _, key) = k.value();
            if p != plugin {
                break;
            }
            u.keys += 1;
            u.bytes += entry_size(key, v.value().len());
        }
        // Timers are keyed by id: a plugin's are found by a scan, once per
        // plugin (the figure is cached and kept by deltas after that).
        let t = r.open_table(TIMERS)?;
        for item in t.iter()? {
            let (_, v) = item?;
            let (p, _, message) = v.value();
            if p == plugin {
                u.timers += 1;
                u.bytes += message.len() as u64;
            }
        }
        let t = r.open_table(ANSWERS)?;
        for item in t.range((plugin, "")..)? {
            let (k, v) = item?;
            let (p, key) = k.value();
            if p != plugin {
                break;
            }
            u.bytes += entry_size(key, v.value().2.len());
        }
        Ok(u)
    }
}

impl RedbBackend {
    fn shut(&self) {
        // Closing the channel ends the committer after the operations queued.
        self.tx.lock().take();
        if let Some(h) = self.committer.lock().take() {
            let _ = h.join();
        }
        self.db.write().take();
    }
}

impl Drop for RedbBackend {
    fn drop(&mut self) {
        self.shut();
    }
}

fn committer(
    db: &Database,
    usage: &Mutex<HashMap<String, Usage>>,
    rx: mpsc::Receiver<(Op, Waiter)>,
) {
    let mut failures = Failures::default();
    let mut queues = Queues::default();
    // The record lists' sizes as committed (see [`super::lists`]).
    let mut sizes = ListSizes::default();
    loop {
        if queues.is_empty() {
            match rx.recv() {
                Ok(item) => queues.push(item),
                Err(_) => return,
            }
        }
        while let Ok(item) = rx.try_recv() {
            queues.push(item);
        }
        let group = queues.group();
        let (ops, waiters): (Vec<Op>, Vec<Waiter>) = group.into_iter().unzip();
        // Each chained commit's plugin and chain, recorded if the group fails.
        let chains: Vec<Option<(String, Chain)>> = ops
            .iter()
            .map(|op| match op {
                Op::Commit(c) => c.chain.map(|chain| (c.plugin.clone(), chain)),
                Op::Reset(_) => None,
            })
            .collect();
        // Operations refused on their own, by position, with the reason.
        let mut refused: Vec<Option<String>> = vec![None; ops.len()];
        let result = (|| -> Result<()> {
            let w = db.begin_write()?;
            let mut deltas: HashMap<String, Option<Delta>> = HashMap::new();
            {
                let mut tables = Tables {
                    kv: w.open_table(KV)?,
                    timers: w.open_table(TIMERS)?,
                    records: w.open_table(RECORDS)?,
                    answers: w.open_table(ANSWERS)?,
                };
                let mut meta = w.open_table(META)?;
                let mut high = 0u64;
                for (i, op) in ops.into_iter().enumerate() {
                    if let Op::Commit(c) = &op {
                        if let Err(msg) = failures.check(c) {
                            failures.record(&c.plugin, c.chain);
                            refused[i] = Some(msg);
                            continue;
                        }
                        if let Some(f) = c.fence {
                            // Per plugin, so taking plugins in turns cannot
                            // refuse one plugin's commit for another's token.
                            let key = format!("fence/{}", c.plugin);
                            let fence = meta.get(key.as_str())?.map_or(0, |g| g.value());
                            if f < fence {
                                failures.record(&c.plugin, c.chain);
                                refused[i] = Some(format!(
                                    "commit refused: fencing token {f} is older than {fence}"
                                ));
                                continue;
                            }
                            meta.insert(key.as_str(), f)?;
                        }
                    }
                    if let Op::Commit(c) = &op {
                        let timers = c.add_timers.iter().map(|t| t.id);
                        high = high.max(
                            timers
                                .chain(c.records.iter().map(|r| r.id))
                                .max()
                                .unwrap_or(0),
                        );
                    }
                    apply(&mut tables, op, &mut deltas, &mut sizes)?;
                }
                if high > meta.get(IDS)?.map_or(0, |g| g.value()) {
                    meta.insert(IDS, high)?;
                }
            }
            w.commit()?;
            settle_usage(&mut usage.lock(), deltas);
            Ok(())
        })();
        if result.is_err() {
            // What the group counted was rolled back with it.
            sizes.clear();
        }
        let outcome = result.map_err(|e| format!("state commit failed: {e:#}"));
        for (i, waiter) in waiters.into_iter().enumerate() {
            let answer = match refused[i].take() {
                Some(reason) => Err(reason),
                None => {
                    // A failed group fails every operation it was to apply,
                    // those after the failing one included.
                    if let (Err(_), Some((plugin, chain))) = (&outcome, &chains[i]) {
                        failures.record(plugin, Some(*chain));
                    }
                    outcome.clone()
                }
            };
            let _ = waiter.send(answer);
        }
    }
}

/// The tables a group writes, opened once per write transaction.
struct Tables<'t> {
    kv: ::redb::Table<'t, (&'static str, &'static str, &'static str), &'static [u8]>,
    timers: ::redb::Table<'t, u64, (&'static str, u64, &'static [u8])>,
    records: ::redb::Table<'t, (&'static str, u8, u64), &'static [u8]>,
    answers: ::redb::Table<'t, (&'static str, &'static str), AnswerValue>,
}

/// Applies one operation inside the group's write transaction, adding its
/// usage change to `deltas` (`None`: forget the cached usage).
fn apply(
    t: &mut Tables<'_>,
    op: Op,
    deltas: &mut HashMap<String, Option<Delta>>,
    sizes: &mut ListSizes,
) -> Result<()> {
    let c = match op {
        Op::Reset(plugin) => {
            let keys: Vec<(String, String)> =
                t.kv.range((plugin.as_str(), "", "")..)?
                    .map_while(|item| {
                        let (k, _) = item.ok()?;
                        let (p, b, key) = k.value();
                        (p == plugin).then(|| (b.to_string(), key.to_string()))
                    })
                    .collect();
            for (b, k) in keys {
                t.kv.remove((plugin.as_str(), b.as_str(), k.as_str()))?;
            }
            let timers: Vec<u64> = t
                .timers
                .iter()?
                .filter_map(|item| {
                    let (id, v) = item.ok()?;
                    (v.value().0 == plugin).then(|| id.value())
                })
                .collect();
            for id in timers {
                t.timers.remove(id)?;
            }
            deltas.insert(plugin, None);
            return Ok(());
        }
        Op::Commit(c) => c,
    };
    let p = c.plugin.as_str();
    let delta = deltas
        .entry(c.plugin.clone())
        .or_insert(Some(Delta::default()));
    for wr in &c.writes {
        let key = (p, wr.bucket.as_str(), wr.key.as_str());
        let old = match &wr.value {
            Some(v) => t.kv.insert(key, v.as_slice())?.map(|g| g.value().len()),
            None => t.kv.remove(key)?.map(|g| g.value().len()),
        };
        if let Some(delta) = delta {
            *delta += Delta::of_write(&wr.key, old, wr.value.as_ref().map(Vec::len));
        }
    }
    for id in &c.remove_timers {
        let removed = t.timers.remove(*id)?.map(|g| g.value().2.len());
        if let (Some(delta), Some(len)) = (delta.as_mut(), removed) {
            *delta += Delta::of_timer(len, -1);
        }
    }
    for tm in &c.add_timers {
        t.timers.insert(
            tm.id,
            (tm.plugin.as_str(), tm.due_ms, tm.message.as_slice()),
        )?;
        if let Some(delta) = delta.as_mut() {
            *delta += Delta::of_timer(tm.message.len(), 1);
        }
    }
    for (kind, id) in &c.remove_records {
        if let Some(body) = t.records.remove((p, *kind as u8, *id))? {
            sizes.removed(p, *kind as u8, body.value().len());
        }
    }
    for r in &c.records {
        let kind = r.kind as u8;
        let list = (p, kind, 0)..=(p, kind, u64::MAX);
        let records = &mut t.records;
        let size = sizes.get(p, kind, || {
            let mut lens = Vec::new();
            for item in records.range(list.clone())? {
                lens.push(item?.1.value().len());
            }
            Ok(size_of(lens))
        })?;
        size.add(r.body.len());
        if let Some(old) = t.records.insert((p, kind, r.id), r.body.as_slice())? {
            size.remove(old.value().len());
        }
        while size.over(r.keep, r.keep_bytes) {
            let Some((oldest, len)) = t
                .records
                .range(list.clone())?
                .next()
                .transpose()?
                .map(|(k, v)| (k.value().2, v.value().len()))
            else {
                break;
            };
            t.records.remove((p, kind, oldest))?;
            size.remove(len);
        }
    }
    let mut answers = Delta::default();
    if let Some(before) = c.prune_answers_before {
        let mut old = Vec::new();
        for item in t.answers.range((p, "")..)? {
            let (k, v) = item?;
            let (plugin, key) = k.value();
            if plugin != p {
                break;
            }
            let (_, _, body, time_ms) = v.value();
            if time_ms < before {
                old.push((key.to_string(), entry_size(key, body.len())));
            }
        }
        for (key, size) in old {
            t.answers.remove((p, key.as_str()))?;
            answers += Delta::of_answer(Some(size), None);
        }
    }
    for a in &c.answers {
        let value = (
            a.body_sha256.as_str(),
            a.status,
            a.body.as_slice(),
            a.time_ms,
        );
        let old = t.answers.insert((p, a.key.as_str()), value)?;
        let old = old.map(|g| entry_size(&a.key, g.value().2.len()));
        answers += Delta::of_answer(old, Some(a.size()));
    }
    if let Some(delta) = delta {
        *delta += answers;
    }
    Ok(())
}

#[async_trait::async_trait]
impl StateBackend for RedbBackend {
    async fn get(&self, plugin: &str, bucket: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let r = self.db()?.begin_read()?;
        let t = r.open_table(KV)?;
        Ok(t.get((plugin, bucket, key))?.map(|g| g.value().to_vec()))
    }

    async fn list_keys(
        &self,
        plugin: &str,
        bucket: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        let (plugin, bucket) = (plugin.to_string(), bucket.to_string());
        let after = after.map(str::to_string);
        self.scan(move |db| {
            let r = db.begin_read()?;
            let t = r.open_table(KV)?;
            let mut out = Vec::new();
            let start = (
                plugin.as_str(),
                bucket.as_str(),
                after.as_deref().unwrap_or(""),
            );
            for item in t.range(start..)? {
                let (k, _) = item?;
                let (p, b, key) = k.value();
                if p != plugin || b != bucket || out.len() >= limit {
                    break;
                }
                if after.as_deref().is_some_and(|a| key <= a) {
                    continue;
                }
                out.push(key.to_string());
            }
            Ok(out)
        })
        .await
    }

    async fn list_all(&self, plugin: &str) -> Result<Vec<(String, String, u64)>> {
        let plugin = plugin.to_string();
        self.scan(move |db| {
            let r = db.begin_read()?;
            let t = r.open_table(KV)?;
            let mut out = Vec::new();
            for item in t.range((plugin.as_str(), "", "")..)? {
                let (k, v) = item?;
                let (p, b, key) = k.value();
                if p != plugin {
                    break;
                }
                out.push((b.to_string(), key.to_string(), v.value().len() as u64));
            }
            Ok(out)
        })
        .await
    }

    async fn usage(&self, plugin: &str) -> Result<Usage> {
        if let Some(u) = self.usage.lock().get(plugin) {
            return Ok(*u);
        }
        // Scanned outside the cache lock; a commit racing with the scan makes
        // the cached figure stale, so only the committer's deltas are trusted
        // after this point (the worker commits one call at a time).
        let name = plugin.to_string();
        let u = self.scan(move |db| Self::scan_usage(db, &name)).await?;
        self.usage.lock().insert(plugin.to_string(), u);
        Ok(u)
    }

    fn commit(&self, commit: Commit) -> BoxFuture<'static, Result<()>> {
        self.submit(Op::Commit(commit))
    }

    async fn timers(&self, plugin: &str) -> Result<Vec<TimerRecord>> {
        let plugin = plugin.to_string();
        self.scan(move |db| {
            let r = db.begin_read()?;
            let t = r.open_table(TIMERS)?;
            let mut out = Vec::new();
            for item in t.iter()? {
                let (id, v) = item?;
                let (p, due_ms, message) = v.value();
                if p == plugin {
                    out.push(TimerRecord {
                        id: id.value(),
                        plugin: plugin.clone(),
                        due_ms,
                        message: message.to_vec(),
                    });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn records(
        &self,
        plugin: &str,
        kind: RecordKind,
        skip: usize,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        let plugin = plugin.to_string();
        self.scan(move |db| {
            let r = db.begin_read()?;
            let t = r.open_table(RECORDS)?;
            let (p, k) = (plugin.as_str(), kind as u8);
            t.range((p, k, 0)..=(p, k, u64::MAX))?
                .rev()
                .skip(skip)
                .take(limit)
                .map(|item| {
                    let (key, v) = item?;
                    Ok((key.value().2, v.value().to_vec()))
                })
                .collect()
        })
        .await
    }

    async fn record_count(&self, plugin: &str, kind: RecordKind) -> Result<usize> {
        let plugin = plugin.to_string();
        self.scan(move |db| {
            let r = db.begin_read()?;
            let t = r.open_table(RECORDS)?;
            let (p, k) = (plugin.as_str(), kind as u8);
            Ok(t.range((p, k, 0)..=(p, k, u64::MAX))?.count())
        })
        .await
    }

    async fn record(&self, plugin: &str, kind: RecordKind, id: u64) -> Result<Option<Vec<u8>>> {
        let r = self.db()?.begin_read()?;
        let t = r.open_table(RECORDS)?;
        Ok(t.get((plugin, kind as u8, id))?.map(|g| g.value().to_vec()))
    }

    async fn answer(&self, plugin: &str, key: &str) -> Result<Option<StoredAnswer>> {
        let r = self.db()?.begin_read()?;
        let t = r.open_table(ANSWERS)?;
        Ok(t.get((plugin, key))?.map(|g| {
            let (sha, status, body, time_ms) = g.value();
            StoredAnswer {
                key: key.to_string(),
                body_sha256: sha.to_string(),
                status,
                body: body.to_vec(),
                time_ms,
            }
        }))
    }

    fn next_id(&self) -> u64 {
        self.ids.next()
    }

    fn reset(&self, plugin: &str) -> BoxFuture<'static, Result<()>> {
        self.submit(Op::Reset(plugin.to_string()))
    }

    fn describe(&self) -> String {
        format!("redb:{}", self.path.display())
    }

    async fn close(&self) {
        self.shut();
    }
}

#[cfg(test)]
mod tests {
    use crate::private_files::{DIR_MODE, FILE_MODE, mode};

    #[test]
    fn hole12_the_state_file_and_its_folder_are_owner_only() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join(".wasm-sup/state.redb");
        let backend = super::RedbBackend::open(&path).unwrap();
        assert_eq!(mode(&path).unwrap(), FILE_MODE);
        assert_eq!(mode(path.parent().unwrap()).unwrap(), DIR_MODE);
        drop(backend);
    }
}
