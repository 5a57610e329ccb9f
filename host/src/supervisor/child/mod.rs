//! The child: one tokio task per plugin. It owns the plugin's [`Runner`]
//! (the instance and its calls), its restart history and its version, and
//! runs one `select!` over everything that can happen next: an operator's or
//! the host's request, the end of a backoff or a cooldown, a commit settling,
//! the breaker closing, a health probe, a tick, a message.
//!
//! When the runner returns an [`Exited`], the child asks
//! [`restart::judge`](super::restart::judge) what follows and carries the
//! verdict out in one place ([`Child::after_exit`]): the crash report, the
//! message in flight (delivered again or dead-lettered), the status, the
//! group's job, the backoff.
//!
//! Invariants:
//! - One call at a time, in mailbox order; control requests are looked at
//!   first between calls (`biased` select). Anything other than a message
//!   (a control request, a health probe, a crash) first waits for every
//!   commit in flight.
//! - The message in flight at a crash goes back to the front of the mailbox
//!   until it has been delivered `max-attempts` times; then it is
//!   dead-lettered (durably) and its sender gets the dead-letter id and the
//!   causes.
//! - Crash reports are committed by spawned tasks: a restart never waits for
//!   one.
//! - A live upgrade is a control request, so it happens between calls: the
//!   call in flight finishes and commits, the old instance's
//!   `lifecycle.shutdown` runs, and the new version starts on the same state
//!   and takes the mailbox as it is (see [`version`]).
//! - A new configuration is taken at the next start of an instance.
//! - A panic anywhere in a step is this plugin's `host-error` crash, never
//!   the end of its task.

mod control;
mod park;
mod pipeline;
mod records;
pub(super) mod runner;
mod version;

use super::Shared;
use super::budget::Budget;
use super::control::Control;
use super::groups::{Groups, Job};
use super::policy::Ending;
use super::restart::{self, Ended, Next, Restarts};
use super::status::{Facts, Status, StatusBoard};
use super::tree::GroupRestart;
use crate::compile::Compiled;
use crate::config::PluginConfig;
use crate::crash::Exit;
use crate::instance::{PluginEnv, panic_text};
use crate::mailbox::timers::TimerHandle;
use crate::mailbox::{Mailbox, Outcome};
use crate::metrics::{CauseLabels, Metrics, OutcomeLabels, PluginLabel};
use futures::FutureExt;
pub(super) use park::close_mailbox;
use parking_lot::Mutex;
use runner::{Exited, Runner, host_error};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tracing::Instrument;
use version::Versions;

/// What the child's loop does next.
enum Flow {
    /// Keep going.
    Continue,
    /// Leave the loop (shutdown done).
    Exit,
}

/// What a child shares with the supervisor's view of its plugin.
pub(super) struct Handles {
    pub(super) mailbox: Arc<Mailbox>,
    pub(super) board: StatusBoard,
    /// The configuration in force, which senders read.
    pub(super) config: Arc<Mutex<Arc<PluginConfig>>>,
}

pub(super) struct Child {
    runner: Runner,
    versions: Versions,
    restarts: Restarts,
    board: StatusBoard,
    config: Arc<Mutex<Arc<PluginConfig>>>,
    /// A new configuration for the next start.
    pending_config: Option<Arc<PluginConfig>>,
    /// Where rollback markers are kept.
    cache_dir: std::path::PathBuf,
    /// The host's restart budget.
    budget: Arc<Budget>,
    /// The supervision tree and its coordinator.
    groups: Arc<Groups>,
    /// When a `failed` plugin is tried again (half-open), if it will be.
    retry_at: Option<Instant>,
    /// When the backoff after a crash ends, while the plugin waits in it.
    backoff_until: Option<Instant>,
    control: mpsc::UnboundedReceiver<Control>,
    timers: TimerHandle,
    keep_reports: usize,
    keep_dead_letters: usize,
    /// Restarts since the host started.
    restart_count: u32,
    /// Failed or stopped: only control requests are taken.
    parked: bool,
    /// Down while its group restarts it: waits for `Control::Resume`.
    held: bool,
    /// A start its group asked for that failed, to be handled next.
    failed_start: Option<Exited>,
    metrics: Arc<Metrics>,
    labels: PluginLabel,
    /// Coredump folder and budget, when coredumps are on.
    coredumps: Option<(std::path::PathBuf, u64)>,
}

impl Child {
    pub(super) fn new(
        env: Arc<PluginEnv>,
        compiled: Arc<Compiled>,
        handles: Handles,
        control: mpsc::UnboundedReceiver<Control>,
        shared: &Shared,
    ) -> Child {
        let (host, metrics) = (&shared.host, shared.metrics.clone());
        let labels = Metrics::plugin(&env.name);
        let restarts = Restarts {
            tracker: super::policy::RestartTracker::new(env.config.restart.clone()),
            breaker: super::breaker::Breaker::new(&env.config.restart),
        };
        let Handles {
            mailbox,
            board,
            config,
        } = handles;
        Child {
            runner: Runner::new(
                env,
                mailbox,
                board.clone(),
                shared.timers.clone(),
                metrics.clone(),
            ),
            versions: Versions::new(compiled),
            restarts,
            board,
            config,
            pending_config: None,
            cache_dir: host.cache_dir.clone(),
            budget: shared.budget.clone(),
            groups: shared.groups.clone(),
            retry_at: None,
            backoff_until: None,
            control,
            timers: shared.timers.clone(),
            keep_reports: host.crash_reports,
            keep_dead_letters: host.dead_letters,
            restart_count: 0,
            parked: false,
            held: false,
            failed_start: None,
            metrics,
            labels,
            coredumps: host.coredumps.map(|b| (host.coredump_dir.clone(), b)),
        }
    }

    fn name(&self) -> &str {
        &self.runner.env.name
    }

    /// What the board shows besides the status.
    fn facts(&self) -> Facts {
        Facts {
            generation: self.runner.generation,
            restarts: self.restart_count,
            running_since: self.runner.running_since,
            retry_at: self.retry_at,
            circuit: self.restarts.breaker.state(false),
        }
    }

    fn set_status(&self, status: Status, reason: Option<String>) {
        let mut facts = self.facts();
        facts.circuit = self.restarts.breaker.state(status == Status::Failed);
        self.board.publish(status, reason, facts);
    }

    pub(super) async fn run(mut self) {
        let pending = Box::pin(records::pending_dead_letters(
            &self.runner.env,
            self.keep_dead_letters,
        ))
        .await;
        let family = &self.metrics.dead_letters;
        family.get_or_create(&self.labels).set(pending as i64);
        // The panic guard wraps the loop, not each step: a step's future is
        // built once per message, and wrapping it again each time copied it
        // three times over (the durable-write benchmark's cost).
        loop {
            let steps = AssertUnwindSafe(self.steps()).catch_unwind().await;
            let what = match steps {
                Ok(()) => return,
                Err(panic) => panic_text(&*panic),
            };
            let span = self.runner.span.clone();
            if let Flow::Exit = Box::pin(self.after_panic(what).instrument(span)).await {
                return;
            }
        }
    }

    /// Steps until the child exits, each in the span of the instance of the
    /// moment (its generation changes at each start).
    async fn steps(&mut self) {
        loop {
            let span = self.runner.span.clone();
            if let Flow::Exit = self.step().instrument(span).await {
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
        self.runner.drop_instance();
        let exited = Exited {
            exit: host_error(anyhow::anyhow!(
                "host panicked in the plugin's task: {what}"
            )),
            call: "task",
            env: self.runner.take_in_flight(),
            later: Vec::new(),
        };
        match AssertUnwindSafe(self.after_exit(exited))
            .catch_unwind()
            .await
        {
            Ok(flow) => flow,
            Err(again) => {
                let again = panic_text(&*again);
                let reason = format!(
                    "host panicked twice in the plugin's task ({what}; then {again}): start it again with `wasm-sup start {}`",
                    self.name()
                );
                tracing::error!("{reason}");
                self.runner.drop_instance();
                self.retry_at = None;
                self.close(Status::Failed, reason);
                Flow::Continue
            }
        }
    }

    /// One turn of the loop: the one `select!`.
    async fn step(&mut self) -> Flow {
        // Rare branches are boxed, so the step future built for every
        // message stays the size of the hot path (deliver, settle).
        if let Some(exited) = self.failed_start.take() {
            return Box::pin(self.after_exit(exited)).await;
        }
        let down = self.parked || self.held;
        let running = !down && self.runner.is_running();
        if !down && !running && self.backoff_until.is_none() {
            return Box::pin(self.start()).await;
        }
        // The timers share two sleeps, one each side of the commits: the
        // end of a wait (a failed plugin's cooldown, a backoff), and the
        // first of the breaker's closing, the probe and the tick. A sleep is
        // a few hundred bytes of every plugin's task, idle or not.
        let wait_until = if down {
            self.retry_at
        } else if !running {
            self.backoff_until
        } else {
            None
        };
        let due_at = if running { self.due_at() } else { None };
        let taking = running && !self.runner.pipeline.is_full();
        let settling = running && !self.runner.pipeline.is_empty();
        // Operator requests first, then the ends of waits, then (between
        // calls) commits, the breaker, the probe and the tick when they are
        // due, then messages.
        tokio::select! {
            biased;
            c = self.control.recv() => {
                // An operator's request ends a backoff: stop parks the
                // plugin, start/restart/reset start it now.
                self.backoff_until = None;
                Box::pin(self.on_control(c)).await
            }
            _ = sleep_until(wait_until), if wait_until.is_some() => {
                if down {
                    self.half_open();
                } else {
                    self.backoff_until = None;
                }
                Flow::Continue
            }
            Some(settled) = self.runner.pipeline.next(), if settling => {
                let r = self.runner.on_settled(settled).await;
                self.after(r).await
            }
            _ = sleep_until(due_at), if due_at.is_some() => Box::pin(self.on_due()).await,
            env = self.runner.mailbox.pop(), if taking => {
                let r = self.runner.deliver(env).await;
                self.after(r).await
            }
        }
    }

    /// The first of the running instance's timers: the breaker's closing,
    /// the next probe, the next tick.
    fn due_at(&self) -> Option<Instant> {
        let close_at = self.restarts.breaker.closes_at(self.runner.running_since);
        [close_at, self.runner.next_probe, self.runner.next_tick]
            .into_iter()
            .flatten()
            .min()
    }

    /// A timer of the running instance is due: the breaker closes, a probe
    /// runs (after every commit in flight), or a tick, in that order.
    async fn on_due(&mut self) -> Flow {
        let now = Instant::now();
        let due = |at: Option<Instant>| at.is_some_and(|at| at <= now);
        if due(self.restarts.breaker.closes_at(self.runner.running_since)) {
            if self
                .restarts
                .breaker
                .close_if_due(self.runner.running_since, now)
            {
                tracing::info!(
                    "circuit closed: the plugin ran healthily for reset-after after its cooldown"
                );
                self.board.circuit(None);
            }
            Flow::Continue
        } else if due(self.runner.next_probe) {
            self.settle_all().await;
            let r = self.runner.probe().await;
            self.after(r).await
        } else if due(self.runner.next_tick) {
            let r = self.runner.tick().await;
            self.after(r).await
        } else {
            Flow::Continue
        }
    }

    /// Goes on after a call, or applies the policy when its instance ended.
    async fn after(&mut self, r: Result<(), Exited>) -> Flow {
        match r {
            Ok(()) => Flow::Continue,
            Err(exited) => Box::pin(self.after_exit(exited)).await,
        }
    }

    /// The cooldown of a `failed` plugin is over: a half-open trial begins.
    fn half_open(&mut self) {
        self.restarts.breaker.half_open(Instant::now());
        tracing::info!("cooldown over: trying the plugin again (circuit half-open)");
        self.unpark();
        self.board.circuit(self.restarts.breaker.state(false));
    }

    /// Starts a new instance and runs `init`; on failure applies the policy.
    async fn start(&mut self) -> Flow {
        match self.try_start().await {
            Ok(()) => Flow::Continue,
            Err(exited) => self.after_exit(exited).await,
        }
    }

    /// Starts a new instance of the current version with the configuration
    /// waiting for it, if any, and publishes `running`.
    async fn try_start(&mut self) -> Result<(), Exited> {
        if let Some(config) = self.pending_config.take() {
            self.apply_config(config);
        }
        self.runner.next_generation();
        self.set_status(Status::Starting, None);
        let compiled = self.versions.current.clone();
        self.runner.start(&compiled, self.restart_count).await?;
        self.versions.started();
        self.set_status(Status::Running, None);
        tracing::info!(parent: &self.runner.span, "plugin running");
        Ok(())
    }

    /// After an instance ended (the instance is already dropped): report,
    /// settle the message in flight, and carry out the restart verdict.
    async fn after_exit(&mut self, exited: Exited) -> Flow {
        let Exited {
            exit,
            call,
            mut env,
            later,
        } = exited;
        if let Exit::Crashed(c) = &exit
            && c.cause == crate::crash::Cause::HostError
            && let Some(at) = c.message.find(crate::state::OWNER_LOST)
        {
            let why = c.message[at..].to_string();
            self.owner_lost(&why, env.into_iter().chain(later).collect())
                .await;
            return Flow::Continue;
        }
        self.runner.drop_instance();
        // Calls that ran before this one are answered first; if one of their
        // commits failed, their messages go back in front of this one's.
        let earlier = self.runner.drain().await;
        if let Some(why) = self.runner.lost.take() {
            let envs = earlier.into_iter().chain(env).chain(later).collect();
            self.owner_lost(&why, envs).await;
            return Flow::Continue;
        }
        self.put_back_all(later);
        let now = Instant::now();
        let up_since = self.runner.running_since.take();
        let ending = match &exit {
            Exit::Normal => Ending::Normal,
            Exit::Crashed(_) => Ending::Crash,
        };
        if ending == Ending::Crash {
            self.versions.crashed();
        }
        let cause = exit.crash().map_or("normal-exit", |c| c.cause.as_str());
        let probation = self.runner.env.config.upgrade_probation;
        let name = self.runner.env.name.clone();
        let ended = Ended {
            plugin: &name,
            ending,
            cause,
            text: ending_text(&exit),
            up_since,
            now,
            jitter: rand::random::<f64>(),
            can_roll_back: self.versions.can_roll_back(now, probation),
        };
        let verdict = self
            .groups
            .with_tree(|tree| restart::judge(&mut self.restarts, &ended, &self.budget, tree));
        let report_id = match &exit {
            Exit::Normal => {
                tracing::info!(call, decision = %verdict.decision.describe(), "plugin exited normally");
                None
            }
            Exit::Crashed(crash) => Some(self.report(crash, call, env.as_ref(), &verdict.decision)),
        };
        if let Some(e) = env.as_mut() {
            e.causes.push(cause.to_string());
            e.reports.extend(report_id);
        }
        if let Exit::Crashed(c) = &exit {
            self.board
                .crashed(c.cause, call, verdict.decision.describe(), report_id);
            let labels = CauseLabels {
                plugin: self.name().to_string(),
                cause: c.cause.as_str(),
            };
            self.metrics.crashes.get_or_create(&labels).inc();
            if env.is_some() {
                self.count("crashed");
            }
        }
        // After the crash is recorded, so the event stream and the log tell
        // the crash first, then the rollback it caused.
        if verdict.roll_back {
            self.roll_back(&ended.text);
        }
        if let Some((group, stop)) = verdict.shutdown.clone() {
            self.groups.auto_shutdown(&group, self.name(), stop);
        }
        // The new status and restart count are set before the sender of the
        // message in flight is answered, so whoever sees the answer sees them.
        match &verdict.next {
            Next::Park {
                status,
                reason,
                retry_at,
                exhausted,
            } => {
                if let Some(why) = exhausted {
                    tracing::error!("{why}");
                } else if *status == Status::Failed {
                    self.retry_at = *retry_at;
                    tracing::error!(%reason, "plugin failed");
                }
                self.set_status(*status, Some(reason.clone()));
            }
            Next::Restart(delay) | Next::Together { delay, .. } => {
                self.restart_count += 1;
                self.metrics.restarts.get_or_create(&self.labels).inc();
                tracing::info!(cause, delay = ?delay, restarts = self.restart_count, "restarting plugin");
                let until = (!delay.is_zero()).then(|| crate::config::instant_after(now, *delay));
                self.board.restarting(*delay, until, self.facts());
            }
        }
        if let Some(e) = env {
            let max = self.restarts.tracker.policy().max_attempts.get();
            if verdict.dead_letters(ending, e.attempts, max) {
                self.dead_letter(e).await;
            } else {
                self.put_back(e);
            }
        }
        self.put_back_all(earlier);
        match verdict.next {
            Next::Park { status, reason, .. } => {
                // Closing answers everything queued (the message in flight
                // too, when it was put back) with 503.
                self.close(status, reason);
            }
            Next::Together {
                delay,
                group:
                    GroupRestart {
                        stop,
                        start,
                        why,
                        by,
                        escalated,
                    },
            } => {
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
            }
            Next::Restart(delay) => {
                if !delay.is_zero() {
                    self.backoff_until = Some(crate::config::instant_after(now, delay));
                }
            }
        }
        Flow::Continue
    }

    fn count(&self, outcome: &'static str) {
        let labels = OutcomeLabels {
            plugin: self.name().to_string(),
            outcome,
        };
        self.metrics.messages.get_or_create(&labels).inc();
    }

    /// Waits for every commit in flight and puts the messages of failed
    /// ones back in the mailbox.
    async fn settle_all(&mut self) {
        let again = self.runner.drain().await;
        if let Some(why) = self.runner.lost.take() {
            self.owner_lost(&why, again).await;
            return;
        }
        self.put_back_all(again);
    }

    /// Leaves `failed`/`stopped` with a fresh restart history; the loop
    /// starts a new instance.
    fn unpark(&mut self) {
        self.parked = false;
        self.held = false;
        self.retry_at = None;
        self.restarts.tracker.reset();
        self.runner.mailbox.reopen();
        self.set_status(Status::Starting, None);
    }
}

/// One line for reasons: `cause: message`, or `normal exit`.
fn ending_text(exit: &Exit) -> String {
    match exit {
        Exit::Normal => "normal exit".to_string(),
        Exit::Crashed(c) => format!("{}: {}", c.cause, c.kept_message()),
    }
}

/// A message that makes the child panic outside the guest call (unit tests).
#[cfg(test)]
pub(super) const TEST_PANIC: &[u8] = b"wasm-sup-test-worker-panic";

/// Sleeps until `at`; never wakes for `None`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => futures::future::pending().await,
    }
}
