//! Durable timers (`send-after`): one task for the host.
//!
//! A timer's record is written with the commit of the call that scheduled it,
//! and removed by the commit of the call that handles its message (or by the
//! dead-letter commit), so a timer survives plugin and host restarts. A
//! plugin's stored timers are read when the plugin is first registered in
//! this host's life ([`TimerHandle::load`]), by an async backend read that
//! does not hold up the task; later registrations of the same name read
//! nothing, since every timer of this host's life is already scheduled here.
//! A read that fails is tried again after [`RETRY`]. When a timer is due its
//! message is put in the plugin's mailbox; if the mailbox is full or closed,
//! or the plugin is not loaded, it is tried again after [`RETRY`]. A state
//! reset deletes the plugin's timer records and makes the task forget its
//! timers ([`TimerHandle::forget`]), and the stored timers of a read that was
//! under way then. In a cluster, a plugin that moves to another node has its
//! timers dropped here and read again if it comes back
//! ([`TimerHandle::release`]).
//!
//! The same task delivers a cluster node's inbox: a `mailbox.send` to a
//! plugin owned by another node is written by the sender's commit as a timer
//! of the target, due at once and not yet taken; the target's owner is
//! notified ([`crate::cluster`]) and takes it ([`TimerHandle::take`],
//! [`StateBackend::take_inbox`]). Reads of one plugin never overlap: a take
//! asked for while a read is under way runs after it, so each stored timer
//! reaches this task once per load, and is removed by the commit that
//! handles it, as any timer is.
//!
//! Owns the timer task and its channel; it reads the state backend and
//! writes nothing to it but, in a cluster, the mark of inbox messages taken.

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
    /// Read the plugin's stored timers, unless they were read already.
    Load(String),
    /// Drop every timer of this plugin (its records were deleted).
    Forget(String),
    /// Drop every timer of this plugin, and read them again at its next
    /// load (another node of a cluster runs it now).
    Release(String),
    /// Take what other nodes put in the plugin's inbox since it was read.
    Take(String),
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

    /// Schedules `plugin`'s stored timers, read from the backend, the first
    /// time it is registered in this host's life (see the module doc).
    pub fn load(&self, plugin: &str) {
        let _ = self.tx.send(Request::Load(plugin.to_string()));
    }

    /// Forgets every timer of `plugin`, whose records a state reset deleted.
    pub fn forget(&self, plugin: &str) {
        let _ = self.tx.send(Request::Forget(plugin.to_string()));
    }

    /// Drops `plugin`'s timers here, which another node of the cluster now
    /// fires; they are read again if the plugin comes back.
    pub fn release(&self, plugin: &str) {
        let _ = self.tx.send(Request::Release(plugin.to_string()));
    }

    /// Cluster mode: takes the messages other nodes' commits put in
    /// `plugin`'s inbox (it was notified of one), if its timers were read
    /// here; otherwise its first read takes them.
    pub fn take(&self, plugin: &str) {
        let _ = self.tx.send(Request::Take(plugin.to_string()));
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

/// Starts the timer task; it reads a plugin's stored timers from `backend`
/// when asked to ([`TimerHandle::load`]).
pub fn start(
    backend: Arc<dyn StateBackend>,
    directory: Arc<Directory>,
) -> (TimerHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(run(backend, directory, rx));
    (TimerHandle { tx }, task)
}

/// A plugin's stored timers, read by a task of their own, with the
/// plugin's [`Track`] counts when the read began.
struct Loaded {
    plugin: String,
    read: Read,
    resets: u64,
    releases: u64,
    timers: Vec<TimerRecord>,
}

/// Which read: every stored timer, or what arrived in the inbox since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    All,
    Inbox,
}

/// What the task knows of one plugin's stored timers.
#[derive(Default)]
struct Track {
    /// Its stored timers were read, or are being read.
    loaded: bool,
    /// A read is under way.
    reading: bool,
    /// The read to begin when the one under way ends.
    next: Option<Read>,
    /// State resets (its records were deleted).
    resets: u64,
    /// Releases (another node of the cluster runs it now).
    releases: u64,
}

impl Track {
    /// Whether what a read found still counts: not if the plugin was
    /// released since (its new owner reads them), nor, for a read of
    /// everything, if it was reset since (every timer set after the reset
    /// was scheduled by its commit). An inbox read holds messages sent to
    /// the plugin, which a reset does not take back.
    fn keeps(&self, l: &Loaded) -> bool {
        l.releases == self.releases && (l.read == Read::Inbox || l.resets == self.resets)
    }
}

/// Reads `plugin`'s stored timers, again after [`RETRY`] while the read
/// fails, and hands them to the timer task (until it stops).
async fn read_stored(
    backend: Arc<dyn StateBackend>,
    mut loaded: Loaded,
    done: mpsc::UnboundedSender<Loaded>,
) {
    loop {
        let got = match loaded.read {
            Read::All => backend.timers(&loaded.plugin).await,
            Read::Inbox => backend.take_inbox(&loaded.plugin).await,
        };
        match got {
            Ok(timers) => {
                loaded.timers = timers;
                let _ = done.send(loaded);
                return;
            }
            Err(e) => {
                tracing::warn!(plugin = %loaded.plugin, error = %format!("{e:#}"), "failed to read the plugin's timers; trying again");
                tokio::time::sleep(RETRY).await;
                if done.is_closed() {
                    return;
                }
            }
        }
    }
}

/// Pending timers: a heap of `(due, id)` over the records by id.
#[derive(Default)]
struct Pending {
    heap: BinaryHeap<Reverse<(u64, u64)>>,
    by_id: HashMap<u64, TimerRecord>,
}

impl Pending {
    fn add(&mut self, t: TimerRecord) {
        // The same record twice (read from the backend and scheduled by its
        // commit) is one timer: one heap entry.
        if self.by_id.get(&t.id).map(|p| p.due_ms) != Some(t.due_ms) {
            self.heap.push(Reverse((t.due_ms, t.id)));
        }
        self.by_id.insert(t.id, t);
    }
}

async fn run(
    backend: Arc<dyn StateBackend>,
    directory: Arc<Directory>,
    mut rx: mpsc::UnboundedReceiver<Request>,
) {
    let mut pending = Pending::default();
    let mut tracks: HashMap<String, Track> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Loaded>();
    // Begins `read` of `plugin` now, or after the read under way.
    let begin = |plugin: String, track: &mut Track, read: Read| {
        if track.reading {
            if track.next != Some(Read::All) {
                track.next = Some(read);
            }
            return;
        }
        track.reading = true;
        let loaded = Loaded {
            plugin,
            read,
            resets: track.resets,
            releases: track.releases,
            timers: Vec::new(),
        };
        tokio::spawn(read_stored(backend.clone(), loaded, done_tx.clone()));
    };
    loop {
        let wait = pending
            .heap
            .peek()
            .map(|Reverse((due, _))| Duration::from_millis(due.saturating_sub(now_ms())));
        tokio::select! {
            r = rx.recv() => match r {
                Some(Request::Schedule(t)) => pending.add(t),
                Some(Request::Load(plugin)) => {
                    let track = tracks.entry(plugin.clone()).or_default();
                    if !track.loaded {
                        track.loaded = true;
                        begin(plugin, track, Read::All);
                    }
                }
                Some(Request::Take(plugin)) => {
                    // Not read here yet: its first read takes the inbox.
                    if let Some(track) = tracks.get_mut(&plugin).filter(|t| t.loaded) {
                        begin(plugin, track, Read::Inbox);
                    }
                }
                // Its heap entries find nothing pending and are skipped.
                Some(Request::Forget(plugin)) => {
                    pending.by_id.retain(|_, t| t.plugin != plugin);
                    tracks.entry(plugin).or_default().resets += 1;
                }
                Some(Request::Release(plugin)) => {
                    pending.by_id.retain(|_, t| t.plugin != plugin);
                    let track = tracks.entry(plugin).or_default();
                    track.releases += 1;
                    track.loaded = false;
                    track.next = None;
                }
                Some(Request::Ping(answer)) => { let _ = answer.send(()); }
                None => return,
            },
            Some(l) = done_rx.recv() => {
                let track = tracks.entry(l.plugin.clone()).or_default();
                track.reading = false;
                let next = track.next.take();
                if track.keeps(&l) {
                    for t in l.timers {
                        pending.add(t);
                    }
                }
                if let Some(read) = next {
                    begin(l.plugin, track, read);
                }
            }
            _ = tokio::time::sleep(wait.unwrap_or(Duration::from_secs(3600))), if wait.is_some() => {
                let now = now_ms();
                while let Some(Reverse((due, id))) = pending.heap.peek().copied() {
                    if due > now {
                        break;
                    }
                    pending.heap.pop();
                    // A stale entry (forgotten, or scheduled again for later)
                    // finds nothing or another due time and is skipped.
                    if pending.by_id.get(&id).is_none_or(|t| t.due_ms != due) {
                        continue;
                    }
                    let Some(t) = pending.by_id.remove(&id) else { continue };
                    if let Err(t) = deliver(&directory, t) {
                        pending.add(TimerRecord { due_ms: now.saturating_add(RETRY.as_millis() as u64), ..t });
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
