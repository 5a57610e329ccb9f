//! The event stream (docs/design.md, "Operating it: Events"): one [`Event`]
//! per change in a plugin's life, published by the supervisor's children and
//! read by the admin API's `GET /v1/events` (Server-Sent Events) and the
//! CLI's `wasm-sup events`.
//!
//! Invariants:
//! - Publishing never waits: an event goes into a backlog of the last
//!   [`BACKLOG`] and into a broadcast channel of [`LIVE_QUEUE`], both under
//!   one short lock. A subscriber that falls more than [`LIVE_QUEUE`] events
//!   behind the live stream loses its place ([`Next::Dropped`]); it never
//!   slows a plugin.
//! - Ids are `RUN-SEQ` on a single host: `RUN` is drawn at random when the
//!   host starts (not a clock), `SEQ` counts from 1. A subscriber resuming
//!   with the id of the last event it saw gets every later event still in
//!   the backlog, in order, then the live ones; an id of another run, or
//!   one older than the backlog, gets [`Next::Reset`] first, then the live
//!   stream.
//! - Subscribing and publishing share the lock, so a subscriber sees each
//!   event exactly once, from the backlog or live, never both.
//! - In cluster mode ([`Events::relay`]) an event is not kept where it
//!   happened: it goes to the cluster's relay ([`crate::cluster`]), which
//!   numbers it from a database sequence and sends it through PostgreSQL
//!   `NOTIFY` to every node, each of which takes it in
//!   ([`Events::accept`]) in the order the database delivers. Every node's
//!   stream is thus every node's events, in one order, with the same ids.
//!   When a node's listening connection broke, events may have been missed:
//!   [`Events::gap`] empties the backlog and tells live subscribers
//!   ([`Next::Reset`]).

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;
use tokio::sync::{broadcast, mpsc};

/// Events kept for subscribers that resume.
pub const BACKLOG: usize = 1000;

/// Events a live subscriber may fall behind before it is dropped (tokio's
/// broadcast channel holds a power of two).
pub const LIVE_QUEUE: usize = 1024;

/// Events waiting for the cluster's relay; past it, new ones are dropped
/// (and logged), so publishing never waits for the database.
pub const RELAY_QUEUE: usize = 4096;

/// One change in a plugin's life, as `data:` of the event stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `RUN-SEQ` (see the module doc); also the stream's `id:`.
    pub id: String,
    /// When it happened, RFC 3339 in UTC.
    pub time: String,
    /// The plugin.
    pub plugin: String,
    /// Cluster mode: the node it happened on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// What happened, with the fields it needs (`kind` on the wire).
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened. The wire name is `kind`'s value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum EventKind {
    /// A new instance ran `init` and takes messages.
    Started {
        /// Its generation (1 = first start).
        generation: u64,
        /// SHA-256 of the component it runs.
        sha256: String,
    },
    /// An instance crashed.
    Crashed {
        /// The instance's generation.
        generation: u64,
        /// The crash cause (`trap`, `fuel-exhausted`, …).
        cause: String,
        /// The call that crashed (`init`, `handle`, `check`, …).
        call: String,
        /// What the restart policy decided, in words.
        decision: String,
        /// The crash report's id, when one was stored.
        report: Option<u64>,
    },
    /// A new instance will start after `delay_ms`.
    Restarting {
        /// Restarts since the host started, this one included.
        restarts: u32,
        /// The backoff before the start.
        delay_ms: u64,
    },
    /// Past its restart intensity: messages are refused.
    Failed {
        /// Why.
        reason: String,
        /// Seconds until a trial start, when one is scheduled.
        retry_in_secs: Option<f64>,
    },
    /// Stopped (by an operator, its restart type, its group, or shutdown).
    Stopped {
        /// Why, when known.
        reason: Option<String>,
    },
    /// A health answer differs from the last one.
    Health {
        /// `healthy`, `degraded: why` or `unhealthy (n/threshold): why`.
        health: String,
    },
    /// A new version from the plugin folder replaced the running one.
    Upgraded {
        /// SHA-256 of the version before.
        from: String,
        /// SHA-256 of the version now.
        to: String,
    },
    /// An upgrade crashed within its probation and the previous version runs again.
    RolledBack {
        /// SHA-256 of the version given up.
        from: String,
        /// SHA-256 of the version running again.
        to: String,
        /// The crash that caused it.
        reason: String,
    },
    /// Cluster mode: the plugin's unit was claimed by the node the event
    /// comes from (the event's `node`: it runs there now), taking it over
    /// from `from` (`null`: nobody held it).
    OwnerChanged {
        /// The node that held it before, if one did.
        from: Option<String>,
        /// The unit's new fencing epoch.
        epoch: i64,
    },
    /// A message was given up on and stored as a dead letter.
    DeadLettered {
        /// The dead letter's id (`wasm-sup dead-letters PLUGIN`).
        dead_letter: u64,
        /// The causes of its deliveries.
        causes: Vec<String>,
    },
}

impl EventKind {
    /// The wire name (`started`, `rolled-back`, …).
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Started { .. } => "started",
            EventKind::Crashed { .. } => "crashed",
            EventKind::Restarting { .. } => "restarting",
            EventKind::Failed { .. } => "failed",
            EventKind::Stopped { .. } => "stopped",
            EventKind::Health { .. } => "health",
            EventKind::Upgraded { .. } => "upgraded",
            EventKind::RolledBack { .. } => "rolled-back",
            EventKind::DeadLettered { .. } => "dead-lettered",
            EventKind::OwnerChanged { .. } => "owner-changed",
        }
    }
}

/// What a subscriber reads next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// An event.
    Event(Arc<Event>),
    /// The id it resumed from is not in the backlog: events were missed.
    Reset(String),
    /// It fell behind the live stream by more than the backlog; the stream ends.
    Dropped(String),
}

struct Inner {
    backlog: VecDeque<Arc<Event>>,
    next_seq: u64,
}

/// What live subscribers are sent.
#[derive(Debug, Clone)]
enum Live {
    Event(Arc<Event>),
    /// Events may have been missed (see [`Events::gap`]).
    Gap(Arc<str>),
}

/// Cluster mode: where this node's events go (see the module doc).
struct Relay {
    node: String,
    tx: mpsc::Sender<Event>,
}

/// The host's event stream. Cheap to clone; see the module doc.
#[derive(Clone)]
pub struct Events {
    run: Arc<str>,
    inner: Arc<Mutex<Inner>>,
    live: broadcast::Sender<Live>,
    relay: Arc<OnceLock<Relay>>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("run", &self.run).finish()
    }
}

impl Default for Events {
    fn default() -> Self {
        Events::new()
    }
}

impl Events {
    /// An empty stream with a new run id.
    pub fn new() -> Events {
        Events {
            run: format!("{:08x}", rand::random::<u32>()).into(),
            inner: Arc::new(Mutex::new(Inner {
                backlog: VecDeque::with_capacity(BACKLOG),
                next_seq: 1,
            })),
            live: broadcast::channel(LIVE_QUEUE).0,
            relay: Arc::default(),
        }
    }

    /// Publishes that `kind` happened to `plugin` now.
    pub fn publish(&self, plugin: &str, kind: EventKind) {
        let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        if let Some(relay) = self.relay.get() {
            let event = Event {
                id: String::new(),
                time,
                plugin: plugin.to_string(),
                node: Some(relay.node.clone()),
                kind,
            };
            // Closed: the node left the cluster (it is shutting down).
            if let Err(mpsc::error::TrySendError::Full(ev)) = relay.tx.try_send(event) {
                tracing::warn!(
                    plugin,
                    kind = ev.kind.name(),
                    "event dropped: the cluster's event relay is {RELAY_QUEUE} events behind (is PostgreSQL reachable?)"
                );
            }
            return;
        }
        let mut g = self.inner.lock();
        let event = Event {
            id: format!("{}-{}", self.run, g.next_seq),
            time,
            plugin: plugin.to_string(),
            node: None,
            kind,
        };
        g.next_seq += 1;
        self.keep(&mut g, event);
    }

    /// Puts `event` in the backlog and sends it to live subscribers.
    fn keep(&self, g: &mut Inner, event: Event) {
        let event = Arc::new(event);
        if g.backlog.len() == BACKLOG {
            g.backlog.pop_front();
        }
        g.backlog.push_back(event.clone());
        // No subscriber is not an error.
        let _ = self.live.send(Live::Event(event));
    }

    /// Cluster mode: from now on this node's events go to the returned
    /// channel, for the cluster's relay to number and send to every node
    /// (see the module doc); `node` is this node's name. Once only.
    pub fn relay(&self, node: &str) -> Option<mpsc::Receiver<Event>> {
        let (tx, rx) = mpsc::channel(RELAY_QUEUE);
        self.relay
            .set(Relay {
                node: node.to_string(),
                tx,
            })
            .ok()?;
        Some(rx)
    }

    /// Cluster mode: takes in an event the relay delivered, numbered.
    pub fn accept(&self, event: Event) {
        let mut g = self.inner.lock();
        self.keep(&mut g, event);
    }

    /// Cluster mode: events may have been missed (`why`): a subscriber
    /// resuming from an event before now is told so, and so is every live
    /// one.
    pub fn gap(&self, why: &str) {
        let mut g = self.inner.lock();
        g.backlog.clear();
        let _ = self.live.send(Live::Gap(why.into()));
    }

    /// A subscription from now, or resuming after the event `last_id`, for
    /// `plugin` only when given.
    pub fn subscribe(&self, last_id: Option<&str>, plugin: Option<String>) -> Subscription {
        let g = self.inner.lock();
        let live = self.live.subscribe();
        let mut first = VecDeque::new();
        if let Some(last) = last_id {
            // Resumable: it is in the backlog (the events after it are),
            // or, on a single host, it is the one just before the oldest
            // kept.
            let just_before = || {
                let front = g.backlog.front()?;
                let seq = |id: &str| {
                    id.strip_prefix(&*self.run)?
                        .strip_prefix('-')?
                        .parse::<u64>()
                        .ok()
                };
                (seq(last)? + 1 == seq(&front.id)?).then_some(0)
            };
            let at = g
                .backlog
                .iter()
                .rposition(|e| e.id == last)
                .map(|at| at + 1);
            match at.or_else(just_before) {
                Some(from) => {
                    first.extend(g.backlog.iter().skip(from).cloned().map(Next::Event));
                }
                None => first.push_back(Next::Reset(format!(
                    "event {last:?} is not in the backlog of the last {BACKLOG} events: events were missed; read the plugins' state again (GET /v1/plugins) and follow from now"
                ))),
            }
        }
        Subscription {
            first,
            live,
            plugin,
            done: false,
        }
    }
}

/// One subscriber's place in the stream.
#[derive(Debug)]
pub struct Subscription {
    first: VecDeque<Next>,
    live: broadcast::Receiver<Live>,
    plugin: Option<String>,
    done: bool,
}

impl Subscription {
    /// The next item for this subscriber; `None` after [`Next::Dropped`] or
    /// when the host shuts the stream.
    pub async fn next(&mut self) -> Option<Next> {
        loop {
            if self.done {
                return None;
            }
            let next = match self.first.pop_front() {
                Some(n) => n,
                None => match self.live.recv().await {
                    Ok(Live::Event(e)) => Next::Event(e),
                    Ok(Live::Gap(why)) => Next::Reset(why.to_string()),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        self.done = true;
                        return Some(Next::Dropped(format!(
                            "this subscriber fell {n} events behind and was dropped: reconnect with Last-Event-ID to resume from the backlog"
                        )));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            };
            match (&next, &self.plugin) {
                (Next::Event(e), Some(p)) if e.plugin != *p => continue,
                _ => return Some(next),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stopped() -> EventKind {
        EventKind::Stopped { reason: None }
    }

    fn ids(items: &[Next]) -> Vec<String> {
        items
            .iter()
            .map(|n| match n {
                Next::Event(e) => e.id.rsplit('-').next().unwrap().to_string(),
                Next::Reset(_) => "reset".into(),
                Next::Dropped(_) => "dropped".into(),
            })
            .collect()
    }

    async fn take(s: &mut Subscription, n: usize) -> Vec<Next> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(s.next().await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn live_events_arrive_in_order_and_the_filter_keeps_one_plugin() {
        let ev = Events::new();
        let mut all = ev.subscribe(None, None);
        let mut one = ev.subscribe(None, Some("b".into()));
        for p in ["a", "b", "a", "b"] {
            ev.publish(p, stopped());
        }
        assert_eq!(ids(&take(&mut all, 4).await), ["1", "2", "3", "4"]);
        assert_eq!(ids(&take(&mut one, 2).await), ["2", "4"]);
    }

    #[tokio::test]
    async fn a_subscriber_resumes_after_its_last_id_once_and_in_order() {
        let ev = Events::new();
        for _ in 0..5 {
            ev.publish("a", stopped());
        }
        let last = format!("{}-3", ev.run);
        let mut s = ev.subscribe(Some(&last), None);
        ev.publish("a", stopped());
        assert_eq!(ids(&take(&mut s, 3).await), ["4", "5", "6"]);
        // The newest id: nothing to replay, then live.
        let mut s = ev.subscribe(Some(&format!("{}-6", ev.run)), None);
        ev.publish("a", stopped());
        assert_eq!(ids(&take(&mut s, 1).await), ["7"]);
    }

    #[tokio::test]
    async fn an_id_older_than_the_backlog_or_of_another_run_is_a_reset() {
        let ev = Events::new();
        for _ in 0..BACKLOG + 10 {
            ev.publish("a", stopped());
        }
        for last in [
            format!("{}-5", ev.run),
            "00000000-5".to_string(),
            "nonsense".to_string(),
            format!("{}-99999", ev.run),
        ] {
            let mut s = ev.subscribe(Some(&last), None);
            ev.publish("a", stopped());
            let got = take(&mut s, 2).await;
            assert_eq!(ids(&got)[0], "reset", "{last}");
            assert!(matches!(&got[1], Next::Event(_)), "{last}");
        }
        // The oldest kept id's predecessor still resumes without a gap.
        let oldest = BACKLOG as u64 + 14 - BACKLOG as u64 + 1;
        let mut s = ev.subscribe(Some(&format!("{}-{}", ev.run, oldest - 1)), None);
        assert_eq!(ids(&take(&mut s, 1).await), [oldest.to_string()]);
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_dropped_and_told() {
        let ev = Events::new();
        let mut slow = ev.subscribe(None, None);
        for _ in 0..LIVE_QUEUE + 1 {
            ev.publish("a", stopped());
        }
        assert!(matches!(slow.next().await, Some(Next::Dropped(_))));
        assert_eq!(slow.next().await, None);
    }

    #[test]
    fn an_event_is_a_flat_json_object_with_kind_plugin_and_time() {
        let ev = Events::new();
        let mut s = ev.subscribe(None, None);
        ev.publish(
            "counter",
            EventKind::RolledBack {
                from: "aa".into(),
                to: "bb".into(),
                reason: "trap".into(),
            },
        );
        let Ok(Live::Event(e)) = s.live.try_recv() else {
            panic!("published")
        };
        let json = serde_json::to_value(&*e).unwrap();
        assert_eq!(json["kind"], "rolled-back");
        assert_eq!(json["plugin"], "counter");
        assert_eq!(json["from"], "aa");
        assert!(humantime::parse_rfc3339(json["time"].as_str().unwrap()).is_ok());
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, *e);
    }
}
