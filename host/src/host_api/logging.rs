//! `wasi:logging/logging`: guest log lines become tracing events (target
//! `wasm_sup::guest`) at their own level, inside the plugin's span (plugin
//! name and instance generation). `critical` logs at error level with
//! `critical = true`.

use crate::bindings::logging::{Host, Level};
use crate::instance::HostState;

/// Longest guest log message kept; longer ones are cut.
pub const MAX_GUEST_LOG_BYTES: usize = 16 << 10;

fn clamp(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Host for HostState {
    fn log(&mut self, level: Level, context: String, message: String) -> wasmtime::Result<()> {
        let context = clamp(&context, 256);
        let message = clamp(&message, MAX_GUEST_LOG_BYTES);
        #[cfg(test)]
        if context == "wasm-sup-test-host-panic" {
            panic!("host panic requested by a unit test");
        }
        const T: &str = "wasm_sup::guest";
        match level {
            Level::Trace => tracing::trace!(target: T, context, "{message}"),
            Level::Debug => tracing::debug!(target: T, context, "{message}"),
            Level::Info => tracing::info!(target: T, context, "{message}"),
            Level::Warn => tracing::warn!(target: T, context, "{message}"),
            Level::Error => tracing::error!(target: T, context, "{message}"),
            Level::Critical => tracing::error!(target: T, context, critical = true, "{message}"),
        }
        Ok(())
    }
}
