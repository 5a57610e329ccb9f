//! Configuration: `DIR/wasm-sup.toml` and `DIR/NAME.toml` into validated types.
//!
//! Parsing is two steps, as ripgrep does with its flags: the files deserialize
//! into [`layer`] structs (every key optional, unknown keys refused), then
//! [`Config::plugin`] resolves the layers `[defaults]` < `[plugins.NAME]` <
//! `NAME.toml` into a [`PluginConfig`] of concrete values. Bad values are caught
//! while deserializing, so every error names the file, the line and the key
//! ([`locate`] writes them).
//!
//! Every duration, size and count is bounded while it is deserialized (see
//! [`values`]), so a value out of range is an error naming its file, line, key
//! and range, never an overflow at run time.
//!
//! The parts: [`layer`] (the files as written), [`values`] (each value type),
//! [`lists`] (lists and string tables, with errors that give an example),
//! [`defaults`] (the default of every key), [`resolved`] (the types the host
//! reads), [`resolve`] (layers into those types) and [`locate`] (file:line
//! of an error). This module loads the files and keeps the layers. Plugin
//! names are [`crate::name`]'s; this module imports nothing of discovery.
//!
//! Every key, its default and range are listed in docs/configuration.md; a
//! test keeps that page and the keys of [`layer`] in step.

pub mod defaults;
pub mod layer;
pub mod lists;
pub mod locate;
pub mod resolve;
pub mod resolved;
pub mod values;

use anyhow::{Context, Result};
use layer::{FileLayer, PluginLayer};
use locate::{FileKind, at};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub(crate) use defaults::*;
pub use defaults::{DEFAULT_ADMIN_ADDR, DEFAULT_INSTANCE_POOL};
pub use locate::parse_file;
pub use resolve::Misordered;
pub use resolved::{
    AddrPattern, ClusterConfig, DirGrant, GroupConfig, HealthPolicy, HostConfig, NetworkGrant,
    PluginConfig, RestartPolicy, StateLocation, StateQuota,
};
pub use values::{AutoShutdown, BackoffKind, DirMode, RestartType, Strategy, instant_after};

/// The name of the host-wide configuration file inside DIR.
pub const HOST_CONFIG_FILE: &str = "wasm-sup.toml";

/// The whole configuration of a plugin directory.
#[derive(Debug, Clone)]
pub struct Config {
    /// The plugin directory.
    pub dir: PathBuf,
    /// `[host]`, resolved.
    pub host: HostConfig,
    /// Supervision groups by name, validated: parents exist, no cycles, no plugin
    /// in two groups. Members are names of plugins that may appear later.
    pub groups: BTreeMap<String, GroupConfig>,
    defaults: PluginLayer,
    plugins: BTreeMap<String, PluginLayer>,
}

/// Settings given on the command line, which win over `[host]`.
#[derive(Debug, Clone, Default)]
pub struct HostOverrides {
    /// `--state`.
    pub state: Option<String>,
    /// `--admin`.
    pub admin: Option<SocketAddr>,
    /// `--cluster`.
    pub cluster: Option<String>,
    /// `--node`.
    pub node: Option<String>,
    /// `--advertise`.
    pub advertise: Option<String>,
}

impl Config {
    /// Loads `DIR/wasm-sup.toml` (absent = all defaults). `NAME.toml` files are read
    /// later, per plugin, by [`Config::plugin`].
    pub fn load(dir: &Path, overrides: &HostOverrides) -> Result<Config> {
        let path = dir.join(HOST_CONFIG_FILE);
        let (file, src) = match std::fs::read_to_string(&path) {
            Ok(src) => (parse_file::<FileLayer>(&path, &src, FileKind::Host)?, src),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (FileLayer::default(), String::new())
            }
            Err(e) => {
                return Err(e).with_context(|| format!("failed to read {}", path.display()));
            }
        };
        Config::from_layers(dir, &path, &src, file, overrides)
    }

    fn from_layers(
        dir: &Path,
        path: &Path,
        src: &str,
        file: FileLayer,
        overrides: &HostOverrides,
    ) -> Result<Config> {
        let h = file.host;
        let cluster_url = overrides.cluster.clone().or(h.cluster.clone());
        let state = overrides
            .state
            .clone()
            .or(h.state.clone())
            .map(|s| StateLocation::parse(&s, dir));
        let state = match (&cluster_url, state) {
            (None, state) => state
                .unwrap_or_else(|| StateLocation::Redb(dir.join(".wasm-sup").join("state.redb"))),
            (Some(url), None) => StateLocation::Postgres(url.clone()),
            (Some(url), Some(StateLocation::Postgres(s))) if &s == url => {
                StateLocation::Postgres(s)
            }
            (Some(_), Some(_)) => anyhow::bail!(
                "--state and --cluster name different places: in cluster mode every plugin's state lives in the cluster's database; drop --state (or [host] state)"
            ),
        };
        let admin = match (overrides.admin, h.admin.clone()) {
            (Some(a), _) => a,
            (None, Some(a)) => a.get_ref().parse().map_err(|_| {
                let why = format!(
                    "invalid address {:?}: write e.g. \"127.0.0.1:9070\"",
                    a.get_ref()
                );
                anyhow::anyhow!(at(path, src, Some(a.span()), "host", Some("admin"), &why))
            })?,
            (None, None) => DEFAULT_ADMIN_ADDR
                .parse()
                .expect("the default address parses"),
        };
        // Coredumps and the compile cache live beside the state file.
        let data_dir = match &state {
            StateLocation::Redb(p) => p.parent().unwrap_or(dir).to_path_buf(),
            StateLocation::Memory | StateLocation::Postgres(_) => dir.join(".wasm-sup"),
        };
        let host = HostConfig {
            state: state.clone(),
            admin,
            max_restarts: h
                .max_restarts
                .map_or_else(default_root_max_restarts, |n| n.get_u32()),
            window: h.window.map_or_else(default_root_window, |d| d.0),
            epoch_tick: h.epoch_tick.map_or_else(default_epoch_tick, |d| d.0),
            crash_reports: h
                .crash_reports
                .map_or_else(default_crash_reports, |n| n.get()),
            dead_letters: h
                .dead_letters
                .map_or_else(default_dead_letters, |n| n.get()),
            max_plugin_file: h
                .max_plugin_file
                .map_or_else(default_max_plugin_file, |s| s.0),
            coredumps: h.coredumps.and_then(|c| c.0),
            // Absolute, so a crash report's coredump path works from any
            // directory (`wasm-sup run plugins` names a relative DIR).
            coredump_dir: std::path::absolute(data_dir.join("coredumps"))
                .unwrap_or_else(|_| data_dir.join("coredumps")),
            compile_cache: h
                .compile_cache
                .map_or(Some(default_compile_cache()), |c| c.0),
            cache_dir: data_dir.join("cache"),
            watch: h.watch.unwrap_or(true),
            instance_pool: h.instance_pool.map_or(DEFAULT_INSTANCE_POOL, |n| {
                u32::try_from(n.0).unwrap_or(u32::MAX)
            }),
            fuel_metering: h.fuel_metering.unwrap_or(true),
            cluster: match cluster_url {
                None => None,
                Some(url) => Some(cluster_config(url, &h, overrides, admin)?),
            },
        };
        for (name, layer) in &file.plugins {
            if let Err(why) = crate::name::validate_name(name) {
                let table = format!("plugins.{name}");
                anyhow::bail!(at(path, src, Some(layer.span()), &table, None, &why));
            }
        }
        let groups = resolve::validate_groups(path, src, file.groups)?;
        // Resolve the defaults and each [plugins.NAME] now, so that a bad
        // combination is reported at load, before any plugin starts.
        PluginConfig::resolve(file.defaults.clone(), dir)
            .map_err(|e| e.locate(path, src, "defaults", &file.defaults))?;
        for (name, layer) in &file.plugins {
            let merged = file.defaults.clone().overlay(layer.get_ref().clone());
            PluginConfig::resolve(merged, dir)
                .map_err(|e| e.locate(path, src, &format!("plugins.{name}"), layer.get_ref()))?;
        }
        Ok(Config {
            dir: dir.to_path_buf(),
            host,
            groups,
            defaults: file.defaults,
            plugins: file
                .plugins
                .into_iter()
                .map(|(name, layer)| (name, layer.into_inner()))
                .collect(),
        })
    }

    /// The resolved settings of plugin `name`, reading `DIR/NAME.toml` if present.
    pub fn plugin(&self, name: &str) -> Result<PluginConfig> {
        let path = self.dir.join(format!("{name}.toml"));
        match std::fs::read_to_string(&path) {
            Ok(src) => {
                let own = parse_file::<PluginLayer>(&path, &src, FileKind::Plugin)?;
                let top = own.clone();
                self.resolve(name, Some(own))
                    .map_err(|e| e.locate(&path, &src, "", &top))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.resolve(name, None).map_err(anyhow::Error::from)
            }
            Err(e) => Err(e).with_context(|| format!("failed to read {}", path.display())),
        }
    }

    fn resolve(&self, name: &str, own: Option<PluginLayer>) -> Result<PluginConfig, Misordered> {
        let mut layer = self.defaults.clone();
        if let Some(p) = self.plugins.get(name) {
            layer = layer.overlay(p.clone());
        }
        if let Some(own) = own {
            layer = layer.overlay(own);
        }
        PluginConfig::resolve(layer, &self.dir)
    }

    /// Names of the plugins that have a `[plugins.NAME]` table.
    pub fn configured_plugins(&self) -> impl Iterator<Item = &str> {
        self.plugins.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod reference_tests;
#[cfg(test)]
mod tests;

/// Cluster mode's settings from `[host]` and the command line (which wins).
fn cluster_config(
    url: String,
    h: &layer::HostLayer,
    overrides: &HostOverrides,
    admin: SocketAddr,
) -> Result<ClusterConfig> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        anyhow::bail!(
            "--cluster {url:?} is not a PostgreSQL URL: write postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
        );
    }
    let node = match overrides.node.clone().or(h.node.clone()) {
        Some(n) => n,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!("cannot read this machine's hostname: pass --node NAME")
            })?,
    };
    let node_ok = !node.is_empty()
        && node.len() <= 63
        && node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !node_ok {
        anyhow::bail!(
            "invalid node name {node:?}: use 1 to 63 letters, digits, '-', '_' or '.' (--node NAME)"
        );
    }
    let advertise = match overrides.advertise.clone().or(h.advertise.clone()) {
        Some(a) => a,
        None if admin.ip().is_unspecified() => anyhow::bail!(
            "the admin API listens on {admin}, which other nodes cannot dial: pass --advertise HOST:PORT (the address they reach this node at)"
        ),
        None => admin.to_string(),
    };
    let port_ok = advertise
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !port_ok || advertise.contains('/') {
        anyhow::bail!("invalid --advertise {advertise:?}: write HOST:PORT, e.g. 10.0.0.5:9070");
    }
    Ok(ClusterConfig {
        url,
        node,
        advertise,
        lease: h.lease.map_or(DEFAULT_LEASE, |d| d.0),
    })
}
