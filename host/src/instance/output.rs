//! A plugin instance's output budget ([`GuestOutput`]) and its stdout and
//! stderr ([`GuestStream`]).
//!
//! Guest stdout, stderr and `wasi:logging` share one budget per instance: at
//! most the plugin's `output` bytes per second reach the host log, as tracing
//! events (target `wasm_sup::guest`) inside the plugin's span. The rest is
//! dropped and counted in `wasm_sup_guest_output_dropped_bytes_total`, and
//! logged as one warning (at most one a second) once the next second begins.
//! Each complete line of stdout or stderr is one event; blank lines are
//! skipped and lines longer than [`MAX_LINE_BYTES`] split.
//!
//! Stderr written during a call is held until the call ends (at most
//! [`HELD_LINES`] lines and [`HELD_BYTES`] bytes; past that, what is held is
//! logged at once): a call that crashes logs it at warning level, beside the
//! crash it explains (a Rust panic's message, a Python traceback); a call
//! that returns logs it at info level, as stdout always is.

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Longest line kept whole; longer lines are split.
pub const MAX_LINE_BYTES: usize = 4096;

/// The tracing target of everything a guest logs.
pub const GUEST_TARGET: &str = "wasm_sup::guest";

/// Stderr lines held during a call (see the module doc).
pub const HELD_LINES: usize = 64;
/// Stderr bytes held during a call.
pub const HELD_BYTES: usize = 16 * 1024;

/// Stderr lines held while a call runs.
#[derive(Debug, Default)]
struct Held {
    /// A call is running.
    calling: bool,
    lines: Vec<String>,
    bytes: usize,
}

/// The budget's current one-second window.
#[derive(Debug)]
struct Window {
    start: Instant,
    used: u64,
    dropped: u64,
}

/// One instance's output budget, shared by its stdout, stderr and
/// `wasi:logging` (clones share it).
#[derive(Debug, Clone)]
pub struct GuestOutput {
    per_second: u64,
    window: Arc<Mutex<Window>>,
    dropped: Counter,
    span: tracing::Span,
    held: Arc<Mutex<Held>>,
}

impl GuestOutput {
    /// A budget of `per_second` bytes a second, logging in the current span
    /// and counting what it drops in `dropped`.
    pub fn new(per_second: u64, dropped: Counter) -> GuestOutput {
        GuestOutput {
            per_second,
            window: Arc::new(Mutex::new(Window {
                start: Instant::now(),
                used: 0,
                dropped: 0,
            })),
            dropped,
            span: tracing::Span::current(),
            held: Arc::new(Mutex::new(Held::default())),
        }
    }

    /// A call begins: stderr is held until [`GuestOutput::end_call`].
    pub fn begin_call(&self) {
        self.held.lock().calling = true;
    }

    /// The call ended; `crashed` logs what it wrote to stderr as warnings.
    pub fn end_call(&self, crashed: bool) {
        let mut held = self.held.lock();
        held.calling = false;
        self.release(&mut held, crashed);
    }

    /// Logs the held stderr lines.
    fn release(&self, held: &mut Held, crashed: bool) {
        let lines = std::mem::take(&mut held.lines);
        held.bytes = 0;
        let _g = self.span.enter();
        for text in lines {
            if crashed {
                tracing::warn!(target: GUEST_TARGET, stream = "stderr", "{text}");
            } else {
                tracing::info!(target: GUEST_TARGET, stream = "stderr", "{text}");
            }
        }
    }

    /// Charges `bytes` about to be logged: `true` when they fit this second's
    /// budget, `false` when they must be dropped (and are counted as such).
    pub fn admit(&self, bytes: usize) -> bool {
        let cost = bytes as u64;
        let mut w = self.window.lock();
        let now = Instant::now();
        if now.duration_since(w.start) >= Duration::from_secs(1) {
            if w.dropped > 0 {
                let _g = self.span.enter();
                tracing::warn!(
                    target: GUEST_TARGET,
                    dropped_bytes = w.dropped,
                    per_second = self.per_second,
                    "guest output over its budget was dropped"
                );
            }
            *w = Window {
                start: now,
                used: 0,
                dropped: 0,
            };
        }
        if w.used.saturating_add(cost) > self.per_second {
            w.dropped += cost;
            self.dropped.inc_by(cost);
            return false;
        }
        w.used += cost;
        true
    }

    /// A stream (`"stdout"` or `"stderr"`) logging its lines within this budget.
    pub fn stream(&self, name: &'static str) -> GuestStream {
        GuestStream {
            name,
            output: self.clone(),
            line: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

/// A guest's stdout or stderr (clones share the line being written).
#[derive(Debug, Clone)]
pub struct GuestStream {
    name: &'static str,
    output: GuestOutput,
    line: Arc<Mutex<Vec<u8>>>,
}

impl GuestStream {
    fn write(&self, buf: &[u8]) {
        let mut line = self.line.lock();
        for &byte in buf {
            if byte == b'\n' || line.len() >= MAX_LINE_BYTES {
                let full = std::mem::take(&mut *line);
                self.emit(&full);
                if byte == b'\n' {
                    continue;
                }
            }
            line.push(byte);
        }
    }

    fn emit(&self, line: &[u8]) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return; // blank lines carry nothing worth a log event
        }
        if !self.output.admit(line.len() + 1) {
            return;
        }
        let text = String::from_utf8_lossy(line);
        if self.name == "stderr" {
            let mut held = self.output.held.lock();
            if held.calling {
                if held.lines.len() < HELD_LINES && held.bytes + text.len() <= HELD_BYTES {
                    held.bytes += text.len();
                    held.lines.push(text.into_owned());
                    return;
                }
                // Too much to hold: what is held goes first, in order.
                self.output.release(&mut held, false);
            }
        }
        let _g = self.output.span.enter();
        tracing::info!(target: GUEST_TARGET, stream = self.name, "{text}");
    }
}

impl IsTerminal for GuestStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStream {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for GuestStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdout_stderr_and_logging_share_one_budget() {
        let dropped = Counter::default();
        let output = GuestOutput::new(1000, dropped.clone());
        let (stdout, stderr) = (output.stream("stdout"), output.stream("stderr"));
        let line = format!("{}\n", "a".repeat(399));
        stdout.write(line.as_bytes()); // 400 bytes: fits
        stderr.write(line.as_bytes()); // 800: fits
        assert!(output.admit(200), "1000 bytes: the budget is full");
        assert!(
            !output.admit(1),
            "a logging message over the budget is dropped"
        );
        stdout.write(line.as_bytes());
        assert_eq!(dropped.get(), 401, "the dropped bytes are counted");
    }

    #[test]
    fn stderr_is_held_during_a_call_within_its_bounds() {
        let output = GuestOutput::new(1 << 20, Counter::default());
        let (stdout, stderr) = (output.stream("stdout"), output.stream("stderr"));
        stderr.write(b"before any call\n");
        assert!(
            output.held.lock().lines.is_empty(),
            "outside a call: at once"
        );
        output.begin_call();
        stdout.write(b"out\n");
        stderr.write(b"panicked at src/lib.rs:3\nthe reason\n");
        assert_eq!(
            output.held.lock().lines,
            ["panicked at src/lib.rs:3", "the reason"]
        );
        output.end_call(true);
        assert!(output.held.lock().lines.is_empty());
        output.begin_call();
        for i in 0..HELD_LINES + 1 {
            stderr.write(format!("line {i}\n").as_bytes());
        }
        assert!(
            output.held.lock().lines.is_empty(),
            "over the bound, what was held is logged with the line over it"
        );
        stderr.write(b"next\n");
        assert_eq!(
            output.held.lock().lines,
            ["next"],
            "then holding starts again"
        );
        output.end_call(false);
    }
}
