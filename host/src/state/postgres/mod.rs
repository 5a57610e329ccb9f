//! The PostgreSQL backend (`--state postgres://USER[:PASSWORD]@HOST[:PORT]/DB`):
//! everything the redb file holds, in a database that outlives the machine.
//!
//! - **Connections.** A pool ([`deadpool_postgres`], up to [`POOL`]
//!   connections) serves reads and the committer, and replaces connections
//!   that broke. One more connection holds a session advisory lock for the
//!   host's life ([`schema::LOCK_KEY`]): a second host on the same database
//!   is refused at start, as a second host on a redb file is. Losing that
//!   connection (the server restarted) pauses commits until the lock is
//!   taken again. The connections' setup and the lock keeper are
//!   [`connection`]'s.
//! - **Group commit**, as redb does it: one committer task takes every
//!   operation waiting, queues them per plugin and takes a group in turns
//!   ([`crate::state::queues`]); commits refused on their own (a chain that
//!   reaches back to a failed commit, an old fencing token) are answered
//!   with their error and left out; the rest are applied as one transaction
//!   ([`apply`]), and each waiter is answered only after COMMIT returned,
//!   which PostgreSQL makes durable before it answers.
//! - **Outages.** An error that says the server cannot be reached or is
//!   restarting ([`transient`]) is retried, with the pool reconnecting:
//!   reads for up to [`READ_RETRY`], a group for up to [`COMMIT_RETRY`].
//!   Callers wait meanwhile (a sender sees 504 once its `reply-timeout`
//!   passes, and the message completes later); nothing is answered before
//!   its commit is in, so nothing acknowledged is lost.
//! - **Usage** is cached per plugin and kept by the committer's deltas, as
//!   redb does, and so are the values point reads return ([`cache`]): the
//!   advisory lock makes this host the only writer.
//! - **Ids** come from a sequence in blocks ([`crate::state::ids::BlockIds`]).
//! - **TLS** is not built in (no TLS stack is in the build): a URL that
//!   requires it (`sslmode=require`) is refused with a line saying so.

mod apply;
mod cache;
mod committer;
mod connection;
mod schema;

use connection::{CONNECT_TIMEOUT, fetch_block, fetch_ids, keep_lock, transient};
pub(crate) use connection::{config_of, connect, why};

use super::ids::BlockIds;
use super::queues::{self, Op, Waiter};
use super::*;
use crate::state::OWNER_LOST;
use anyhow::{Context, anyhow, bail};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

/// Most connections the host opens to the database, besides the lock's.
const POOL: usize = 16;
/// How long a read waits for an unreachable server before it fails.
const READ_RETRY: Duration = Duration::from_secs(30);
/// How long a group of commits waits for an unreachable server before it
/// fails (each of its plugins then drops its instance and delivers the
/// messages again, as after any failed commit).
const COMMIT_RETRY: Duration = Duration::from_secs(60);
/// What the committer, the lock keeper and the reads share.
pub(super) struct Shared {
    /// Whether this host holds the database's advisory lock now.
    locked: AtomicBool,
    /// Whether this host is a node of a cluster (it shares the lock).
    clustered: bool,
    /// Usage per plugin, once read (see the module doc).
    pub(super) usage: Mutex<HashMap<String, Usage>>,
    /// Committed values read or written.
    values: Mutex<cache::ValueCache>,
}

impl Shared {
    /// Forgets every cached value and usage figure (the lock was lost).
    fn forget_all(&self) {
        let mut values = self.values.lock();
        values.forget_all();
        self.usage.lock().clear();
    }
}

/// See the module doc.
pub struct PostgresBackend {
    pool: Pool,
    shown: String,
    shared: Arc<Shared>,
    ids: Arc<BlockIds>,
    /// In a cluster, the fencing epoch of each plugin this node owns:
    /// every commit of the plugin carries it, and a plugin it has none
    /// for is not this node's to write (see [`PostgresBackend::own`]).
    epochs: Option<Mutex<HashMap<String, u64>>>,
    /// In a cluster, how many inbox takes of each plugin returned something
    /// (see [`StateBackend::take_inbox`] here).
    inbox_takes: Mutex<HashMap<String, u64>>,
    tx: Mutex<Option<mpsc::UnboundedSender<(Op, Waiter)>>>,
    committer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Tasks that end at close: the lock keeper and the id fetcher.
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

const LOCK_LOST: &str = "this host does not hold the state database's advisory lock";

/// Longest key the PostgreSQL backend stores: a primary-key row must fit a
/// third of a page (about 2.7 KB) with its plugin and bucket names.
const MAX_PG_KEY: usize = 2048;

/// Why PostgreSQL cannot store `key`, if it cannot: `text` holds no NUL
/// byte, and an index row has a size limit.
fn key_problem(key: &str) -> Option<String> {
    if key.contains('\0') {
        return Some("keys may not hold a NUL byte with the PostgreSQL state backend".into());
    }
    (key.len() > MAX_PG_KEY).then(|| {
        format!(
            "key of {} bytes is longer than the PostgreSQL state backend's limit of {MAX_PG_KEY}",
            key.len()
        )
    })
}

/// The database's id for a u64 (ids, times and tokens stay far below 2^63).
pub(super) fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A u64 for the database's (never negative) bigint.
pub(super) fn u64_of(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl PostgresBackend {
    /// Connects to the database at `url`, takes its advisory lock, creates
    /// or migrates the schema and starts the committer. Every failure is one
    /// line naming the database and the fix.
    pub async fn open(url: &str) -> Result<PostgresBackend> {
        PostgresBackend::open_as(url, false).await
    }

    /// Opens the database as a node of a cluster: the advisory lock is
    /// shared with the other nodes, and commits are fenced by the epochs
    /// the cluster gives ([`PostgresBackend::own`]).
    pub async fn open_clustered(url: &str) -> Result<PostgresBackend> {
        PostgresBackend::open_as(url, true).await
    }

    async fn open_as(url: &str, clustered: bool) -> Result<PostgresBackend> {
        let (config, shown) = config_of(url, if clustered { "--cluster" } else { "--state" })?;
        let mut lock_client = connect(&config, &shown).await?;
        if !schema::lock(&lock_client, clustered)
            .await
            .map_err(|e| anyhow!("cannot lock the state database {shown}: {}", why(&e)))?
        {
            if clustered {
                bail!(
                    "the database {shown} is in use by a single wasm-sup host (--state): stop that host, or pass --cluster with another database"
                );
            }
            bail!(
                "the state database {shown} is in use by another wasm-sup (it holds the database's advisory lock, or a cluster's nodes share it): stop that host, or pass --state with another database"
            );
        }
        schema::migrate(&mut lock_client, &shown).await?;
        let first = fetch_block(&lock_client).await.map_err(|e| {
            anyhow!(
                "cannot read ids from the state database {shown}: {}",
                why(&e)
            )
        })?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .context("failed to set up the PostgreSQL connection pool")?;
        let shared = Arc::new(Shared {
            locked: AtomicBool::new(true),
            clustered,
            usage: Mutex::new(HashMap::new()),
            values: Mutex::default(),
        });
        let ids = Arc::new(BlockIds::starting(first));
        let (tx, rx) = mpsc::unbounded_channel();
        let committer = tokio::spawn(committer::run(pool.clone(), shared.clone(), rx));
        let background = vec![
            tokio::spawn(keep_lock(
                lock_client,
                config,
                shown.clone(),
                shared.clone(),
            )),
            tokio::spawn(fetch_ids(pool.clone(), ids.clone())),
        ];
        Ok(PostgresBackend {
            pool,
            shown,
            shared,
            ids,
            epochs: clustered.then(Mutex::default),
            inbox_takes: Mutex::default(),
            tx: Mutex::new(Some(tx)),
            committer: Mutex::new(Some(committer)),
            background: Mutex::new(background),
        })
    }

    /// In a cluster: this node now owns `plugin` under fencing `epoch`
    /// (`Some`), or no longer owns it (`None`). A new owner forgets what
    /// it cached of the plugin: another node may have written since.
    pub fn own(&self, plugin: &str, epoch: Option<u64>) {
        let Some(epochs) = &self.epochs else { return };
        let mut epochs = epochs.lock();
        match epoch {
            Some(e) => {
                let mut values = self.shared.values.lock();
                values.forget(plugin);
                self.shared.usage.lock().remove(plugin);
                epochs.insert(plugin.to_string(), e);
            }
            None => {
                epochs.remove(plugin);
            }
        }
    }

    /// The connection settings and the URL as messages show it.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Stamps a cluster node's commit with the plugin's epoch, or refuses
    /// it when this node does not own the plugin.
    fn fenced(&self, mut commit: Commit) -> Result<Commit, String> {
        let Some(epochs) = &self.epochs else {
            return Ok(commit);
        };
        if commit.plugin.is_empty() && commit.is_empty() {
            return Ok(commit);
        }
        match epochs.lock().get(&commit.plugin) {
            Some(&e) => {
                commit.fence = Some(e);
                Ok(commit)
            }
            None => Err(format!(
                "{OWNER_LOST}: commit refused: this node does not own {}",
                commit.plugin
            )),
        }
    }

    fn submit(&self, op: Op) -> BoxFuture<'static, Result<()>> {
        let tx = self.tx.lock();
        queues::submit(op, |item| {
            tx.as_ref().is_some_and(|tx| tx.send(item).is_ok())
        })
    }

    /// Runs one read statement, waiting out an unreachable server for up to
    /// [`READ_RETRY`] (see the module doc).
    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let deadline = Instant::now() + READ_RETRY;
        let mut pause = Duration::from_millis(50);
        loop {
            let attempt = async {
                let client = self.pool.get().await?;
                let st = client.prepare_cached(sql).await?;
                Ok::<_, anyhow::Error>(client.query(&st, params).await?)
            };
            match attempt.await {
                Ok(rows) => return Ok(rows),
                Err(e) if transient(&e) && Instant::now() < deadline => {
                    tracing::debug!("state read waits for PostgreSQL: {e:#}");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(e) => {
                    return Err(e.context(format!("state read from {} failed", self.shown)));
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl StateBackend for PostgresBackend {
    async fn get(&self, plugin: &str, bucket: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let epoch = match self.shared.values.lock().get(plugin, bucket, key) {
            Ok(value) => return Ok(value),
            Err(epoch) => epoch,
        };
        let rows = self
            .query(
                "SELECT value FROM wasm_sup_kv WHERE plugin = $1 AND bucket = $2 AND key = $3",
                &[&plugin, &bucket, &key],
            )
            .await?;
        let value: Option<Vec<u8>> = rows.first().map(|r| r.try_get(0)).transpose()?;
        self.shared
            .values
            .lock()
            .fill(plugin, bucket, key, &value, epoch);
        Ok(value)
    }

    async fn list_keys(
        &self,
        plugin: &str,
        bucket: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        let limit = i64_of(limit as u64);
        let rows = match after {
            Some(after) => {
                self.query(
                    "SELECT key FROM wasm_sup_kv WHERE plugin = $1 AND bucket = $2 AND key > $3 ORDER BY key LIMIT $4",
                    &[&plugin, &bucket, &after, &limit],
                )
                .await?
            }
            None => {
                self.query(
                    "SELECT key FROM wasm_sup_kv WHERE plugin = $1 AND bucket = $2 ORDER BY key LIMIT $3",
                    &[&plugin, &bucket, &limit],
                )
                .await?
            }
        };
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    async fn list_all(&self, plugin: &str) -> Result<Vec<(String, String, u64)>> {
        let rows = self
            .query(
                "SELECT bucket, key, octet_length(value) FROM wasm_sup_kv WHERE plugin = $1 ORDER BY bucket, key",
                &[&plugin],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let len: i32 = r.try_get(2)?;
                Ok((r.try_get(0)?, r.try_get(1)?, len as u64))
            })
            .collect()
    }

    async fn usage(&self, plugin: &str) -> Result<Usage> {
        if let Some(u) = self.shared.usage.lock().get(plugin) {
            return Ok(*u);
        }
        // Read outside the locks; kept only if no commit of the plugin was
        // applied meanwhile (its epoch in the value cache did not move).
        let epoch = self.shared.values.lock().epoch(plugin);
        let rows = self
            .query(
                "SELECT \
                   (SELECT count(*) FROM wasm_sup_kv WHERE plugin = $1), \
                   (SELECT coalesce(sum(octet_length(key) + octet_length(value)), 0)::bigint FROM wasm_sup_kv WHERE plugin = $1), \
                   (SELECT count(*) FROM wasm_sup_timers WHERE plugin = $1), \
                   (SELECT coalesce(sum(octet_length(message)), 0)::bigint FROM wasm_sup_timers WHERE plugin = $1), \
                   (SELECT coalesce(sum(octet_length(key) + octet_length(body)), 0)::bigint FROM wasm_sup_answers WHERE plugin = $1)",
                &[&plugin],
            )
            .await?;
        let row = rows.first().context("usage query returned no row")?;
        let n = |i: usize| -> Result<u64> { Ok(u64_of(row.try_get(i)?)) };
        let u = Usage {
            keys: n(0)?,
            bytes: n(1)? + n(3)? + n(4)?,
            timers: n(2)?,
        };
        let values = self.shared.values.lock();
        if values.epoch(plugin) == epoch {
            self.shared.usage.lock().insert(plugin.to_string(), u);
        }
        Ok(u)
    }

    fn commit(&self, commit: Commit) -> BoxFuture<'static, Result<()>> {
        match self.fenced(commit) {
            Ok(commit) => self.submit(Op::Commit(commit)),
            Err(why) => Box::pin(async move { Err(anyhow!(why)) }),
        }
    }

    async fn timers(&self, plugin: &str) -> Result<Vec<TimerRecord>> {
        // Marks what waited in the plugin's inbox taken (the statement's
        // parts share one snapshot: the SELECT returns those rows too), so
        // a later `take_inbox` returns only what arrived after this read.
        let rows = self
            .query(
                "WITH t AS (UPDATE wasm_sup_timers SET taken = 0 WHERE plugin = $1 AND taken IS NULL) \
                 SELECT id, due_ms, message FROM wasm_sup_timers WHERE plugin = $1 ORDER BY id",
                &[&plugin],
            )
            .await?;
        timer_rows(plugin, &rows)
    }

    async fn take_inbox(&self, plugin: &str) -> Result<Vec<TimerRecord>> {
        let Some(epoch) = self
            .epochs
            .as_ref()
            .and_then(|e| e.lock().get(plugin).copied())
        else {
            return Ok(Vec::new());
        };
        // Fenced: a node that lost the plugin (a claim raised its fence)
        // takes nothing, so nothing is taken by a node that will not
        // deliver it. Each take marks what it takes with a token of its own
        // (the epoch, and how many takes of the plugin returned something
        // under it), and a take returns what is marked with its token too:
        // when a take's answer was lost (the connection broke after the
        // UPDATE), the next one returns those rows again.
        let n = self.inbox_takes.lock().get(plugin).copied().unwrap_or(0);
        let token = i64_of((epoch << 24) | (n & 0xff_ffff));
        let rows = self
            .query(
                "UPDATE wasm_sup_timers SET taken = $3 \
                 WHERE plugin = $1 AND (taken IS NULL OR taken = $3) \
                   AND coalesce((SELECT token FROM wasm_sup_fences WHERE plugin = $1), 0) <= $2 \
                 RETURNING id, due_ms, message",
                &[&plugin, &i64_of(epoch), &token],
            )
            .await?;
        if !rows.is_empty() {
            *self
                .inbox_takes
                .lock()
                .entry(plugin.to_string())
                .or_default() += 1;
            // Another node's commit added to the plugin's usage.
            let mut values = self.shared.values.lock();
            values.forget(plugin);
            self.shared.usage.lock().remove(plugin);
        }
        let mut timers = timer_rows(plugin, &rows)?;
        timers.sort_by_key(|t| t.id);
        Ok(timers)
    }

    async fn records(
        &self,
        plugin: &str,
        kind: RecordKind,
        skip: usize,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        let (kind, skip, limit) = (kind as i16, i64_of(skip as u64), i64_of(limit as u64));
        let rows = self
            .query(
                "SELECT id, body FROM wasm_sup_records WHERE plugin = $1 AND kind = $2 ORDER BY id DESC OFFSET $3 LIMIT $4",
                &[&plugin, &kind, &skip, &limit],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((u64_of(r.try_get(0)?), r.try_get(1)?)))
            .collect()
    }

    async fn record_count(&self, plugin: &str, kind: RecordKind) -> Result<usize> {
        let kind = kind as i16;
        let rows = self
            .query(
                "SELECT count(*) FROM wasm_sup_records WHERE plugin = $1 AND kind = $2",
                &[&plugin, &kind],
            )
            .await?;
        let n: i64 = rows.first().context("count returned no row")?.try_get(0)?;
        Ok(u64_of(n) as usize)
    }

    async fn record(&self, plugin: &str, kind: RecordKind, id: u64) -> Result<Option<Vec<u8>>> {
        let (kind, id) = (kind as i16, i64_of(id));
        let rows = self
            .query(
                "SELECT body FROM wasm_sup_records WHERE plugin = $1 AND kind = $2 AND id = $3",
                &[&plugin, &kind, &id],
            )
            .await?;
        rows.first().map(|r| Ok(r.try_get(0)?)).transpose()
    }

    async fn answer(&self, plugin: &str, key: &str) -> Result<Option<StoredAnswer>> {
        let rows = self
            .query(
                "SELECT body_sha256, status, body, time_ms FROM wasm_sup_answers WHERE plugin = $1 AND key = $2",
                &[&plugin, &key],
            )
            .await?;
        rows.first()
            .map(|r| {
                let status: i16 = r.try_get(1)?;
                Ok(StoredAnswer {
                    key: key.to_string(),
                    body_sha256: r.try_get(0)?,
                    status: status as u16,
                    body: r.try_get(2)?,
                    time_ms: u64_of(r.try_get(3)?),
                })
            })
            .transpose()
    }

    fn check_key(&self, key: &str) -> Result<(), String> {
        key_problem(key).map_or(Ok(()), Err)
    }

    fn next_id(&self) -> u64 {
        self.ids.next()
    }

    fn reset(&self, plugin: &str) -> BoxFuture<'static, Result<()>> {
        if let Some(epochs) = &self.epochs
            && !epochs.lock().contains_key(plugin)
        {
            let why = format!("{OWNER_LOST}: state reset refused: this node does not own {plugin}");
            return Box::pin(async move { Err(anyhow!(why)) });
        }
        self.submit(Op::Reset(plugin.to_string()))
    }

    fn describe(&self) -> String {
        self.shown.clone()
    }

    async fn close(&self) {
        // Closing the channel ends the committer after the operations queued.
        self.tx.lock().take();
        let committer = self.committer.lock().take();
        if let Some(h) = committer {
            let _ = h.await;
        }
        for h in self.background.lock().drain(..) {
            // Dropping the lock keeper's connection releases the lock.
            h.abort();
        }
        self.pool.close();
    }
}

/// Timer records from rows of `(id, due_ms, message)`.
fn timer_rows(plugin: &str, rows: &[Row]) -> Result<Vec<TimerRecord>> {
    rows.iter()
        .map(|r| {
            Ok(TimerRecord {
                id: u64_of(r.try_get(0)?),
                plugin: plugin.to_string(),
                due_ms: u64_of(r.try_get(1)?),
                message: r.try_get(2)?,
            })
        })
        .collect()
}

impl Drop for PostgresBackend {
    fn drop(&mut self) {
        for h in self.background.lock().drain(..) {
            h.abort();
        }
    }
}
