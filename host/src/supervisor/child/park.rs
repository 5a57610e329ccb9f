//! Messages that go back to the mailbox, and a parked plugin's closed
//! mailbox: what is queued when a plugin is `failed` or `stopped` is answered
//! 503 with the reason (and when it is tried again); a timer's message is
//! scheduled again instead, so it is never lost.

use super::Child;
use crate::mailbox::timers::TimerHandle;
use crate::mailbox::{Envelope, Mailbox, Outcome, Source};
use crate::supervisor::status::Status;
use std::time::{Duration, Instant};

impl Child {
    /// Puts messages back at the front of the mailbox, keeping their order.
    pub(super) fn put_back_all(&self, envs: Vec<Envelope>) {
        for env in envs.into_iter().rev() {
            self.put_back(env);
        }
    }

    /// Puts a message back at the front of the mailbox, or answers 503 when
    /// the mailbox is closed.
    pub(super) fn put_back(&self, env: Envelope) {
        if let Err((_, env)) = self.runner.mailbox.push_front(env) {
            let (status, reason) = self.runner.mailbox.closed().unwrap_or_default();
            answer_unavailable(
                env,
                &status,
                &reason,
                self.retry_in(),
                &self.timers,
                self.name(),
            );
        }
    }

    /// Time until a failed plugin's next attempt, if one is scheduled.
    fn retry_in(&self) -> Option<Duration> {
        self.retry_at
            .map(|t| t.saturating_duration_since(Instant::now()))
    }

    /// The node lost the plugin to another node of its cluster: a commit
    /// was refused by the plugin's fence (DESIGN.md, "Cluster mode"). Not a
    /// crash: nothing is counted against the restart policy. The instance is
    /// dropped with what it wrote, and the plugin stays `stopped` until the
    /// cluster takes it off this node; the message in flight and everything
    /// queued are answered 503 `owner-lost` (none was handled).
    pub(super) async fn owner_lost(&mut self, why: &str, envs: Vec<Envelope>) {
        self.runner.drop_instance();
        let earlier = self.runner.drain().await;
        self.runner.lost = None;
        self.runner.running_since = None;
        tracing::error!(
            "{why}: this node no longer owns the plugin; stopped, and its messages answered 503 owner-lost"
        );
        self.metrics.owner_lost.get_or_create(&self.labels).inc();
        let reason = format!("owner-lost: {why}");
        self.parked = true;
        self.set_status(Status::Stopped, Some(reason.clone()));
        close_mailbox(
            &self.runner.mailbox,
            crate::state::OWNER_LOST,
            &reason,
            None,
            &self.timers,
            self.name(),
        );
        for env in envs.into_iter().chain(earlier) {
            answer_unavailable(
                env,
                crate::state::OWNER_LOST,
                &reason,
                None,
                &self.timers,
                self.name(),
            );
        }
    }

    /// Parks the plugin: closes the mailbox and answers everything queued with 503.
    pub(super) fn close(&mut self, status: Status, reason: String) {
        self.parked = true;
        self.set_status(status, Some(reason.clone()));
        close_mailbox(
            &self.runner.mailbox,
            status.as_str(),
            &reason,
            self.retry_in(),
            &self.timers,
            self.name(),
        );
    }
}

/// Answers a message that will not be handled with 503. A timer's message is
/// scheduled again instead: its record stays until a call handles it.
pub(in crate::supervisor) fn answer_unavailable(
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
pub(in crate::supervisor) fn close_mailbox(
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
