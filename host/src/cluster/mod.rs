//! Cluster mode (`wasm-sup run DIR --cluster postgres://… --node NAME
//! --advertise ADDR`): several nodes with the same plugin folder share one
//! PostgreSQL database and run each unit of ownership (a top-level group,
//! or an ungrouped plugin) on exactly one of them (DESIGN.md, "Cluster
//! mode" and "Cluster, precisely").
//!
//! The parts:
//! - [`db`]: the node and ownership rows, and the statements on them;
//! - [`lease`]: the node's lease, renewed every third of `lease`; a node that
//!   cannot renew stops its plugins before the lease ends, and one whose
//!   lease lapsed comes back as a new incarnation owning nothing;
//! - [`place`]: every quarter lease (at most 250 ms) reads the rows, stops
//!   what another node took, claims what is unowned (rendezvous winner at
//!   once, anyone after lease/2) and releases what it no longer has files
//!   for;
//! - [`forward`]: any node serves any plugin, forwarding one hop to the
//!   owner; `GET /v1/cluster` and the cluster-wide plugin list;
//! - [`notify`]: `LISTEN/NOTIFY` between the nodes: messages put in the
//!   inbox of a plugin this node runs, and every node's events;
//! - [`versions`]: rolling deploys: each node's catalog of versions and
//!   configs, and which nodes a unit may go to.
//!
//! Safety rests on the fence, not on timing: a claim raises the fence of
//! the unit's plugins to a new epoch in the same transaction, and the state
//! backend ([`PostgresBackend`]) checks each commit's epoch with its writes,
//! so a node that lost a unit (paused, partitioned, slow) cannot write to
//! it. The lease timings only decide how soon a unit moves.

mod db;
mod forward;
mod lease;
mod notify;
mod place;
mod versions;

pub use forward::{FORWARDED, middleware};

use crate::config::ClusterConfig;
use crate::state::postgres::PostgresBackend;
use crate::supervisor::SupervisorHandle;
use anyhow::{Context, Result, bail};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Connections the cluster's own work uses (the lease, placement, reads
/// for forwarding), besides the state backend's pool.
const POOL: usize = 4;

/// A node of the cluster; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.inner.config.node)
            .finish_non_exhaustive()
    }
}

/// A unit this node holds.
#[derive(Debug, Clone)]
struct Held {
    epoch: i64,
    plugins: Vec<String>,
}

struct Inner {
    config: ClusterConfig,
    pool: Pool,
    backend: Arc<PostgresBackend>,
    supervisor: SupervisorHandle,
    /// This process's current incarnation (a new one after a lapsed lease).
    incarnation: Mutex<String>,
    /// The last read of the rows (for placement, forwarding and listing).
    snapshot: RwLock<db::Snapshot>,
    /// Units this node holds, by unit.
    held: Mutex<BTreeMap<String, Held>>,
    /// Serializes taking units on and off this node.
    moves: tokio::sync::Mutex<()>,
    /// When this node last handed a unit over to rebalance.
    rebalanced: Mutex<Option<Instant>>,
    /// Until when this node can be sure its lease is live (see [`lease`]).
    lease_until: Mutex<Instant>,
    /// Set on SIGTERM: claim nothing more, hand every unit over.
    draining: AtomicBool,
    /// Config differences already logged: (node, plugin, its hash, ours).
    config_warned: Mutex<HashSet<(String, String, String, String)>>,
    http: reqwest::Client,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

fn new_incarnation() -> String {
    format!("{:016x}", rand::random::<u64>())
}

impl Cluster {
    /// Joins the cluster as `config.node`: registers a fresh incarnation
    /// (waiting one lease when a live process holds the name, and failing if
    /// it renews meanwhile), then starts the lease keeper and placement.
    pub async fn join(
        config: ClusterConfig,
        backend: Arc<PostgresBackend>,
        supervisor: SupervisorHandle,
    ) -> Result<Cluster> {
        let (pg, shown) = crate::state::postgres::config_of(&config.url, "--cluster")?;
        let pool = Pool::builder(Manager::from_config(
            pg,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        ))
        .max_size(POOL)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .create_timeout(Some(Duration::from_secs(5)))
        .build()
        .context("failed to set up the cluster's connection pool")?;
        let incarnation = new_incarnation();
        let name = config.node.as_str();
        let fail = |e: anyhow::Error| {
            anyhow::anyhow!("cannot join the cluster on {shown}: {}", db::describe(&e))
        };
        if let Some(other) = db::node(&pool, name).await.map_err(fail)?
            && other.live
        {
            tracing::warn!(
                node = name,
                "a live process holds the node name {name} (at {}): waiting one lease for it to lapse",
                other.address
            );
            let until = Instant::now() + config.lease + config.lease / 4;
            loop {
                tokio::time::sleep(config.lease / 4).await;
                let now = db::node(&pool, name).await.map_err(fail)?;
                match now {
                    Some(n) if n.live && n.expires_ms > other.expires_ms => bail!(
                        "node name {name} is in use by a running wasm-sup at {} (it renewed its lease): stop it, or pass another --node",
                        n.address
                    ),
                    Some(n) if n.live && Instant::now() < until => {}
                    _ => break,
                }
            }
        }
        let start = Instant::now();
        if !db::register(&pool, name, &incarnation, &config.advertise, config.lease)
            .await
            .map_err(fail)?
        {
            bail!(
                "node name {name} is in use by another running wasm-sup: stop it, or pass another --node"
            );
        }
        tracing::info!(
            node = name,
            incarnation = %incarnation,
            advertise = %config.advertise,
            lease = ?config.lease,
            "joined the cluster on {shown}"
        );
        // Listening before anything is claimed or published, so this node
        // hears its own first events and inbox notices.
        let listener = notify::connect(&config.url)
            .await
            .map_err(|e| fail(e.context("cannot listen to the cluster's notices")))?;
        supervisor.set_lease_held(true);
        let config_lease = config.lease;
        let inner = Arc::new(Inner {
            config,
            pool,
            backend,
            supervisor,
            incarnation: Mutex::new(incarnation),
            snapshot: RwLock::default(),
            held: Mutex::default(),
            lease_until: Mutex::new(Instant::now() + config_lease - config_lease / 5),
            moves: tokio::sync::Mutex::new(()),
            rebalanced: Mutex::new(None),
            draining: AtomicBool::new(false),
            config_warned: Mutex::default(),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .build()
                .context("failed to set up the forwarding HTTP client")?,
            tasks: Mutex::default(),
        });
        let mut tasks = vec![
            tokio::spawn(lease::keep(inner.clone(), start)),
            tokio::spawn(notify::listen(inner.clone(), listener)),
        ];
        tasks.extend(notify::start_relay(&inner, inner.supervisor.events()));
        tasks.push(tokio::spawn(place::run(inner.clone())));
        *inner.tasks.lock() = tasks;
        Ok(Cluster { inner })
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.inner.config.node
    }

    /// Drains the node (SIGTERM in cluster mode, DESIGN.md "Cluster,
    /// precisely"): claims nothing more, and hands each unit over in turn:
    /// its plugins finish the call in flight and commit, the ownership row
    /// is released, and the others claim it at once. Messages queued or
    /// arriving meanwhile are forwarded to the new owner by the admin API,
    /// which stays up. Ends the node's lease when done.
    pub async fn drain(&self) {
        let inner = &self.inner;
        inner.draining.store(true, Ordering::SeqCst);
        let (name, incarnation) = (inner.config.node.clone(), inner.incarnation());
        if let Err(e) = db::set_draining(&inner.pool, &name, &incarnation).await {
            tracing::warn!(
                "draining: cannot mark the node draining: {}",
                db::describe(&e)
            );
        }
        let _moves = inner.moves.lock().await;
        let held: Vec<(String, Held)> = inner.held.lock().clone().into_iter().collect();
        tracing::info!(units = held.len(), "draining: handing every unit over");
        for (unit, h) in held {
            inner
                .hand_over(
                    &unit,
                    &h,
                    "this node is draining; the plugin moves to another node",
                    None,
                )
                .await;
        }
        // The units' new owners answer from now on; give the requests
        // being forwarded to them a moment before the lease ends.
        inner.wait_for_new_owners().await;
        if let Err(e) = db::leave(&inner.pool, &name, &incarnation).await {
            tracing::warn!("draining: cannot end the lease: {}", db::describe(&e));
        }
        for t in inner.tasks.lock().drain(..) {
            t.abort();
        }
        tracing::info!("drained: this node owns nothing");
    }
}

/// The 503 status of a message a draining node handed over: the admin API
/// forwards it to the plugin's new owner instead of answering it.
pub const MOVED: &str = "moved";

impl Inner {
    fn incarnation(&self) -> String {
        self.incarnation.lock().clone()
    }

    /// The plugins of the units this node holds.
    fn held_plugins(&self) -> Vec<String> {
        let held = self.held.lock();
        held.values().flat_map(|h| h.plugins.clone()).collect()
    }

    /// Hands unit `unit` over gracefully (a drain, a rebalance, or a move
    /// to `target`): its plugins finish the call in flight and commit, then
    /// the row is released and another node (`target`, when given) claims
    /// it at once. Messages queued
    /// meanwhile are answered `moved`, which the admin API forwards to the
    /// new owner. Call with `moves` held.
    async fn hand_over(&self, unit: &str, h: &Held, why: &str, target: Option<&str>) {
        self.supervisor.deactivate(&h.plugins, MOVED, why).await;
        for p in &h.plugins {
            self.backend.own(p, None);
        }
        self.held.lock().remove(unit);
        let (name, incarnation) = (self.config.node.as_str(), self.incarnation());
        match db::release(&self.pool, unit, name, &incarnation, h.epoch, target).await {
            Ok(()) => tracing::info!(unit = %unit, "handed {unit} over: {why}"),
            Err(e) => tracing::warn!(
                unit = %unit,
                "cannot release {unit} (another node takes it when this lease ends): {}",
                db::describe(&e)
            ),
        }
    }

    /// Takes every unit off this node at once (its lease lapsed, or cannot
    /// be renewed in time): their commits are refused from now on, and
    /// their instances dropped.
    async fn lose_all(&self, reason: &str) {
        let held = std::mem::take(&mut *self.held.lock());
        if held.is_empty() {
            return;
        }
        let plugins: Vec<String> = held.values().flat_map(|h| h.plugins.clone()).collect();
        for p in &plugins {
            self.backend.own(p, None);
        }
        tracing::error!(
            units = held.len(),
            "{reason}: stopping every plugin this node ran"
        );
        self.supervisor
            .deactivate(
                &plugins,
                crate::state::OWNER_LOST,
                &format!("owner-lost: {reason}"),
            )
            .await;
    }

    /// After a drain handed its units over: waits (up to a lease) until
    /// another node holds each, so requests forwarded meanwhile find them.
    async fn wait_for_new_owners(&self) {
        let until = Instant::now() + self.config.lease;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let Ok(snap) = db::read(&self.pool).await else {
                continue;
            };
            let orphaned = self.supervisor.placeable().iter().any(|p| {
                snap.owners
                    .get(&p.unit)
                    .is_none_or(|r| snap.live_holder(r).is_none())
            });
            *self.snapshot.write() = snap;
            if !orphaned {
                return;
            }
        }
    }
}
