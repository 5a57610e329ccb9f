//! Crashes as the supervisor sees them: the closed list of causes, the facts an
//! instance reports about a failed call, and the crash report kept for operators.
//!
//! Classification from wasmtime errors happens in [`crate::instance`]; nothing
//! here depends on wasmtime. A report keeps the guest text of a crash (its
//! message can quote an `Err` or health reason, its backtrace names the
//! guest's functions) cut to [`MAX_KEPT_BYTES`].
//!
//! This module owns the crash-record format: [`CrashReport`] and
//! [`DeadLetter`] are written and read only through [`store`] (the child
//! writes them, the admin API lists, replays and drops them), and coredump
//! files only through [`coredumps`]. It may not touch plugin state or
//! instances.

pub mod coredumps;
pub mod store;

use crate::guest_text::{self, MAX_KEPT_BYTES};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why an instance died (DESIGN.md, "Crash causes"). A closed list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// Fuel ran out.
    OutOfFuel,
    /// Guest code or a host call ran past the call's deadline.
    Timeout,
    /// A memory grew past the plugin's limit.
    MemoryLimit,
    /// The native stack was exhausted.
    StackOverflow,
    /// Out-of-bounds memory or table access.
    OutOfBounds,
    /// `unreachable` (includes guest panics).
    Unreachable,
    /// Any other wasm trap.
    Trap,
    /// `wasi:cli/exit` with an error.
    Exit,
    /// The reply was larger than `max-reply`.
    ReplyTooLarge,
    /// `init` returned Err.
    InitFailed,
    /// Health threshold reached, or a probe timed out.
    Unhealthy,
    /// The host failed while serving the call (including a contained panic).
    HostError,
}

impl Cause {
    /// Every cause, in documentation order.
    pub const ALL: [Cause; 12] = [
        Cause::OutOfFuel,
        Cause::Timeout,
        Cause::MemoryLimit,
        Cause::StackOverflow,
        Cause::OutOfBounds,
        Cause::Unreachable,
        Cause::Trap,
        Cause::Exit,
        Cause::ReplyTooLarge,
        Cause::InitFailed,
        Cause::Unhealthy,
        Cause::HostError,
    ];

    /// The kebab-case name used in reports, metrics and config.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::OutOfFuel => "out-of-fuel",
            Cause::Timeout => "timeout",
            Cause::MemoryLimit => "memory-limit",
            Cause::StackOverflow => "stack-overflow",
            Cause::OutOfBounds => "out-of-bounds",
            Cause::Unreachable => "unreachable",
            Cause::Trap => "trap",
            Cause::Exit => "exit",
            Cause::ReplyTooLarge => "reply-too-large",
            Cause::InitFailed => "init-failed",
            Cause::Unhealthy => "unhealthy",
            Cause::HostError => "host-error",
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an instance knows about a call that did not return.
#[derive(Clone, Debug, PartialEq)]
pub struct Crash {
    /// The cause.
    pub cause: Cause,
    /// The trap or error message.
    pub message: String,
    /// Wasm backtrace, innermost first, function names demangled.
    pub backtrace: Vec<String>,
    /// Fuel the call used.
    pub fuel_used: u64,
    /// Linear memory size at the crash, bytes.
    pub memory_bytes: u64,
    /// The wasm coredump, when coredumps are on and the crash was a trap.
    pub coredump: Option<Vec<u8>>,
}

impl Crash {
    /// A crash with only a cause and a message: no backtrace, no fuel or
    /// memory figures, no coredump (a host error, an `init` that returned
    /// `Err`, an unhealthy instance).
    pub fn new(cause: Cause, message: impl Into<String>) -> Crash {
        Crash {
            cause,
            message: message.into(),
            backtrace: Vec::new(),
            fuel_used: 0,
            memory_bytes: 0,
            coredump: None,
        }
    }

    /// The message as a report keeps it (and the crash's log line shows it):
    /// cut to [`MAX_KEPT_BYTES`].
    pub fn kept_message(&self) -> String {
        guest_text::cap(&self.message, MAX_KEPT_BYTES).into_owned()
    }

    /// The backtrace as a report keeps it: each frame cut to [`MAX_KEPT_BYTES`].
    pub fn kept_backtrace(&self) -> Vec<String> {
        self.backtrace
            .iter()
            .map(|frame| guest_text::cap(frame, MAX_KEPT_BYTES).into_owned())
            .collect()
    }
}

/// How a call into an instance ended when it did not return a value.
#[derive(Clone, Debug, PartialEq)]
pub enum Exit {
    /// `wasi:cli/exit` with success: a normal exit, not a crash.
    Normal,
    /// A crash.
    Crashed(Crash),
}

impl Exit {
    /// The crash, unless the exit was normal.
    pub fn crash(&self) -> Option<&Crash> {
        match self {
            Exit::Normal => None,
            Exit::Crashed(c) => Some(c),
        }
    }
}

/// The part of a crash report about the message being handled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageInfo {
    /// Size in bytes.
    pub size: usize,
    /// SHA-256 of the message, hex.
    pub sha256: String,
    /// The message as text, when it is valid UTF-8 of at most [`REPORT_MESSAGE_BYTES`].
    pub text: Option<String>,
    /// The message as hex, when it is not UTF-8 and at most [`REPORT_MESSAGE_BYTES`].
    pub hex: Option<String>,
    /// Delivery number (1 = first).
    pub attempt: u32,
}

/// Messages up to this size are kept whole in crash reports.
pub const REPORT_MESSAGE_BYTES: usize = 1024;

impl MessageInfo {
    /// Describes a message for a report.
    pub fn of(message: &[u8], attempt: u32) -> MessageInfo {
        use sha2::Digest;
        let hash = sha2::Sha256::digest(message);
        let small = message.len() <= REPORT_MESSAGE_BYTES;
        let text = small
            .then(|| std::str::from_utf8(message).ok().map(str::to_string))
            .flatten();
        MessageInfo {
            size: message.len(),
            sha256: hex(&hash),
            hex: (small && text.is_none()).then(|| hex(message)),
            text,
            attempt,
        }
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A crash report (DESIGN.md, "Crash reports"), stored as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CrashReport {
    /// Report id.
    pub id: u64,
    /// Plugin name.
    pub plugin: String,
    /// Instance generation that crashed.
    pub generation: u64,
    /// The cause.
    pub cause: Cause,
    /// Which call: `init`, `handle`, `check`, `shutdown`.
    pub call: String,
    /// Trap or error message, cut to [`MAX_KEPT_BYTES`].
    pub message: String,
    /// Wasm backtrace, innermost first, each frame cut to [`MAX_KEPT_BYTES`].
    pub backtrace: Vec<String>,
    /// Fuel used by the call.
    pub fuel_used: u64,
    /// Linear memory size at the crash, bytes.
    pub memory_bytes: u64,
    /// The message being handled, if any.
    pub handling: Option<MessageInfo>,
    /// Unix time, milliseconds.
    pub time_ms: u64,
    /// What the supervisor decided: e.g. `restart in 200ms`, `failed`.
    pub decision: String,
    /// The coredump file, when one was written.
    pub coredump: Option<String>,
}

/// A dead letter, stored as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Dead-letter id.
    pub id: u64,
    /// Plugin name.
    pub plugin: String,
    /// The message bytes.
    pub message: Vec<u8>,
    /// Cause of each delivery.
    pub causes: Vec<String>,
    /// Crash report ids of each delivery.
    pub reports: Vec<u64>,
    /// Unix time, milliseconds.
    pub time_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hole09_a_report_keeps_guest_text_cut() {
        let crash = Crash {
            backtrace: vec!["m!f".to_string(), "n".repeat(1 << 20)],
            ..Crash::new(
                Cause::InitFailed,
                format!("init returned Err: {}", "x".repeat(8 << 20)),
            )
        };
        let message = crash.kept_message();
        assert!(
            message.len() < MAX_KEPT_BYTES + 64,
            "{} bytes",
            message.len()
        );
        assert!(message.starts_with("init returned Err: xxx"), "{message}");
        assert!(message.ends_with(" bytes in all]"), "{message}");
        let frames = crash.kept_backtrace();
        assert_eq!(frames[0], "m!f");
        assert!(
            frames[1].len() < MAX_KEPT_BYTES + 64,
            "{} bytes",
            frames[1].len()
        );
    }
}
