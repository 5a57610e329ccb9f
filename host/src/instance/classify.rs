//! Classifies the error of a call that did not return into DESIGN.md's closed
//! list of crash causes, with the wasm backtrace (names demangled).
//!
//! The order matters: our own marker errors (deadline, memory limit) and
//! `wasi:cli/exit` are looked for anywhere in the error chain first, then
//! wasmtime's trap code; anything else a guest can provoke is `trap`.

use super::DeadlinePassed;
use super::limits::MemoryLimitExceeded;
use crate::crash::{Cause, Crash, Exit};
use wasmtime::{Trap, WasmBacktrace};

/// Frames kept in a report's backtrace.
const MAX_FRAMES: usize = 64;

pub(super) fn classify(err: &wasmtime::Error, fuel_used: u64, memory_bytes: u64) -> Exit {
    let exit_code = err.downcast_ref::<wasmtime_wasi::I32Exit>().map(|e| e.0);
    if exit_code == Some(0) {
        return Exit::Normal;
    }
    let cause = if exit_code.is_some() {
        Cause::Exit
    } else if err.downcast_ref::<DeadlinePassed>().is_some() {
        Cause::Timeout
    } else if err.downcast_ref::<MemoryLimitExceeded>().is_some() {
        Cause::MemoryLimit
    } else if let Some(trap) = err.downcast_ref::<Trap>() {
        match trap {
            Trap::OutOfFuel => Cause::OutOfFuel,
            Trap::Interrupt => Cause::Timeout,
            Trap::StackOverflow => Cause::StackOverflow,
            Trap::MemoryOutOfBounds | Trap::TableOutOfBounds | Trap::HeapMisaligned => {
                Cause::OutOfBounds
            }
            Trap::UnreachableCodeReached => Cause::Unreachable,
            _ => Cause::Trap,
        }
    } else {
        Cause::Trap
    };
    let message = match exit_code {
        Some(code) => format!("guest called exit with status {code}"),
        None => message_of(err),
    };
    Exit::Crashed(Crash {
        cause,
        message,
        backtrace: backtrace_of(err),
        fuel_used,
        memory_bytes,
        coredump: None,
    })
}

/// The error's messages, outermost first, without the backtrace text.
fn message_of(err: &wasmtime::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let s = cause.to_string();
        if s.starts_with("error while executing at wasm backtrace") || s.is_empty() {
            continue;
        }
        let first = s.lines().next().unwrap_or("").to_string();
        if !parts.contains(&first) {
            parts.push(first);
        }
    }
    if parts.is_empty() {
        parts.push(err.to_string().lines().next().unwrap_or("").to_string());
    }
    parts.join(": ")
}

fn backtrace_of(err: &wasmtime::Error) -> Vec<String> {
    let Some(bt) = err.downcast_ref::<WasmBacktrace>() else {
        return Vec::new();
    };
    bt.frames()
        .iter()
        .take(MAX_FRAMES)
        .map(|f| {
            let module = f.module().name().unwrap_or("<module>");
            match f.func_name() {
                Some(name) => format!("{module}!{:#}", rustc_demangle::demangle(name)),
                None => format!("{module}!<wasm function {}>", f.func_index()),
            }
        })
        .collect()
}
