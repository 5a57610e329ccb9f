//! Counter: the example plugin, in Rust. It speaks the counter protocol of
//! `guest-examples/README.md`, as the Python, JavaScript, C and Go versions
//! do: every other message increments the key `count` in bucket `default`
//! (decimal ASCII) and the reply is the new count; `crash` increments it and
//! then panics, so the supervisor discards the write and restarts the plugin;
//! the remaining commands show configuration, the mailbox, guest output, the
//! sandbox and the resource limits.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "supervised-worker",
    generate_all,
});

use exports::wasm_sup::plugin::{handler, health, lifecycle};
use std::io::Write as _;
use std::time::Duration;
use wasi::config::store as config;
use wasi::keyvalue::store;
use wasi::logging::logging::{Level, log};
use wasm_sup::plugin::mailbox;

const BUCKET: &str = "default";
const KEY: &str = "count";

struct Counter;

impl handler::Guest for Counter {
    fn handle(message: Vec<u8>) -> Result<Vec<u8>, String> {
        let text = String::from_utf8_lossy(&message);
        let (command, arg) = text.split_once(' ').unwrap_or((&text, ""));
        match command {
            "crash" => {
                increment()?;
                panic!("crash requested");
            }
            "greet" => {
                let greeting = config::get("greeting").map_err(|e| format!("config: {e:?}"))?;
                Ok(greeting.unwrap_or_else(|| "hello".into()).into_bytes())
            }
            "send" => {
                let (to, body) = arg.split_once(' ').unwrap_or((arg, ""));
                mailbox::send(to, body.as_bytes()).map_err(|e| send_error(&e).to_string())?;
                Ok(b"sent".to_vec())
            }
            "info" => {
                let me = mailbox::self_info();
                Ok(format!("{} {} {}", me.name, me.generation, me.restarts).into_bytes())
            }
            "print" => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{arg}").and_then(|()| out.flush()).map_err(|e| e.to_string())?;
                Ok(b"printed".to_vec())
            }
            "read-file" => std::fs::read(arg).map_err(|e| e.to_string()),
            "env" => Ok(std::env::vars_os().count().to_string().into_bytes()),
            "connect" => std::net::TcpStream::connect(arg)
                .map(|_| b"connected".to_vec())
                .map_err(|e| e.to_string()),
            "spin" => spin(),
            "grow" => grow(),
            "sleep" => {
                let ms = arg.parse().map_err(|_| format!("sleep: not a number: {arg:?}"))?;
                std::thread::sleep(Duration::from_millis(ms));
                Ok(b"slept".to_vec())
            }
            _ => Ok(increment()?.to_string().into_bytes()),
        }
    }
}

/// Adds one to the stored count, logs it, and returns the new value.
fn increment() -> Result<u64, String> {
    let bucket = store::open(BUCKET).map_err(|e| format!("open {BUCKET:?}: {e:?}"))?;
    let current = match bucket.get(KEY).map_err(|e| format!("get {KEY:?}: {e:?}"))? {
        Some(bytes) => parse_count(&bytes)?,
        None => 0,
    };
    let next = current
        .checked_add(1)
        .ok_or_else(|| "count overflowed".to_string())?;
    bucket
        .set(KEY, next.to_string().as_bytes())
        .map_err(|e| format!("set {KEY:?}: {e:?}"))?;
    log(Level::Info, "counter", &format!("count is {next}"));
    Ok(next)
}

/// Parses a stored count (decimal ASCII).
fn parse_count(bytes: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| format!("stored {KEY:?} is not a decimal number: {bytes:?}"))
}

fn send_error(e: &mailbox::SendError) -> &'static str {
    match e {
        mailbox::SendError::NoSuchPlugin => "no-such-plugin",
        mailbox::SendError::MailboxFull => "mailbox-full",
        mailbox::SendError::TooLarge => "too-large",
    }
}

/// Loops until the host stops it (fuel or the call's deadline).
fn spin() -> ! {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Allocates 1 MiB blocks and keeps them until the memory limit stops it.
fn grow() -> ! {
    let mut blocks = Vec::new();
    loop {
        blocks.push(std::hint::black_box(vec![1u8; 1 << 20]));
    }
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
