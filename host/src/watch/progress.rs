//! Startup progress: one log line per plugin loaded, and a progress bar on a
//! terminal once loading has taken more than a moment.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How long loading runs before a bar is drawn.
const BAR_AFTER: Duration = Duration::from_millis(500);

pub(super) struct Progress {
    total: usize,
    done: usize,
    started: Instant,
    bar: Option<ProgressBar>,
    terminal: bool,
}

impl Progress {
    pub(super) fn new(total: usize) -> Progress {
        Progress {
            total,
            done: 0,
            started: Instant::now(),
            bar: None,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// One more plugin done; `log` writes its log line (kept clear of the bar).
    pub(super) fn step(&mut self, log: impl FnOnce(&str)) {
        self.done += 1;
        let at = format!("{}/{}", self.done, self.total);
        if self.bar.is_none()
            && self.terminal
            && self.done < self.total
            && self.started.elapsed() >= BAR_AFTER
        {
            let bar = ProgressBar::new(self.total as u64);
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} plugins loaded, {elapsed}")
                    .expect("the template is valid"),
            );
            self.bar = Some(bar);
        }
        match &self.bar {
            Some(bar) => {
                bar.suspend(|| log(&at));
                bar.set_position(self.done as u64);
            }
            None => log(&at),
        }
    }

    /// Time since loading began.
    pub(super) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
