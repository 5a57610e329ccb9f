//! Durable timers (`send-after`): one task for the host.
//!
//! A timer's record is written with the commit of the call that scheduled it,
//! and removed by the commit of the call that handles its message (or by the
//! dead-letter commit), so a timer survives plugin and host restarts: at start
//! every stored timer is loaded again. When a timer is due its message is put
//! in the plugin's mailbox; if the mailbox is full or closed, or the plugin is
//! not loaded, it is tried again after [`RETRY`]. A state reset deletes the
//! plugin's timer records and makes the task forget its timers
//! ([`TimerHandle::forget`]).

use crate::mailbox::{Directory, Envelope, Source};
use crate::state::{StateBackend, TimerRecord, now_ms};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Delay before a timer whose delivery failed is tried again.
pub const RETRY: Duration = Duration::from_secs(1);

/// What the timer task is asked to do.
#[derive(Debug)]
enum Request {
    Schedule(TimerRecord),
    /// Drop every timer of this plugin (its records were deleted).
    Forget(String),
    /// Answer at once: the systemd watchdog's round trip ([`crate::systemd`]).
    Ping(tokio::sync::oneshot::Sender<()>),
}

/// Schedules timers on the timer task.
#[derive(Debug, Clone)]
pub struct TimerHandle {
    tx: mpsc::UnboundedSender<Request>,
}

impl TimerHandle {
    /// Schedules a timer whose record is already durable.
    pub fn schedule(&self, t: TimerRecord) {
        let _ = self.tx.send(Request::Schedule(t));
    }

    /// Forgets every timer of `plugin`, whose records a state reset deleted.
    pub fn forget(&self, plugin: &str) {
        let _ = self.tx.send(Request::Forget(plugin.to_string()));
    }

    /// Resolves once the timer task has answered: an error if it is gone.
    pub async fn ping(&self) -> anyhow::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Request::Ping(tx))
            .map_err(|_| anyhow::anyhow!("the timer task has stopped"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("the timer task has stopped"))
    }

    /// Schedules again, [`RETRY`] from now, the message of a timer that was
    /// delivered to a mailbox that then closed before handling it.
    pub fn retry(&self, id: u64, plugin: &str, message: Vec<u8>) {
        self.schedule(TimerRecord {
            id,
            plugin: plugin.to_string(),
            due_ms: now_ms().saturating_add(RETRY.as_millis() as u64),
            message,
        });
    }
}

/// Starts the timer task with every stored timer.
pub fn start(
    backend: &Arc<dyn StateBackend>,
    directory: Arc<Directory>,
) -> anyhow::Result<(TimerHandle, tokio::task::JoinHandle<()>)> {
    let stored = backend.timers()?;
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(run(stored, directory, rx));
    Ok((TimerHandle { tx }, task))
}

async fn run(
    stored: Vec<TimerRecord>,
    directory: Arc<Directory>,
    mut rx: mpsc::UnboundedReceiver<Request>,
) {
    let mut heap: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::new();
    let mut pending: HashMap<u64, TimerRecord> = HashMap::new();
    let add = |t: TimerRecord,
               heap: &mut BinaryHeap<Reverse<(u64, u64)>>,
               pending: &mut HashMap<u64, TimerRecord>| {
        heap.push(Reverse((t.due_ms, t.id)));
        pending.insert(t.id, t);
    };
    for t in stored {
        add(t, &mut heap, &mut pending);
    }
    loop {
        let wait = heap
            .peek()
            .map(|Reverse((due, _))| Duration::from_millis(due.saturating_sub(now_ms())));
        tokio::select! {
            r = rx.recv() => match r {
                Some(Request::Schedule(t)) => add(t, &mut heap, &mut pending),
                // Its heap entries find nothing pending and are skipped.
                Some(Request::Forget(plugin)) => pending.retain(|_, t| t.plugin != plugin),
                Some(Request::Ping(answer)) => { let _ = answer.send(()); }
                None => return,
            },
            _ = tokio::time::sleep(wait.unwrap_or(Duration::from_secs(3600))), if wait.is_some() => {
                let now = now_ms();
                while let Some(Reverse((due, id))) = heap.peek().copied() {
                    if due > now {
                        break;
                    }
                    heap.pop();
                    let Some(t) = pending.remove(&id) else { continue };
                    if let Err(t) = deliver(&directory, t) {
                        add(TimerRecord { due_ms: now.saturating_add(RETRY.as_millis() as u64), ..t }, &mut heap, &mut pending);
                    }
                }
            }
        }
    }
}

fn deliver(directory: &Directory, t: TimerRecord) -> Result<(), TimerRecord> {
    let Some(addr) = directory.get(&t.plugin) else {
        return Err(t);
    };
    let env = Envelope::new(t.message, Source::Timer(t.id), None);
    addr.mailbox.push(env).map_err(|(_, env)| TimerRecord {
        message: env.message,
        ..t
    })
}
