//! The PostgreSQL backend's committer task: takes groups from the shared
//! queues, refuses what must be refused on its own, applies the rest as one
//! statement or one transaction ([`super::apply`]), waits out an unreachable
//! server, and keeps the caches of values and usage in step before any
//! waiter is answered (see the parent module's doc).

use super::{COMMIT_RETRY, LOCK_LOST, Shared, apply, key_problem, transient};
use crate::state::queues::{Op, Queues, Waiter};
use crate::state::{Failures, settle_usage};
use anyhow::bail;
use deadpool_postgres::Pool;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The committer task (see the module doc).
pub(super) async fn run(
    pool: Pool,
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<(Op, Waiter)>,
) {
    let mut failures = Failures::default();
    let mut queues = Queues::default();
    loop {
        if queues.is_empty() {
            match rx.recv().await {
                Some(item) => queues.push(item),
                None => return,
            }
        }
        while let Ok(item) = rx.try_recv() {
            queues.push(item);
        }
        let (ops, waiters): (Vec<Op>, Vec<Waiter>) = queues.group().into_iter().unzip();
        let mut refused: Vec<Option<String>> = vec![None; ops.len()];
        for (i, op) in ops.iter().enumerate() {
            let Op::Commit(c) = op else { continue };
            // A key the database cannot hold would fail the whole group:
            // refused here, it fails its own commit only.
            let unstorable = c.writes.iter().find_map(|w| key_problem(&w.key));
            let refusal = match (failures.check(c), unstorable) {
                (Err(msg), _) => Some(msg),
                (Ok(()), Some(why)) => Some(format!("commit refused: {why}")),
                (Ok(()), None) => None,
            };
            if refusal.is_some() {
                failures.record(&c.plugin, c.chain);
                refused[i] = refusal;
            }
        }
        let outcome = commit_group(&pool, &shared, &ops, &mut refused, &mut failures).await;
        if let Err(e) = &outcome {
            tracing::error!("{e}");
        }
        for (i, (op, waiter)) in ops.iter().zip(waiters).enumerate() {
            let answer = match refused[i].take() {
                Some(reason) => Err(reason),
                None => outcome.clone(),
            };
            if let (Err(_), Op::Commit(c)) = (&answer, op) {
                failures.record(&c.plugin, c.chain);
            }
            let _ = waiter.send(answer);
        }
    }
}

/// Applies a group's accepted operations in one transaction, retrying an
/// unreachable server for up to [`COMMIT_RETRY`]. Fence refusals are added
/// to `refused`, and so are the commits of the same group that may have
/// read from a refused one (`failures` learns both).
async fn commit_group(
    pool: &Pool,
    shared: &Shared,
    ops: &[Op],
    refused: &mut [Option<String>],
    failures: &mut Failures,
) -> Result<(), String> {
    let deadline = Instant::now() + COMMIT_RETRY;
    let mut pause = Duration::from_millis(50);
    let mut again = false;
    loop {
        let attempt = async {
            if !shared.locked.load(Ordering::SeqCst) {
                bail!(LOCK_LOST);
            }
            let mut client = pool.get().await?;
            let accepted: Vec<Option<&Op>> = ops
                .iter()
                .zip(refused.iter())
                .map(|(op, r)| r.is_none().then_some(op))
                .collect();
            let fencing = accepted
                .iter()
                .any(|op| matches!(op, Some(Op::Commit(c)) if c.fence.is_some()));
            if !fencing {
                let mut net = apply::Net::default();
                accepted.iter().flatten().for_each(|op| net.add(op));
                if net.only_kv() {
                    let deltas = apply::apply_alone(&client, net, again).await?;
                    return Ok((vec![None; ops.len()], deltas, None));
                }
            }
            let tx = client.transaction().await?;
            let mut fenced = apply::fences(&tx, &accepted).await?;
            // In order, as redb applies a group: a refused fence fails its
            // plugin's chain, so a later commit of the group that may have
            // read from it is refused too.
            let mut after = failures.clone();
            for (op, fence) in accepted.iter().zip(fenced.iter_mut()) {
                let Some(Op::Commit(c)) = op else { continue };
                if fence.is_none()
                    && let Err(msg) = after.check(c)
                {
                    *fence = Some(msg);
                }
                if fence.is_some() {
                    after.record(&c.plugin, c.chain);
                }
            }
            let mut net = apply::Net::default();
            for (op, fence) in accepted.iter().zip(&fenced) {
                if let (Some(op), None) = (op, fence) {
                    net.add(op);
                }
            }
            let deltas = net.apply(&tx, again).await?;
            tx.commit().await?;
            Ok::<_, anyhow::Error>((fenced, deltas, Some(after)))
        };
        match attempt.await {
            Ok((fenced, deltas, after)) => {
                if let Some(after) = after {
                    *failures = after;
                }
                for (r, f) in refused.iter_mut().zip(fenced) {
                    if r.is_none() {
                        *r = f;
                    }
                }
                // Before any waiter is answered: its next read must see this.
                // Under the values lock, so a usage read racing with this
                // commit sees the epoch move (see `usage`).
                let mut values = shared.values.lock();
                settle_usage(&mut shared.usage.lock(), deltas);
                for (op, r) in ops.iter().zip(refused.iter()) {
                    match (op, r) {
                        (Op::Reset(p), None) => values.forget(p),
                        (Op::Commit(c), None) => {
                            values.bump(&c.plugin);
                            for w in &c.writes {
                                values.committed(&c.plugin, &w.bucket, &w.key, w.value.clone());
                            }
                        }
                        _ => {}
                    }
                }
                return Ok(());
            }
            Err(e) if transient(&e) && Instant::now() < deadline => {
                if !again {
                    tracing::warn!("state commit waits for PostgreSQL: {e:#}");
                }
                again = true;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(e) => {
                // It may have committed (an unanswered COMMIT): read again.
                let mut values = shared.values.lock();
                let mut usage = shared.usage.lock();
                for op in ops {
                    values.forget(op.plugin());
                    usage.remove(op.plugin());
                }
                return Err(format!("state commit failed: {e:#}"));
            }
        }
    }
}
