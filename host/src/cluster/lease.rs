//! The node's lease: renewed every third of `lease`. The node counts its
//! lease as ending `lease` after the last renewal it *sent* that succeeded
//! (the database's expiry is later than that), less a fifth for safety:
//! past that instant without a renewal, it stops every plugin it runs
//! (DESIGN.md, "Cluster mode": a node whose lease cannot be renewed stops
//! its plugins before the lease ends). A renewal the database refuses means
//! the lease lapsed (the node was paused or cut off): the node registers a
//! new incarnation that owns nothing, and claims like any other.

use super::{Inner, db, new_incarnation};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Keeps the lease of `inner`'s node, registered at `start`, until aborted.
pub(super) async fn keep(inner: Arc<Inner>, start: Instant) {
    let lease = inner.config.lease;
    let every = lease / 3;
    let margin = lease / 5;
    *inner.lease_until.lock() = start + lease - margin;
    let mut next = start + every;
    let mut failing = false;
    loop {
        tokio::time::sleep_until(next.into()).await;
        let sent = Instant::now();
        next = sent + every;
        let until = *inner.lease_until.lock();
        let (name, incarnation) = (inner.config.node.clone(), inner.incarnation());
        // A renewal stuck past the lease's end is given up on: the
        // plugins stop at that instant, whatever the database does.
        let budget = until
            .saturating_duration_since(sent)
            .max(Duration::from_millis(50));
        let renewed = tokio::time::timeout(
            budget.min(every),
            db::renew(&inner.pool, &name, &incarnation, lease),
        )
        .await;
        match renewed {
            Ok(Ok(true)) => {
                *inner.lease_until.lock() = sent + lease - margin;
                if failing {
                    tracing::info!(node = %name, "lease renewed again");
                    failing = false;
                }
                inner.supervisor.set_lease_held(true);
            }
            Ok(Ok(false)) => {
                inner.lease_lapsed().await;
                rejoin(&inner).await;
                failing = false;
            }
            Ok(Err(e)) => {
                if !failing {
                    tracing::warn!(node = %name, "cannot renew the lease: {}", db::describe(&e));
                    failing = true;
                }
            }
            Err(_) => {
                if !failing {
                    tracing::warn!(node = %name, "cannot renew the lease: the database did not answer in time");
                    failing = true;
                }
            }
        }
        if failing && Instant::now() + Duration::from_millis(10) >= *inner.lease_until.lock() {
            inner.supervisor.set_lease_held(false);
            inner
                .lose_all("the lease could not be renewed before it ends")
                .await;
        }
    }
}

impl Inner {
    /// The database says this incarnation's lease lapsed: whatever it ran
    /// may run elsewhere now.
    async fn lease_lapsed(&self) {
        self.supervisor.set_lease_held(false);
        *self.lease_until.lock() = Instant::now();
        self.lose_all("this node's lease lapsed (it was paused or cut off from the database)")
            .await;
    }
}

/// Registers a new incarnation under the node's name, retrying each third
/// of a lease until the database takes it.
async fn rejoin(inner: &Inner) {
    let lease = inner.config.lease;
    let name = inner.config.node.clone();
    let incarnation = new_incarnation();
    loop {
        let sent = Instant::now();
        match db::register(
            &inner.pool,
            &name,
            &incarnation,
            &inner.config.advertise,
            lease,
        )
        .await
        {
            Ok(true) => {
                *inner.incarnation.lock() = incarnation.clone();
                *inner.lease_until.lock() = sent + lease - lease / 5;
                inner.supervisor.set_lease_held(true);
                tracing::warn!(
                    node = %name,
                    incarnation = %incarnation,
                    "rejoined the cluster as a new incarnation owning nothing"
                );
                return;
            }
            Ok(false) => tracing::warn!(
                node = %name,
                "cannot rejoin: another running wasm-sup holds the node name {name}"
            ),
            Err(e) => tracing::warn!(node = %name, "cannot rejoin yet: {}", db::describe(&e)),
        }
        tokio::time::sleep(lease / 3).await;
    }
}
