//! Replies waiting for their commits: the child's pipeline.
//!
//! A child runs its next call while the commits of earlier calls are still
//! on their way to disk (reads see them through
//! [`crate::state::view::StateView`]), so the calls of one plugin share a
//! group commit instead of paying an fsync each. Each call that returned waits
//! here with its reply, outbox and timers until its commit resolves.
//!
//! Invariants:
//! - Calls leave in the order they ran, each only after its own commit is
//!   durable; the backend applies commits in order, so that is also after
//!   every earlier one.
//! - A call with nothing to commit still waits its turn: it may have read a
//!   pending write.
//! - At most [`DEPTH`] calls wait; the child takes no message past that.

use crate::instance::txn::Outgoing;
use crate::mailbox::{Envelope, Outcome};
use crate::state::TimerRecord;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use std::time::Instant;

/// Most calls waiting for their commits at once. A full pipeline fills a
/// group commit several times over, and the wait stays bounded.
pub(super) const DEPTH: usize = 128;

/// A call that returned, waiting for its commit.
pub(super) struct Waiting {
    /// Its commit's number in the plugin's state view (0: nothing to commit).
    pub(super) seq: u64,
    /// The message it handled.
    pub(super) env: Envelope,
    /// Its answer, released with the commit.
    pub(super) outcome: Outcome,
    /// Messages it sent, released with the commit.
    pub(super) outbox: Vec<Outgoing>,
    /// Timers it set, scheduled with the commit.
    pub(super) timers: Vec<TimerRecord>,
    /// When its commit was submitted.
    pub(super) submitted: Instant,
}

/// A waiting call whose commit resolved.
pub(super) struct Settled {
    pub(super) waiting: Waiting,
    pub(super) result: anyhow::Result<()>,
}

/// See the module doc.
#[derive(Default)]
pub(super) struct Pipeline {
    queue: FuturesOrdered<BoxFuture<'static, Settled>>,
}

impl Pipeline {
    /// Adds a call whose commit resolves with `durable`.
    pub(super) fn push(
        &mut self,
        durable: BoxFuture<'static, anyhow::Result<()>>,
        waiting: Waiting,
    ) {
        self.queue.push_back(Box::pin(async move {
            Settled {
                result: durable.await,
                waiting,
            }
        }));
    }

    /// Whether no call waits.
    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether the child must wait before taking another message.
    pub(super) fn is_full(&self) -> bool {
        self.queue.len() >= DEPTH
    }

    /// The oldest waiting call, once its commit resolved.
    pub(super) async fn next(&mut self) -> Option<Settled> {
        self.queue.next().await
    }
}
