//! The root restart budget (`[host] max-restarts` within `window`): every
//! restart of every plugin counts against it. When it is exceeded the
//! supervisor gives up, as an OTP root supervisor does: `wasm-sup run` stops
//! every plugin and exits non-zero with a message that names the plugin
//! whose restart exhausted the budget, so that a service manager can restart
//! the host.

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// See the module doc.
#[derive(Debug)]
pub struct Budget {
    max_restarts: u32,
    window: Duration,
    recent: Mutex<VecDeque<Instant>>,
    exhausted: watch::Sender<Option<String>>,
}

/// The budget as the admin API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BudgetInfo {
    /// Restarts allowed within the window.
    pub max_restarts: u32,
    /// The window, seconds.
    pub window_secs: f64,
    /// Restarts within the window now.
    pub used: u32,
}

impl Budget {
    /// A fresh budget.
    pub fn new(max_restarts: u32, window: Duration) -> Budget {
        Budget {
            max_restarts,
            window,
            recent: Mutex::new(VecDeque::new()),
            exhausted: watch::channel(None).0,
        }
    }

    fn trim(recent: &mut VecDeque<Instant>, window: Duration, now: Instant) {
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            recent.pop_front();
        }
    }

    /// Counts one restart of `who` (``plugin `x` `` or ``group `g` ``, which
    /// escalated to the root); `Err` with the give-up message when it is one
    /// too many.
    pub fn restart(&self, who: &str, cause: &str, now: Instant) -> Result<(), String> {
        let mut recent = self.recent.lock();
        Self::trim(&mut recent, self.window, now);
        recent.push_back(now);
        let used = recent.len() as u32;
        if used <= self.max_restarts {
            return Ok(());
        }
        let message = format!(
            "the host's restart budget is exhausted: {used} restarts within {:?} exceed [host] max-restarts ({}); the last was {who} (cause: {cause})",
            self.window, self.max_restarts
        );
        self.exhausted.send_if_modified(|m| {
            if m.is_none() {
                *m = Some(message.clone());
                true
            } else {
                false
            }
        });
        Err(message)
    }

    /// Resolves with the give-up message once the budget is exhausted.
    pub async fn exhausted(&self) -> String {
        let mut rx = self.exhausted.subscribe();
        let m = rx
            .wait_for(Option::is_some)
            .await
            .expect("the sender lives in self");
        m.clone().expect("waited for Some")
    }

    /// The budget now.
    pub fn info(&self) -> BudgetInfo {
        let mut recent = self.recent.lock();
        Self::trim(&mut recent, self.window, Instant::now());
        BudgetInfo {
            max_restarts: self.max_restarts,
            window_secs: self.window.as_secs_f64(),
            used: recent.len() as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_restart_too_many_within_the_window_gives_up() {
        let b = Budget::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(b.restart("plugin `a`", "trap", t0).is_ok());
        assert!(
            b.restart("plugin `b`", "trap", t0 + Duration::from_secs(5))
                .is_ok()
        );
        // The first has left the window.
        assert!(
            b.restart("plugin `a`", "trap", t0 + Duration::from_secs(11))
                .is_ok()
        );
        let e = b
            .restart("plugin `c`", "unreachable", t0 + Duration::from_secs(12))
            .unwrap_err();
        assert!(
            e.contains("3 restarts within 10s exceed [host] max-restarts (2)"),
            "{e}"
        );
        assert!(e.contains("plugin `c` (cause: unreachable)"), "{e}");
    }

    #[tokio::test]
    async fn exhaustion_is_announced_once() {
        let b = std::sync::Arc::new(Budget::new(0, Duration::from_secs(10)));
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.exhausted().await }
        });
        let first = b.restart("plugin `x`", "trap", Instant::now()).unwrap_err();
        let _ = b.restart("plugin `y`", "trap", Instant::now());
        assert_eq!(waiter.await.unwrap(), first);
    }
}
