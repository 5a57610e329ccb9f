//! What a crash leaves behind: the crash report (written by a spawned task,
//! off the restart path, with its coredump) and the dead letter of a message
//! that crashed on its last delivery (committed before its sender is
//! answered). Their format is [`crate::crash::store`]'s.

use super::runner::completes_timer;
use super::{Child, Outcome};
use crate::crash::{Crash, CrashReport, DeadLetter, MessageInfo, store};
use crate::instance::PluginEnv;
use crate::instance::txn::Finished;
use crate::mailbox::Envelope;
use crate::state::{Commit, Delta, RecordKind, now_ms};
use crate::supervisor::policy::Decision;

/// How many dead letters `env`'s plugin has kept (for the gauge at start).
pub(super) async fn pending_dead_letters(env: &PluginEnv, keep: usize) -> usize {
    env.state
        .backend()
        .record_count(&env.name, RecordKind::DeadLetter)
        .await
        .map_or(0, |n| n.min(keep))
}

impl Child {
    /// Writes a crash report off the restart path; returns its id.
    pub(super) fn report(
        &self,
        crash: &Crash,
        call: &str,
        env: Option<&Envelope>,
        decision: &Decision,
    ) -> u64 {
        let id = self.runner.env.state.backend().next_id();
        let message = crash.kept_message();
        let generation = self.runner.generation;
        tracing::warn!(
            cause = %crash.cause,
            call,
            generation,
            decision = %decision.describe(),
            "plugin crashed: {message}"
        );
        let report = CrashReport {
            id,
            plugin: self.name().to_string(),
            generation,
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
        let dump = self
            .coredumps
            .clone()
            .zip(crash.coredump.clone())
            .map(|((dir, budget), bytes)| store::Coredump { dir, budget, bytes });
        let backend = self.runner.env.state.backend().clone();
        let keep = self.keep_reports;
        tokio::spawn(async move {
            if let Err(e) = store::write_report(backend.as_ref(), report, dump, keep).await {
                tracing::error!("{e:#}");
            }
        });
        id
    }

    /// Stores a message that crashed on its last delivery and answers 500.
    pub(super) async fn dead_letter(&mut self, env: Envelope) {
        let id = self.runner.env.state.backend().next_id();
        let letter = DeadLetter {
            id,
            plugin: self.name().to_string(),
            message: env.message.clone(),
            causes: env.causes.clone(),
            reports: env.reports.clone(),
            time_ms: now_ms(),
        };
        let mut commit = Commit::new(self.name());
        store::write_dead_letter(
            &mut commit,
            &letter,
            self.keep_dead_letters,
            self.runner.env.config.state.max_bytes,
        );
        let outcome = Outcome::DeadLettered {
            id,
            causes: env.causes.clone(),
        };
        self.runner.keep_answer(&mut commit, &env, &outcome);
        let mut done = Finished {
            commit,
            delta: Delta::default(),
            outbox: Vec::new(),
        };
        completes_timer(&mut done, &env);
        tracing::warn!(dead_letter = id, attempts = env.attempts, causes = ?env.causes, "message dead-lettered");
        // Through the plugin's view: a timer it removes changes the usage
        // the view keeps.
        if let Err(e) = self.runner.commit_and_release(done).await {
            tracing::error!("failed to store dead letter {id}: {e:#}");
        }
        self.count("dead-lettered");
        self.metrics.dead_letters.get_or_create(&self.labels).inc();
        let causes = env.causes.clone();
        self.board.dead_lettered(id, causes.clone());
        env.answer(Outcome::DeadLettered { id, causes });
    }
}
