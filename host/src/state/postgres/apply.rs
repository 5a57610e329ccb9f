//! How one group of operations becomes one PostgreSQL transaction.
//!
//! A group is folded into its net effect first ([`Net`]): the last value
//! of each key, the timers and records added and removed, the answers kept,
//! the plugins reset. That effect is applied with a few statements over
//! arrays (`unnest`), however many commits the group holds. The common
//! group, keys set and deleted and nothing else ([`Net::only_kv`]), is one
//! statement run as a transaction of its own ([`apply_alone`]): one round
//! trip and one WAL flush for the whole group. Any other group (or one with
//! a fencing token) runs in an explicit transaction.
//!
//! Every statement is idempotent (a key is set to its final value, an id
//! that exists already is left alone), so a group whose COMMIT went
//! unanswered (the connection dropped: it may or may not have committed)
//! is applied again as it is; usage figures are then read again rather
//! than trusted.

use super::{i64_of, u64_of};
use crate::state::queues::Op;
use crate::state::{Delta, StoredAnswer, TimerRecord, entry_size};
use anyhow::Result;
use deadpool_postgres::{GenericClient, Transaction};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The net effect of a group's accepted operations (see the module doc).
#[derive(Default)]
pub(super) struct Net {
    resets: Vec<String>,
    kv: HashMap<(String, String, String), Option<Vec<u8>>>,
    add_timers: HashMap<u64, TimerRecord>,
    /// Timers of `add_timers` a plugin wrote for another plugin (a
    /// `mailbox.send` to a plugin owned by another node of a cluster): they
    /// wait untaken in the target's inbox, and its owner is notified.
    inbox: HashSet<u64>,
    remove_timers: HashSet<u64>,
    add_records: BTreeMap<(String, i16, u64), Vec<u8>>,
    remove_records: HashSet<(String, i16, u64)>,
    /// The bounds of each `(plugin, kind)` a record was added to.
    trims: HashMap<(String, i16), (usize, u64)>,
    answers: HashMap<(String, String), StoredAnswer>,
    prunes: HashMap<String, u64>,
    /// Plugins whose commits are in the group.
    pub(super) plugins: HashSet<String>,
}

impl Net {
    /// Adds one operation, after those added before it.
    pub(super) fn add(&mut self, op: &Op) {
        let c = match op {
            Op::Reset(p) => {
                self.kv.retain(|(plugin, _, _), _| plugin != p);
                self.add_timers.retain(|_, t| t.plugin != *p);
                self.resets.push(p.clone());
                self.plugins.insert(p.clone());
                return;
            }
            Op::Commit(c) => c,
        };
        let p = &c.plugin;
        self.plugins.insert(p.clone());
        for w in &c.writes {
            self.kv.insert(
                (p.clone(), w.bucket.clone(), w.key.clone()),
                w.value.clone(),
            );
        }
        for id in &c.remove_timers {
            if self.add_timers.remove(id).is_none() {
                self.remove_timers.insert(*id);
            }
        }
        for t in &c.add_timers {
            if t.plugin != *p {
                self.inbox.insert(t.id);
            }
            self.add_timers.insert(t.id, t.clone());
        }
        for (kind, id) in &c.remove_records {
            let k = (p.clone(), *kind as i16, *id);
            if self.add_records.remove(&k).is_none() {
                self.remove_records.insert(k);
            }
        }
        for r in &c.records {
            let kind = r.kind as i16;
            self.add_records
                .insert((p.clone(), kind, r.id), r.body.clone());
            self.trims.insert((p.clone(), kind), (r.keep, r.keep_bytes));
        }
        if let Some(before) = c.prune_answers_before {
            let cut = self.prunes.entry(p.clone()).or_default();
            *cut = (*cut).max(before);
        }
        for a in &c.answers {
            self.answers.insert((p.clone(), a.key.clone()), a.clone());
        }
    }

    /// Applies the effect in `tx`; returns each plugin's usage change
    /// (`None`: read it again).
    pub(super) async fn apply(
        self,
        tx: &Transaction<'_>,
        again: bool,
    ) -> Result<HashMap<String, Option<Delta>>> {
        let mut deltas: HashMap<String, Option<Delta>> = self
            .plugins
            .iter()
            .map(|p| (p.clone(), (!again).then(Delta::default)))
            .collect();
        // A reset plugin's usage is read again.
        for p in &self.resets {
            deltas.insert(p.clone(), None);
        }
        let mut add = |plugin: &str, d: Delta| {
            if let Some(Some(delta)) = deltas.get_mut(plugin) {
                *delta += d;
            }
        };
        if !self.resets.is_empty() {
            for sql in [
                "DELETE FROM wasm_sup_kv WHERE plugin = ANY($1)",
                "DELETE FROM wasm_sup_timers WHERE plugin = ANY($1)",
            ] {
                let st = tx.prepare_cached(sql).await?;
                tx.execute(&st, &[&self.resets]).await?;
            }
        }
        if !self.kv.is_empty() {
            for (p, d) in write_kv(tx, self.kv).await? {
                add(&p, d);
            }
        }
        if !self.remove_timers.is_empty() {
            let ids: Vec<i64> = self.remove_timers.iter().map(|id| i64_of(*id)).collect();
            let st = tx
                .prepare_cached(
                    "DELETE FROM wasm_sup_timers WHERE id = ANY($1) RETURNING plugin, octet_length(message)",
                )
                .await?;
            for row in tx.query(&st, &[&ids]).await? {
                let (p, len): (String, i32) = (row.try_get(0)?, row.try_get(1)?);
                add(&p, Delta::of_timer(len as usize, -1));
            }
        }
        if !self.add_timers.is_empty() {
            let (mut ids, mut ps, mut due, mut msgs, mut taken) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let mut notify: HashSet<String> = HashSet::new();
            for t in self.add_timers.into_values() {
                let inbox = self.inbox.contains(&t.id);
                if inbox {
                    notify.insert(t.plugin.clone());
                } else {
                    add(&t.plugin, Delta::of_timer(t.message.len(), 1));
                }
                ids.push(i64_of(t.id));
                ps.push(t.plugin);
                due.push(i64_of(t.due_ms));
                msgs.push(t.message);
                taken.push((!inbox).then_some(0i64));
            }
            let st = tx
                .prepare_cached(
                    "INSERT INTO wasm_sup_timers (id, plugin, due_ms, message, taken) \
                     SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bytea[], $5::bigint[]) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .await?;
            tx.execute(&st, &[&ids, &ps, &due, &msgs, &taken]).await?;
            if !notify.is_empty() {
                // Delivered at COMMIT, to every node listening (the
                // owner takes the message: `PostgresBackend::take_inbox`).
                let targets: Vec<String> = notify.into_iter().collect();
                let st = tx
                    .prepare_cached(
                        "SELECT pg_notify('wasm_sup_inbox', p) FROM unnest($1::text[]) AS p",
                    )
                    .await?;
                tx.execute(&st, &[&targets]).await?;
            }
        }
        Self::apply_records(
            tx,
            &record_keys(self.remove_records),
            self.add_records,
            self.trims,
        )
        .await?;
        if !self.prunes.is_empty() {
            let (ps, cuts): (Vec<String>, Vec<i64>) =
                self.prunes.into_iter().map(|(p, c)| (p, i64_of(c))).unzip();
            let st = tx
                .prepare_cached(
                    "DELETE FROM wasm_sup_answers AS a USING unnest($1::text[], $2::bigint[]) AS t(p, before) \
                     WHERE a.plugin = t.p AND a.time_ms < t.before \
                     RETURNING a.plugin, octet_length(a.key) + octet_length(a.body)",
                )
                .await?;
            for row in tx.query(&st, &[&ps, &cuts]).await? {
                let (p, len): (String, i32) = (row.try_get(0)?, row.try_get(1)?);
                add(&p, Delta::of_answer(Some(len as u64), None));
            }
        }
        if !self.answers.is_empty() {
            let mut cols = AnswerColumns::default();
            for ((p, _), a) in self.answers {
                add(&p, Delta::of_answer(None, Some(a.size())));
                cols.push(p, a);
            }
            let del = tx
                .prepare_cached(
                    "DELETE FROM wasm_sup_answers AS a USING unnest($1::text[], $2::text[]) AS t(p, k) \
                     WHERE a.plugin = t.p AND a.key = t.k \
                     RETURNING a.plugin, a.key, octet_length(a.body)",
                )
                .await?;
            for row in tx.query(&del, &[&cols.plugin, &cols.key]).await? {
                let (p, k, len): (String, String, i32) =
                    (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
                add(
                    &p,
                    Delta::of_answer(Some(entry_size(&k, len as usize)), None),
                );
            }
            let ins = tx
                .prepare_cached(
                    "INSERT INTO wasm_sup_answers (plugin, key, body_sha256, status, body, time_ms) \
                     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::smallint[], $5::bytea[], $6::bigint[])",
                )
                .await?;
            tx.execute(
                &ins,
                &[
                    &cols.plugin,
                    &cols.key,
                    &cols.sha,
                    &cols.status,
                    &cols.body,
                    &cols.time,
                ],
            )
            .await?;
        }
        Ok(deltas)
    }

    /// Removes and adds records, then drops the oldest of each list a
    /// record was added to beyond its bounds (`keep` records, `keep_bytes`).
    async fn apply_records(
        tx: &Transaction<'_>,
        remove: &RecordKeys,
        add: BTreeMap<(String, i16, u64), Vec<u8>>,
        trims: HashMap<(String, i16), (usize, u64)>,
    ) -> Result<()> {
        if !remove.plugin.is_empty() {
            let st = tx
                .prepare_cached(
                    "DELETE FROM wasm_sup_records AS r USING unnest($1::text[], $2::smallint[], $3::bigint[]) AS t(p, k, i) \
                     WHERE r.plugin = t.p AND r.kind = t.k AND r.id = t.i",
                )
                .await?;
            tx.execute(&st, &[&remove.plugin, &remove.kind, &remove.id])
                .await?;
        }
        if add.is_empty() {
            return Ok(());
        }
        let (mut ps, mut kinds, mut ids, mut bodies) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((p, kind, id), body) in add {
            ps.push(p);
            kinds.push(kind);
            ids.push(i64_of(id));
            bodies.push(body);
        }
        let st = tx
            .prepare_cached(
                "INSERT INTO wasm_sup_records (plugin, kind, id, body) \
                 SELECT * FROM unnest($1::text[], $2::smallint[], $3::bigint[], $4::bytea[]) \
                 ON CONFLICT DO NOTHING",
            )
            .await?;
        tx.execute(&st, &[&ps, &kinds, &ids, &bodies]).await?;
        // The newest records that fit both bounds stay (the newest always):
        // counted and summed from the newest down, in the database, one
        // statement per list.
        let trim = tx
            .prepare_cached(
                "DELETE FROM wasm_sup_records AS r USING ( \
                   SELECT id, row_number() OVER newest AS n, sum(octet_length(body)) OVER newest AS bytes \
                   FROM wasm_sup_records WHERE plugin = $1 AND kind = $2 \
                   WINDOW newest AS (ORDER BY id DESC ROWS UNBOUNDED PRECEDING) \
                 ) AS o \
                 WHERE r.plugin = $1 AND r.kind = $2 AND r.id = o.id \
                   AND o.n > 1 AND (o.n > $3 OR o.bytes > $4)",
            )
            .await?;
        for ((p, kind), (keep, keep_bytes)) in trims {
            let keep = i64::try_from(keep).unwrap_or(i64::MAX);
            let keep_bytes = i64::try_from(keep_bytes).unwrap_or(i64::MAX);
            tx.execute(&trim, &[&p, &kind, &keep, &keep_bytes]).await?;
        }
        Ok(())
    }
}

impl Net {
    /// Whether the group only sets and deletes keys: it is then one
    /// statement, which PostgreSQL runs as a transaction of its own
    /// ([`apply_alone`]).
    pub(super) fn only_kv(&self) -> bool {
        self.resets.is_empty()
            && self.add_timers.is_empty()
            && self.remove_timers.is_empty()
            && self.add_records.is_empty()
            && self.remove_records.is_empty()
            && self.answers.is_empty()
            && self.prunes.is_empty()
    }
}

/// Applies a group that [`Net::only_kv`] as one statement outside any
/// transaction: one round trip, durable when it returns.
pub(super) async fn apply_alone(
    client: &impl GenericClient,
    net: Net,
    again: bool,
) -> Result<HashMap<String, Option<Delta>>> {
    let mut deltas: HashMap<String, Option<Delta>> = net
        .plugins
        .iter()
        .map(|p| (p.clone(), (!again).then(Delta::default)))
        .collect();
    for (p, d) in write_kv(client, net.kv).await? {
        if let Some(Some(delta)) = deltas.get_mut(&p) {
            *delta += d;
        }
    }
    Ok(deltas)
}

/// Sets and deletes keys in one statement, returning each write's change
/// in usage. The sizes before are read in the same statement (its parts
/// share one snapshot, taken before its writes).
async fn write_kv(
    client: &impl GenericClient,
    kv: HashMap<(String, String, String), Option<Vec<u8>>>,
) -> Result<Vec<(String, Delta)>> {
    let (mut ps, mut bs, mut ks, mut vs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((p, b, k), v) in kv {
        ps.push(p);
        bs.push(b);
        ks.push(k);
        vs.push(v);
    }
    let st = client
        .prepare_cached(
            "WITH t AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) AS t(p, b, k, v)), \
             old AS (SELECT kv.plugin, kv.bucket, kv.key, octet_length(kv.value) AS len \
                     FROM wasm_sup_kv AS kv JOIN t ON kv.plugin = t.p AND kv.bucket = t.b AND kv.key = t.k), \
             s AS (INSERT INTO wasm_sup_kv (plugin, bucket, key, value) \
                   SELECT p, b, k, v FROM t WHERE v IS NOT NULL \
                   ON CONFLICT (plugin, bucket, key) DO UPDATE SET value = EXCLUDED.value), \
             d AS (DELETE FROM wasm_sup_kv AS kv USING t \
                   WHERE t.v IS NULL AND kv.plugin = t.p AND kv.bucket = t.b AND kv.key = t.k) \
             SELECT plugin, bucket, key, len FROM old",
        )
        .await?;
    let mut old = HashMap::new();
    for row in client.query(&st, &[&ps, &bs, &ks, &vs]).await? {
        let len: i32 = row.try_get(3)?;
        let key: (String, String, String) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        old.insert(key, len as usize);
    }
    let mut out = Vec::with_capacity(ps.len());
    for (((p, b), k), v) in ps.into_iter().zip(bs).zip(ks).zip(vs) {
        let key = (p, b, k);
        let before = old.get(&key).copied();
        let delta = Delta::of_write(&key.2, before, v.as_ref().map(Vec::len));
        out.push((key.0, delta));
    }
    Ok(out)
}

/// Records to remove, as the columns of an `unnest`.
#[derive(Default)]
struct RecordKeys {
    plugin: Vec<String>,
    kind: Vec<i16>,
    id: Vec<i64>,
}

fn record_keys(keys: HashSet<(String, i16, u64)>) -> RecordKeys {
    let mut cols = RecordKeys::default();
    for (p, kind, id) in keys {
        cols.plugin.push(p);
        cols.kind.push(kind);
        cols.id.push(i64_of(id));
    }
    cols
}

/// Answers to keep, as the columns of an `unnest`.
#[derive(Default)]
struct AnswerColumns {
    plugin: Vec<String>,
    key: Vec<String>,
    sha: Vec<String>,
    status: Vec<i16>,
    body: Vec<Vec<u8>>,
    time: Vec<i64>,
}

impl AnswerColumns {
    fn push(&mut self, plugin: String, a: StoredAnswer) {
        self.plugin.push(plugin);
        self.key.push(a.key);
        self.sha.push(a.body_sha256);
        self.status.push(a.status as i16);
        self.body.push(a.body);
        self.time.push(i64_of(a.time_ms));
    }
}

/// Checks the fencing tokens of a group's commits against the stored ones
/// (locked for the transaction) and stores the new ones; returns, by
/// position, why a commit is refused. `ops` are the group's operations in
/// order, `None` where one was refused already.
pub(super) async fn fences(
    tx: &Transaction<'_>,
    ops: &[Option<&Op>],
) -> Result<Vec<Option<String>>> {
    let fenced: Vec<(usize, &str, u64)> = ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| match op {
            Some(Op::Commit(c)) => c.fence.map(|f| (i, c.plugin.as_str(), f)),
            _ => None,
        })
        .collect();
    let mut refused = vec![None; ops.len()];
    if fenced.is_empty() {
        return Ok(refused);
    }
    let plugins: Vec<&str> = fenced.iter().map(|(_, p, _)| *p).collect();
    let st = tx
        .prepare_cached(
            "SELECT plugin, token FROM wasm_sup_fences WHERE plugin = ANY($1) FOR UPDATE",
        )
        .await?;
    let mut tokens: HashMap<String, u64> = HashMap::new();
    for row in tx.query(&st, &[&plugins]).await? {
        tokens.insert(row.try_get(0)?, u64_of(row.try_get(1)?));
    }
    for (i, plugin, f) in fenced {
        let seen = tokens.get(plugin).copied().unwrap_or(0);
        if f < seen {
            refused[i] = Some(format!(
                "{}: commit refused: {plugin}'s fencing epoch {f} is older than {seen} (another node took it over)",
                crate::state::OWNER_LOST
            ));
        } else {
            tokens.insert(plugin.to_string(), f);
        }
    }
    let (ps, ts): (Vec<String>, Vec<i64>) = tokens.into_iter().map(|(p, t)| (p, i64_of(t))).unzip();
    let st = tx
        .prepare_cached(
            "INSERT INTO wasm_sup_fences (plugin, token) SELECT * FROM unnest($1::text[], $2::bigint[]) \
             ON CONFLICT (plugin) DO UPDATE SET token = GREATEST(wasm_sup_fences.token, EXCLUDED.token)",
        )
        .await?;
    tx.execute(&st, &[&ps, &ts]).await?;
    Ok(refused)
}
