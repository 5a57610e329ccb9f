//! The group coordinator: carries out what the [`Tree`] decides, one job at a
//! time, so that two members crashing at once cannot interleave their
//! group's restarts. A coordinated restart holds (stops gracefully, within
//! each one's `shutdown-timeout`) the affected members in reverse start
//! order, waits the crashed plugin's backoff, then starts them one by one in
//! start order, each after the previous one's `init` has run. An
//! auto-shutdown stops the group's members in reverse start order.

use super::tree::{GroupInfo, Tree};
use super::{Control, Shared, SupervisorHandle};
use parking_lot::Mutex;
use std::sync::Weak;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Longest wait for one member to stop or start.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(60);

/// Work for the coordinator.
#[derive(Debug)]
pub(super) enum Job {
    /// Stop `stop`, wait `delay`, start `start`.
    Restart {
        stop: Vec<String>,
        start: Vec<String>,
        delay: Duration,
        why: String,
    },
    /// A group's auto-shutdown: stop these members.
    Shutdown { stop: Vec<String>, why: String },
}

/// The tree and the coordinator's queue.
pub(super) struct Groups {
    tree: Mutex<Tree>,
    jobs: mpsc::UnboundedSender<Job>,
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Groups").finish_non_exhaustive()
    }
}

impl Groups {
    /// The tree, and the receiving end for [`run`].
    pub(super) fn new(tree: Tree) -> (Groups, mpsc::UnboundedReceiver<Job>) {
        let (jobs, rx) = mpsc::unbounded_channel();
        (
            Groups {
                tree: Mutex::new(tree),
                jobs,
            },
            rx,
        )
    }

    /// Runs `f` on the tree (the restart decision reads and updates it).
    pub(super) fn with_tree<R>(&self, f: impl FnOnce(&mut Tree) -> R) -> R {
        f(&mut self.tree.lock())
    }

    /// Queues `group`'s auto-shutdown, set off by `plugin`'s normal exit.
    pub(super) fn auto_shutdown(&self, group: &str, plugin: &str, stop: Vec<String>) {
        let why = format!(
            "group {group} shut down: its significant member {plugin} exited normally (auto-shutdown)"
        );
        self.submit(Job::Shutdown { stop, why });
    }

    pub(super) fn submit(&self, job: Job) {
        let _ = self.jobs.send(job);
    }

    pub(super) fn start_order(&self, loaded: &[String]) -> Vec<String> {
        self.tree.lock().start_order(loaded)
    }

    pub(super) fn unit_of(&self, plugin: &str) -> String {
        self.tree.lock().unit_of(plugin)
    }

    pub(super) fn info(&self) -> Vec<GroupInfo> {
        self.tree.lock().info(Instant::now())
    }
}

/// The coordinator task: runs jobs until the supervisor is gone.
pub(super) async fn run(mut jobs: mpsc::UnboundedReceiver<Job>, shared: Weak<Shared>) {
    while let Some(job) = jobs.recv().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let sup = SupervisorHandle { shared };
        match job {
            Job::Restart {
                stop,
                start,
                delay,
                why,
            } => {
                tracing::warn!("{why}");
                for name in &stop {
                    ask(&sup, name, Control::Hold).await;
                }
                tokio::time::sleep(delay).await;
                for name in &start {
                    ask(&sup, name, Control::Resume).await;
                }
            }
            Job::Shutdown { stop, why } => {
                tracing::info!("{why}");
                for name in &stop {
                    let reason = why.clone();
                    ask(&sup, name, |ack| Control::StopFor(reason, ack)).await;
                }
            }
        }
    }
}

/// Sends a control request to one member and waits for its answer. A
/// member removed meanwhile, or a host shutting down, ends the request.
async fn ask(sup: &SupervisorHandle, name: &str, make: impl FnOnce(super::Ack) -> Control) {
    if tokio::time::timeout(MEMBER_TIMEOUT, sup.request(name, make))
        .await
        .is_err()
    {
        tracing::warn!(
            plugin = name,
            "did not answer its group within {MEMBER_TIMEOUT:?}"
        );
    }
}
