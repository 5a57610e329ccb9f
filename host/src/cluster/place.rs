//! Placement: every quarter lease (at most every 250 ms), the node reads the cluster's rows and
//! - stops the units another node took (their rows name another holder or
//!   a newer epoch): their commits would be refused anyway;
//! - claims the units no live node holds: the rendezvous winner among the
//!   live nodes at once (at the exact lease expiry, to within one poll),
//!   any live node once the unit has been unowned for lease/2;
//! - gives a plugin that joins a unit it holds the unit's epoch;
//! - releases the units it holds that it no longer has files for;
//! - rebalances, damped: hands over (gracefully, as a drain does) one unit
//!   whose rendezvous winner is another node live for at least 2 × lease,
//!   at most one unit per lease.
//!
//! Rendezvous hashing (highest SHA-256 of `unit \0 node`) spreads units
//! over nodes and moves only the units of a node that leaves.

use super::{Held, Inner, db, versions};
use crate::supervisor::Placeable;
use anyhow::Result;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Places units until aborted.
pub(super) async fn run(inner: Arc<Inner>) {
    let every = (inner.config.lease / 4).min(Duration::from_millis(250));
    let mut failing = false;
    loop {
        tokio::time::sleep(every).await;
        match step(&inner).await {
            Ok(()) if failing => {
                tracing::info!("placement: the database answers again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                tracing::warn!(
                    "placement: cannot read the cluster's rows: {}",
                    db::describe(&e)
                );
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// The node among `nodes` that unit `unit` hashes highest with.
pub(super) fn winner<'a>(unit: &str, nodes: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    nodes.max_by_key(|node| {
        let mut h = Sha256::new();
        h.update(unit.as_bytes());
        h.update([0]);
        h.update(node.as_bytes());
        <[u8; 32]>::from(h.finalize())
    })
}

async fn step(inner: &Inner) -> Result<()> {
    // The rows are read under the lock a `move` holds while it hands a unit
    // over: rows read before the handover still name this node as the
    // unit's holder, and would have it claim the unit straight back.
    let _moves = inner.moves.lock().await;
    let snap = db::read(&inner.pool).await?;
    *inner.snapshot.write() = snap.clone();
    if inner.draining.load(Ordering::SeqCst) {
        return Ok(());
    }
    let me = inner.config.node.as_str();
    let incarnation = inner.incarnation();
    let mine = Some((me.to_string(), incarnation.clone()));

    // Units another node took.
    let held: Vec<(String, Held)> = inner.held.lock().clone().into_iter().collect();
    for (unit, h) in &held {
        let row = snap.owners.get(unit);
        if row.is_some_and(|r| r.holder == mine && r.epoch == h.epoch) {
            continue;
        }
        let by = row
            .and_then(|r| r.holder.as_ref())
            .map_or("no node".to_string(), |(n, _)| n.clone());
        inner
            .lose(unit, &format!("owner-lost: {unit} moved to {by}"))
            .await;
    }

    let lease_live = Instant::now() < *inner.lease_until.lock();
    if !lease_live || inner.supervisor.loading().is_some() {
        return Ok(());
    }
    let placeable = inner.supervisor.placeable();
    versions::publish(inner, &snap, &placeable).await?;
    let mut units: BTreeMap<String, Vec<Placeable>> = BTreeMap::new();
    for p in placeable {
        units.entry(p.unit.clone()).or_default().push(p);
    }

    // Units held here whose files are gone: hand them over.
    let gone: Vec<(String, Held)> = inner
        .held
        .lock()
        .iter()
        .filter(|(u, _)| !units.contains_key(*u))
        .map(|(u, h)| (u.clone(), h.clone()))
        .collect();
    for (unit, h) in gone {
        inner
            .hand_over(&unit, &h, "its files are gone from this node", None)
            .await;
    }

    if rebalance(inner, &snap).await {
        // The rows read are stale now: the next round claims.
        return Ok(());
    }
    let live: Vec<&str> = snap
        .nodes
        .values()
        .filter(|n| n.live && !n.draining)
        .map(|n| n.name.as_str())
        .collect();
    let half = i64::try_from((inner.config.lease / 2).as_millis()).unwrap_or(i64::MAX);
    for (unit, plugins) in units {
        let names: Vec<String> = plugins.iter().map(|p| p.name.clone()).collect();
        let versions: Vec<String> = plugins.iter().map(|p| p.sha256.clone()).collect();
        let held = inner.held.lock().get(&unit).cloned();
        let row = snap.owners.get(&unit);
        if let Some(h) = held {
            let joined: Vec<String> = names
                .iter()
                .filter(|n| !h.plugins.contains(n))
                .cloned()
                .collect();
            // Plugins joined the unit, or were upgraded here: the row
            // records what runs.
            let recorded = row.is_some_and(|r| r.plugins == names && r.versions == versions);
            if (!joined.is_empty() || !recorded)
                && db::extend(
                    &inner.pool,
                    &unit,
                    me,
                    &incarnation,
                    h.epoch,
                    &names,
                    &versions,
                )
                .await?
            {
                for p in &joined {
                    inner
                        .backend
                        .own(p, Some(u64::try_from(h.epoch).unwrap_or(0)));
                }
                inner.held.lock().insert(
                    unit.clone(),
                    Held {
                        epoch: h.epoch,
                        plugins: names.clone(),
                    },
                );
                inner.supervisor.activate(&joined);
            }
            continue;
        }
        // A unit moved to a live node goes there; any other, to its
        // rendezvous winner among the nodes with its versions; to any of
        // those after lease/2.
        let candidates = versions::candidates(&snap, row, &live);
        let winner = winner(&unit, candidates.iter().copied());
        // Since when (database clock, ms) no live node holds the unit. One
        // that never had an owner waits for its winner from when the
        // winner joined, so nodes started together (each loading its
        // folder) start on the rendezvous placement.
        let unowned_since = match row {
            None => winner
                .and_then(|w| snap.nodes.get(w))
                .map_or(i64::MIN, |n| n.joined_ms),
            Some(r) => match &r.holder {
                None => r.since_ms,
                Some(holder) if Some(holder) == mine.as_ref() => i64::MIN,
                Some((node, inc)) => match snap.nodes.get(node) {
                    Some(n) if &n.incarnation == inc && n.live => continue,
                    Some(n) if &n.incarnation == inc => n.expires_ms,
                    _ => i64::MIN,
                },
            },
        };
        let first = match row.and_then(|r| r.target.as_deref()) {
            Some(t) if live.contains(&t) => t == me,
            _ => winner == Some(me),
        };
        if !first && (!candidates.contains(&me) || snap.now_ms < unowned_since.saturating_add(half))
        {
            continue;
        }
        let claim = db::Claim {
            unit: &unit,
            plugins: &names,
            versions: &versions,
            seen_epoch: row.map(|r| r.epoch),
        };
        let Some(epoch) = db::claim(&inner.pool, me, &incarnation, &claim).await? else {
            continue;
        };
        for p in &names {
            inner
                .backend
                .own(p, Some(u64::try_from(epoch).unwrap_or(0)));
        }
        inner.held.lock().insert(
            unit.clone(),
            Held {
                epoch,
                plugins: names.clone(),
            },
        );
        let from = row.and_then(|r| r.last_node.clone());
        let shown = from
            .as_ref()
            .map_or_else(String::new, |n| format!(" from {n}"));
        tracing::info!(unit = %unit, epoch, "claimed {unit}{shown}");
        if let Some(change) = versions::change(row, &plugins) {
            tracing::warn!(
                unit = %unit,
                "{unit} runs other versions here than on its last node ({change}): no live node has the versions it ran"
            );
        }
        for p in &names {
            inner.supervisor.events().publish(
                p,
                crate::events::EventKind::OwnerChanged {
                    from: from.clone(),
                    epoch,
                },
            );
        }
        inner.supervisor.activate(&names);
    }
    Ok(())
}

/// Hands over one unit whose rendezvous winner is another node that has
/// been live for two leases, unless this node did so within the last lease;
/// whether it did.
async fn rebalance(inner: &Inner, snap: &db::Snapshot) -> bool {
    let lease = inner.config.lease;
    if inner.rebalanced.lock().is_some_and(|t| t.elapsed() < lease) {
        return false;
    }
    let settled = i64::try_from((lease * 2).as_millis()).unwrap_or(i64::MAX);
    let live = snap.nodes.values().filter(|n| n.live && !n.draining);
    let names: Vec<&str> = live.clone().map(|n| n.name.as_str()).collect();
    let held: Vec<(String, Held)> = inner.held.lock().clone().into_iter().collect();
    for (unit, h) in held {
        // Moved here on request: it stays.
        let row = snap.owners.get(&unit);
        let pinned = row.and_then(|r| r.target.as_deref());
        if pinned == Some(inner.config.node.as_str()) {
            continue;
        }
        let candidates = versions::candidates(snap, row, &names);
        let Some(w) = winner(&unit, candidates.iter().copied()) else {
            continue;
        };
        if w == inner.config.node {
            continue;
        }
        let Some(node) = live.clone().find(|n| n.name == w) else {
            continue;
        };
        if snap.now_ms < node.joined_ms.saturating_add(settled) {
            continue;
        }
        *inner.rebalanced.lock() = Some(Instant::now());
        inner
            .hand_over(
                &unit,
                &h,
                &format!("rebalancing: {w} is its node by rendezvous hashing"),
                None,
            )
            .await;
        return true;
    }
    false
}

impl Inner {
    /// Takes one unit off this node: another node holds it now.
    pub(super) async fn lose(&self, unit: &str, reason: &str) {
        let Some(h) = self.held.lock().remove(unit) else {
            return;
        };
        for p in &h.plugins {
            self.backend.own(p, None);
        }
        tracing::warn!(unit = %unit, "{reason}: stopping it here");
        self.supervisor
            .deactivate(&h.plugins, crate::state::OWNER_LOST, reason)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::winner;

    #[test]
    fn rendezvous_moves_only_the_units_of_a_node_that_leaves() {
        let all = ["a", "b", "c"];
        let two = ["a", "c"];
        let units: Vec<String> = (0..200).map(|i| format!("plugin-{i}")).collect();
        let mut spread = std::collections::BTreeMap::new();
        for u in &units {
            let w3 = winner(u, all.iter().copied()).unwrap();
            *spread.entry(w3).or_insert(0) += 1;
            let w2 = winner(u, two.iter().copied()).unwrap();
            if w3 != "b" {
                assert_eq!(w3, w2, "{u} moved though its node stayed");
            }
        }
        assert_eq!(spread.len(), 3, "every node wins some units: {spread:?}");
        assert!(spread.values().all(|&n| n > 30), "{spread:?}");
    }
}
