//! [`SupervisorHandle`]: how the rest of the host (the folder watcher, the
//! admin API, systemd) drives the supervisor: adding and removing plugins,
//! sending messages, operators' requests, reading plugins' info, shutdown.
//! It owns the plugin table; each plugin's child owns everything else.

use super::child::{self, Child, Handles};
use super::control::{Ack, Control, OperateError, Operation, SendRefused};
use super::status::{PluginInfo, Status, StatusBoard};
use super::{Shared, Slot, SupervisorHandle, budget, groups, loading, standby, tree};
use crate::compile::Compiled;
use crate::config::{GroupConfig, HostConfig, PluginConfig, RestartType};
use crate::discovery::PluginSpec;
use crate::instance::PluginEnv;
use crate::mailbox::{Address, Directory, Envelope, Mailbox, Outcome, PushError, Source};
use crate::metrics::Metrics;
use crate::state::StateBackend;
use crate::state::view::StateView;
use parking_lot::{Mutex, RwLock};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

impl SupervisorHandle {
    /// Starts the supervisor (and the timer task) with no plugins.
    pub fn new(
        host: HostConfig,
        backend: Arc<dyn StateBackend>,
        groups: &BTreeMap<String, GroupConfig>,
    ) -> anyhow::Result<SupervisorHandle> {
        let clustered = host.cluster.is_some();
        let directory = Directory::new();
        let (timers, _task) = crate::mailbox::timers::start(backend.clone(), directory.clone());
        let budget = Arc::new(budget::Budget::new(host.max_restarts, host.window));
        let group_names: Vec<String> = groups.keys().cloned().collect();
        let (groups, jobs) = groups::Groups::new(tree::Tree::new(groups));
        let shared = Arc::new(Shared {
            plugins: RwLock::new(BTreeMap::new()),
            order: RwLock::new(Vec::new()),
            directory,
            backend,
            timers,
            host,
            shutting_down: AtomicBool::new(false),
            metrics: Arc::new(Metrics::new()),
            events: crate::events::Events::new(),
            budget,
            groups: Arc::new(groups),
            loading: Mutex::new(loading::Loading::idle()),
            flights: Arc::default(),
            standby: clustered.then(standby::Standby::default),
            lease_held: AtomicBool::new(!clustered),
        });
        for group in std::iter::once("root").chain(group_names.iter().map(String::as_str)) {
            shared.metrics.add_group(group);
        }
        tokio::spawn(groups::run(jobs, Arc::downgrade(&shared)));
        Ok(SupervisorHandle { shared })
    }

    /// `names` in the tree's start order (DESIGN.md, "Supervision tree").
    pub fn start_order_of(&self, names: &[String]) -> Vec<String> {
        self.shared.groups.start_order(names)
    }

    /// The configured groups and their restarts, for the admin API.
    pub fn groups(&self) -> Vec<tree::GroupInfo> {
        self.shared.groups.info()
    }

    /// Adds a compiled plugin and starts its child. `rolled_back` is the
    /// marker of an upgrade rolled back earlier, when `compiled` is the good
    /// version loaded in place of the file.
    /// In cluster mode the plugin is held ready, and starts only while this
    /// node owns it (see [`super::standby`]).
    pub fn start_plugin(
        &self,
        spec: &PluginSpec,
        compiled: Arc<Compiled>,
        rolled_back: Option<crate::compile::rollback::Rollback>,
    ) {
        if self.catalog_add(spec, &compiled, &rolled_back) {
            self.start_child(spec, compiled, rolled_back);
        }
    }

    /// Adds a plugin to the table and starts its child.
    pub(super) fn start_child(
        &self,
        spec: &PluginSpec,
        compiled: Arc<Compiled>,
        rolled_back: Option<crate::compile::rollback::Rollback>,
    ) {
        if self.shared.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        let name = spec.name.clone();
        let config = Arc::new(spec.config.clone());
        let mailbox = Mailbox::new(config.mailbox);
        let board = StatusBoard::new(
            PluginInfo::fresh(&name, &config, &compiled.sha256, rolled_back),
            self.shared.events.clone(),
        );
        self.shared.metrics.add_plugin(&name);
        let (ctx, crx) = mpsc::unbounded_channel();
        let env = Arc::new(PluginEnv {
            name: name.clone(),
            config: config.clone(),
            state: Arc::new(StateView::new(&name, self.shared.backend.clone())),
            directory: self.shared.directory.clone(),
            output_dropped: self
                .shared
                .metrics
                .guest_output_dropped
                .get_or_create(&Metrics::plugin(&name))
                .clone(),
        });
        self.shared.directory.insert(
            &name,
            Address {
                mailbox: mailbox.clone(),
                max_message: config.max_message,
            },
        );
        let config = Arc::new(Mutex::new(config));
        let child = Child::new(
            env,
            compiled,
            Handles {
                mailbox: mailbox.clone(),
                board: board.clone(),
                config: config.clone(),
            },
            crx,
            &self.shared,
        );
        self.shared.timers.load(&name);
        let task = tokio::spawn(child.run());
        let slot = Arc::new(Slot {
            board,
            mailbox,
            config,
            control: ctx,
            task: Mutex::new(Some(task)),
        });
        self.shared.plugins.write().insert(name.clone(), slot);
        self.shared.order.write().push(name);
    }

    pub(super) fn slot(&self, name: &str) -> Option<Arc<Slot>> {
        self.shared.plugins.read().get(name).cloned()
    }

    /// Queues a message for `name`; the receiver gets its outcome. Also returns
    /// how long a synchronous sender should wait (`reply-timeout`).
    /// A message sent with an `Idempotency-Key` carries its `tag`.
    pub fn send(
        &self,
        name: &str,
        message: Vec<u8>,
        tag: Option<crate::idempotency::Tag>,
    ) -> Result<(oneshot::Receiver<Outcome>, Duration), SendRefused> {
        let slot = self.slot(name).ok_or_else(|| self.no_worker(name))?;
        let config = slot.config.lock().clone();
        if message.len() as u64 > config.max_message {
            return Err(SendRefused::TooLarge {
                limit: config.max_message,
            });
        }
        if self.shared.shutting_down.load(Ordering::SeqCst) {
            return Err(SendRefused::Unavailable(Outcome::Unavailable {
                status: "stopping".into(),
                reason: "the host is shutting down".into(),
                retry_after: None,
            }));
        }
        let (tx, rx) = oneshot::channel();
        let mut env = Envelope::new(message, Source::Admin, Some(tx));
        env.idempotency = tag;
        match slot.mailbox.push(env) {
            Ok(()) => Ok((rx, config.reply_timeout)),
            Err((PushError::Full, _)) => Err(SendRefused::MailboxFull),
            Err((PushError::Closed { status, reason }, _)) => {
                let retry_after = slot
                    .board
                    .read(|i| i.retry_at)
                    .map(|t| t.saturating_duration_since(Instant::now()));
                Err(SendRefused::Unavailable(Outcome::Unavailable {
                    status,
                    reason,
                    retry_after,
                }))
            }
        }
    }

    /// A plugin's `idempotency-window` and `reply-timeout`, or why it takes
    /// no messages (unknown, or still loading).
    pub fn idempotency_window(&self, name: &str) -> Result<(Duration, Duration), SendRefused> {
        let slot = self.slot(name).ok_or_else(|| self.no_worker(name))?;
        let config = slot.config.lock();
        Ok((config.idempotency_window, config.reply_timeout))
    }

    /// The idempotency keys in flight (see [`crate::idempotency::Flights`]).
    pub fn flights(&self) -> &Arc<crate::idempotency::Flights> {
        &self.shared.flights
    }

    /// Plugin names in start order.
    fn start_order(&self) -> Vec<String> {
        self.shared.order.read().clone()
    }

    /// Carries out an operator's request on one plugin; resolves once the
    /// child has done it (a start resolves when the new instance is starting).
    pub async fn operate(&self, name: &str, op: Operation) -> Result<(), OperateError> {
        self.request(name, |tx| match op {
            Operation::Stop => Control::Stop(tx),
            Operation::Start => Control::Start(tx),
            Operation::Restart => Control::Restart(tx),
            Operation::ResetState => Control::ResetState(tx),
        })
        .await
    }

    /// Upgrades a running plugin to `compiled` (DESIGN.md, "Drop-in"): the
    /// call in flight finishes, `lifecycle.shutdown` runs, and the new version
    /// starts on the same state and takes the queued messages. A `failed`
    /// plugin is started with the new version; a `stopped` one stays stopped.
    pub async fn upgrade(&self, name: &str, compiled: Arc<Compiled>) -> Result<(), OperateError> {
        self.catalog_upgrade(name, &compiled);
        if self.clustered() && !self.contains(name) {
            // Held ready here; its owner upgrades it (DESIGN.md, "Cluster, precisely").
            return Ok(());
        }
        self.request(name, |tx| Control::Upgrade(compiled, tx))
            .await
    }

    /// Gives a plugin a new configuration, which it takes at its next start.
    pub fn reconfigure(&self, name: &str, config: PluginConfig) -> Result<(), OperateError> {
        self.catalog_reconfigure(name, &config);
        if self.clustered() && !self.contains(name) {
            return Ok(());
        }
        let slot = self.slot(name).ok_or(OperateError::NoSuchPlugin)?;
        slot.board.config_pending();
        slot.control
            .send(Control::Reconfigure(Arc::new(config)))
            .map_err(|_| OperateError::Failed("the plugin's worker has stopped".into()))
    }

    /// Whether a plugin of that name is loaded.
    pub fn contains(&self, name: &str) -> bool {
        self.slot(name).is_some()
    }

    /// Removes a plugin whose file was deleted: it stops taking messages (its
    /// queued ones are answered 503), finishes its call in flight and runs
    /// `lifecycle.shutdown` within its `shutdown-timeout`, and is forgotten.
    /// Its state stays, so a plugin of the same name later resumes it.
    pub async fn remove(&self, name: &str, reason: &str) -> bool {
        let known = self.catalog_remove(name);
        let Some(slot) = self.shared.plugins.write().remove(name) else {
            return known;
        };
        self.shared.order.write().retain(|n| n != name);
        self.shared.directory.remove(name);
        child::close_mailbox(
            &slot.mailbox,
            "stopped",
            reason,
            None,
            &self.shared.timers,
            name,
        );
        self.stop_worker(name, &slot, reason).await;
        self.shared.metrics.forget(name);
        true
    }

    /// Asks a child to stop within its shutdown timeout, then ends its task.
    pub(super) async fn stop_worker(&self, name: &str, slot: &Slot, why: &str) {
        let (tx, rx) = oneshot::channel();
        let deadline =
            crate::config::instant_after(Instant::now(), slot.config.lock().shutdown_timeout);
        if slot
            .control
            .send(Control::Shutdown(deadline, why.to_string(), tx))
            .is_ok()
            && tokio::time::timeout_at(deadline.into(), rx).await.is_err()
        {
            tracing::warn!(plugin = %name, "did not stop within its shutdown timeout; aborted");
        }
        let task = slot.task.lock().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        slot.board.ended();
    }

    /// Sends a control request that is answered, and waits for the answer.
    pub(super) async fn request(
        &self,
        name: &str,
        make: impl FnOnce(Ack) -> Control,
    ) -> Result<(), OperateError> {
        let slot = self.slot(name).ok_or(OperateError::NoSuchPlugin)?;
        if self.shared.shutting_down.load(Ordering::SeqCst) {
            return Err(OperateError::Failed("the host is shutting down".into()));
        }
        let (tx, rx) = oneshot::channel();
        slot.control
            .send(make(tx))
            .map_err(|_| OperateError::Failed("the plugin's worker has stopped".into()))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(OperateError::Failed(e)),
            Err(_) => Err(OperateError::Failed(
                "the plugin's worker has stopped".into(),
            )),
        }
    }

    /// Carries out an operator's request on every plugin (in start order; in
    /// reverse for stop), returning each plugin's result.
    pub async fn operate_all(&self, op: Operation) -> Vec<(String, Result<(), OperateError>)> {
        let mut order = self.start_order();
        if op == Operation::Stop {
            order.reverse();
        }
        let mut out = Vec::with_capacity(order.len());
        for name in order {
            let r = self.operate(&name, op).await;
            out.push((name, r));
        }
        out
    }

    /// Why a message for `name`, which has no child, is refused: 503
    /// `loading` while it may still be loaded at startup, else 404.
    fn no_worker(&self, name: &str) -> SendRefused {
        let loading = self.shared.loading.lock();
        if !loading.holds(name) {
            return SendRefused::NoSuchPlugin;
        }
        let reason = match loading.progress() {
            _ if loading.is_arriving(name) => format!(
                "{name}.wasm was just added and is still loading (compiling); try again in a moment"
            ),
            Some((done, total)) if total > 0 => {
                format!("the host is still loading its plugins ({done}/{total} loaded)")
            }
            _ => "the host is still loading its plugins".to_string(),
        };
        SendRefused::Unavailable(Outcome::Unavailable {
            status: "loading".into(),
            reason,
            retry_after: Some(loading::RETRY_AFTER),
        })
    }

    /// The files added since the startup load that are settling or
    /// compiling: a message for one gets 503 `loading`, not 404.
    pub fn arriving(&self, names: std::collections::BTreeSet<String>) {
        self.shared.loading.lock().arriving(names);
    }

    /// The startup load begins: until [`SupervisorHandle::end_loading`],
    /// `/readyz` says `loading` and messages for plugins not yet started get
    /// 503 `loading`.
    pub fn begin_loading(&self) {
        self.shared.loading.lock().begin();
    }

    /// The plugins the startup load found in the folder.
    pub fn loading_found(&self, names: impl IntoIterator<Item = String>) {
        self.shared.loading.lock().found(names);
    }

    /// One plugin of the startup load was started or refused.
    pub fn loaded_one(&self, name: &str) {
        self.shared.loading.lock().done_with(name);
    }

    /// The startup load is over.
    pub fn end_loading(&self) {
        self.shared.loading.lock().end();
    }

    /// `(loaded, total)` while the startup load runs.
    pub fn loading(&self) -> Option<(usize, usize)> {
        self.shared.loading.lock().progress()
    }

    /// Queues a message nobody waits for (a replayed dead letter).
    pub fn enqueue(&self, name: &str, message: Vec<u8>) -> Result<(), SendRefused> {
        let slot = self.slot(name).ok_or(SendRefused::NoSuchPlugin)?;
        match slot
            .mailbox
            .push(Envelope::new(message, Source::Admin, None))
        {
            Ok(()) => Ok(()),
            Err((PushError::Full, _)) => Err(SendRefused::MailboxFull),
            Err((PushError::Closed { status, reason }, _)) => {
                Err(SendRefused::Unavailable(Outcome::Unavailable {
                    status,
                    reason,
                    retry_after: None,
                }))
            }
        }
    }

    /// How many plugins there are (running or not).
    pub fn plugin_count(&self) -> usize {
        self.shared.plugins.read().len()
    }

    /// Every plugin, in start order.
    pub fn list(&self) -> Vec<PluginInfo> {
        let order = self.start_order();
        order.iter().filter_map(|n| self.get(n)).collect()
    }

    /// One plugin.
    pub fn get(&self, name: &str) -> Option<PluginInfo> {
        let slot = self.slot(name)?;
        let mut info = slot.board.snapshot();
        info.mailbox_depth = slot.mailbox.len();
        info.uptime_secs = info.running_since.map(|t| t.elapsed().as_secs_f64());
        info.next_attempt_secs = info
            .retry_at
            .map(|t| t.saturating_duration_since(Instant::now()).as_secs_f64());
        Some(info)
    }

    /// Cluster mode: whether this node holds its lease (a node without it
    /// is not ready).
    pub fn set_lease_held(&self, held: bool) {
        self.shared.lease_held.store(held, Ordering::SeqCst);
    }

    /// Whether the host is shutting down (or, in a cluster, draining).
    pub fn shutting_down(&self) -> bool {
        self.shared.shutting_down.load(Ordering::SeqCst)
    }

    /// Whether every permanent plugin is running. Cheap (no plugin's info is
    /// copied): load balancers and the benchmarks poll it often.
    pub fn ready(&self) -> bool {
        if self.shared.shutting_down.load(Ordering::SeqCst)
            || self.loading().is_some()
            || !self.shared.lease_held.load(Ordering::SeqCst)
        {
            return false;
        }
        let plugins = self.shared.plugins.read();
        plugins.values().all(|slot| {
            slot.board.read(|info| {
                info.restart_type != RestartType::Permanent || info.status == Status::Running
            })
        })
    }

    /// The host's event stream.
    pub fn events(&self) -> &crate::events::Events {
        &self.shared.events
    }

    /// The host's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The metrics' text for a scrape, with the gauges of the present
    /// (status, mailbox depth, plugins loaded and failed) brought up to date.
    pub fn scrape(&self) -> String {
        let m = &self.shared.metrics;
        let list = self.list();
        for p in &list {
            for s in [
                Status::Starting,
                Status::Running,
                Status::Backoff,
                Status::Failed,
                Status::Stopped,
            ] {
                let labels = crate::metrics::StatusLabels {
                    plugin: p.name.clone(),
                    status: s.as_str(),
                };
                m.status
                    .get_or_create(&labels)
                    .set(i64::from(p.status == s));
            }
            m.mailbox_depth
                .get_or_create(&Metrics::plugin(&p.name))
                .set(p.mailbox_depth as i64);
            m.up.get_or_create(&Metrics::plugin(&p.name))
                .set(i64::from(p.status == Status::Running));
            let health = p.health_level();
            for level in super::HealthLevel::ALL {
                let labels = crate::metrics::HealthLabels {
                    plugin: p.name.clone(),
                    health: level.as_str(),
                };
                m.health
                    .get_or_create(&labels)
                    .set(i64::from(health == Some(level)));
            }
        }
        let budget = self.shared.budget.info();
        m.budget_used.set(i64::from(budget.used));
        m.budget_max.set(i64::from(budget.max_restarts));
        m.plugins_loaded.set(list.len() as i64);
        m.plugins_failed
            .set(list.iter().filter(|p| p.status == Status::Failed).count() as i64);
        m.encode()
    }

    /// The host's restart budget (the root of the supervision tree).
    pub fn budget(&self) -> &budget::Budget {
        &self.shared.budget
    }

    /// The state backend.
    pub fn backend(&self) -> &Arc<dyn StateBackend> {
        &self.shared.backend
    }

    /// How many plugins are in each status (running first), without
    /// copying any plugin's info (the systemd `STATUS=` line polls it).
    pub fn status_counts(&self) -> [(Status, usize); 5] {
        let mut counts = [
            (Status::Running, 0),
            (Status::Starting, 0),
            (Status::Backoff, 0),
            (Status::Failed, 0),
            (Status::Stopped, 0),
        ];
        let plugins = self.shared.plugins.read();
        for slot in plugins.values() {
            let status = slot.board.read(|i| i.status);
            if let Some(c) = counts.iter_mut().find(|(s, _)| *s == status) {
                c.1 += 1;
            }
        }
        counts
    }

    /// A round trip through the supervisor's machinery, for the systemd
    /// watchdog (see [`crate::systemd`] for why these parts): its plugin
    /// table and every plugin's status lock, its timer task, and an empty
    /// commit through the state backend's committer. Resolves `Ok` once each
    /// has answered; it never resolves while one of them is wedged.
    pub async fn round_trip(&self) -> anyhow::Result<()> {
        self.status_counts();
        self.shared.timers.ping().await?;
        // No plugin has an empty name: the commit touches no plugin's data.
        self.shared
            .backend
            .commit(crate::state::Commit::new(""))
            .await
    }

    /// Graceful shutdown (DESIGN.md, "Shutdown"): stop taking messages, answer
    /// what is queued with 503, then in reverse start order let each child
    /// finish its call in flight and call `lifecycle.shutdown`, both within the
    /// plugin's `shutdown-timeout`; a child that overruns is aborted (the
    /// writes of its unfinished call are discarded). Finally the state backend
    /// is closed.
    pub async fn shutdown(&self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        let order = self.start_order();
        for name in order.iter() {
            if let Some(slot) = self.slot(name) {
                child::close_mailbox(
                    &slot.mailbox,
                    "stopping",
                    "the host is shutting down",
                    None,
                    &self.shared.timers,
                    name,
                );
            }
        }
        for name in order.iter().rev() {
            if let Some(slot) = self.slot(name) {
                self.stop_worker(name, &slot, "the host is shutting down")
                    .await;
            }
        }
        self.shared.backend.close().await;
    }
}
