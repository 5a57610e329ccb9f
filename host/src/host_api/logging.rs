//! `wasi:logging/logging`: guest log lines become tracing events (target
//! `wasm_sup::guest`) at their own level, inside the plugin's span (plugin
//! name and instance generation). `critical` logs at error level with
//! `critical = true`. Messages share the instance's output budget with its
//! stdout and stderr (see [`crate::instance::output`]): past it they are
//! dropped and counted.

use crate::bindings::logging::{Host, Level};
use crate::guest_text;
use crate::instance::HostState;
use crate::instance::output::GUEST_TARGET as T;

/// Longest guest log message kept; longer ones are cut (the cut marked).
pub const MAX_GUEST_LOG_BYTES: usize = 4 << 10;

/// Longest guest log context kept.
const MAX_CONTEXT_BYTES: usize = 256;

impl Host for HostState {
    fn log(&mut self, level: Level, context: String, message: String) -> wasmtime::Result<()> {
        #[cfg(test)]
        if context == "wasm-sup-test-host-panic" {
            panic!("host panic requested by a unit test");
        }
        let context = guest_text::cap(&context, MAX_CONTEXT_BYTES);
        let message = guest_text::cap(&message, MAX_GUEST_LOG_BYTES);
        let cost = context.len() + message.len() + 1;
        // Only what reaches the log is charged: a level filtered out costs nothing.
        macro_rules! emit {
            ($level:expr $(, $field:ident = $value:expr)?) => {
                if tracing::enabled!(target: T, $level) && self.output.admit(cost) {
                    tracing::event!(target: T, $level, context = &*context, $($field = $value,)? "{message}");
                }
            };
        }
        match level {
            Level::Trace => emit!(tracing::Level::TRACE),
            Level::Debug => emit!(tracing::Level::DEBUG),
            Level::Info => emit!(tracing::Level::INFO),
            Level::Warn => emit!(tracing::Level::WARN),
            Level::Error => emit!(tracing::Level::ERROR),
            Level::Critical => emit!(tracing::Level::ERROR, critical = true),
        }
        Ok(())
    }
}
