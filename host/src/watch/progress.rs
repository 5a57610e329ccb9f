//! Startup progress: a line when loading begins (how many plugins, and that
//! a first start compiles them), one log line per plugin loaded, and while it
//! lasts either a progress bar on a terminal (after a moment) or, in a log,
//! a line every [`LOG_EVERY`]. The bar's clock starts when loading does.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How long loading runs before a bar is drawn.
const BAR_AFTER: Duration = Duration::from_millis(500);

/// How often a log without a terminal is told loading goes on.
pub(super) const LOG_EVERY: Duration = Duration::from_secs(5);

pub(super) struct Progress {
    total: usize,
    done: usize,
    started: Instant,
    bar: Option<ProgressBar>,
    terminal: bool,
}

impl Progress {
    pub(super) fn new(total: usize) -> Progress {
        if total > 0 {
            tracing::info!(
                "loading {total} plugins: a plugin not in the compile cache is compiled first (a second or more each, once)"
            );
        }
        Progress {
            total,
            done: 0,
            started: Instant::now(),
            bar: None,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// Loading goes on: a terminal gets its bar (if not drawn yet), a log a line.
    pub(super) fn tick(&mut self) {
        if self.terminal {
            self.draw_bar();
        } else if self.started.elapsed() >= LOG_EVERY.saturating_sub(Duration::from_millis(500)) {
            tracing::info!(
                progress = format!("{}/{}", self.done, self.total),
                "still loading: {} of {} plugins loaded after {}s",
                self.done,
                self.total,
                self.started.elapsed().as_secs()
            );
        }
    }

    /// Draws the bar, its clock counting from the start of loading.
    fn draw_bar(&mut self) {
        if self.bar.is_some() || self.done >= self.total {
            return;
        }
        let bar = ProgressBar::new(self.total as u64).with_elapsed(self.started.elapsed());
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} plugins loaded, {elapsed}")
                .expect("the template is valid"),
        );
        bar.set_position(self.done as u64);
        bar.enable_steady_tick(Duration::from_millis(250));
        self.bar = Some(bar);
    }

    /// One more plugin done; `log` writes its log line (kept clear of the bar).
    pub(super) fn step(&mut self, log: impl FnOnce(&str)) {
        self.done += 1;
        let at = format!("{}/{}", self.done, self.total);
        if self.terminal && self.started.elapsed() >= BAR_AFTER {
            self.draw_bar();
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
