//! The runner: one plugin's instance and the calls into it. It starts an
//! instance and runs `init`, delivers messages one at a time, commits each
//! call's transaction (pipelined, see [`super::pipeline`]), runs health probes
//! and ticks, and stops the instance gracefully. When an instance ends it does
//! not decide anything: it drops the instance and *returns* how it ended
//! ([`Exited`]); the child applies the restart policy.
//!
//! Invariants:
//! - One call at a time; the next message call may run while earlier
//!   commits are on their way to disk, and their replies wait in the
//!   pipeline. A reply, an outbox and timers are released only after their
//!   call's commit is durable.
//! - A failed commit drops the instance: the calls waiting behind it read its
//!   writes, so none of them is answered; their messages are handed back, in
//!   order, to be delivered again.
//! - After any exit the instance is dropped before anything else happens.
//! - The runner never puts a message back in the mailbox and never writes the
//!   plugin's status other than its health: messages to deliver again are
//!   returned to the child, which knows whether the mailbox is closed.

use super::pipeline::{Pipeline, Settled, Waiting};
use crate::compile::Compiled;
use crate::crash::{Cause, Crash, Exit};
use crate::instance::txn::{Finished, Outgoing};
use crate::instance::{PluginEnv, PluginInstance};
use crate::mailbox::timers::TimerHandle;
use crate::mailbox::{Envelope, Mailbox, Outcome, Source};
use crate::metrics::{CallMetrics, Metrics};
use crate::state::{Commit, Delta, TimerRecord, now_ms};
use crate::supervisor::health::Probes;
use crate::supervisor::status::StatusBoard;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// How an instance ended, as the runner hands it to the child.
pub(in crate::supervisor) struct Exited {
    /// Normal exit or crash.
    pub(in crate::supervisor) exit: Exit,
    /// The call it ended in (`init`, `handle`, `check`, `task`).
    pub(in crate::supervisor) call: &'static str,
    /// The message in flight, if the call was a message's.
    pub(in crate::supervisor) env: Option<Envelope>,
    /// Messages of calls after it whose commits could not be kept, in order:
    /// they go back to the mailbox behind the message in flight.
    pub(in crate::supervisor) later: Vec<Envelope>,
}

impl Exited {
    /// An exit in `call` with no message involved.
    pub(in crate::supervisor) fn in_call(exit: Exit, call: &'static str) -> Exited {
        Exited {
            exit,
            call,
            env: None,
            later: Vec::new(),
        }
    }
}

/// One plugin's instance and its calls.
pub(in crate::supervisor) struct Runner {
    /// The plugin's name, configuration, state and directory.
    pub(super) env: Arc<PluginEnv>,
    pub(super) mailbox: Arc<Mailbox>,
    instance: Option<PluginInstance>,
    /// Calls waiting for their commits.
    pub(super) pipeline: Pipeline,
    /// The message whose `handle` call is running, held here so that a
    /// panic outside the guest call finds it (see [`Runner::take_in_flight`]).
    in_flight: Option<Envelope>,
    /// When the current instance started running.
    pub(super) running_since: Option<Instant>,
    /// The current instance's generation (1 = first start).
    pub(super) generation: u64,
    /// The streak of health answers.
    probes: Probes,
    /// When the next health probe is due (with an instance that has `health`).
    pub(super) next_probe: Option<Instant>,
    /// When the next `tick` message is due (with `tick` on).
    pub(super) next_tick: Option<Instant>,
    timers: TimerHandle,
    board: StatusBoard,
    metrics: Arc<Metrics>,
    /// This plugin's per-call metrics.
    calls: CallMetrics,
    /// The span of the current instance (`plugin`, `generation`).
    pub(super) span: tracing::Span,
    /// When a commit last dropped the plugin's expired idempotency answers.
    answers_pruned: Option<Instant>,
    /// Why a commit was refused because another node of the cluster owns
    /// the plugin now (`owner-lost: …`), until the child acts on it.
    pub(super) lost: Option<String>,
}

fn instance_span(plugin: &str, generation: u64) -> tracing::Span {
    tracing::info_span!(parent: None, "plugin", plugin, generation)
}

impl Runner {
    pub(super) fn new(
        env: Arc<PluginEnv>,
        mailbox: Arc<Mailbox>,
        board: StatusBoard,
        timers: TimerHandle,
        metrics: Arc<Metrics>,
    ) -> Runner {
        Runner {
            calls: metrics.calls(&env.name),
            span: instance_span(&env.name, 0),
            env,
            mailbox,
            instance: None,
            pipeline: Pipeline::default(),
            in_flight: None,
            running_since: None,
            generation: 0,
            probes: Probes::default(),
            next_probe: None,
            next_tick: None,
            timers,
            board,
            metrics,
            answers_pruned: None,
            lost: None,
        }
    }

    /// Whether an instance is running.
    pub(super) fn is_running(&self) -> bool {
        self.instance.is_some()
    }

    /// Drops the instance at once (no `lifecycle.shutdown`).
    pub(super) fn drop_instance(&mut self) {
        self.instance = None;
    }

    /// The message in flight when a panic interrupted its call.
    pub(super) fn take_in_flight(&mut self) -> Option<Envelope> {
        self.in_flight.take()
    }

    /// The next instance's generation begins (its span carries it).
    pub(super) fn next_generation(&mut self) {
        self.generation += 1;
        self.span = instance_span(&self.env.name, self.generation);
    }

    /// Starts an instance of `compiled` and runs `init`, then commits what
    /// `init` wrote; on failure, how it ended (the instance is gone).
    pub(super) async fn start(
        &mut self,
        compiled: &Arc<Compiled>,
        restarts: u32,
    ) -> Result<(), Exited> {
        let (compiled_, env, generation) = (compiled.clone(), self.env.clone(), self.generation);
        let started = async move {
            let mut inst = PluginInstance::start(compiled_, env, generation, restarts).await?;
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
        let mut inst = started.map_err(|exit| Exited::in_call(exit, "init"))?;
        let done = inst.take_txn().into_commit(&self.env.name);
        if let Err(e) = self.commit_and_release(done).await {
            return Err(Exited::in_call(host_error(e), "init"));
        }
        let now = Instant::now();
        let config = &self.env.config;
        self.next_probe = compiled
            .check
            .map(|_| crate::config::instant_after(now, config.health.interval));
        self.next_tick = config.tick.map(|t| crate::config::instant_after(now, t));
        self.probes.reset();
        self.instance = Some(inst);
        self.running_since = Some(now);
        Ok(())
    }

    /// Calls `lifecycle.shutdown` (by `deadline`), commits it, drops the instance.
    pub(super) async fn stop(&mut self, deadline: Instant) {
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

    /// Delivers one message to the running instance.
    pub(super) async fn deliver(&mut self, mut env: Envelope) -> Result<(), Exited> {
        let Some(inst) = self.instance.as_mut() else {
            // Cannot happen: the child only delivers with an instance.
            let _ = self.mailbox.push_front(env);
            return Ok(());
        };
        env.attempts += 1;
        let held = self.in_flight.insert(env);
        #[cfg(test)]
        if held.message == super::TEST_PANIC {
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
        let answer = match handled {
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
        let answer = match answer {
            Ok(answer) => answer,
            Err(exit) => {
                self.instance = None;
                return Err(Exited {
                    exit,
                    call: "handle",
                    env: Some(env),
                    later: Vec::new(),
                });
            }
        };
        let mut done = inst.take_txn().into_commit(&self.env.name);
        completes_timer(&mut done, &env);
        let outcome = match answer {
            Ok(reply) => Outcome::Reply(reply),
            Err(reason) => Outcome::Rejected(reason),
        };
        self.keep_answer(&mut done.commit, &env, &outcome);
        let timers = done.commit.add_timers.clone();
        let nothing_to_commit = done.commit.is_empty();
        let submitted = Instant::now();
        let (seq, durable) = self.env.state.submit(done.commit, done.delta).await;
        let waiting = Waiting {
            seq,
            env,
            outcome,
            outbox: done.outbox,
            timers,
            submitted,
        };
        if nothing_to_commit && self.pipeline.is_empty() {
            // Nothing to commit and nothing it could have read from in
            // flight: answered at once.
            self.settle(Settled {
                waiting,
                result: Ok(()),
            });
        } else {
            self.pipeline.push(durable, waiting);
        }
        Ok(())
    }

    /// Adds the answer of a message sent with an `Idempotency-Key` to the
    /// commit that carries its effects (see [`crate::idempotency`]), and now
    /// and then drops the plugin's answers past its `idempotency-window`.
    pub(super) fn keep_answer(&mut self, commit: &mut Commit, env: &Envelope, outcome: &Outcome) {
        let Some(tag) = &env.idempotency else { return };
        let now = now_ms();
        commit
            .answers
            .extend(crate::idempotency::stored(tag, outcome, now));
        if crate::idempotency::prune_due(&mut self.answers_pruned) {
            let window = self.env.config.idempotency_window.as_millis() as u64;
            commit.prune_answers_before = Some(now.saturating_sub(window));
        }
    }

    /// A call's commit resolved, in pipeline order: releases it, or treats
    /// the failure as the call's crash (see the module doc).
    pub(super) async fn on_settled(&mut self, settled: Settled) -> Result<(), Exited> {
        match self.settle(settled) {
            None => Ok(()),
            Some((e, env)) => Err(Exited {
                exit: host_error(e),
                call: "handle",
                env: Some(env),
                later: self.unanswered().await,
            }),
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
            let text = format!("{e:#}");
            if let Some(at) = text.find(crate::state::OWNER_LOST) {
                self.lost = Some(text[at..].to_string());
            }
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
    pub(super) async fn drain(&mut self) -> Vec<Envelope> {
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

    /// Commits a call's transaction and waits until it is durable, then
    /// releases its outbox and timers (for calls other than messages).
    pub(super) async fn commit_and_release(&mut self, done: Finished) -> anyhow::Result<()> {
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

    /// Schedules a committed call's timers and delivers its outbox. Timers
    /// of other plugins are messages in their inbox, which their owner
    /// takes (cluster mode).
    fn release(&self, timers: Vec<TimerRecord>, outbox: Vec<Outgoing>) {
        for t in timers {
            if t.plugin == self.env.name {
                self.timers.schedule(t);
            }
        }
        for out in outbox {
            let Outgoing::Send { to, slot, message } = out;
            let env = Envelope::new(message, Source::Plugin(self.env.name.clone()), None);
            if slot.fill(env).is_err() {
                tracing::warn!(to = %to, "message dropped: the target stopped taking messages after it was sent");
            }
        }
    }

    /// Runs `health.check` between calls and acts on its answer: the label
    /// goes on the board; a failed probe, or too many unhealthy answers,
    /// ends the instance.
    pub(super) async fn probe(&mut self) -> Result<(), Exited> {
        let policy = self.env.config.health.clone();
        self.next_probe = Some(crate::config::instant_after(
            Instant::now(),
            policy.interval,
        ));
        let Some(inst) = self.instance.as_mut() else {
            return Ok(());
        };
        let answer = match inst.check(policy.timeout).await {
            Ok(Some(answer)) => answer,
            Ok(None) => {
                self.next_probe = None;
                return Ok(());
            }
            Err(exit) => {
                self.metrics
                    .result(&self.metrics.health_checks, &self.env.name, "failed");
                self.instance = None;
                let exit = crate::supervisor::health::failed_probe(exit, policy.timeout);
                return Err(Exited::in_call(exit, "check"));
            }
        };
        let done = inst.take_txn().into_commit(&self.env.name);
        if let Err(e) = self.commit_and_release(done).await {
            self.instance = None;
            return Err(Exited::in_call(host_error(e), "check"));
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
                if self.board.health(label.clone()) {
                    if result == "healthy" {
                        tracing::info!(health = %label, "health check");
                    } else {
                        tracing::warn!(health = %label, "health check");
                    }
                }
                Ok(())
            }
            Err(exit) => {
                self.instance = None;
                Err(Exited::in_call(exit, "check"))
            }
        }
    }

    /// Delivers a `tick` message; ticks that came due while the plugin was
    /// busy are skipped, not queued.
    pub(super) async fn tick(&mut self) -> Result<(), Exited> {
        let Some(interval) = self.env.config.tick else {
            self.next_tick = None;
            return Ok(());
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
}

/// When `env` came from a durable timer, `done` completes it: the timer's
/// record goes with the commit, and its message out of the plugin's usage.
pub(super) fn completes_timer(done: &mut Finished, env: &Envelope) {
    if let Source::Timer(id) = env.source {
        done.commit.remove_timers.push(id);
        done.delta += Delta::of_timer(env.message.len(), -1);
    }
}

/// A host failure (a commit, a panic) as the plugin's crash.
pub(super) fn host_error(e: anyhow::Error) -> Exit {
    Exit::Crashed(Crash {
        cause: Cause::HostError,
        message: format!("{e:#}"),
        backtrace: Vec::new(),
        fuel_used: 0,
        memory_bytes: 0,
        coredump: None,
    })
}

/// The message a `tick` delivers.
pub(in crate::supervisor) const TICK: &[u8] = b"tick";
