//! Guest stdout and stderr as log lines: each complete line becomes a tracing
//! event (target `wasm_sup::guest`) inside the plugin's span; blank lines are
//! skipped. At most the
//! plugin's `output` bytes per second are logged; the rest is dropped and
//! counted, and the count is logged once the next second begins.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Longest line kept whole; longer lines are split.
pub const MAX_LINE_BYTES: usize = 4096;

#[derive(Debug)]
struct Budget {
    line: Vec<u8>,
    window_start: Instant,
    used: u64,
    dropped: u64,
}

/// One of a plugin's output streams.
#[derive(Debug, Clone)]
pub struct GuestOutput {
    stream: &'static str,
    per_second: u64,
    state: Arc<Mutex<Budget>>,
    span: tracing::Span,
}

impl GuestOutput {
    /// A stream named `stream` ("stdout" or "stderr") logging at most `per_second` bytes a second.
    pub fn new(stream: &'static str, per_second: u64) -> GuestOutput {
        GuestOutput {
            stream,
            per_second,
            state: Arc::new(Mutex::new(Budget {
                line: Vec::new(),
                window_start: Instant::now(),
                used: 0,
                dropped: 0,
            })),
            span: tracing::Span::current(),
        }
    }

    fn write(&self, buf: &[u8]) {
        let mut b = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for &byte in buf {
            if byte == b'\n' || b.line.len() >= MAX_LINE_BYTES {
                let line = std::mem::take(&mut b.line);
                self.emit(&mut b, &line);
                if byte == b'\n' {
                    continue;
                }
            }
            b.line.push(byte);
        }
    }

    fn emit(&self, b: &mut Budget, line: &[u8]) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return; // blank lines carry nothing worth a log event
        }
        let now = Instant::now();
        if now.duration_since(b.window_start) >= Duration::from_secs(1) {
            if b.dropped > 0 {
                let _g = self.span.enter();
                tracing::warn!(target: "wasm_sup::guest", stream = self.stream, dropped_bytes = b.dropped, "guest output over its cap was dropped");
            }
            b.window_start = now;
            b.used = 0;
            b.dropped = 0;
        }
        let cost = line.len() as u64 + 1;
        if b.used + cost > self.per_second {
            b.dropped += cost;
            return;
        }
        b.used += cost;
        let text = String::from_utf8_lossy(line);
        let _g = self.span.enter();
        tracing::info!(target: "wasm_sup::guest", stream = self.stream, "{text}");
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for GuestOutput {
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
