//! Counter: the smallest useful supervised plugin.
//!
//! Protocol: every message increments the key `count` in bucket `default`
//! (stored as decimal ASCII) and the reply is the new count as decimal text.
//! The message `crash` instead panics ("crash requested") before writing
//! anything, so the supervisor restarts the plugin and the count is kept.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "supervised-worker",
    generate_all,
});

use exports::wasm_sup::plugin::{handler, health, lifecycle};
use wasi::keyvalue::store;
use wasi::logging::logging::{Level, log};

const BUCKET: &str = "default";
const KEY: &str = "count";

struct Counter;

impl handler::Guest for Counter {
    fn handle(message: Vec<u8>) -> Result<Vec<u8>, String> {
        if message == b"crash" {
            panic!("crash requested");
        }
        let bucket = store::open(BUCKET).map_err(|e| format!("open {BUCKET:?}: {e:?}"))?;
        let current = match bucket.get(KEY).map_err(|e| format!("get {KEY:?}: {e:?}"))? {
            Some(bytes) => parse_count(&bytes)?,
            None => 0,
        };
        let next = current
            .checked_add(1)
            .ok_or_else(|| "count overflowed".to_string())?;
        let reply = next.to_string();
        bucket
            .set(KEY, reply.as_bytes())
            .map_err(|e| format!("set {KEY:?}: {e:?}"))?;
        Ok(reply.into_bytes())
    }
}

/// Parses a stored count (decimal ASCII).
fn parse_count(bytes: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| format!("stored {KEY:?} is not a decimal number: {bytes:?}"))
}

impl lifecycle::Guest for Counter {
    fn init() -> Result<(), String> {
        log(Level::Info, "counter", "counter starting");
        Ok(())
    }

    fn shutdown() {
        log(Level::Info, "counter", "counter stopping");
    }
}

impl health::Guest for Counter {
    fn check() -> health::Status {
        health::Status::Healthy
    }
}

export!(Counter);
