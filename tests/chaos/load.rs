//! The load: loopback HTTP clients posting messages to the host at a steady
//! rate, what each answer was, per plugin (increments sent, acknowledged and
//! of unknown outcome) and per status, and the latency of the healthy
//! counters' messages.
//!
//! Senders take numbered tickets; ticket `k` is due `k / rate` after the
//! schedule's start, so the rate holds whatever the latency (an open loop:
//! a slow answer does not slow the senders down, up to [`SENDERS`] in
//! flight). Every sender, the spinner and the chaos hold a read guard of
//! [`Load::gate`] while they act; a checkpoint takes the write guard, which
//! waits for what is in flight and holds everything else back, and moves the
//! schedule's start so that the pause is not made up in a burst.

use crate::fleet::{Fleet, INCR, Kind};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

/// Concurrent senders.
pub const SENDERS: usize = 128;

/// Increments to one plugin.
#[derive(Debug, Default)]
pub struct Tally {
    pub sent: AtomicU64,
    /// Answered 200: must be in the final count.
    pub acked: AtomicU64,
    /// Answered 500, 504, something unexpected, or not at all: may be in it.
    /// (503, 429 and 404 say the message was not handled.)
    pub unknown: AtomicU64,
    /// Messages of any kind answered other than 200 or 422.
    pub errors: AtomicU64,
}

struct Schedule {
    start: Instant,
    next: u64,
}

pub struct Load {
    pub fleet: Arc<Fleet>,
    base: String,
    http: reqwest::Client,
    pub total: u64,
    rate: f64,
    schedule: Mutex<Schedule>,
    pub gate: RwLock<()>,
    pub tallies: Vec<Tally>,
    /// Answers by status (`200`, `503`, …, `error` for no answer), all plugins.
    pub statuses: Mutex<BTreeMap<String, u64>>,
    /// Healthy counters' latencies in µs since the last checkpoint.
    interval: Mutex<Vec<u32>>,
    /// Healthy counters' latencies in µs, the whole run.
    all: Mutex<Vec<u32>>,
    pub done: AtomicU64,
    targets: Vec<usize>,
    floods: Vec<usize>,
}

impl Load {
    pub fn new(fleet: Arc<Fleet>, base: String, total: u64, rate: f64) -> Load {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            // Idle connections are closed soon, so the host's descriptors at
            // a quiet checkpoint are its own and not the client's pool.
            .pool_idle_timeout(Duration::from_millis(500))
            .build()
            .expect("a reqwest client");
        let targets = (0..fleet.plugins.len())
            .filter(|&i| fleet.plugins[i].kind != Kind::Spinner)
            .collect();
        Load {
            tallies: (0..fleet.plugins.len()).map(|_| Tally::default()).collect(),
            floods: fleet.of(Kind::Flood),
            fleet,
            base,
            http,
            total,
            rate,
            schedule: Mutex::new(Schedule {
                start: Instant::now(),
                next: 0,
            }),
            gate: RwLock::new(()),
            statuses: Mutex::new(BTreeMap::new()),
            interval: Mutex::new(Vec::new()),
            all: Mutex::new(Vec::new()),
            done: AtomicU64::new(0),
            targets,
        }
    }

    /// Restarts the clock after a pause (called with the gate's write guard held).
    pub fn resume(&self) {
        let mut s = self.schedule.lock().expect("schedule lock");
        s.start = Instant::now() - Duration::from_secs_f64(s.next as f64 / self.rate);
    }

    /// One sender: takes tickets until there are none left.
    pub async fn sender(self: Arc<Self>, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        loop {
            let _running = self.gate.read().await;
            let due = {
                let mut s = self.schedule.lock().expect("schedule lock");
                if s.next >= self.total {
                    return;
                }
                s.next += 1;
                s.start + Duration::from_secs_f64((s.next - 1) as f64 / self.rate)
            };
            tokio::time::sleep_until(due.into()).await;
            let i = self.targets[rand::Rng::random_range(&mut rng, 0..self.targets.len())];
            let message = self.fleet.message(i, &self.floods, &mut rng);
            self.send(i, message).await;
            self.done.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends one message to plugin `i` and records the answer.
    pub async fn send(&self, i: usize, message: String) -> Option<u16> {
        let incr = message == INCR;
        let tally = &self.tallies[i];
        if incr {
            tally.sent.fetch_add(1, Ordering::Relaxed);
        }
        let url = format!(
            "{}/v1/plugins/{}/messages",
            self.base, self.fleet.plugins[i].name
        );
        let started = Instant::now();
        let status = match self.http.post(url).body(message).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                // Read the whole answer, so the connection is reused.
                let _ = r.bytes().await;
                Some(status)
            }
            Err(_) => None,
        };
        let took = started.elapsed();
        if incr {
            match status {
                Some(200) => tally.acked.fetch_add(1, Ordering::Relaxed),
                Some(503 | 429 | 404) => 0,
                _ => tally.unknown.fetch_add(1, Ordering::Relaxed),
            };
        }
        if !matches!(status, Some(200 | 422)) {
            tally.errors.fetch_add(1, Ordering::Relaxed);
        }
        if self.fleet.plugins[i].kind == Kind::Counter {
            let us = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
            self.interval.lock().expect("latency lock").push(us);
            self.all.lock().expect("latency lock").push(us);
        }
        let key = status.map_or_else(|| "error".to_string(), |s| s.to_string());
        *self
            .statuses
            .lock()
            .expect("status lock")
            .entry(key)
            .or_insert(0) += 1;
        status
    }

    /// The healthy counters' latencies since the last call.
    pub fn take_interval(&self) -> Vec<u32> {
        std::mem::take(&mut *self.interval.lock().expect("latency lock"))
    }

    pub fn all_latencies(&self) -> Vec<u32> {
        self.all.lock().expect("latency lock").clone()
    }

    /// Posts `message` to plugin `name` outside the load; (status, body).
    pub async fn ask(&self, name: &str, message: &str) -> anyhow::Result<(u16, String)> {
        let url = format!("{}/v1/plugins/{name}/messages", self.base);
        let r = self.http.post(url).body(message.to_string()).send().await?;
        let status = r.status().as_u16();
        Ok((status, r.text().await?))
    }
}

/// p50, p99 and max of latencies in µs (zeros when there are none).
pub fn spread(mut us: Vec<u32>) -> (u32, u32, u32) {
    if us.is_empty() {
        return (0, 0, 0);
    }
    us.sort_unstable();
    let at = |q: f64| us[((us.len() - 1) as f64 * q).round() as usize];
    (at(0.50), at(0.99), us[us.len() - 1])
}
