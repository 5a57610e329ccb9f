//! Mailboxes: the bounded, in-memory queue of each plugin, and the directory
//! that maps plugin names to them.
//!
//! Invariants:
//! - Queued messages plus reserved slots never exceed the capacity. A slot is
//!   reserved by a guest's `mailbox.send` when it is called (so `mailbox-full` is
//!   answered at once) and filled when the sending call commits, or freed when
//!   the call is discarded ([`Reservation`] frees it on drop).
//! - A redelivered message goes to the front and needs no free slot: it already
//!   held one.
//! - A closed mailbox takes nothing new; what it held is handed back by
//!   [`Mailbox::close`] so the owner can answer every sender (never a silent drop).

pub mod timers;

use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};

/// What the sender of a message learns (DESIGN.md, "What a sender sees").
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `handle` returned Ok: the reply (HTTP 200).
    Reply(Vec<u8>),
    /// `handle` returned Err: the reason (HTTP 422).
    Rejected(String),
    /// Crashed on its last delivery and was dead-lettered (HTTP 500).
    DeadLettered {
        /// Dead-letter id.
        id: u64,
        /// The crash cause of each delivery.
        causes: Vec<String>,
    },
    /// The plugin cannot take it: failed, stopped or shutting down (HTTP 503).
    Unavailable {
        /// The plugin's status.
        status: String,
        /// Why.
        reason: String,
        /// When a retry is scheduled, if one is.
        retry_after: Option<Duration>,
    },
}

/// Where a message came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The admin API or CLI.
    Admin,
    /// Another plugin's `mailbox.send`.
    Plugin(String),
    /// A durable timer (`send-after`); the id of its record.
    Timer(u64),
    /// The `tick` setting.
    Tick,
}

/// A message in a mailbox.
#[derive(Debug)]
pub struct Envelope {
    /// The message bytes.
    pub message: Vec<u8>,
    /// Where the outcome goes, if anyone waits for it.
    pub reply: Option<oneshot::Sender<Outcome>>,
    /// Where it came from.
    pub source: Source,
    /// Deliveries so far.
    pub attempts: u32,
    /// Crash cause of each failed delivery.
    pub causes: Vec<String>,
    /// Ids of the crash reports of failed deliveries.
    pub reports: Vec<u64>,
    /// The `Idempotency-Key` it was sent with: its answer is kept.
    pub idempotency: Option<crate::idempotency::Tag>,
}

impl Envelope {
    /// A fresh envelope.
    pub fn new(
        message: Vec<u8>,
        source: Source,
        reply: Option<oneshot::Sender<Outcome>>,
    ) -> Envelope {
        Envelope {
            message,
            reply,
            source,
            attempts: 0,
            causes: Vec::new(),
            reports: Vec::new(),
            idempotency: None,
        }
    }

    /// Tells the sender, if one waits.
    pub fn answer(self, outcome: Outcome) {
        if let Some(tx) = self.reply {
            let _ = tx.send(outcome);
        }
    }
}

/// Why a message was not queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushError {
    /// No free slot.
    Full,
    /// The mailbox is closed; the plugin's status and why.
    Closed {
        /// Status at closing.
        status: String,
        /// Why.
        reason: String,
    },
}

struct Inner {
    queue: VecDeque<Envelope>,
    reserved: usize,
    closed: Option<(String, String)>,
}

/// A bounded mailbox. See the module doc.
pub struct Mailbox {
    inner: Mutex<Inner>,
    notify: Notify,
    capacity: AtomicUsize,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl Mailbox {
    /// An open, empty mailbox.
    pub fn new(capacity: usize) -> Arc<Mailbox> {
        Arc::new(Mailbox {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                reserved: 0,
                closed: None,
            }),
            notify: Notify::new(),
            capacity: AtomicUsize::new(capacity),
        })
    }

    /// How many messages (queued plus reserved) it holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Relaxed)
    }

    /// Changes the capacity (a new configuration). Messages already queued
    /// stay even when there are more of them than the new capacity.
    pub fn set_capacity(&self, capacity: usize) {
        self.capacity.store(capacity, Ordering::Relaxed);
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    fn check_open(inner: &Inner) -> Result<(), PushError> {
        match &inner.closed {
            Some((status, reason)) => Err(PushError::Closed {
                status: status.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Queues a message at the back, if there is room.
    #[expect(
        clippy::result_large_err,
        reason = "the envelope goes back to the caller by value; refusals are rare"
    )]
    pub fn push(&self, env: Envelope) -> Result<(), (PushError, Envelope)> {
        {
            let mut g = self.lock();
            if let Err(e) = Self::check_open(&g) {
                return Err((e, env));
            }
            if g.queue.len() + g.reserved >= self.capacity() {
                return Err((PushError::Full, env));
            }
            g.queue.push_back(env);
        }
        self.notify.notify_one();
        Ok(())
    }

    /// Puts a message back at the front for redelivery (no slot needed).
    /// If the mailbox has closed meanwhile, the envelope is handed back.
    #[expect(
        clippy::result_large_err,
        reason = "the envelope goes back to the caller by value; refusals are rare"
    )]
    pub fn push_front(&self, env: Envelope) -> Result<(), (PushError, Envelope)> {
        {
            let mut g = self.lock();
            if let Err(e) = Self::check_open(&g) {
                return Err((e, env));
            }
            g.queue.push_front(env);
        }
        self.notify.notify_one();
        Ok(())
    }

    /// Reserves a slot for a message that a call will send if it commits.
    pub fn reserve(self: &Arc<Self>) -> Result<Reservation, PushError> {
        let mut g = self.lock();
        Self::check_open(&g)?;
        if g.queue.len() + g.reserved >= self.capacity() {
            return Err(PushError::Full);
        }
        g.reserved += 1;
        Ok(Reservation {
            mailbox: Some(self.clone()),
        })
    }

    /// Takes the next message without waiting.
    pub fn try_pop(&self) -> Option<Envelope> {
        self.lock().queue.pop_front()
    }

    /// Waits for the next message.
    pub async fn pop(&self) -> Envelope {
        loop {
            let notified = self.notify.notified();
            if let Some(env) = self.try_pop() {
                return env;
            }
            notified.await;
        }
    }

    /// Messages queued now.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes the mailbox and hands back everything queued.
    pub fn close(&self, status: &str, reason: &str) -> Vec<Envelope> {
        let mut g = self.lock();
        g.closed = Some((status.to_string(), reason.to_string()));
        g.queue.drain(..).collect()
    }

    /// Opens a closed mailbox again.
    pub fn reopen(&self) {
        self.lock().closed = None;
    }

    /// Whether it is closed, and why.
    pub fn closed(&self) -> Option<(String, String)> {
        self.lock().closed.clone()
    }
}

/// A reserved slot in a mailbox. Dropping it frees the slot.
#[derive(Debug)]
pub struct Reservation {
    mailbox: Option<Arc<Mailbox>>,
}

impl Reservation {
    /// Fills the slot with `env`. If the mailbox closed since the reservation,
    /// the envelope is handed back.
    #[expect(
        clippy::result_large_err,
        reason = "the envelope goes back to the caller by value; refusals are rare"
    )]
    pub fn fill(mut self, env: Envelope) -> Result<(), (PushError, Envelope)> {
        let mailbox = self.mailbox.take().expect("a reservation is filled once");
        {
            let mut g = mailbox.lock();
            g.reserved -= 1;
            if let Err(e) = Mailbox::check_open(&g) {
                return Err((e, env));
            }
            g.queue.push_back(env);
        }
        mailbox.notify.notify_one();
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(m) = self.mailbox.take() {
            m.lock().reserved -= 1;
        }
    }
}

/// An entry of the directory: what a sender needs to reach a plugin.
#[derive(Debug, Clone)]
pub struct Address {
    /// The plugin's mailbox.
    pub mailbox: Arc<Mailbox>,
    /// Its largest accepted message.
    pub max_message: u64,
}

/// Plugin name → mailbox, shared by the admin API, the timers and every guest.
/// In cluster mode it also knows the plugins that run on other nodes (with
/// their `max-message`), which a `mailbox.send` reaches through their
/// inbox in the state database.
#[derive(Debug, Default)]
pub struct Directory {
    map: RwLock<HashMap<String, Address>>,
    elsewhere: RwLock<HashMap<String, u64>>,
}

impl Directory {
    /// An empty directory.
    pub fn new() -> Arc<Directory> {
        Arc::new(Directory::default())
    }

    /// Adds or replaces a plugin's address.
    pub fn insert(&self, name: &str, addr: Address) {
        self.map.write().insert(name.to_string(), addr);
    }

    /// Removes a plugin.
    pub fn remove(&self, name: &str) {
        self.map.write().remove(name);
    }

    /// Looks a plugin up.
    pub fn get(&self, name: &str) -> Option<Address> {
        self.map.read().get(name).cloned()
    }

    /// Cluster mode: records a plugin of the folder, running here or not,
    /// with its largest accepted message.
    pub fn know(&self, name: &str, max_message: u64) {
        self.elsewhere.write().insert(name.to_string(), max_message);
    }

    /// Cluster mode: a plugin whose file was removed.
    pub fn unknow(&self, name: &str) {
        self.elsewhere.write().remove(name);
    }

    /// Cluster mode: the `max-message` of a plugin of the folder that does
    /// not run here (another node owns it, or none does yet).
    pub fn elsewhere(&self, name: &str) -> Option<u64> {
        if self.map.read().contains_key(name) {
            return None;
        }
        self.elsewhere.read().get(name).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(m: &str) -> Envelope {
        Envelope::new(m.as_bytes().to_vec(), Source::Admin, None)
    }

    #[test]
    fn capacity_counts_reservations_and_drop_frees_them() {
        let mb = Mailbox::new(2);
        mb.push(env("a")).unwrap();
        let r = mb.reserve().unwrap();
        assert_eq!(mb.push(env("b")).unwrap_err().0, PushError::Full);
        assert_eq!(mb.reserve().unwrap_err(), PushError::Full);
        drop(r);
        let r = mb.reserve().unwrap();
        r.fill(env("c")).unwrap();
        assert_eq!(mb.len(), 2);
        assert_eq!(mb.try_pop().unwrap().message, b"a");
        assert_eq!(mb.try_pop().unwrap().message, b"c");
    }

    #[test]
    fn redelivery_goes_first_without_a_slot() {
        let mb = Mailbox::new(1);
        mb.push(env("next")).unwrap();
        mb.push_front(env("again")).unwrap();
        assert_eq!(mb.try_pop().unwrap().message, b"again");
    }

    #[test]
    fn close_hands_back_everything() {
        let mb = Mailbox::new(4);
        mb.push(env("a")).unwrap();
        let r = mb.reserve().unwrap();
        let held = mb.close("failed", "too many restarts");
        assert_eq!(held.len(), 1);
        assert!(matches!(
            mb.push(env("b")).unwrap_err().0,
            PushError::Closed { .. }
        ));
        assert!(r.fill(env("c")).is_err());
        mb.reopen();
        mb.push(env("d")).unwrap();
    }
}
