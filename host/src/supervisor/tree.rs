//! The supervision tree (DESIGN.md, "Supervision tree"): groups of plugins
//! with an OTP strategy and intensity, nested under the root. Pure logic: it
//! decides which plugins a crash restarts; the coordinator in
//! [`super::groups`] carries it out.
//!
//! Shape: a group's parent is its `parent` key, else the group that lists it
//! in `members`, else the root. A plugin belongs to the group that lists it,
//! else to the root. A group's children are its `members` in declared order,
//! then child groups it does not list, by name. The root's children are the
//! ungrouped plugins and the top-level groups, by name; the root is
//! one-for-one and its intensity is the host's restart budget.
//!
//! A crash that the plugin's own policy restarts is one restart for its
//! group. Within the group's intensity the strategy picks what restarts:
//! `one-for-one` the plugin, `one-for-all` every member, `rest-for-one` the
//! plugin and the members after it. Past the intensity the group gives up:
//! it is restarted as a whole by its parent, which counts that as one restart
//! of its own (escalation), up to the root; past the root's budget the host
//! gives up.

use crate::config::{AutoShutdown, GroupConfig, Strategy};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

/// A child of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Child {
    Plugin(String),
    Group(String),
}

#[derive(Debug)]
struct Group {
    config: GroupConfig,
    parent: Option<String>,
    children: Vec<Child>,
    recent: VecDeque<Instant>,
    /// Significant members that exited normally.
    exited: BTreeSet<String>,
}

/// What a crash restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The plugin alone, by its own child (one-for-one, or in the root).
    Alone,
    /// A coordinated restart (see [`GroupRestart`]).
    Together(GroupRestart),
    /// A group escalated to the root and the root's budget is exhausted.
    GiveUp {
        /// The group whose restart was one too many.
        group: String,
    },
}

/// A coordinated restart: stop `stop` (in that order, the crashed plugin
/// excluded), then start `start` in that order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRestart {
    /// Plugins to stop, in reverse start order.
    pub stop: Vec<String>,
    /// Plugins to start, in start order (the crashed one included).
    pub start: Vec<String>,
    /// One line for the log: which group did what, and why.
    pub why: String,
    /// The group that restarts them (`root` for the root).
    pub by: String,
    /// Groups that exceeded their intensity on the way up.
    pub escalated: Vec<String>,
}

/// The tree as the admin API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupInfo {
    /// Group name.
    pub name: String,
    /// Strategy.
    pub strategy: Strategy,
    /// Restarts allowed within the window.
    pub max_restarts: u32,
    /// Window, seconds.
    pub window_secs: f64,
    /// Restarts within the window now.
    pub used: u32,
    /// Parent group (`null`: the root).
    pub parent: Option<String>,
    /// Plugins and groups, in start order (groups prefixed `group:`).
    pub children: Vec<String>,
}

/// See the module doc.
#[derive(Debug, Default)]
pub struct Tree {
    groups: BTreeMap<String, Group>,
    /// Plugin → its group (absent: the root).
    plugin_group: BTreeMap<String, String>,
}

impl Tree {
    /// Builds the tree of the configured groups (validated by the config).
    pub fn new(configs: &BTreeMap<String, GroupConfig>) -> Tree {
        let mut listed_by: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, g) in configs {
            for m in &g.members {
                listed_by.insert(m.as_str(), name.as_str());
            }
        }
        let mut groups: BTreeMap<String, Group> = BTreeMap::new();
        let mut plugin_group = BTreeMap::new();
        for (name, g) in configs {
            let parent = g
                .parent
                .clone()
                .or_else(|| listed_by.get(name.as_str()).map(|p| p.to_string()));
            let children = g
                .members
                .iter()
                .map(|m| {
                    if configs.contains_key(m) {
                        Child::Group(m.clone())
                    } else {
                        plugin_group.insert(m.clone(), name.clone());
                        Child::Plugin(m.clone())
                    }
                })
                .collect();
            groups.insert(
                name.clone(),
                Group {
                    config: g.clone(),
                    parent,
                    children,
                    recent: VecDeque::new(),
                    exited: BTreeSet::new(),
                },
            );
        }
        // Child groups their parent does not list come after its members.
        let unlisted: Vec<(String, String)> = groups
            .iter()
            .filter_map(|(name, g)| {
                let p = g.parent.as_ref()?;
                let listed = groups[p].children.contains(&Child::Group(name.clone()));
                (!listed).then(|| (p.clone(), name.clone()))
            })
            .collect();
        for (parent, child) in unlisted {
            if let Some(p) = groups.get_mut(&parent) {
                p.children.push(Child::Group(child));
            }
        }
        Tree {
            groups,
            plugin_group,
        }
    }

    /// Whether any group is configured.
    pub fn is_flat(&self) -> bool {
        self.groups.is_empty()
    }

    /// The group of `plugin` (`None`: the root).
    pub fn group_of(&self, plugin: &str) -> Option<&str> {
        self.plugin_group.get(plugin).map(String::as_str)
    }

    /// The unit of ownership `plugin` belongs to in a cluster: its
    /// top-level group (`group:NAME`), or the plugin itself when it is in
    /// the root (DESIGN.md, "Cluster, precisely").
    pub fn unit_of(&self, plugin: &str) -> String {
        let Some(mut group) = self.group_of(plugin) else {
            return plugin.to_string();
        };
        while let Some(parent) = self.groups.get(group).and_then(|g| g.parent.as_deref()) {
            group = parent;
        }
        format!("group:{group}")
    }

    /// Every plugin of `loaded`, in start order: a depth-first walk from the
    /// root, whose children go by name.
    pub fn start_order(&self, loaded: &[String]) -> Vec<String> {
        let set: BTreeSet<&str> = loaded.iter().map(String::as_str).collect();
        let mut root: Vec<(String, Child)> = loaded
            .iter()
            .filter(|p| !self.plugin_group.contains_key(p.as_str()))
            .map(|p| (p.clone(), Child::Plugin(p.clone())))
            .collect();
        for (name, g) in &self.groups {
            if g.parent.is_none() {
                root.push((name.clone(), Child::Group(name.clone())));
            }
        }
        root.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = Vec::new();
        for (_, c) in root {
            self.collect(&c, &mut out);
        }
        out.retain(|p| set.contains(p.as_str()));
        out
    }

    /// The plugins under `child`, in start order.
    fn collect(&self, child: &Child, out: &mut Vec<String>) {
        match child {
            Child::Plugin(p) => out.push(p.clone()),
            Child::Group(g) => {
                for c in &self.groups[g].children {
                    self.collect(c, out);
                }
            }
        }
    }

    fn groups_under(&self, child: &Child, out: &mut Vec<String>) {
        if let Child::Group(g) = child {
            out.push(g.clone());
            for c in &self.groups[g].children {
                self.groups_under(c, out);
            }
        }
    }

    /// Decides what a restart of `plugin` (which crashed at `now`) restarts.
    /// `root_restart` counts an escalation into the root against the host's
    /// budget and says whether it is within it.
    pub fn on_restart(
        &mut self,
        plugin: &str,
        now: Instant,
        mut root_restart: impl FnMut(&str) -> bool,
    ) -> Plan {
        let Some(first) = self.group_of(plugin).map(str::to_string) else {
            return Plan::Alone;
        };
        let mut child = Child::Plugin(plugin.to_string());
        let mut group = Some(first);
        let mut by: String;
        let mut escalated: Vec<String> = Vec::new();
        let affected: Vec<Child> = loop {
            let Some(g) = group.clone() else {
                // The root: one-for-one over an escalated group.
                let Child::Group(name) = &child else {
                    unreachable!("a plugin of the root never gets here")
                };
                if !root_restart(name) {
                    return Plan::GiveUp {
                        group: name.clone(),
                    };
                }
                by = String::from("root");
                break vec![child];
            };
            by = g.clone();
            let entry = self.groups.get_mut(&g).expect("groups are known");
            let window = entry.config.window;
            while entry
                .recent
                .front()
                .is_some_and(|t| now.duration_since(*t) > window)
            {
                entry.recent.pop_front();
            }
            entry.recent.push_back(now);
            if entry.recent.len() as u32 > entry.config.max_restarts {
                escalated.push(g.clone());
                group = entry.parent.clone();
                child = Child::Group(g);
                continue;
            }
            let pos = entry.children.iter().position(|c| *c == child).unwrap_or(0);
            break match entry.config.strategy {
                Strategy::OneForOne => vec![child],
                Strategy::OneForAll => entry.children.clone(),
                Strategy::RestForOne => entry.children[pos..].to_vec(),
            };
        };
        if affected == [Child::Plugin(plugin.to_string())] {
            return Plan::Alone;
        }
        // A group restarted as a whole starts with a fresh history.
        let mut fresh = Vec::new();
        for c in &affected {
            self.groups_under(c, &mut fresh);
        }
        for g in fresh {
            let entry = self.groups.get_mut(&g).expect("groups are known");
            entry.recent.clear();
            entry.exited.clear();
        }
        let mut start = Vec::new();
        for c in &affected {
            self.collect(c, &mut start);
        }
        let stop = start
            .iter()
            .rev()
            .filter(|p| p.as_str() != plugin)
            .cloned()
            .collect();
        let why = if escalated.is_empty() {
            let strategy = serde_json::to_value(self.groups[&by].config.strategy)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            format!("group {by} ({strategy}) restarts {start:?} after {plugin} crashed")
        } else {
            format!(
                "group {} exceeded its intensity after {plugin} crashed; {by} restarts {start:?}",
                escalated.join(" and then its parent ")
            )
        };
        Plan::Together(GroupRestart {
            stop,
            start,
            why,
            by,
            escalated,
        })
    }

    /// A plugin exited normally and will not be restarted: if it is a
    /// significant member of a group with `auto-shutdown`, the plugins that
    /// group stops now (in stop order).
    pub fn on_normal_exit(&mut self, plugin: &str) -> Option<(String, Vec<String>)> {
        let g = self.group_of(plugin)?.to_string();
        let entry = self.groups.get_mut(&g)?;
        if !entry.config.significant.iter().any(|s| s == plugin) {
            return None;
        }
        entry.exited.insert(plugin.to_string());
        let shut = match entry.config.auto_shutdown {
            AutoShutdown::Never => false,
            AutoShutdown::AnySignificant => true,
            AutoShutdown::AllSignificant => entry
                .config
                .significant
                .iter()
                .all(|s| entry.exited.contains(s)),
        };
        if !shut {
            return None;
        }
        let mut plugins = Vec::new();
        self.collect(&Child::Group(g.clone()), &mut plugins);
        plugins.reverse();
        plugins.retain(|p| p != plugin);
        Some((g, plugins))
    }

    /// Every group, parents before children, for the admin API.
    pub fn info(&self, now: Instant) -> Vec<GroupInfo> {
        let mut order = Vec::new();
        let mut roots: Vec<&String> = self
            .groups
            .iter()
            .filter(|(_, g)| g.parent.is_none())
            .map(|(n, _)| n)
            .collect();
        roots.sort();
        for r in roots {
            self.groups_under(&Child::Group(r.clone()), &mut order);
        }
        order
            .into_iter()
            .map(|name| {
                let g = &self.groups[&name];
                let used = g
                    .recent
                    .iter()
                    .filter(|t| now.duration_since(**t) <= g.config.window)
                    .count() as u32;
                GroupInfo {
                    strategy: g.config.strategy,
                    max_restarts: g.config.max_restarts,
                    window_secs: g.config.window.as_secs_f64(),
                    used,
                    parent: g.parent.clone(),
                    children: g
                        .children
                        .iter()
                        .map(|c| match c {
                            Child::Plugin(p) => p.clone(),
                            Child::Group(g) => format!("group:{g}"),
                        })
                        .collect(),
                    name,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, HostOverrides};

    fn tree(toml: &str) -> Tree {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("wasm-sup.toml"), toml).unwrap();
        let c = Config::load(dir.path(), &HostOverrides::default()).unwrap();
        Tree::new(&c.groups)
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const THREE: &str = r#"
[groups.g]
strategy = "STRATEGY"
members = ["a", "b", "c"]
max-restarts = 2
"#;

    #[test]
    fn each_strategy_picks_its_members_in_order() {
        let now = Instant::now();
        let mut t = tree(&THREE.replace("STRATEGY", "one-for-one"));
        assert_eq!(t.on_restart("b", now, |_| true), Plan::Alone);

        let mut t = tree(&THREE.replace("STRATEGY", "one-for-all"));
        let Plan::Together(GroupRestart { stop, start, .. }) = t.on_restart("b", now, |_| true)
        else {
            panic!("one-for-all restarts together")
        };
        assert_eq!(stop, names(&["c", "a"]));
        assert_eq!(start, names(&["a", "b", "c"]));

        let mut t = tree(&THREE.replace("STRATEGY", "rest-for-one"));
        let Plan::Together(GroupRestart { stop, start, .. }) = t.on_restart("b", now, |_| true)
        else {
            panic!("rest-for-one restarts together")
        };
        assert_eq!(stop, names(&["c"]));
        assert_eq!(start, names(&["b", "c"]));
        assert_eq!(
            t.on_restart("c", now, |_| true),
            Plan::Alone,
            "nothing after c"
        );
    }

    #[test]
    fn a_group_past_its_intensity_escalates_through_two_levels() {
        let mut t = tree(
            r#"
[groups.outer]
strategy = "one-for-one"
members = ["x", "inner"]
max-restarts = 1
[groups.inner]
strategy = "one-for-one"
members = ["a", "b"]
max-restarts = 1
"#,
        );
        let now = Instant::now();
        assert_eq!(
            t.start_order(&names(&["a", "b", "x", "z"])),
            names(&["x", "a", "b", "z"])
        );
        assert_eq!(t.on_restart("a", now, |_| true), Plan::Alone);
        // inner exceeds 1 restart: outer restarts inner as a whole.
        let Plan::Together(GroupRestart { start, why, .. }) = t.on_restart("a", now, |_| true)
        else {
            panic!("escalated")
        };
        assert_eq!(start, names(&["a", "b"]), "{why}");
        // inner's history is fresh; the next escalation exceeds outer too,
        // and the root restarts outer (within the budget).
        assert_eq!(t.on_restart("b", now, |_| true), Plan::Alone);
        let mut roots = Vec::new();
        let Plan::Together(GroupRestart { start, why, .. }) = t.on_restart("b", now, |g| {
            roots.push(g.to_string());
            true
        }) else {
            panic!("escalated twice")
        };
        assert_eq!(start, names(&["x", "a", "b"]), "{why}");
        assert!(
            why.contains("group inner and then its parent outer exceeded its intensity after b crashed; root restarts"),
            "{why}"
        );
        assert_eq!(roots, names(&["outer"]));
        // With the root's budget gone, the host gives up.
        t.on_restart("a", now, |_| true);
        t.on_restart("a", now, |_| true);
        t.on_restart("a", now, |_| true);
        assert_eq!(
            t.on_restart("a", now, |_| false),
            Plan::GiveUp {
                group: "outer".into()
            }
        );
    }

    #[test]
    fn significant_members_shut_their_group_down() {
        let mut t = tree(
            r#"
[groups.any]
members = ["a", "b", "c"]
auto-shutdown = "any-significant"
significant = ["b"]
[groups.all]
members = ["x", "y"]
auto-shutdown = "all-significant"
significant = ["x", "y"]
"#,
        );
        assert_eq!(t.on_normal_exit("a"), None, "not significant");
        assert_eq!(
            t.on_normal_exit("b"),
            Some(("any".into(), names(&["c", "a"])))
        );
        assert_eq!(t.on_normal_exit("x"), None, "y is still running");
        assert_eq!(t.on_normal_exit("y"), Some(("all".into(), names(&["x"]))));
    }
}
