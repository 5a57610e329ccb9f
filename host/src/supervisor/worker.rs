//! The worker: one tokio task per plugin that owns its instance, takes messages
//! from its mailbox one at a time, commits each call's transaction, and applies
//! the restart policy when the instance dies.
//!
//! Invariants:
//! - One call at a time, in mailbox order; control requests are looked at
//!   first between calls (`biased` select).
//! - A reply is released only after its call's commit is durable; the outbox is
//!   released after the commit too, and dropped with the instance otherwise.
//!   Message calls are pipelined: the next call runs while earlier commits are
//!   on their way to disk, and their replies wait in the [`Pipeline`]. Anything
//!   else (a control request, a health probe, a crash) first waits for every
//!   commit in flight.
//! - A failed commit drops the instance: the calls waiting behind it read its
//!   writes, so none of them is answered; their messages go back to the front
//!   of the mailbox, in order. Seen in the pipeline's order, the failure is the
//!   failed call's crash (`host-error`); seen while draining for something
//!   else, the messages are delivered again to the next instance.
//! - After any exit the instance is dropped before anything else happens.
//! - The message in flight at a crash goes back to the front of the mailbox
//!   until it has been delivered `max-attempts` times; then it is dead-lettered
//!   (durably) and its sender gets the dead-letter id and the causes.
//! - Crash reports are committed by spawned tasks: a restart never waits for one.
//! - A live upgrade is a control request, so it happens between calls: the
//!   call in flight finishes and commits, the old instance's
//!   `lifecycle.shutdown` runs, and the new version starts on the same state
//!   and takes the mailbox as it is. If the new version exceeds its intensity
//!   within `upgrade-probation`, the worker rolls back to the last version that
//!   ran healthily: one that completed `init` and, if it was itself an
//!   upgrade, outlived its probation or never crashed.
//! - A new configuration is taken at the next start of an instance.

use super::breaker::Breaker;
use super::groups::Job;
use super::health::{self, Probes};
use super::pipeline::{Pipeline, Settled, Waiting};
use super::policy::{Decision, Ending, RestartTracker};
use super::rollback::{self, Rollback};
use super::timers::TimerHandle;
use super::tree::Plan;
use super::{Control, PluginInfo, Shared, Status, lock};
use crate::admin::metrics::{CallMetrics, CauseLabels, Metrics, OutcomeLabels, PluginLabel};
use crate::compile::Compiled;
use crate::config::PluginConfig;
use crate::crash::{Cause, Crash, CrashReport, DeadLetter, Exit, MessageInfo};
use crate::instance::txn::{Finished, Outgoing};
use crate::instance::{PluginEnv, PluginInstance, panic_text};
use crate::mailbox::{Address, Envelope, Mailbox, Outcome, Source};
use crate::state::{Commit, Delta, Record, RecordKind, TimerRecord, fresh_id, now_ms};
use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::Instrument;

/// What the worker loop does next.
enum Flow {
    /// Keep going.
    Continue,
    /// Leave the loop (shutdown done).
    Exit,
}

/// What a worker shares with the supervisor's view of its plugin.
pub(super) struct Handles {
    pub(super) mailbox: Arc<Mailbox>,
    pub(super) info: Arc<Mutex<PluginInfo>>,
    /// The configuration in force, which senders read.
    pub(super) config: Arc<Mutex<Arc<PluginConfig>>>,
}

pub(super) struct Worker {
    env: Arc<PluginEnv>,
    compiled: Arc<Compiled>,
    mailbox: Arc<Mailbox>,
    info: Arc<Mutex<PluginInfo>>,
    config: Arc<Mutex<Arc<PluginConfig>>>,
    /// A new configuration for the next start.
    pending_config: Option<Arc<PluginConfig>>,
    /// The version to roll back to if an upgrade crash-loops.
    good: Option<Arc<Compiled>>,
    /// When the current version was upgraded to, while that matters.
    upgraded_at: Option<Instant>,
    /// Whether an instance of the current version has completed `init`.
    started_ok: bool,
    /// Whether the current version has crashed since it was upgraded to.
    crashed: bool,
    /// Where rollback markers are kept.
    cache_dir: std::path::PathBuf,
    /// The host's restart budget.
    budget: Arc<super::budget::Budget>,
    /// The circuit breaker.
    breaker: Breaker,
    /// When a `failed` plugin is tried again (half-open), if it will be.
    retry_at: Option<Instant>,
    /// The streak of health answers.
    probes: Probes,
    /// When the next health probe is due (with an instance that has `health`).
    next_probe: Option<Instant>,
    /// When the next `tick` message is due (with `tick` on).
    next_tick: Option<Instant>,
    control: mpsc::UnboundedReceiver<Control>,
    timers: TimerHandle,
    tracker: RestartTracker,
    keep_reports: usize,
    keep_dead_letters: usize,
    generation: u64,
    restarts: u32,
    instance: Option<PluginInstance>,
    /// Calls waiting for their commits.
    pipeline: Pipeline,
    running_since: Option<Instant>,
    /// Failed or stopped: only control requests are taken.
    parked: bool,
    /// Down while its group restarts it: waits for `Control::Resume`.
    held: bool,
    /// A start its group asked for that failed, to be handled next.
    failed_start: Option<(Exit, &'static str)>,
    /// The message whose `handle` call is running, held here so that a
    /// panic outside the guest call finds it (see [`Worker::after_panic`]).
    in_flight: Option<Envelope>,
    /// The supervision tree and its coordinator.
    groups: Arc<super::groups::Groups>,
    metrics: Arc<Metrics>,
    labels: PluginLabel,
    /// This plugin's per-call metrics.
    calls: CallMetrics,
    /// Coredump folder and budget, when coredumps are on.
    coredumps: Option<(std::path::PathBuf, u64)>,
    /// The span of the current instance (`plugin`, `generation`).
    span: tracing::Span,
}

fn instance_span(plugin: &str, generation: u64) -> tracing::Span {
    tracing::info_span!(parent: None, "plugin", plugin, generation)
}

impl Worker {
    pub(super) fn new(
        env: Arc<PluginEnv>,
        compiled: Arc<Compiled>,
        handles: Handles,
        control: mpsc::UnboundedReceiver<Control>,
        shared: &Shared,
    ) -> Worker {
        let (host, metrics) = (&shared.host, shared.metrics.clone());
        let labels = Metrics::plugin(&env.name);
        let name = env.name.clone();
        let tracker = RestartTracker::new(env.config.restart.clone());
        let breaker = Breaker::new(&env.config.restart);
        let Handles {
            mailbox,
            info,
            config,
        } = handles;
        Worker {
            env,
            compiled,
            mailbox,
            info,
            config,
            pending_config: None,
            good: None,
            upgraded_at: None,
            started_ok: false,
            crashed: false,
            cache_dir: host.cache_dir.clone(),
            budget: shared.budget.clone(),
            breaker,
            retry_at: None,
            probes: Probes::default(),
            next_probe: None,
            next_tick: None,
            control,
            timers: shared.timers.clone(),
            tracker,
            keep_reports: host.crash_reports,
            keep_dead_letters: host.dead_letters,
            generation: 0,
            restarts: 0,
            instance: None,
            pipeline: Pipeline::default(),
            running_since: None,
            parked: false,
            held: false,
            failed_start: None,
            in_flight: None,
            groups: shared.groups.clone(),
            calls: metrics.calls(&name),
            metrics,
            labels,
            coredumps: host.coredumps.map(|b| (host.coredump_dir.clone(), b)),
            span: instance_span(&name, 0),
        }
    }

    fn set_status(&self, status: Status, reason: Option<String>) {
        let mut i = lock(&self.info);
        i.status = status;
        i.reason = reason;
        i.generation = self.generation;
        i.restarts = self.restarts;
        i.running_since = if status == Status::Running {
            self.running_since
        } else {
            None
        };
        i.started_at_us = (status == Status::Running).then(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64)
        });
        match status {
            Status::Backoff => {}
            Status::Failed => i.retry_at = self.retry_at,
            _ => i.retry_at = None,
        }
        i.circuit = self.breaker.state(status == Status::Failed);
        if status != Status::Running {
            i.health = None;
        }
    }

    pub(super) async fn run(mut self) {
        let backend = self.env.state.backend();
        let pending = backend
            .records(
                &self.env.name,
                RecordKind::DeadLetter,
                0,
                self.keep_dead_letters,
            )
            .await
            .map_or(0, |r| r.len());
        let family = &self.metrics.dead_letters;
        family.get_or_create(&self.labels).set(pending as i64);
        loop {
            // Each step runs in the span of the current instance. A panic
            // anywhere in it (guest calls catch their own) is this plugin's
            // `host-error` crash, never the end of its task.
            let span = self.span.clone();
            let step = AssertUnwindSafe(self.step().instrument(span.clone()))
                .catch_unwind()
                .await;
            let flow = match step {
                Ok(flow) => flow,
                Err(panic) => {
                    let what = panic_text(&*panic);
                    self.after_panic(what).instrument(span).await
                }
            };
            if let Flow::Exit = flow {
                return;
            }
        }
    }

    /// A step panicked outside a guest call: the instance is dropped and the
    /// panic is handled as a `host-error` crash under the restart policy; the
    /// message being handled, if any, is the message in flight (delivered
    /// again or dead-lettered). A second panic while doing so leaves the
    /// plugin `failed` (its mailbox closed and answered), so its status never
    /// claims a task that is gone.
    async fn after_panic(&mut self, what: String) -> Flow {
        tracing::error!(panic = %what, "the plugin's task panicked outside a guest call; contained as a host-error crash");
        self.instance = None;
        let exit = host_error(anyhow::anyhow!(
            "host panicked in the plugin's task: {what}"
        ));
        let in_flight = self.in_flight.take();
        match AssertUnwindSafe(self.after_exit(exit, "task", in_flight))
            .catch_unwind()
            .await
        {
            Ok(flow) => flow,
            Err(again) => {
                let again = panic_text(&*again);
                let reason = format!(
                    "host panicked twice in the plugin's task ({what}; then {again}): start it again with `wasm-sup start {}`",
                    self.env.name
                );
                tracing::error!("{reason}");
                self.instance = None;
                self.retry_at = None;
                self.parked = true;
                self.close(Status::Failed, reason);
                Flow::Continue
            }
        }
    }

    async fn step(&mut self) -> Flow {
        if let Some((exit, call)) = self.failed_start.take() {
            self.after_exit(exit, call, None).await
        } else if self.parked || self.held {
            tokio::select! {
                biased;
                c = self.control.recv() => self.on_control(c).await,
                _ = sleep_until(self.retry_at) => {
                    self.half_open();
                    Flow::Continue
                }
            }
        } else if self.instance.is_none() {
            self.start().await
        } else {
            // Between calls: operator requests first, then the breaker, the
            // health probe and the tick when they are due, then messages.
            let close_at = self.breaker.closes_at(self.running_since);
            tokio::select! {
                biased;
                c = self.control.recv() => self.on_control(c).await,
                Some(settled) = self.pipeline.next(), if !self.pipeline.is_empty() => {
                    self.on_settled(settled).await
                }
                _ = sleep_until(close_at) => {
                    if self.breaker.close_if_due(self.running_since, Instant::now()) {
                        tracing::info!("circuit closed: the plugin ran healthily for reset-after after its cooldown");
                        lock(&self.info).circuit = None;
                    }
                    Flow::Continue
                }
                _ = sleep_until(self.next_probe) => self.probe().await,
                _ = sleep_until(self.next_tick) => self.tick().await,
                env = self.mailbox.pop(), if !self.pipeline.is_full() => self.deliver(env).await,
            }
        }
    }

    /// The cooldown of a `failed` plugin is over: a half-open trial begins.
    fn half_open(&mut self) {
        self.breaker.half_open(Instant::now());
        tracing::info!("cooldown over: trying the plugin again (circuit half-open)");
        self.unpark();
        lock(&self.info).circuit = self.breaker.state(false);
    }

    /// Runs `health.check` between calls and acts on its answer.
    async fn probe(&mut self) -> Flow {
        self.settle_all().await;
        let policy = self.env.config.health.clone();
        self.next_probe = Some(crate::config::instant_after(
            Instant::now(),
            policy.interval,
        ));
        let Some(inst) = self.instance.as_mut() else {
            return Flow::Continue;
        };
        let answer = match inst.check(policy.timeout).await {
            Ok(Some(answer)) => answer,
            Ok(None) => {
                self.next_probe = None;
                return Flow::Continue;
            }
            Err(exit) => {
                self.metrics
                    .result(&self.metrics.health_checks, &self.env.name, "failed");
                self.instance = None;
                let exit = health::failed_probe(exit, policy.timeout);
                return self.after_exit(exit, "check", None).await;
            }
        };
        let done = inst.take_txn().into_commit(&self.env.name);
        if let Err(e) = self.commit_and_release(done).await {
            self.instance = None;
            return self.after_exit(host_error(e), "check", None).await;
        }
        let result = match &answer {
            crate::instance::Health::Healthy => "healthy",
            crate::instance::Health::Degraded(_) => "degraded",
            crate::instance::Health::Unhealthy(_) => "unhealthy",
        };
        self.metrics
            .result(&self.metrics.health_checks, &self.env.name, result);
        match self.probes.judge(answer, policy.threshold.get()) {
            Ok(label) => {
                let mut i = lock(&self.info);
                if i.health.as_deref() != Some(label.as_str()) {
                    if result == "healthy" {
                        tracing::info!(health = %label, "health check");
                    } else {
                        tracing::warn!(health = %label, "health check");
                    }
                }
                i.health = Some(label);
                Flow::Continue
            }
            Err(exit) => {
                self.instance = None;
                self.after_exit(exit, "check", None).await
            }
        }
    }

    /// Delivers a `tick` message; ticks that came due while the plugin was
    /// busy are skipped, not queued.
    async fn tick(&mut self) -> Flow {
        let Some(interval) = self.env.config.tick else {
            self.next_tick = None;
            return Flow::Continue;
        };
        let now = Instant::now();
        let mut next = crate::config::instant_after(self.next_tick.unwrap_or(now), interval);
        while next <= now {
            next = crate::config::instant_after(next, interval);
        }
        self.next_tick = Some(next);
        self.deliver(Envelope::new(TICK.to_vec(), Source::Tick, None))
            .await
    }

    async fn on_control(&mut self, c: Option<Control>) -> Flow {
        self.settle_all().await;
        let Some(c) = c else { return Flow::Exit };
        match c {
            Control::Shutdown(deadline, done) => {
                self.stop_instance(deadline).await;
                self.set_status(Status::Stopped, Some("the host is shutting down".into()));
                let _ = done.send(());
                return Flow::Exit;
            }
            Control::Stop(done) => {
                self.stop_for("stopped by an operator".into()).await;
                let _ = done.send(Ok(()));
            }
            Control::StopFor(reason, done) => {
                if !self.parked {
                    self.stop_for(reason).await;
                }
                let _ = done.send(Ok(()));
            }
            Control::Hold(done) => {
                if !self.parked {
                    let deadline = crate::config::instant_after(
                        Instant::now(),
                        self.env.config.shutdown_timeout,
                    );
                    self.stop_instance(deadline).await;
                    self.held = true;
                    self.set_status(Status::Starting, Some("restarting with its group".into()));
                    tracing::info!("stopped by its group, to be started again");
                }
                let _ = done.send(Ok(()));
            }
            Control::Resume(done) => {
                if self.held && !self.parked {
                    self.held = false;
                    let started = self.try_start().await;
                    let _ = done.send(Ok(()));
                    // Applied by the next step: the group goes on meanwhile.
                    self.failed_start = started.err();
                } else {
                    let _ = done.send(Ok(()));
                }
            }
            Control::Start(done) => {
                if self.parked || self.held {
                    self.breaker.reset();
                    self.unpark();
                    tracing::info!("plugin started by an operator");
                }
                let _ = done.send(Ok(()));
            }
            Control::Restart(done) => {
                let deadline =
                    crate::config::instant_after(Instant::now(), self.env.config.shutdown_timeout);
                self.stop_instance(deadline).await;
                self.breaker.reset();
                self.unpark();
                tracing::info!("plugin restarted by an operator");
                let _ = done.send(Ok(()));
            }
            Control::ResetState(done) => {
                // The state may be what makes the plugin crash: drop the
                // instance without calling it again, then wipe and start.
                self.instance = None;
                self.running_since = None;
                let r = self.env.state.reset().await;
                if r.is_ok() {
                    self.timers.forget(&self.env.name);
                    tracing::warn!("plugin state reset by an operator");
                    self.breaker.reset();
                    self.unpark();
                }
                let _ = done.send(r.map_err(|e| format!("{e:#}")));
            }
            Control::Upgrade(compiled, done) => {
                self.upgrade(compiled).await;
                let _ = done.send(Ok(()));
            }
            Control::Reconfigure(config) => {
                tracing::info!(
                    "configuration changed: it takes effect at the plugin's next start (`wasm-sup restart {}` applies it now)",
                    self.env.name
                );
                self.pending_config = Some(config);
            }
        }
        Flow::Continue
    }

    /// Stops gracefully and parks as `stopped` for `reason`.
    async fn stop_for(&mut self, reason: String) {
        let deadline =
            crate::config::instant_after(Instant::now(), self.env.config.shutdown_timeout);
        self.stop_instance(deadline).await;
        tracing::info!("plugin stopped: {reason}");
        self.close(Status::Stopped, reason);
    }

    /// Switches to a new version (see the module doc).
    async fn upgrade(&mut self, compiled: Arc<Compiled>) {
        if compiled.sha256 == self.compiled.sha256 {
            // The file is back to the version running (after a rollback).
            lock(&self.info).rollback = None;
            tracing::info!("the file holds the version running: nothing to upgrade");
            return;
        }
        let deadline =
            crate::config::instant_after(Instant::now(), self.env.config.shutdown_timeout);
        self.stop_instance(deadline).await;
        let failed = lock(&self.info).status == Status::Failed;
        let probation = self.env.config.upgrade_probation;
        let proven = self.upgraded_at.is_none_or(|t| t.elapsed() >= probation);
        if self.started_ok && !failed && (proven || !self.crashed) {
            self.good = Some(self.compiled.clone());
        }
        let from = std::mem::replace(&mut self.compiled, compiled);
        self.upgraded_at = Some(Instant::now());
        self.started_ok = false;
        self.crashed = false;
        self.tracker.reset();
        {
            let mut i = lock(&self.info);
            i.sha256 = self.compiled.sha256.clone();
            i.rollback = None;
        }
        self.metrics.upgrade(&self.env.name, "upgraded");
        tracing::info!(
            from = rollback::short(&from.sha256),
            to = rollback::short(&self.compiled.sha256),
            "plugin upgraded"
        );
        if failed {
            self.breaker.reset();
            self.unpark();
        } else if !self.parked {
            self.set_status(Status::Starting, None);
        }
    }

    /// Whether a crash past the intensity should roll back the current version.
    fn can_roll_back(&self, now: Instant) -> bool {
        self.good.is_some()
            && self
                .upgraded_at
                .is_some_and(|t| now.duration_since(t) <= self.env.config.upgrade_probation)
    }

    /// Goes back to the last good version, keeping the state, and records why.
    fn roll_back(&mut self, exit: &Exit) {
        let good = self.good.take().expect("can_roll_back checked it");
        let bad = std::mem::replace(&mut self.compiled, good);
        let reason = format!(
            "version {} exceeded max-restarts ({}) within upgrade-probation ({:?}); last: {}",
            rollback::short(&bad.sha256),
            self.tracker.policy().max_restarts,
            self.env.config.upgrade_probation,
            ending_text(exit)
        );
        let marker = Rollback {
            bad_sha256: bad.sha256.clone(),
            good_sha256: self.compiled.sha256.clone(),
            reason: reason.clone(),
            time_ms: now_ms(),
        };
        tracing::error!(
            from = rollback::short(&bad.sha256),
            to = rollback::short(&self.compiled.sha256),
            "upgrade rolled back: {reason}; the file is not tried again until it changes"
        );
        if let Err(e) = rollback::write(&self.cache_dir, &self.env.name, &marker) {
            tracing::error!("failed to record the rollback: {e}");
        }
        self.metrics.upgrade(&self.env.name, "rolled-back");
        {
            let mut i = lock(&self.info);
            i.sha256 = self.compiled.sha256.clone();
            i.rollback = Some(marker);
        }
        self.upgraded_at = None;
        self.started_ok = true;
        self.crashed = false;
        self.tracker.reset();
    }

    /// Takes a configuration that was waiting for this start.
    fn apply_config(&mut self, config: Arc<PluginConfig>) {
        self.env = Arc::new(PluginEnv {
            name: self.env.name.clone(),
            config: config.clone(),
            state: self.env.state.clone(),
            directory: self.env.directory.clone(),
            output_dropped: self.env.output_dropped.clone(),
        });
        self.tracker.set_policy(config.restart.clone());
        self.breaker.set_policy(&config.restart);
        self.mailbox.set_capacity(config.mailbox);
        // Only while the plugin is in the directory (not removed meanwhile).
        let listed = self
            .env
            .directory
            .get(&self.env.name)
            .is_some_and(|a| Arc::ptr_eq(&a.mailbox, &self.mailbox));
        if listed {
            self.env.directory.insert(
                &self.env.name,
                Address {
                    mailbox: self.mailbox.clone(),
                    max_message: config.max_message,
                },
            );
        }
        {
            let mut i = lock(&self.info);
            i.limits = super::LimitsInfo::of(&config);
            i.restart_type = config.restart.kind;
            i.config_pending = false;
        }
        *lock(&self.config) = config;
        tracing::info!("new configuration in force");
    }

    /// Leaves `failed`/`stopped` with a fresh restart history; the run loop
    /// starts a new instance.
    fn unpark(&mut self) {
        self.parked = false;
        self.held = false;
        self.retry_at = None;
        self.tracker.reset();
        self.mailbox.reopen();
        self.set_status(Status::Starting, None);
    }

    /// Calls `lifecycle.shutdown` (by `deadline`), commits it, drops the instance.
    async fn stop_instance(&mut self, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Some(mut inst) = self.instance.take()
            && !left.is_zero()
        {
            match inst.shutdown(left).await {
                Ok(()) => {
                    let done = inst.take_txn().into_commit(&self.env.name);
                    self.commit_and_release(done).await.ok();
                }
                Err(exit) => {
                    tracing::warn!(cause = ?exit.crash().map(|c| c.cause), "lifecycle.shutdown did not return; its writes are discarded");
                }
            }
        }
        self.instance = None;
        self.running_since = None;
    }

    /// Starts a new instance and runs `init`; on failure applies the policy.
    async fn start(&mut self) -> Flow {
        match self.try_start().await {
            Ok(()) => Flow::Continue,
            Err((exit, call)) => self.after_exit(exit, call, None).await,
        }
    }

    /// Starts a new instance and runs `init`; on failure, the exit and the
    /// call it happened in, for [`Worker::after_exit`].
    async fn try_start(&mut self) -> Result<(), (Exit, &'static str)> {
        if let Some(config) = self.pending_config.take() {
            self.apply_config(config);
        }
        self.generation += 1;
        // One span per instance: every event of it carries its generation.
        self.span = instance_span(&self.env.name, self.generation);
        self.set_status(Status::Starting, None);
        let (compiled, env, generation, restarts) = (
            self.compiled.clone(),
            self.env.clone(),
            self.generation,
            self.restarts,
        );
        let started = async move {
            let mut inst = PluginInstance::start(compiled, env, generation, restarts).await?;
            match inst.init().await? {
                Ok(()) => Ok(inst),
                Err(reason) => Err(Exit::Crashed(Crash {
                    cause: Cause::InitFailed,
                    message: format!("init returned Err: {reason}"),
                    backtrace: Vec::new(),
                    fuel_used: 0,
                    memory_bytes: inst.memory_bytes(),
                    coredump: None,
                })),
            }
        }
        .instrument(self.span.clone())
        .await;
        match started {
            Ok(mut inst) => {
                let done = inst.take_txn().into_commit(&self.env.name);
                if let Err(e) = self.commit_and_release(done).await {
                    return Err((host_error(e), "init"));
                }
                let now = Instant::now();
                self.next_probe = self
                    .compiled
                    .check
                    .map(|_| crate::config::instant_after(now, self.env.config.health.interval));
                self.next_tick = self
                    .env
                    .config
                    .tick
                    .map(|t| crate::config::instant_after(now, t));
                self.probes.reset();
                self.instance = Some(inst);
                self.started_ok = true;
                self.running_since = Some(now);
                self.set_status(Status::Running, None);
                tracing::info!(parent: &self.span, "plugin running");
                Ok(())
            }
            Err(exit) => Err((exit, "init")),
        }
    }

    /// Delivers one message to the running instance.
    async fn deliver(&mut self, mut env: Envelope) -> Flow {
        let Some(inst) = self.instance.as_mut() else {
            // Cannot happen: `run` only delivers with an instance. Put it back.
            let _ = self.mailbox.push_front(env);
            return Flow::Continue;
        };
        env.attempts += 1;
        let held = self.in_flight.insert(env);
        #[cfg(test)]
        if held.message == TEST_PANIC {
            panic!("worker panic requested by a unit test");
        }
        let started = Instant::now();
        let handled = inst.handle(&held.message).await;
        let env = self.in_flight.take().expect("held during the call");
        self.calls
            .handle_seconds
            .observe(started.elapsed().as_secs_f64());
        self.calls.fuel.inc_by(inst.last_fuel_used());
        self.calls.memory.set(inst.memory_bytes() as i64);
        // An `Err` reason is bounded by `max-reply` exactly like a reply
        // (DESIGN.md, refinement 10).
        let answer_len = match &handled {
            Ok(Ok(reply)) => reply.len(),
            Ok(Err(reason)) => reason.len(),
            Err(_) => 0,
        };
        let result = match handled {
            Ok(answer) if answer_len as u64 > self.env.config.max_reply => {
                let what = if answer.is_ok() {
                    "reply"
                } else {
                    "Err reason"
                };
                Err(Exit::Crashed(Crash {
                    cause: Cause::ReplyTooLarge,
                    message: format!(
                        "{what} of {answer_len} bytes is larger than max-reply ({} bytes)",
                        self.env.config.max_reply
                    ),
                    backtrace: Vec::new(),
                    fuel_used: 0,
                    memory_bytes: inst.memory_bytes(),
                    coredump: None,
                }))
            }
            other => other,
        };
        match result {
            Ok(answer) => {
                let inst = self.instance.as_mut().expect("checked above");
                let mut done = inst.take_txn().into_commit(&self.env.name);
                completes_timer(&mut done, &env);
                let timers = done.commit.add_timers.clone();
                let nothing_to_commit = done.commit.is_empty();
                let submitted = Instant::now();
                let (seq, durable) = self.env.state.submit(done.commit, done.delta).await;
                let waiting = Waiting {
                    seq,
                    env,
                    outcome: match answer {
                        Ok(reply) => Outcome::Reply(reply),
                        Err(reason) => Outcome::Rejected(reason),
                    },
                    outbox: done.outbox,
                    timers,
                    submitted,
                };
                if nothing_to_commit && self.pipeline.is_empty() {
                    // Nothing to commit and nothing it could have read from
                    // in flight: answered at once.
                    self.settle(Settled {
                        waiting,
                        result: Ok(()),
                    });
                } else {
                    self.pipeline.push(durable, waiting);
                }
                Flow::Continue
            }
            Err(exit) => {
                self.instance = None;
                self.after_exit(exit, "handle", Some(env)).await
            }
        }
    }

    /// A call's commit resolved, in pipeline order: releases it, or treats
    /// the failure as the call's crash (see the module doc).
    async fn on_settled(&mut self, settled: Settled) -> Flow {
        match self.settle(settled) {
            None => Flow::Continue,
            Some((e, env)) => {
                self.fail_pipeline().await;
                self.after_exit(host_error(e), "handle", Some(env)).await
            }
        }
    }

    /// Releases a call whose commit is durable: its timers, outbox and answer.
    /// A failed commit drops the instance and hands back the error and message.
    fn settle(&mut self, settled: Settled) -> Option<(anyhow::Error, Envelope)> {
        let Settled { waiting: w, result } = settled;
        self.env.state.settle(w.seq, result.is_ok());
        if let Err(e) = result {
            self.instance = None;
            self.running_since = None;
            return Some((e, w.env));
        }
        if w.seq != 0 {
            self.metrics
                .commit_seconds
                .observe(w.submitted.elapsed().as_secs_f64());
        }
        self.release(w.timers, w.outbox);
        match w.outcome {
            Outcome::Rejected(_) => self.calls.err.inc(),
            _ => self.calls.ok.inc(),
        };
        w.env.answer(w.outcome);
        None
    }

    /// After a failed commit: the calls still waiting read from it, so none is
    /// answered; their messages go back to the front of the mailbox, in order.
    async fn fail_pipeline(&mut self) {
        let again = self.unanswered().await;
        self.put_back_all(again);
    }

    /// Every message still in the pipeline, in order, none answered.
    async fn unanswered(&mut self) -> Vec<Envelope> {
        let mut envs = Vec::new();
        while let Some(Settled { waiting, .. }) = self.pipeline.next().await {
            self.env.state.settle(waiting.seq, false);
            envs.push(waiting.env);
        }
        envs
    }

    /// Waits for every commit in flight, releasing each call in order. When a
    /// commit failed, the instance is dropped and the messages of the calls
    /// from that one on are returned, in order, to be delivered again.
    async fn drain(&mut self) -> Vec<Envelope> {
        while let Some(settled) = self.pipeline.next().await {
            if let Some((e, env)) = self.settle(settled) {
                tracing::error!(
                    "state commit failed: {e:#}; the instance is dropped and its unanswered messages will be delivered again"
                );
                let mut again = vec![env];
                again.extend(self.unanswered().await);
                return again;
            }
        }
        Vec::new()
    }

    /// Waits for every commit in flight (see [`Worker::drain`]) and puts the
    /// messages of failed ones back in the mailbox.
    async fn settle_all(&mut self) {
        let again = self.drain().await;
        self.put_back_all(again);
    }

    /// Puts messages back at the front of the mailbox, keeping their order.
    fn put_back_all(&self, envs: Vec<Envelope>) {
        for env in envs.into_iter().rev() {
            self.put_back(env);
        }
    }

    /// Puts a message back at the front of the mailbox, or answers 503 when
    /// the mailbox is closed.
    fn put_back(&self, env: Envelope) {
        if let Err((_, env)) = self.mailbox.push_front(env) {
            let (status, reason) = self.mailbox.closed().unwrap_or_default();
            answer_unavailable(
                env,
                &status,
                &reason,
                self.retry_in(),
                &self.timers,
                &self.env.name,
            );
        }
    }

    fn count(&self, outcome: &'static str) {
        let labels = OutcomeLabels {
            plugin: self.env.name.clone(),
            outcome,
        };
        self.metrics.messages.get_or_create(&labels).inc();
    }

    /// Commits a call's transaction and waits until it is durable, then
    /// releases its outbox and timers (for calls other than messages).
    async fn commit_and_release(&mut self, done: Finished) -> anyhow::Result<()> {
        let timers = done.commit.add_timers.clone();
        let started = Instant::now();
        let (seq, durable) = self.env.state.submit(done.commit, done.delta).await;
        let result = durable.await;
        self.env.state.settle(seq, result.is_ok());
        result?;
        if seq != 0 {
            self.metrics
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        self.release(timers, done.outbox);
        Ok(())
    }

    /// Schedules a committed call's timers and delivers its outbox.
    fn release(&self, timers: Vec<TimerRecord>, outbox: Vec<Outgoing>) {
        for t in timers {
            self.timers.schedule(t);
        }
        for out in outbox {
            let Outgoing::Send { to, slot, message } = out;
            let env = Envelope::new(message, Source::Plugin(self.env.name.clone()), None);
            if slot.fill(env).is_err() {
                tracing::warn!(to = %to, "message dropped: the target stopped taking messages after it was sent");
            }
        }
    }

    /// After an instance ended (the instance is already dropped): report,
    /// settle the message in flight, and apply the restart policy.
    async fn after_exit(&mut self, exit: Exit, call: &str, env: Option<Envelope>) -> Flow {
        self.instance = None;
        // Calls that ran before this one are answered first; if one of their
        // commits failed, their messages go back in front of this one's.
        let earlier = self.drain().await;
        let now = Instant::now();
        let up_since = self.running_since.take();
        let ending = match &exit {
            Exit::Normal => Ending::Normal,
            Exit::Crashed(_) => Ending::Crash,
        };
        self.crashed |= ending == Ending::Crash;
        // A crash in a half-open trial opens the breaker again, unless the
        // trial had already run long enough to close it.
        let trial_crash = ending == Ending::Crash
            && self.breaker.in_trial()
            && !self.breaker.close_if_due(up_since, now);
        let mut decision = if trial_crash {
            Decision::Reopen
        } else {
            self.tracker
                .decide(ending, now, up_since, rand::random::<f64>())
        };
        if matches!(decision, Decision::GiveUp { .. }) && self.can_roll_back(now) {
            self.roll_back(&exit);
            decision = Decision::Restart(Duration::ZERO);
        }
        let mut env = env;
        let report_id = match &exit {
            Exit::Normal => {
                tracing::info!(call, decision = %decision.describe(), "plugin exited normally");
                None
            }
            Exit::Crashed(crash) => Some(self.report(crash, call, env.as_ref(), &decision)),
        };
        if let Some(e) = env.as_mut() {
            e.causes.push(match &exit {
                Exit::Normal => "normal-exit".to_string(),
                Exit::Crashed(c) => c.cause.to_string(),
            });
            e.reports.extend(report_id);
        }
        if let Exit::Crashed(c) = &exit {
            lock(&self.info).last_crash = Some(c.cause);
            let labels = CauseLabels {
                plugin: self.env.name.clone(),
                cause: c.cause.as_str(),
            };
            self.metrics.crashes.get_or_create(&labels).inc();
            if env.is_some() {
                self.count("crashed");
            }
        }
        // Every restart counts against the host's budget too; past it the
        // host gives up (see `budget`) and this plugin is not restarted.
        let exhausted = match decision {
            Decision::Restart(_) => {
                let cause = exit.crash().map_or("normal-exit", |c| c.cause.as_str());
                let who = format!("plugin `{}`", self.env.name);
                self.budget.restart(&who, cause, now).err()
            }
            _ => None,
        };
        // Within the budget, the plugin's group decides what restarts with it.
        let plan = match decision {
            Decision::Restart(_) if exhausted.is_none() => {
                let budget = self.budget.clone();
                self.groups.on_restart(&self.env.name, now, |group| {
                    budget
                        .restart(
                            &format!("group `{group}`, escalating"),
                            "its intensity exceeded",
                            now,
                        )
                        .is_ok()
                })
            }
            _ => Plan::Alone,
        };
        let exhausted = match &plan {
            Plan::GiveUp { group } => Some(format!(
                "group {group} escalated to the root past the host's restart budget"
            )),
            _ => exhausted,
        };
        if exit.crash().is_none() && matches!(decision, Decision::Stop) {
            self.groups.on_normal_exit(&self.env.name);
        }
        let will_restart = matches!(decision, Decision::Restart(_)) && exhausted.is_none();
        // The new status and restart count are set before the sender of the
        // message in flight is answered, so whoever sees the answer sees them.
        let parked = if let Some(why) = exhausted {
            tracing::error!("{why}");
            Some((
                Status::Stopped,
                "not restarted: the host's restart budget is exhausted".to_string(),
            ))
        } else {
            match decision {
                Decision::Restart(delay) => {
                    self.restarts += 1;
                    self.metrics.restarts.get_or_create(&self.labels).inc();
                    let cause = exit.crash().map_or("normal-exit", |c| c.cause.as_str());
                    tracing::info!(cause, delay = ?delay, restarts = self.restarts, "restarting plugin");
                    if !delay.is_zero() {
                        lock(&self.info).retry_at = Some(crate::config::instant_after(now, delay));
                        self.set_status(Status::Backoff, None);
                    } else {
                        lock(&self.info).restarts = self.restarts;
                    }
                    None
                }
                Decision::Stop => {
                    let reason = format!(
                        "{} (restart type {:?})",
                        ending_text(&exit),
                        self.tracker.policy().kind
                    )
                    .to_lowercase();
                    Some((Status::Stopped, reason))
                }
                Decision::GiveUp { restarts, window } => {
                    let reason = format!(
                        "{restarts} restarts within {window:?} exceed max-restarts ({}); last: {}",
                        self.tracker.policy().max_restarts,
                        ending_text(&exit)
                    );
                    Some((Status::Failed, self.open_breaker(now, reason)))
                }
                Decision::Reopen => {
                    let reason = format!(
                        "crashed in its half-open trial after a cooldown; last: {}",
                        ending_text(&exit)
                    );
                    Some((Status::Failed, self.open_breaker(now, reason)))
                }
            }
        };
        if let Some((status, reason)) = &parked {
            self.set_status(*status, Some(reason.clone()));
        }
        if let Some(e) = env {
            let max = self.tracker.policy().max_attempts.get();
            // A plugin that stops after a normal exit answers its message 503
            // `stopped` with everything queued, whatever the attempts.
            let stops_normally = ending == Ending::Normal && matches!(decision, Decision::Stop);
            if !stops_normally && (e.attempts >= max || (!will_restart && ending == Ending::Crash))
            {
                self.dead_letter(e).await;
            } else {
                self.put_back(e);
            }
        }
        self.put_back_all(earlier);
        if let Some((status, reason)) = parked {
            // Closing answers everything queued (the message in flight too,
            // when it was put back) with 503.
            self.close(status, reason);
            return Flow::Continue;
        }
        if let (
            Plan::Together {
                stop,
                start,
                why,
                by,
                escalated,
            },
            Decision::Restart(delay),
        ) = (plan, decision)
            && will_restart
        {
            // The group restarts this plugin with the others, in order.
            self.held = true;
            for g in &escalated {
                self.metrics.group(&self.metrics.escalations, g);
            }
            self.metrics.group(&self.metrics.group_restarts, &by);
            self.groups.submit(Job::Restart {
                stop,
                start,
                delay,
                why,
            });
            return Flow::Continue;
        }
        if let Decision::Restart(delay) = decision
            && will_restart
            && !delay.is_zero()
        {
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            // An operator's request ends the wait: stop parks the plugin,
            // start/restart/reset start it now.
            tokio::select! {
                biased;
                c = self.control.recv() => return self.on_control(c).await,
                _ = &mut sleep => {}
            }
        }
        Flow::Continue
    }

    /// The plugin fails: opens the breaker and schedules the next attempt
    /// (unless cooldowns are off). Returns the reason with when.
    fn open_breaker(&mut self, now: Instant, mut reason: String) -> String {
        match self.breaker.open() {
            Some(cooldown) => {
                self.retry_at = Some(crate::config::instant_after(now, cooldown));
                reason.push_str(&format!("; next attempt in {cooldown:?} (cooldown)"));
            }
            None => self.retry_at = None,
        }
        tracing::error!(%reason, "plugin failed");
        reason
    }

    /// Time until a failed plugin's next attempt, if one is scheduled.
    fn retry_in(&self) -> Option<Duration> {
        self.retry_at
            .map(|t| t.saturating_duration_since(Instant::now()))
    }

    /// Parks the plugin: closes the mailbox and answers everything queued with 503.
    fn close(&mut self, status: Status, reason: String) {
        self.parked = true;
        self.set_status(status, Some(reason.clone()));
        close_mailbox(
            &self.mailbox,
            status.as_str(),
            &reason,
            self.retry_in(),
            &self.timers,
            &self.env.name,
        );
    }

    /// Writes a crash report off the restart path; returns its id.
    fn report(
        &self,
        crash: &Crash,
        call: &str,
        env: Option<&Envelope>,
        decision: &Decision,
    ) -> u64 {
        let id = fresh_id();
        let message = crash.kept_message();
        tracing::warn!(
            cause = %crash.cause,
            call,
            generation = self.generation,
            decision = %decision.describe(),
            "plugin crashed: {message}"
        );
        let mut report = CrashReport {
            id,
            plugin: self.env.name.clone(),
            generation: self.generation,
            cause: crash.cause,
            call: call.to_string(),
            message,
            backtrace: crash.kept_backtrace(),
            fuel_used: crash.fuel_used,
            memory_bytes: crash.memory_bytes,
            handling: env.map(|e| MessageInfo::of(&e.message, e.attempts)),
            time_ms: now_ms(),
            decision: decision.describe(),
            coredump: None,
        };
        let dump = self.coredumps.clone().zip(crash.coredump.clone());
        let backend = self.env.state.backend().clone();
        let keep = self.keep_reports;
        tokio::spawn(async move {
            if let Some(((dir, budget), bytes)) = dump {
                let plugin = report.plugin.clone();
                let stored = tokio::task::spawn_blocking(move || {
                    super::coredumps::store(&dir, budget, &plugin, id, &bytes)
                })
                .await;
                match stored {
                    Ok(Ok(path)) => report.coredump = path.map(|p| p.display().to_string()),
                    Ok(Err(e)) => tracing::error!("failed to store coredump of crash {id}: {e:#}"),
                    Err(e) => tracing::error!("coredump task of crash {id} failed: {e}"),
                }
            }
            let mut commit = Commit::new(&report.plugin);
            commit.records.push(Record {
                kind: RecordKind::Crash,
                id,
                body: serde_json::to_vec(&report).expect("a crash report serializes"),
                keep,
                keep_bytes: CRASH_REPORT_BYTES,
            });
            if let Err(e) = backend.commit(commit).await {
                tracing::error!("failed to store crash report {id}: {e:#}");
            }
        });
        id
    }

    /// Stores a message that crashed on its last delivery and answers 500.
    async fn dead_letter(&mut self, env: Envelope) {
        let id = fresh_id();
        let letter = DeadLetter {
            id,
            plugin: self.env.name.clone(),
            message: env.message.clone(),
            causes: env.causes.clone(),
            reports: env.reports.clone(),
            time_ms: now_ms(),
        };
        let mut commit = Commit::new(&self.env.name);
        commit.records.push(Record {
            kind: RecordKind::DeadLetter,
            id,
            body: serde_json::to_vec(&letter).expect("a dead letter serializes"),
            keep: self.keep_dead_letters,
            keep_bytes: self.env.config.state.max_bytes,
        });
        let mut done = Finished {
            commit,
            delta: Delta::default(),
            outbox: Vec::new(),
        };
        completes_timer(&mut done, &env);
        tracing::warn!(dead_letter = id, attempts = env.attempts, causes = ?env.causes, "message dead-lettered");
        // Through the plugin's view: a timer it removes changes the usage
        // the view keeps.
        if let Err(e) = self.commit_and_release(done).await {
            tracing::error!("failed to store dead letter {id}: {e:#}");
        }
        self.count("dead-lettered");
        self.metrics.dead_letters.get_or_create(&self.labels).inc();
        let causes = env.causes.clone();
        env.answer(Outcome::DeadLettered { id, causes });
    }
}

/// When `env` came from a durable timer, `done` completes it: the timer's
/// record goes with the commit, and its message out of the plugin's usage.
fn completes_timer(done: &mut Finished, env: &Envelope) {
    if let Source::Timer(id) = env.source {
        done.commit.remove_timers.push(id);
        done.delta += Delta::of_timer(env.message.len(), -1);
    }
}

fn ending_text(exit: &Exit) -> String {
    match exit {
        Exit::Normal => "normal exit".to_string(),
        Exit::Crashed(c) => format!("{}: {}", c.cause, c.kept_message()),
    }
}

fn host_error(e: anyhow::Error) -> Exit {
    Exit::Crashed(Crash {
        cause: Cause::HostError,
        message: format!("{e:#}"),
        backtrace: Vec::new(),
        fuel_used: 0,
        memory_bytes: 0,
        coredump: None,
    })
}

/// Answers a message that will not be handled with 503. A timer's message is
/// scheduled again instead: its record stays until a call handles it.
pub(super) fn answer_unavailable(
    env: Envelope,
    status: &str,
    reason: &str,
    retry_after: Option<Duration>,
    timers: &TimerHandle,
    plugin: &str,
) {
    if let Source::Timer(id) = env.source {
        timers.retry(id, plugin, env.message);
        return;
    }
    env.answer(Outcome::Unavailable {
        status: status.to_string(),
        reason: reason.to_string(),
        retry_after,
    });
}

/// Closes `mailbox` and answers everything queued in it with 503.
pub(super) fn close_mailbox(
    mailbox: &Mailbox,
    status: &str,
    reason: &str,
    retry_after: Option<Duration>,
    timers: &TimerHandle,
    plugin: &str,
) {
    for env in mailbox.close(status, reason) {
        answer_unavailable(env, status, reason, retry_after, timers, plugin);
    }
}

/// A message that makes the worker panic outside the guest call (unit tests).
#[cfg(test)]
pub(super) const TEST_PANIC: &[u8] = b"wasm-sup-test-worker-panic";

/// Bytes of crash reports a plugin keeps at most (besides `[host]
/// crash-reports`, their number): each report is small, but a guest chooses
/// the names in its backtrace.
const CRASH_REPORT_BYTES: u64 = 16 << 20;

/// The message a `tick` delivers.
pub(super) const TICK: &[u8] = b"tick";

/// Sleeps until `at`; never wakes for `None`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => futures::future::pending().await,
    }
}
