//! Resolution: an overlaid [`PluginLayer`] into a [`PluginConfig`], and the
//! `[groups.NAME]` tables into validated [`GroupConfig`]s.
//!
//! Every value was checked while it was read (see [`super::values`]); what is
//! left here are the checks across keys and tables: `restart.initial` not
//! above `restart.max`, group names, parents, cycles and membership. Reads
//! the defaults of [`super::defaults`]; touches no file.

use super::defaults::*;
use super::layer::{GroupLayer, NetworkLayer, PluginLayer};
use super::locate::at;
use super::resolved::{DirGrant, RestartPolicy};
use super::resolved::{GroupConfig, HealthPolicy, NetworkGrant, PluginConfig, StateQuota};
use super::values::{AutoShutdown, Strategy};
use anyhow::Result;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

/// `restart.initial` larger than `restart.max`, the one check across the
/// keys of a plugin: it may combine two layers, so it is made after overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Misordered {
    /// The resolved `restart.initial`.
    pub initial: Duration,
    /// The resolved `restart.max`.
    pub max: Duration,
}

impl std::fmt::Display for Misordered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "restart.initial ({:?}) is larger than restart.max ({:?})",
            self.initial, self.max
        )
    }
}

impl std::error::Error for Misordered {}

impl Misordered {
    /// The error in the file of `top`, the layer laid last (the layers below
    /// it were resolved on their own, so `top` sets `initial` or `max`): at
    /// `initial` if `top` sets it, else at `max`. `table` is `top`'s table
    /// (`defaults`, `plugins.NAME`, or empty for `NAME.toml`).
    pub fn locate(&self, path: &Path, src: &str, table: &str, top: &PluginLayer) -> anyhow::Error {
        let restart = top.restart.as_ref();
        let sub = if table.is_empty() {
            "restart".to_string()
        } else {
            format!("{table}.restart")
        };
        let (initial, max) = (self.initial, self.max);
        let (key, span, message) = if let Some(s) = restart.and_then(|r| r.initial.as_ref()) {
            let m = format!("{initial:?} is larger than restart.max ({max:?})");
            ("initial", Some(s.span()), m)
        } else if let Some(s) = restart.and_then(|r| r.max.as_ref()) {
            let m = format!("{max:?} is smaller than restart.initial ({initial:?})");
            ("max", Some(s.span()), m)
        } else {
            ("initial", None, self.to_string())
        };
        anyhow::anyhow!(at(path, src, span, &sub, Some(key), &message))
    }
}

fn spanned<T: Copy, U>(v: Option<Spanned<T>>, get: impl Fn(T) -> U) -> Option<U> {
    v.map(|s| get(*s.get_ref()))
}

fn restart_policy(l: Option<super::layer::RestartLayer>) -> Result<RestartPolicy, Misordered> {
    let mut restart = default_restart();
    if let Some(r) = l {
        macro_rules! set {
            ($($f:ident $(. $inner:tt)?),*) => {
                $( if let Some(v) = r.$f { restart.$f = v $(. $inner)?; } )*
            };
        }
        set!(
            kind,
            backoff,
            multiplier.0,
            jitter.0,
            window.0,
            reset_after.0,
            cooldown_max.0
        );
        if let Some(v) = spanned(r.initial, |d| d.0) {
            restart.initial = v;
        }
        if let Some(v) = spanned(r.max, |d| d.0) {
            restart.max = v;
        }
        if let Some(n) = r.max_restarts {
            restart.max_restarts = n.get_u32();
        }
        if let Some(n) = r.max_attempts {
            restart.max_attempts = n.non_zero();
        }
        if let Some(c) = r.cooldown {
            restart.cooldown = c.get();
        }
    }
    if restart.initial > restart.max {
        return Err(Misordered {
            initial: restart.initial,
            max: restart.max,
        });
    }
    Ok(restart)
}

impl PluginConfig {
    /// Resolves a fully overlaid layer into concrete values; host paths of
    /// `dirs` are resolved against `dir`.
    pub fn resolve(l: PluginLayer, dir: &Path) -> Result<PluginConfig, Misordered> {
        let restart = restart_policy(l.restart)?;
        let mut health: HealthPolicy = default_health();
        if let Some(h) = l.health {
            if let Some(v) = h.interval {
                health.interval = v.0;
            }
            if let Some(v) = h.timeout {
                health.timeout = v.0;
            }
            if let Some(v) = h.threshold {
                health.threshold = v.non_zero();
            }
        }
        let mut state: StateQuota = default_state_quota();
        if let Some(s) = l.state {
            if let Some(v) = s.max_keys {
                state.max_keys = v.0;
            }
            if let Some(v) = s.max_bytes {
                state.max_bytes = v.0;
            }
        }
        let network = match l.network {
            None | Some(NetworkLayer::All(false)) => NetworkGrant::Denied,
            Some(NetworkLayer::All(true)) => NetworkGrant::Any,
            Some(NetworkLayer::Patterns(p)) => NetworkGrant::Patterns(p),
        };
        let dirs = l
            .dirs
            .unwrap_or_default()
            .0
            .into_iter()
            .map(|d| DirGrant {
                host: dir.join(&d.host),
                guest: d.guest,
                mode: d.mode,
            })
            .collect();
        Ok(PluginConfig {
            memory: l.memory.map_or_else(default_memory, |s| s.0),
            fuel: match l.fuel.map_or_else(default_fuel, |n| n.0) {
                0 => None,
                n => Some(n),
            },
            timeout: l.timeout.map_or_else(default_timeout, |d| d.0),
            reply_timeout: l.reply_timeout.map_or_else(default_reply_timeout, |d| d.0),
            idempotency_window: l
                .idempotency_window
                .map_or_else(default_idempotency_window, |d| d.0),
            max_message: l.max_message.map_or_else(default_max_message, |s| s.0),
            max_reply: l.max_reply.map_or_else(default_max_reply, |s| s.0),
            mailbox: l.mailbox.map_or_else(default_mailbox, |n| n.get()),
            output: l.output.map_or_else(default_output, |s| s.0),
            shutdown_timeout: l
                .shutdown_timeout
                .map_or_else(default_shutdown_timeout, |d| d.0),
            config: l.config.unwrap_or_default().0,
            env: l.env.unwrap_or_default().0,
            dirs,
            network,
            tick: l.tick.and_then(|t| t.get()),
            upgrade_probation: l
                .upgrade_probation
                .map_or_else(default_upgrade_probation, |d| d.0),
            restart,
            health,
            state,
        })
    }
}

/// Checks the `[groups.NAME]` tables of `path` together: names, parents,
/// cycles, membership. An error names the group's table and its line.
pub fn validate_groups(
    path: &Path,
    src: &str,
    groups: BTreeMap<String, Spanned<GroupLayer>>,
) -> Result<BTreeMap<String, GroupConfig>> {
    let err = |name: &str, msg: String| {
        let span = groups.get(name).map(Spanned::span);
        anyhow::anyhow!(at(path, src, span, &format!("groups.{name}"), None, &msg))
    };
    let mut seen_members = BTreeSet::new();
    for (name, g) in &groups {
        let g = g.get_ref();
        crate::name::validate_name(name).map_err(|why| err(name, why))?;
        if let Some(p) = &g.parent
            && !groups.contains_key(p)
        {
            return Err(err(
                name,
                format!("parent {p:?} is not a group defined in this file"),
            ));
        }
        for m in &g.members {
            if !seen_members.insert(m.clone()) {
                return Err(err(
                    name,
                    format!("{m:?} is a member of more than one group"),
                ));
            }
        }
        for s in &g.significant {
            if !g.members.contains(s) {
                return Err(err(
                    name,
                    format!("significant member {s:?} is not in members"),
                ));
            }
        }
        // Walk up the parents: a cycle never reaches the root.
        let mut cur = g.parent.clone();
        let mut depth = 0;
        while let Some(p) = cur {
            depth += 1;
            if depth > groups.len() {
                return Err(err(name, "the parent chain is a cycle".to_string()));
            }
            cur = groups.get(&p).and_then(|g| g.get_ref().parent.clone());
        }
    }
    let restart = default_restart();
    Ok(groups
        .into_iter()
        .map(|(name, g)| {
            let g = g.into_inner();
            let cfg = GroupConfig {
                strategy: g.strategy.unwrap_or(Strategy::OneForOne),
                members: g.members.0,
                max_restarts: g.max_restarts.map_or(restart.max_restarts, |n| n.get_u32()),
                window: g.window.map_or(restart.window, |d| d.0),
                parent: g.parent,
                auto_shutdown: g.auto_shutdown.unwrap_or(AutoShutdown::Never),
                significant: g.significant.0,
            };
            (name, cfg)
        })
        .collect())
}
