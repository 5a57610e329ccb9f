//! systemd integration (DESIGN.md, "systemd"): what `wasm-sup run` tells its
//! service manager through the sd_notify protocol, and the watchdog's round
//! trip. The unit itself is `dist/wasm-sup.service`.
//!
//! This module owns the notifications and when they are sent; nothing happens
//! unless `NOTIFY_SOCKET` is set (a plain `wasm-sup run` sends nothing and
//! starts no task):
//! - `READY=1` once the admin API listens, before the first plugin loads: the
//!   admin API answers from then on (`/readyz` and messages say `loading`
//!   until the startup load is over), and a `systemctl start` must not wait for
//!   a slow plugin's compile (`TimeoutStartSec=`). Whether the plugins run is
//!   `/readyz`'s business.
//! - `STATUS=` is one line: `loading 3/10 plugins` during the startup load,
//!   then `10 plugins: 9 running, 1 failed`. A task recomputes it on a timer
//!   ([`LOADING_POLL`] while loading, [`STATUS_POLL`] after) from a few locks
//!   and sends it only when it changed, so no message or restart pays for it.
//! - `STOPPING=1` (with a `STATUS=` saying why) when the graceful shutdown
//!   begins, on a signal or when the host gives up.
//! - `WATCHDOG=1`, when `WATCHDOG_USEC` is set (and `WATCHDOG_PID`, if set,
//!   is this process): every half of that interval a round trip through the
//!   supervisor starts ([`SupervisorHandle::round_trip`]), and the ping is
//!   sent only once it has answered `Ok`. A round trip that stalls or fails
//!   means no ping, and systemd kills and restarts the host after
//!   `WatchdogSec=`. The round trip goes through:
//!   - the supervisor's plugin table and every plugin's status lock, which the
//!     admin API, the workers and the group coordinator all take: a deadlock
//!     there leaves every request hanging while `/healthz`, which takes none,
//!     still answers;
//!   - the supervisor's timer task, a task on the same runtime as every
//!     worker: it answers only if that runtime still schedules tasks;
//!   - an empty commit through the state backend's committer (for redb, one
//!     empty write transaction every half interval): every reply waits for a
//!     commit, so a wedged or dead committer stalls every plugin. A commit
//!     answered with an error counts as a failed round trip too: restarting
//!     reopens the state file, which cures a dead committer thread; a lasting
//!     fault (a full or read-only disk) ends in `StartLimitBurst=` and a
//!     `failed` unit, where an operator sees it.
//!
//!   It does not wait for plugin workers: a worker answers control requests
//!   only between calls, and a call may rightly run for its whole `timeout`
//!   (or `init` for its own); a slow plugin is the supervisor's to deal with
//!   (timeouts, restarts, the circuit breaker), and must never get the whole
//!   host killed. Nor for the group coordinator, whose one job may rightly
//!   wait out a restart's backoff.
//!
//! systemd watches the watchdog only between `READY=1` and the beginning of
//! the stop, so the pings start with `READY=1` and end with `STOPPING=1`.
//! The environment variables are left set: the host starts no child process.

use crate::supervisor::SupervisorHandle;
use sd_notify::NotifyState;
use std::future::Future;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How often `STATUS=` is recomputed during the startup load.
pub const LOADING_POLL: Duration = Duration::from_millis(200);
/// How often `STATUS=` is recomputed once the startup load is over.
pub const STATUS_POLL: Duration = Duration::from_secs(2);

/// The host's link to systemd, from the moment the admin API listens to the
/// beginning of the shutdown. Dropping it ends its tasks.
#[derive(Debug)]
pub struct Systemd {
    /// Whether `NOTIFY_SOCKET` is set.
    active: bool,
    /// The `STATUS=` task and the watchdog task.
    tasks: Vec<JoinHandle<()>>,
}

impl Systemd {
    /// The admin API listens: sends `READY=1` with the first `STATUS=`, and
    /// starts the `STATUS=` task and, if systemd asks for it, the watchdog.
    /// A no-op without `NOTIFY_SOCKET`. Must run inside a tokio runtime.
    pub fn ready(supervisor: &SupervisorHandle) -> Systemd {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return Systemd {
                active: false,
                tasks: Vec::new(),
            };
        }
        let status = status_line(supervisor);
        notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
        let mut tasks = vec![tokio::spawn(report_status(supervisor.clone(), status))];
        match sd_notify::watchdog_enabled() {
            Some(timeout) if !timeout.is_zero() => {
                let period = timeout / 2;
                tracing::info!(
                    "systemd watchdog on: pinging every {period:?} after a round trip through the supervisor"
                );
                let supervisor = supervisor.clone();
                tasks.push(tokio::spawn(watchdog(
                    period,
                    move || {
                        let supervisor = supervisor.clone();
                        async move { supervisor.round_trip().await }
                    },
                    || notify(&[NotifyState::Watchdog]),
                )));
            }
            _ => {}
        }
        Systemd {
            active: true,
            tasks,
        }
    }

    /// The graceful shutdown begins: ends the pings and the `STATUS=` task,
    /// and sends `STOPPING=1` with `status` as the last `STATUS=`.
    pub fn stopping(&mut self, status: &str) {
        self.end_tasks();
        if self.active {
            notify(&[NotifyState::Stopping, NotifyState::Status(status)]);
        }
    }

    fn end_tasks(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        self.end_tasks();
    }
}

/// Sends one notification; a failure is logged, never fatal (systemd then
/// sees no `READY=1` or no ping, and acts on its own timeouts).
fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("failed to notify systemd ({states:?}): {e}");
    }
}

/// The `STATUS=` line: the startup load's progress, then how many plugins
/// are in each status.
pub fn status_line(supervisor: &SupervisorHandle) -> String {
    if let Some((done, total)) = supervisor.loading() {
        return if total == 0 {
            "loading plugins".to_string()
        } else {
            format!("loading {done}/{total} plugins")
        };
    }
    let counts = supervisor.status_counts();
    let total: usize = counts.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return "no plugins".to_string();
    }
    let parts: Vec<String> = counts
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(status, n)| format!("{n} {}", status.as_str()))
        .collect();
    let s = if total == 1 { "" } else { "s" };
    format!("{total} plugin{s}: {}", parts.join(", "))
}

/// Recomputes `STATUS=` on a timer and sends it when it changed; `sent` is
/// the line sent with `READY=1`.
async fn report_status(supervisor: SupervisorHandle, mut sent: String) {
    loop {
        let poll = if supervisor.loading().is_some() {
            LOADING_POLL
        } else {
            STATUS_POLL
        };
        tokio::time::sleep(poll).await;
        let line = status_line(&supervisor);
        if line != sent {
            notify(&[NotifyState::Status(&line)]);
            sent = line;
        }
    }
}

/// Aborts a task when dropped: a round trip still in flight when the
/// watchdog ends does not outlive it.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The watchdog loop: every `period` a `round_trip` starts (one at a time),
/// and `ping` runs once it has answered `Ok`, never otherwise. The round trip
/// runs as a task of its own, so that one wedged even in a blocking lock
/// leaves this loop free to say so in the log.
pub async fn watchdog<R, F>(period: Duration, mut round_trip: R, mut ping: impl FnMut())
where
    R: FnMut() -> F,
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    loop {
        let started = tokio::time::Instant::now();
        let mut trip = AbortOnDrop(tokio::spawn(round_trip()));
        let mut waited = period;
        let answer = loop {
            match tokio::time::timeout_at(started + waited, &mut trip.0).await {
                Ok(answer) => break answer,
                Err(_) => {
                    tracing::error!(
                        "the supervisor has not answered the watchdog's round trip for {waited:?}: not pinging the systemd watchdog"
                    );
                    waited += period;
                }
            }
        };
        match answer {
            Ok(Ok(())) => ping(),
            Ok(Err(e)) => tracing::error!(
                "the watchdog's round trip through the supervisor failed: {e:#}; not pinging the systemd watchdog"
            ),
            Err(e) => tracing::error!(
                "the watchdog's round trip through the supervisor panicked: {e}; not pinging the systemd watchdog"
            ),
        }
        tokio::time::sleep_until(started + period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const PERIOD: Duration = Duration::from_millis(20);

    /// Runs the watchdog for `ms` milliseconds with `round_trip`, and returns
    /// how many pings it sent.
    async fn pings_within<R, F>(ms: u64, round_trip: R) -> usize
    where
        R: FnMut() -> F + Send + 'static,
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let pings = Arc::new(AtomicUsize::new(0));
        let counter = pings.clone();
        let task = tokio::spawn(watchdog(PERIOD, round_trip, move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }));
        tokio::time::sleep(Duration::from_millis(ms)).await;
        task.abort();
        pings.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn answered_round_trips_ping_every_period() {
        let n = pings_within(300, || async { Ok(()) }).await;
        // 15 periods; a loaded test machine may skip a few.
        assert!((5..=16).contains(&n), "{n} pings");
    }

    #[tokio::test]
    async fn a_stalled_round_trip_sends_no_ping() {
        let n = pings_within(300, std::future::pending::<anyhow::Result<()>>).await;
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn a_failed_round_trip_sends_no_ping() {
        let n = pings_within(300, || async { anyhow::bail!("committer gone") }).await;
        assert_eq!(n, 0);
    }

    /// The supervisor answers three round trips, then wedges: the pings stop
    /// at three, and only one round trip is ever waiting.
    #[tokio::test]
    async fn pings_stop_when_the_supervisor_wedges() {
        let started = Arc::new(AtomicUsize::new(0));
        let count = started.clone();
        let n = pings_within(300, move || {
            let k = count.fetch_add(1, Ordering::SeqCst);
            async move {
                if k >= 3 {
                    std::future::pending::<()>().await;
                }
                Ok(())
            }
        })
        .await;
        assert_eq!(n, 3);
        assert_eq!(started.load(Ordering::SeqCst), 4, "one stalled round trip");
    }

    /// A late answer still counts: the ping follows it.
    #[tokio::test]
    async fn a_slow_round_trip_pings_when_it_answers() {
        let n = pings_within(100, || async {
            tokio::time::sleep(PERIOD * 3).await;
            Ok(())
        })
        .await;
        assert!((1..=2).contains(&n), "{n} pings");
    }

    /// The real round trip answers on a live supervisor, and `STATUS=` shows
    /// the load, then the plugins.
    #[tokio::test]
    async fn round_trip_and_status_line_on_a_real_supervisor() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::Config::load(
            dir.path(),
            &crate::config::HostOverrides {
                state: Some(dir.path().join("state.redb").display().to_string()),
                admin: None,
                ..Default::default()
            },
        )
        .unwrap();
        let backend = crate::state::open(&config.host.state).await.unwrap();
        let sup = SupervisorHandle::new(config.host.clone(), backend, &config.groups).unwrap();
        tokio::time::timeout(Duration::from_secs(5), sup.round_trip())
            .await
            .expect("the round trip answers")
            .expect("the round trip succeeds");
        sup.begin_loading();
        assert_eq!(status_line(&sup), "loading plugins");
        sup.loading_found(["a".to_string(), "b".to_string()]);
        sup.loaded_one("a");
        assert_eq!(status_line(&sup), "loading 1/2 plugins");
        sup.end_loading();
        assert_eq!(status_line(&sup), "no plugins");
        // A closed backend fails the round trip: no ping.
        sup.backend().close().await;
        assert!(sup.round_trip().await.is_err());
    }
}
