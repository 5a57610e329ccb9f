//! [`HostState`]: the data of one plugin instance's `Store`.

use super::limits::Limits;
use super::txn::Txn;
use crate::config::PluginConfig;
use crate::mailbox::Directory;
use crate::state::view::StateView;
use prometheus_client::metrics::counter::Counter;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// What every instance of one plugin shares: its name, settings, state view
/// and the directory of mailboxes.
pub struct PluginEnv {
    /// Plugin name.
    pub name: String,
    /// Resolved settings.
    pub config: Arc<PluginConfig>,
    /// Its state: the backend, with the commits still pending in front.
    pub state: Arc<StateView>,
    /// Every plugin's mailbox, for `mailbox.send`.
    pub directory: Arc<Directory>,
    /// Where the bytes of guest output over its `output` budget are counted.
    pub output_dropped: Counter,
}

/// The data of one instance's `Store`.
pub struct HostState {
    pub(crate) wasi: WasiCtx,
    /// The output budget its stdout, stderr and `wasi:logging` share.
    pub(crate) output: super::output::GuestOutput,
    pub(crate) table: ResourceTable,
    pub(crate) limits: Limits,
    /// When the current call must end.
    pub(crate) deadline: Instant,
    pub(crate) env: Arc<PluginEnv>,
    /// The current call's transaction.
    pub(crate) txn: Txn,
    pub(crate) generation: u64,
    pub(crate) restarts: u32,
    /// Buckets the guest holds open (capped by `host_api::keyvalue::MAX_OPEN_BUCKETS`).
    pub(crate) open_buckets: usize,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
