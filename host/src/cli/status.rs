//! `wasm-sup status`: the plugin table (with each plugin's owner in a
//! cluster), the host's restart budget, notes on plugins that need a look,
//! the supervision tree, and in a cluster its nodes.

use super::client::Client;
use super::commands::{fail, print_json, wire_name};
use anyhow::Result;
use wasm_sup::admin::api;
use wasm_sup::compile::rollback::short;
use wasm_sup::guest_text::escape;

fn uptime(secs: Option<f64>) -> String {
    match secs {
        None => "-".into(),
        Some(s) if s < 120.0 => format!("{s:.0}s"),
        Some(s) if s < 7200.0 => format!("{:.0}m", s / 60.0),
        Some(s) => format!("{:.1}h", s / 3600.0),
    }
}

/// The first 12 characters of a hash.
/// `wasm-sup status`.
pub async fn status(client: &Client, json: bool) -> Result<u8> {
    let resp = client.get("/v1/plugins").await?;
    if resp.status != 200 {
        return Ok(fail(&resp));
    }
    let list: api::PluginList = resp.json()?;
    if json {
        return print_json(&list);
    }
    // A cluster node answers `/v1/cluster`; a single host has no such path.
    let cluster = match client.get("/v1/cluster").await {
        Ok(r) if r.status == 200 => r.json::<serde_json::Value>().ok(),
        _ => None,
    };
    let owner_column = if cluster.is_some() { "OWNER" } else { "" };
    println!(
        "{:<24} {:<9} {:>10} {:>8}  {:<16} {:>8}  {:<12} {owner_column}",
        "PLUGIN", "STATUS", "GENERATION", "RESTARTS", "LAST CRASH", "UPTIME", "VERSION"
    );
    let budget = &list.budget;
    let mut notes = vec![format!(
        "host restart budget: {} of {} restarts used within {}s",
        budget.used, budget.max_restarts, budget.window_secs
    )];
    for p in &list.plugins {
        let name = &p.name;
        let owner = match (&cluster, &p.owner) {
            (None, _) => "",
            (Some(_), Some(node)) => node.as_str(),
            (Some(_), None) => "(none)",
        };
        println!(
            "{:<24} {:<9} {:>10} {:>8}  {:<16} {:>8}  {:<12} {}",
            name,
            p.status.as_str(),
            p.generation,
            p.restarts,
            p.last_crash.map_or("-", |c| c.as_str()),
            uptime(p.uptime_secs),
            short(&p.sha256),
            escape(owner),
        );
        if let Some(reason) = &p.reason {
            notes.push(format!("{name}: {reason}"));
        }
        if let Some(r) = &p.rollback {
            notes.push(format!(
                "{name}: the upgrade to {} was rolled back: {}",
                short(&r.bad_sha256),
                r.reason
            ));
        }
        if let Some(h) = &p.health
            && h != "healthy"
        {
            notes.push(format!("{name}: health {h}"));
        }
        if p.config_pending {
            notes.push(format!(
                "{name}: a new configuration takes effect at its next start (`wasm-sup restart {name}`)"
            ));
        }
    }
    println!();
    // Reasons and health answers carry guest text: escaped.
    for n in notes {
        println!("{}", escape(&n));
    }
    print_groups(&list.groups);
    if let Some(cluster) = &cluster {
        print_nodes(cluster);
    }
    Ok(0)
}

/// The cluster's nodes under `status` (`GET /v1/cluster`).
fn print_nodes(cluster: &serde_json::Value) {
    let nodes = cluster["nodes"].as_array().cloned().unwrap_or_default();
    println!();
    println!(
        "{:<20} {:<24} {:<8} {:<26} PLUGINS",
        "NODE", "ADDRESS", "LEASE", "LEASE EXPIRES"
    );
    for n in nodes {
        let mut name = n["name"].as_str().unwrap_or("?").to_string();
        if n["self"].as_bool() == Some(true) {
            name.push_str(" (this)");
        }
        let lease = match (n["live"].as_bool(), n["draining"].as_bool()) {
            (Some(true), Some(true)) => "draining",
            (Some(true), _) => "live",
            _ => "expired",
        };
        let plugins: Vec<&str> = n["plugins"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p.as_str()).collect())
            .unwrap_or_default();
        println!(
            "{:<20} {:<24} {:<8} {:<26} {}",
            escape(&name),
            escape(n["address"].as_str().unwrap_or("?")),
            lease,
            n["lease_expires_at"].as_str().unwrap_or("?"),
            escape(&plugins.join(", ")),
        );
    }
}

/// The supervision tree under `status`: each group with its strategy, the
/// restarts it used of its intensity, and its members in start order.
fn print_groups(groups: &[api::GroupInfo]) {
    if groups.is_empty() {
        return;
    }
    println!();
    for g in groups {
        let mut depth = 0;
        let mut parent = g.parent.as_deref();
        while let Some(p) = parent {
            depth += 1;
            parent = groups
                .iter()
                .find(|x| x.name == p)
                .and_then(|x| x.parent.as_deref());
        }
        println!(
            "{}group {} ({}): {} of {} restarts used within {}s; members {}",
            "  ".repeat(depth),
            g.name,
            wire_name(&g.strategy),
            g.used,
            g.max_restarts,
            g.window_secs,
            g.children.join(", ")
        );
    }
}
