//! Limits: a plugin that runs into each of the host's resource limits on
//! command, to show what the supervisor does about it.
//!
//! Protocol (the message is UTF-8 text):
//! - `spin`: loops forever (CPU / deadline limit).
//! - `grow`: allocates 1 MiB buffers forever, touching every page and keeping
//!   them all (memory limit).
//! - `recurse`: recurses without end, 1 KiB of stack per frame (stack limit).
//! - `sleep [MS]`: sleeps MS milliseconds (default 10000), then replies
//!   `slept` (wall-clock timeout).
//! - anything else: replies `ok`.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "supervised-worker",
    generate_all,
});

use core::hint::black_box;
use std::time::Duration;

use exports::wasm_sup::plugin::{handler, health, lifecycle};

const MIB: usize = 1 << 20;
const PAGE: usize = 4096;
const DEFAULT_SLEEP_MS: u64 = 10_000;

struct Limits;

impl handler::Guest for Limits {
    fn handle(message: Vec<u8>) -> Result<Vec<u8>, String> {
        let text = String::from_utf8_lossy(&message);
        let (command, arg) = text.split_once(' ').unwrap_or((&text, ""));
        match command {
            "spin" => spin(),
            "grow" => grow(),
            "recurse" => {
                recurse(0);
                unreachable!("recursion without end returned");
            }
            "sleep" => {
                let ms = match arg.trim() {
                    "" => DEFAULT_SLEEP_MS,
                    ms => ms.parse().map_err(|_| format!("bad milliseconds {ms:?}"))?,
                };
                std::thread::sleep(Duration::from_millis(ms));
                Ok(b"slept".to_vec())
            }
            _ => Ok(b"ok".to_vec()),
        }
    }
}

/// Burns CPU until the host interrupts it.
fn spin() -> ! {
    let mut turns = 0u64;
    loop {
        turns = black_box(turns.wrapping_add(1));
    }
}

/// Allocates until the host refuses to grow memory.
fn grow() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; MIB];
        for byte in chunk.iter_mut().step_by(PAGE) {
            *byte = 1;
        }
        hoard.push(black_box(chunk));
        black_box(&hoard);
    }
}

/// Recurses until the stack runs out. Each frame keeps a 1 KiB array alive
/// across the call, so it can be neither turned into a loop nor shrunk.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let frame = [depth.to_le_bytes()[0]; 1024];
    black_box(&frame);
    // Always false, but the optimiser cannot know it.
    if black_box(depth == u64::MAX) {
        return depth;
    }
    let below = recurse(black_box(depth + 1));
    below.wrapping_add(u64::from(black_box(&frame)[0]))
}

impl lifecycle::Guest for Limits {
    fn init() -> Result<(), String> {
        Ok(())
    }

    fn shutdown() {}
}

impl health::Guest for Limits {
    fn check() -> health::Status {
        health::Status::Healthy
    }
}

export!(Limits);
