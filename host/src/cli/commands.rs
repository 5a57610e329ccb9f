//! The CLI subcommands that talk to a running host through the admin API, and
//! `check`, which works offline. Each reads the API's answer as its
//! [`api`] type and prints human text, or with `--json` that typed value as
//! JSON; never the raw answer. Guest text (reasons, messages, backtraces) is
//! escaped before it reaches the terminal. Each returns the process exit
//! code: 0 ok, 1 the operation failed, 2 usage or connection error
//! (returned as `Err`).

use super::client::{Client, Response};
use anyhow::{Result, bail};
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use wasm_sup::admin::api::{self, Refusal};
use wasm_sup::guest_text::escape;

/// Exit code: the operation failed.
pub const FAILED: u8 = 1;

/// What an HTTP status means to a CLI user.
fn what(status: u16) -> &'static str {
    match status {
        422 => "the plugin rejected the message",
        500 => "the plugin crashed on every delivery; the message was dead-lettered",
        503 => "the plugin is not taking messages",
        429 => "the plugin's mailbox is full",
        404 => "not found",
        400 => "bad request",
        401 => "unauthorized: set WASM_SUP_ADMIN_TOKEN or --token-file",
        413 => "the message is too large",
        409 => "the idempotency key was used for another message",
        504 => "no reply within reply-timeout; the message stays queued",
        _ => "unexpected answer",
    }
}

/// A refusal in words.
fn refusal_text(r: &Refusal) -> String {
    match r {
        Refusal::Error(e) => e.error.clone(),
        Refusal::DeadLettered(d) => format!(
            "dead letter {}; causes {}",
            d.dead_letter,
            d.causes.join(", ")
        ),
        Refusal::Unavailable(u) => match u.retry_after_secs {
            Some(secs) => format!("{}: {}; next attempt in {secs}s", u.status, u.reason),
            None => format!("{}: {}", u.status, u.reason),
        },
        Refusal::NotReady(_) => "the host is not ready".to_string(),
    }
}

/// Prints an error answer to stderr; returns [`FAILED`].
pub fn fail(resp: &Response) -> u8 {
    // A 422's body is the plugin's reason as it is, whatever it looks like.
    let refusal = (resp.status != 422)
        .then(|| serde_json::from_slice::<Refusal>(&resp.body).ok())
        .flatten();
    // A normal exit (`exit(0)`) on every delivery is not a crash.
    let exited = matches!(&refusal, Some(Refusal::DeadLettered(d))
        if !d.causes.is_empty() && d.causes.iter().all(|c| c == "normal-exit"));
    let headline = if exited {
        "the plugin exited (normally) instead of answering, on every delivery; the message was dead-lettered"
    } else {
        what(resp.status)
    };
    let msg = match refusal {
        Some(r) => refusal_text(&r),
        None if resp.status == 422 => String::from_utf8_lossy(&resp.body).trim().to_string(),
        // Not an answer of the API (a proxy's page, say): its text, never raw JSON.
        None => match serde_json::from_slice::<serde_json::Value>(&resp.body) {
            Ok(v) => v["error"]
                .as_str()
                .unwrap_or("the answer is not one the admin API gives")
                .to_string(),
            Err(_) => String::from_utf8_lossy(&resp.body).trim().to_string(),
        },
    };
    // An Err reason is guest text: escaped, so it cannot steer the terminal.
    let msg = escape(&msg);
    eprintln!("error: {headline} (HTTP {}): {msg}", resp.status);
    FAILED
}

pub(super) fn print_json(v: &impl Serialize) -> Result<u8> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(0)
}

/// The name a value has on the wire (an enum's kebab-case name).
pub(super) fn wire_name(v: &impl Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".to_string(),
    }
}

/// Writes bytes to stdout as they are, with a newline on a terminal.
fn print_bytes(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout();
    out.write_all(bytes)?;
    if !bytes.ends_with(b"\n") && std::io::IsTerminal::is_terminal(&out) {
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// `wasm-sup send NAME MESSAGE [--idempotency-key KEY]`.
pub async fn send(client: &Client, name: &str, body: Vec<u8>, key: Option<&str>) -> Result<u8> {
    let resp = client
        .post_keyed(&format!("/v1/plugins/{name}/messages"), body, key)
        .await?;
    if resp.status != 200 {
        return Ok(fail(&resp));
    }
    print_bytes(&resp.body)?;
    Ok(0)
}

/// `wasm-sup restart|stop|start NAME` or `--all`.
pub async fn operate(client: &Client, op: &str, name: Option<&str>, json: bool) -> Result<u8> {
    let path = match name {
        Some(n) => format!("/v1/plugins/{n}/{op}"),
        None => format!("/v1/plugins/{op}"),
    };
    let resp = client.post(&path, Vec::new()).await?;
    if resp.status != 200 && resp.status != 207 {
        return Ok(fail(&resp));
    }
    if name.is_some() {
        let ack: api::OperationAck = resp.json()?;
        if json {
            return print_json(&ack);
        }
        println!(
            "{}: {op} ok (status {})",
            ack.name,
            ack.plugin.as_ref().map_or("?", |p| p.status.as_str())
        );
        return Ok(0);
    }
    let all: api::OperationAll = resp.json()?;
    if json {
        print_json(&all)?;
    } else {
        for p in &all.plugins {
            match &p.error {
                None if p.ok => println!("{}: {op} ok", p.name),
                error => println!(
                    "{}: {op} failed: {}",
                    p.name,
                    error.as_deref().unwrap_or("?")
                ),
            }
        }
    }
    Ok(if resp.status == 200 { 0 } else { FAILED })
}

fn time(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn message_line(m: &api::MessageInfo) -> String {
    let size = m.size;
    match (&m.text, &m.hex) {
        (Some(t), _) => format!("{t:?} ({size} bytes)"),
        (None, Some(h)) => format!("hex {h} ({size} bytes)"),
        _ => format!("{size} bytes, sha256 {}", m.sha256),
    }
}

/// `wasm-sup crashes NAME`.
/// `wasm-sup move NAME NODE`.
pub async fn move_plugin(client: &Client, name: &str, node: &str, json: bool) -> Result<u8> {
    let resp = client
        .post_with(&format!("/v1/plugins/{name}/move"), &[("node", node)])
        .await?;
    if resp.status != 200 {
        return Ok(fail(&resp));
    }
    let moved: serde_json::Value = resp.json()?;
    if json {
        return print_json(&moved);
    }
    match moved["owner"].as_str() {
        Some(owner) if owner == node => println!("{name}: runs on {node}"),
        Some(owner) => println!("{name}: runs on {}, not {node}", escape(owner)),
        None => {
            println!("{name}: handed over to {node}, which has not started it yet");
            return Ok(1);
        }
    }
    Ok(0)
}

pub async fn crashes(client: &Client, name: &str, limit: usize, json: bool) -> Result<u8> {
    let page = api::Page {
        offset: 0,
        limit: Some(limit),
    };
    let resp = client
        .get_with(&format!("/v1/plugins/{name}/crashes"), &page)
        .await?;
    if resp.status != 200 {
        return Ok(fail(&resp));
    }
    let list: api::CrashList = resp.json()?;
    if json {
        return print_json(&list);
    }
    if list.crashes.is_empty() {
        println!("{name}: no crashes recorded");
    }
    for c in &list.crashes {
        println!(
            "crash {} at {}: {} in {} (generation {})",
            c.id,
            time(c.time_ms),
            c.cause,
            c.call,
            c.generation
        );
        println!("  message:  {}", escape(&c.message));
        println!(
            "  fuel used {}, memory {} bytes; decision: {}",
            c.fuel_used, c.memory_bytes, c.decision
        );
        if let Some(m) = &c.handling {
            println!("  handling: {} (delivery {})", message_line(m), m.attempt);
        }
        if let Some(path) = &c.coredump {
            println!("  coredump: {}", escape(path));
        }
        if !c.backtrace.is_empty() {
            println!("  backtrace:");
            for (i, f) in c.backtrace.iter().enumerate() {
                println!("    {i:>2}: {}", escape(f));
            }
        }
        println!();
    }
    Ok(0)
}

/// `wasm-sup dead-letters NAME [replay|drop ID]`.
pub async fn dead_letters(
    client: &Client,
    name: &str,
    action: Option<(&str, u64)>,
    json: bool,
) -> Result<u8> {
    if let Some((verb, id)) = action {
        let resp = client
            .post(
                &format!("/v1/plugins/{name}/dead-letters/{id}/{verb}"),
                Vec::new(),
            )
            .await?;
        if resp.status != 200 {
            return Ok(fail(&resp));
        }
        if json {
            return match verb {
                "replay" => print_json(&resp.json::<api::Replayed>()?),
                _ => print_json(&resp.json::<api::Dropped>()?),
            };
        }
        println!("{name}: dead letter {id}: {verb} ok");
        return Ok(0);
    }
    let page = api::Page {
        offset: 0,
        limit: Some(100),
    };
    let resp = client
        .get_with(&format!("/v1/plugins/{name}/dead-letters"), &page)
        .await?;
    if resp.status != 200 {
        return Ok(fail(&resp));
    }
    let list: api::DeadLetterList = resp.json()?;
    if json {
        return print_json(&list);
    }
    if list.dead_letters.is_empty() {
        println!("{name}: no dead letters");
    }
    for d in &list.dead_letters {
        println!(
            "{} at {}: {}; causes {}",
            d.id,
            time(d.time_ms),
            message_line(&d.message),
            d.causes.join(", ")
        );
    }
    Ok(0)
}

/// `wasm-sup state NAME [KEY] [--bucket B]`: the listing, or one value's
/// bytes (with `--json`, the value as a listing entry).
pub async fn state(
    client: &Client,
    name: &str,
    key: Option<&str>,
    bucket: &str,
    json: bool,
) -> Result<u8> {
    if let Some(key) = key {
        let resp = client
            .get(&format!("/v1/plugins/{name}/state/{bucket}/{key}"))
            .await?;
        if resp.status != 200 {
            return Ok(fail(&resp));
        }
        if json {
            let size = resp.body.len() as u64;
            let entry = api::StateEntry::new(bucket.into(), key.into(), size, Some(resp.body));
            return print_json(&entry);
        }
        print_bytes(&resp.body)?;
        return Ok(0);
    }
    let resp = client.get(&format!("/v1/plugins/{name}/state")).await?;
    if resp.status != 200 {
        return Ok(fail(&resp));
    }
    let list: api::StateList = resp.json()?;
    if json {
        return print_json(&list);
    }
    println!("{:<16} {:<40} {:>10}", "BUCKET", "KEY", "BYTES");
    for k in &list.keys {
        println!("{:<16} {:<40} {:>10}", k.bucket, k.key, k.size);
    }
    println!("{} keys, {} bytes", list.usage.keys, list.usage.bytes);
    Ok(0)
}

/// `wasm-sup state NAME --reset`: asks for the name again unless `yes`.
pub async fn state_reset(client: &Client, name: &str, yes: bool, json: bool) -> Result<u8> {
    if !yes {
        if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            bail!("refusing to reset {name:?}'s state without confirmation: pass --yes");
        }
        eprint!(
            "This deletes all state of {name:?} and restarts it. Type the plugin name to confirm: "
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if answer.trim() != name {
            eprintln!("not confirmed; nothing changed");
            return Ok(FAILED);
        }
    }
    let confirm = api::Confirm {
        confirm: Some(name.into()),
    };
    let resp = client
        .post_with(&format!("/v1/plugins/{name}/state/reset"), &confirm)
        .await?;
    if resp.status != 200 {
        return Ok(fail(&resp));
    }
    let ack: api::OperationAck = resp.json()?;
    if json {
        return print_json(&ack);
    }
    println!("{name}: state reset; the plugin is starting fresh");
    Ok(0)
}

/// What `wasm-sup check --json` prints.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum CheckReport {
    /// The file is a component.
    Component {
        exports: Vec<String>,
        file: String,
        health: bool,
        imports: Vec<String>,
        lifecycle: bool,
        /// The plugin name it loads as, if the file name is one.
        name: Option<String>,
        /// Why the file name is not a plugin name.
        name_error: Option<String>,
        sha256: String,
        /// A component with a name that is a plugin name.
        valid: bool,
        world: &'static str,
    },
    /// The file is not a valid plugin.
    Invalid {
        error: String,
        file: String,
        valid: bool,
    },
}

/// The world a component implements.
fn world_of(c: &wasm_sup::compile::Compiled) -> &'static str {
    if c.init.is_some() && c.shutdown.is_some() && c.check.is_some() {
        "supervised-worker"
    } else {
        "worker"
    }
}

/// `wasm-sup check FILE.wasm`: offline validation against the contract.
pub fn check(path: &Path, dir: Option<&Path>, json: bool) -> Result<u8> {
    // A usage error (exit 2), not a verdict on the file.
    if let Some(dir) = dir.filter(|d| !d.is_dir()) {
        bail!(
            "--dir {}: no such plugin folder (give the folder `wasm-sup run` uses)",
            dir.display()
        );
    }
    let name = wasm_sup::name::plugin_name(path);
    let file = path.display().to_string();
    let cache = super::load::cache_for(dir)?;
    let result = super::load::check_load(path, cache);
    let report = match &result {
        Ok((c, _)) => CheckReport::Component {
            exports: c.exports.clone(),
            file,
            health: c.check.is_some(),
            imports: c.imports.clone(),
            lifecycle: c.init.is_some(),
            name: name.clone().ok(),
            name_error: name.clone().err(),
            sha256: c.sha256.clone(),
            valid: name.is_ok(),
            world: world_of(c),
        },
        Err(e) => CheckReport::Invalid {
            error: format!("{e:#}"),
            file,
            valid: false,
        },
    };
    let ok = matches!(report, CheckReport::Component { valid: true, .. });
    if json {
        print_json(&report)?;
        return Ok(if ok { 0 } else { FAILED });
    }
    match &result {
        Ok((c, how)) => {
            eprintln!("{how}");
            match &name {
                Ok(n) => println!("{}: a valid plugin (loads as {n:?})", path.display()),
                Err(why) => println!(
                    "{}: a valid component, but the file name is not a plugin name: {why}",
                    path.display()
                ),
            }
            println!("world: wasm-sup:plugin/{}", world_of(c));
            println!("exports:");
            for e in &c.exports {
                println!("  {e}");
            }
            println!("imports:");
            for i in &c.imports {
                println!("  {i}");
            }
        }
        Err(e) => println!("not a valid plugin: {e:#}"),
    }
    Ok(if ok { 0 } else { FAILED })
}
