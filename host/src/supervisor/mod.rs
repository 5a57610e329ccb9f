//! The supervisor: one child task per plugin, started in order and stopped in
//! reverse order, driven through [`SupervisorHandle`].
//!
//! The parts, in the order a message meets them:
//! - [`handle`]: the plugin table, sends, operators' requests, shutdown;
//! - [`child`]: one task per plugin. Its [`child::runner`] starts the
//!   instance, delivers messages, commits each call and *returns* how the
//!   instance ended; the child then asks [`restart::judge`] (pure: the
//!   restart [`policy`], the [`breaker`], the host's [`budget`], the
//!   supervision [`tree`], the rollback window) and carries out the
//!   [`restart::Verdict`] in one place;
//! - [`groups`]: the coordinator that carries out a group's restarts, one job
//!   at a time;
//! - [`status`]: what the admin API shows, written only by the board.
//!
//! The supervisor never sees wasmtime types beyond the [`Compiled`] handle it
//! passes along. Durable timers run on one task ([`crate::mailbox::timers`]); crash reports
//! are written by spawned tasks, off the restart path.

pub mod backoff;
pub mod breaker;
pub mod budget;
mod child;
mod control;
mod groups;
mod handle;
mod health;
mod loading;
pub mod policy;
mod restart;
mod standby;
mod status;
pub mod tree;

pub(crate) use control::{Ack, Control};
pub use control::{OperateError, Operation, SendRefused};
pub use standby::Placeable;
pub use status::{CircuitState, HealthLevel, LimitsInfo, PluginInfo, Status};

use crate::config::{HostConfig, PluginConfig};
use crate::mailbox::{Directory, Mailbox};
use crate::metrics::Metrics;
use crate::state::StateBackend;
use parking_lot::{Mutex, RwLock};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use tokio::sync::mpsc;

/// One plugin in the table: what the handle needs to reach its child.
struct Slot {
    board: status::StatusBoard,
    mailbox: Arc<Mailbox>,
    /// The configuration in force (the child changes it at a start).
    config: Arc<Mutex<Arc<PluginConfig>>>,
    control: mpsc::UnboundedSender<Control>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// What the handle and every child share.
struct Shared {
    plugins: RwLock<BTreeMap<String, Arc<Slot>>>,
    /// Names in start order.
    order: RwLock<Vec<String>>,
    directory: Arc<Directory>,
    backend: Arc<dyn StateBackend>,
    timers: crate::mailbox::timers::TimerHandle,
    host: HostConfig,
    shutting_down: AtomicBool,
    metrics: Arc<Metrics>,
    /// Each change of a plugin's life (written by the status boards).
    events: crate::events::Events,
    budget: Arc<budget::Budget>,
    groups: Arc<groups::Groups>,
    /// The startup load, while it runs.
    loading: Mutex<loading::Loading>,
    /// Idempotency keys whose message is queued or running.
    flights: Arc<crate::idempotency::Flights>,
    /// Cluster mode: the plugins held ready, and which run here.
    standby: Option<standby::Standby>,
    /// Whether this node holds its cluster lease (always, on a single host).
    lease_held: AtomicBool,
}

/// A cheap, cloneable handle to the supervisor, for the admin API.
#[derive(Clone)]
pub struct SupervisorHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SupervisorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisorHandle").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
