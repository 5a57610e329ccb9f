//! The CLI subcommands that talk to a running host through the admin API, and
//! `check`, which works offline. Each returns the process exit code: 0 ok,
//! 1 the operation failed, 2 usage or connection error (returned as `Err`).

use crate::admin::client::{Client, Response};
use crate::guest_text::escape;
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::io::Write;
use std::path::Path;

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
        504 => "no reply within reply-timeout; the message stays queued",
        _ => "unexpected answer",
    }
}

/// Prints an error answer to stderr; returns [`FAILED`].
fn fail(resp: &Response) -> u8 {
    let text = String::from_utf8_lossy(&resp.body);
    let msg = serde_json::from_slice::<Value>(&resp.body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| text.trim().to_string());
    // An Err reason is guest text: escaped, so it cannot steer the terminal.
    let msg = escape(&msg);
    eprintln!("error: {} (HTTP {}): {msg}", what(resp.status), resp.status);
    FAILED
}

fn json_of(resp: &Response) -> Result<Value> {
    serde_json::from_slice(&resp.body).context("the admin API sent bad JSON")
}

fn print_json(v: &Value) -> Result<u8> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(0)
}

/// `wasm-sup send NAME MESSAGE`.
pub async fn send(client: &Client, name: &str, body: Vec<u8>) -> Result<u8> {
    let resp = client
        .post(&format!("/v1/plugins/{name}/messages"), body)
        .await?;
    if resp.status != 200 {
        return Ok(fail(&resp));
    }
    let mut out = std::io::stdout();
    out.write_all(&resp.body)?;
    if !resp.body.ends_with(b"\n") && std::io::IsTerminal::is_terminal(&out) {
        out.write_all(b"\n")?;
    }
    Ok(0)
}

fn uptime(v: &Value) -> String {
    match v.as_f64() {
        None => "-".into(),
        Some(s) if s < 120.0 => format!("{s:.0}s"),
        Some(s) if s < 7200.0 => format!("{:.0}m", s / 60.0),
        Some(s) => format!("{:.1}h", s / 3600.0),
    }
}

/// `wasm-sup status`.
pub async fn status(client: &Client, json: bool) -> Result<u8> {
    let resp = client.get("/v1/plugins").await?;
    if resp.status != 200 {
        return Ok(fail(&resp));
    }
    let v = json_of(&resp)?;
    if json {
        return print_json(&v);
    }
    println!(
        "{:<24} {:<9} {:>10} {:>8}  {:<16} {:>8}  VERSION",
        "PLUGIN", "STATUS", "GENERATION", "RESTARTS", "LAST CRASH", "UPTIME"
    );
    let mut notes = Vec::new();
    let budget = &v["budget"];
    if let Some(max) = budget["max_restarts"].as_u64() {
        notes.push(format!(
            "host restart budget: {} of {max} restarts used within {}s",
            budget["used"].as_u64().unwrap_or(0),
            budget["window_secs"].as_f64().unwrap_or(0.0)
        ));
    }
    for p in v["plugins"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or("?");
        let sha = p["sha256"].as_str().unwrap_or("?");
        println!(
            "{:<24} {:<9} {:>10} {:>8}  {:<16} {:>8}  {}",
            name,
            p["status"].as_str().unwrap_or("?"),
            p["generation"].as_u64().unwrap_or(0),
            p["restarts"].as_u64().unwrap_or(0),
            p["last_crash"].as_str().unwrap_or("-"),
            uptime(&p["uptime_secs"]),
            &sha[..sha.len().min(12)],
        );
        if let Some(reason) = p["reason"].as_str() {
            notes.push(format!("{name}: {reason}"));
        }
        if let Some(bad) = p["rollback"]["bad_sha256"].as_str() {
            notes.push(format!(
                "{name}: the upgrade to {} was rolled back: {}",
                &bad[..bad.len().min(12)],
                p["rollback"]["reason"].as_str().unwrap_or("?")
            ));
        }
        if let Some(h) = p["health"].as_str()
            && h != "healthy"
        {
            notes.push(format!("{name}: health {h}"));
        }
        if p["config_pending"] == true {
            notes.push(format!(
                "{name}: a new configuration takes effect at its next start (`wasm-sup restart {name}`)"
            ));
        }
    }
    if !notes.is_empty() {
        println!();
        // Reasons and health answers carry guest text: escaped.
        for n in notes {
            println!("{}", escape(&n));
        }
    }
    print_groups(&v["groups"]);
    Ok(0)
}

/// The supervision tree under `status`: each group with its strategy, the
/// restarts it used of its intensity, and its members in start order.
fn print_groups(groups: &serde_json::Value) {
    let Some(groups) = groups.as_array().filter(|g| !g.is_empty()) else {
        return;
    };
    println!();
    for g in groups {
        let depth = {
            let mut d = 0;
            let mut parent = g["parent"].as_str();
            while let Some(p) = parent {
                d += 1;
                parent = groups
                    .iter()
                    .find(|x| x["name"] == p)
                    .and_then(|x| x["parent"].as_str());
            }
            d
        };
        let members: Vec<&str> = g["children"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_str())
            .collect();
        println!(
            "{}group {} ({}): {} of {} restarts used within {}s; members {}",
            "  ".repeat(depth),
            g["name"].as_str().unwrap_or("?"),
            g["strategy"].as_str().unwrap_or("?"),
            g["used"].as_u64().unwrap_or(0),
            g["max_restarts"].as_u64().unwrap_or(0),
            g["window_secs"].as_f64().unwrap_or(0.0),
            members.join(", ")
        );
    }
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
    let v = json_of(&resp)?;
    if json {
        print_json(&v)?;
    } else if let Some(list) = v["plugins"].as_array() {
        for p in list {
            match p["ok"].as_bool() {
                Some(true) => println!("{}: {op} ok", p["name"].as_str().unwrap_or("?")),
                _ => println!(
                    "{}: {op} failed: {}",
                    p["name"].as_str().unwrap_or("?"),
                    p["error"].as_str().unwrap_or("?")
                ),
            }
        }
    } else {
        println!(
            "{}: {op} ok (status {})",
            v["name"].as_str().unwrap_or("?"),
            v["plugin"]["status"].as_str().unwrap_or("?")
        );
    }
    Ok(if resp.status == 200 { 0 } else { FAILED })
}

fn time(ms: &Value) -> String {
    let ms = ms.as_u64().unwrap_or(0);
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn message_line(m: &Value) -> String {
    let size = m["size"].as_u64().unwrap_or(0);
    match (m["text"].as_str(), m["hex"].as_str()) {
        (Some(t), _) => format!("{t:?} ({size} bytes)"),
        (None, Some(h)) => format!("hex {h} ({size} bytes)"),
        _ => format!(
            "{size} bytes, sha256 {}",
            m["sha256"].as_str().unwrap_or("?")
        ),
    }
}

/// `wasm-sup crashes NAME`.
pub async fn crashes(client: &Client, name: &str, limit: usize, json: bool) -> Result<u8> {
    let resp = client
        .get(&format!("/v1/plugins/{name}/crashes?limit={limit}"))
        .await?;
    if resp.status != 200 {
        return Ok(fail(&resp));
    }
    let v = json_of(&resp)?;
    if json {
        return print_json(&v);
    }
    let list = v["crashes"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("{name}: no crashes recorded");
    }
    for c in list {
        println!(
            "crash {} at {}: {} in {} (generation {})",
            c["id"],
            time(&c["time_ms"]),
            c["cause"].as_str().unwrap_or("?"),
            c["call"].as_str().unwrap_or("?"),
            c["generation"]
        );
        println!(
            "  message:  {}",
            escape(c["message"].as_str().unwrap_or(""))
        );
        println!(
            "  fuel used {}, memory {} bytes; decision: {}",
            c["fuel_used"],
            c["memory_bytes"],
            c["decision"].as_str().unwrap_or("?")
        );
        if !c["handling"].is_null() {
            println!(
                "  handling: {} (delivery {})",
                message_line(&c["handling"]),
                c["handling"]["attempt"]
            );
        }
        let frames = c["backtrace"].as_array().cloned().unwrap_or_default();
        if !frames.is_empty() {
            println!("  backtrace:");
            for (i, f) in frames.iter().enumerate() {
                println!("    {i:>2}: {}", escape(f.as_str().unwrap_or("?")));
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
    let resp = match action {
        None => {
            client
                .get(&format!("/v1/plugins/{name}/dead-letters?limit=100"))
                .await?
        }
        Some((verb, id)) => {
            client
                .post(
                    &format!("/v1/plugins/{name}/dead-letters/{id}/{verb}"),
                    Vec::new(),
                )
                .await?
        }
    };
    if resp.status != 200 {
        return Ok(fail(&resp));
    }
    let v = json_of(&resp)?;
    if json {
        return print_json(&v);
    }
    match action {
        Some((verb, id)) => println!("{name}: dead letter {id}: {verb} ok"),
        None => {
            let list = v["dead_letters"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("{name}: no dead letters");
            }
            for d in list {
                let causes: Vec<&str> = d["causes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                println!(
                    "{} at {}: {}; causes {}",
                    d["id"],
                    time(&d["time_ms"]),
                    message_line(&d["message"]),
                    causes.join(", ")
                );
            }
        }
    }
    Ok(0)
}

/// `wasm-sup state NAME [KEY] [--bucket B]`.
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
        std::io::stdout().write_all(&resp.body)?;
        if std::io::IsTerminal::is_terminal(&std::io::stdout()) && !resp.body.ends_with(b"\n") {
            println!();
        }
        return Ok(0);
    }
    let resp = client.get(&format!("/v1/plugins/{name}/state")).await?;
    if resp.status != 200 {
        return Ok(fail(&resp));
    }
    let v = json_of(&resp)?;
    if json {
        return print_json(&v);
    }
    println!("{:<16} {:<40} {:>10}", "BUCKET", "KEY", "BYTES");
    for k in v["keys"].as_array().into_iter().flatten() {
        println!(
            "{:<16} {:<40} {:>10}",
            k["bucket"].as_str().unwrap_or("?"),
            k["key"].as_str().unwrap_or("?"),
            k["size"].as_u64().unwrap_or(0)
        );
    }
    println!(
        "{} keys, {} bytes",
        v["usage"]["keys"].as_u64().unwrap_or(0),
        v["usage"]["bytes"].as_u64().unwrap_or(0)
    );
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
    let resp = client
        .post(
            &format!("/v1/plugins/{name}/state/reset?confirm={name}"),
            Vec::new(),
        )
        .await?;
    if resp.status != 200 {
        return Ok(fail(&resp));
    }
    if json {
        return print_json(&json_of(&resp)?);
    }
    println!("{name}: state reset; the plugin is starting fresh");
    Ok(0)
}

/// `wasm-sup check FILE.wasm`: offline validation against the contract.
pub fn check(path: &Path, json: bool) -> Result<u8> {
    let engine = crate::engine::engine(false, 0)?;
    let linker = crate::compile::linker(&engine)?;
    let name = crate::discovery::plugin_name(path);
    let result = crate::compile::compile_file(&engine, &linker, path);
    let (ok, v) = match &result {
        Ok(c) => {
            let world = if c.init.is_some() && c.shutdown.is_some() && c.check.is_some() {
                "supervised-worker"
            } else {
                "worker"
            };
            (
                name.is_ok(),
                serde_json::json!({
                    "file": path.display().to_string(),
                    "valid": name.is_ok(),
                    "name": name.as_ref().ok(),
                    "name_error": name.as_ref().err(),
                    "world": world,
                    "lifecycle": c.init.is_some(),
                    "health": c.check.is_some(),
                    "imports": c.imports,
                    "exports": c.exports,
                    "sha256": c.sha256,
                }),
            )
        }
        Err(e) => (
            false,
            serde_json::json!({
                "file": path.display().to_string(),
                "valid": false,
                "error": format!("{e:#}"),
            }),
        ),
    };
    if json {
        print_json(&v)?;
    } else {
        match &result {
            Ok(c) => {
                match &name {
                    Ok(n) => println!("{}: a valid plugin (loads as {n:?})", path.display()),
                    Err(why) => println!(
                        "{}: a valid component, but the file name is not a plugin name: {why}",
                        path.display()
                    ),
                }
                println!(
                    "world: wasm-sup:plugin/{}",
                    v["world"].as_str().unwrap_or("?")
                );
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
    }
    Ok(if ok { 0 } else { FAILED })
}
