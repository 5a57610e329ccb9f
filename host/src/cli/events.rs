//! `wasm-sup events`: tails the admin API's event stream (`GET /v1/events`),
//! one line per event, or with `--json` one [`api::Event`] JSON per line.
//!
//! The stream is Server-Sent Events; this reads its `id:`, `event:` and
//! `data:` lines by hand (a dozen lines; an SSE crate would add a second
//! HTTP stack beside reqwest). When the host goes away the tail reconnects
//! every second with `Last-Event-ID`, so a host restart loses nothing the
//! backlog still holds; `event: reset` and `event: dropped` are told on
//! stderr.

use super::client::{Client, Response};
use anyhow::{Context, Result};
use std::time::Duration;
use wasm_sup::admin::api::{self, ErrorBody, EventKind};
use wasm_sup::compile::rollback::short;
use wasm_sup::guest_text::escape;

/// One SSE event as read off the wire.
#[derive(Debug, Default, PartialEq)]
struct Frame {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

/// Splits SSE text into frames; `buf` keeps an unfinished frame's text.
fn frames(buf: &mut String) -> Vec<Frame> {
    let mut out = Vec::new();
    while let Some(end) = buf.find("\n\n") {
        let block: String = buf.drain(..end + 2).collect();
        let mut f = Frame::default();
        for line in block.lines() {
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => f.id = Some(value.to_string()),
                "event" => f.event = Some(value.to_string()),
                "data" => {
                    if !f.data.is_empty() {
                        f.data.push('\n');
                    }
                    f.data.push_str(value);
                }
                _ => {} // comments (keep-alives) and unknown fields
            }
        }
        if !f.data.is_empty() || f.event.is_some() {
            out.push(f);
        }
    }
    out
}

/// One event as a line of text.
fn line(e: &api::Event) -> String {
    let what = match &e.kind {
        EventKind::Started { generation, sha256 } => {
            format!("generation {generation}, version {}", short(sha256))
        }
        EventKind::Crashed {
            generation,
            cause,
            call,
            decision,
            report,
        } => {
            let report = report.map_or(String::new(), |r| format!(", report {r}"));
            format!("{cause} in {call} (generation {generation}): {decision}{report}")
        }
        EventKind::Restarting { restarts, delay_ms } => {
            format!("restart {restarts} in {delay_ms} ms")
        }
        EventKind::Failed {
            reason,
            retry_in_secs,
        } => match retry_in_secs {
            Some(s) => format!("{}; trying again in {s:.0}s", escape(reason)),
            None => escape(reason).into_owned(),
        },
        EventKind::Stopped { reason } => reason
            .as_deref()
            .map(escape)
            .unwrap_or_default()
            .into_owned(),
        EventKind::Health { health } => escape(health).into_owned(),
        EventKind::Upgraded { from, to } => format!("{} -> {}", short(from), short(to)),
        EventKind::RolledBack { from, to, reason } => {
            format!("{} -> {}: {}", short(from), short(to), escape(reason))
        }
        EventKind::DeadLettered {
            dead_letter,
            causes,
        } => {
            format!("dead letter {dead_letter} after {}", causes.join(", "))
        }
        EventKind::OwnerChanged { from, epoch } => {
            let node = e.node.as_deref().unwrap_or("?");
            match from {
                Some(from) => format!("{} -> {} (epoch {epoch})", escape(from), escape(node)),
                None => format!("claimed by {} (epoch {epoch})", escape(node)),
            }
        }
    };
    match &e.node {
        // Cluster mode: the node it happened on.
        Some(node) => format!(
            "{}  {:<10} {:<20} {:<13} {what}",
            e.time,
            escape(node),
            e.plugin,
            e.kind.name()
        ),
        None => format!("{}  {:<20} {:<13} {what}", e.time, e.plugin, e.kind.name()),
    }
}

/// Tails the stream until interrupted. Returns `Err` (exit 2) only when the
/// first connection fails.
pub async fn events(client: &Client, plugin: Option<&str>, json: bool) -> Result<u8> {
    let query = api::EventQuery {
        plugin: plugin.map(str::to_string),
    };
    let mut last: Option<String> = None;
    let mut first = true;
    loop {
        let resp = match client.stream("/v1/events", &query, last.as_deref()).await {
            Ok(r) => r,
            Err(e) if first => return Err(e),
            Err(_) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if resp.status().as_u16() != 200 {
            // A refusal (401, 400 for a bad name) reads as every command's.
            return Ok(super::commands::fail(&Response::read(resp).await));
        }
        if !first {
            eprintln!("(reconnected)");
        }
        first = false;
        let mut resp = resp;
        let mut buf = String::new();
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) | Err(_) => break,
            };
            buf.push_str(&String::from_utf8_lossy(&chunk));
            for f in frames(&mut buf) {
                match f.event.as_deref() {
                    Some(name @ ("reset" | "dropped")) => {
                        let why = serde_json::from_str::<ErrorBody>(&f.data)
                            .map(|b| b.error)
                            .unwrap_or(f.data);
                        eprintln!("({name}: {})", escape(&why));
                    }
                    _ => {
                        let e: api::Event = serde_json::from_str(&f.data)
                            .context("the admin API sent an event that is not an event")?;
                        if json {
                            println!("{}", serde_json::to_string(&e)?);
                        } else {
                            println!("{}", line(&e));
                        }
                        last = f.id.or(Some(e.id));
                    }
                }
            }
        }
        eprintln!("(the event stream ended; reconnecting)");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_split_at_blank_lines_and_keep_alives_are_skipped() {
        let mut buf = String::from(
            ":\n\nid: r-1\ndata: {\"a\":1}\n\nevent: reset\ndata: {\"error\":\"x\"}\n\nid: r-2\ndata: par",
        );
        let got = frames(&mut buf);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].id.as_deref(), Some("r-1"));
        assert_eq!(got[0].data, "{\"a\":1}");
        assert_eq!(got[1].event.as_deref(), Some("reset"));
        assert_eq!(buf, "id: r-2\ndata: par");
    }
}
