//! The raw, layered form of the configuration, exactly as the TOML files say it.
//!
//! Every plugin key is optional in a layer: `[defaults]`, `[plugins.NAME]` and
//! `DIR/NAME.toml` are each a [`PluginLayer`], overlaid in that order (later
//! wins, key by key; `config` and `env` tables merge by entry). Resolution into
//! concrete values happens in [`super::PluginConfig::resolve`].
//!
//! Each duration, size and count names its allowed range in its type
//! (`Dur<1, HOUR>`: 1ms to 1h; see [`super::values`]); docs/configuration.md
//! lists them. Every value is checked here, while it is read, so its error
//! points at its own line; the few that are checked later, across keys or
//! tables, keep their place in the file as a [`Spanned`].

use super::resolved::AddrPattern;
use super::values::*;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use std::collections::BTreeMap;
use toml::Spanned;

/// `DIR/wasm-sup.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "the tables [host], [defaults], [plugins.NAME] and [groups.NAME]"
)]
pub struct FileLayer {
    /// Host-wide settings.
    #[serde(default)]
    pub host: HostLayer,
    /// Defaults for every plugin.
    #[serde(default)]
    pub defaults: PluginLayer,
    /// Per-plugin settings; the span places a bad name.
    #[serde(default)]
    pub plugins: BTreeMap<String, Spanned<PluginLayer>>,
    /// Supervision groups; the span places an error across groups.
    #[serde(default)]
    pub groups: BTreeMap<String, Spanned<GroupLayer>>,
}

/// `[host]`.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a table of [host] keys"
)]
pub struct HostLayer {
    /// State location: a path (relative to DIR) or `"memory"`.
    /// Example: `state = ".wasm-sup/state.redb"`
    pub state: Option<String>,
    /// Admin API address, checked unless `--admin` wins. Example:
    /// `admin = "127.0.0.1:9070"`
    pub admin: Option<Spanned<String>>,
    /// The root group's restart budget. Example: `max-restarts = 100`
    pub max_restarts: Option<Count<0, U32>>,
    /// The window of the root budget. Example: `window = "60s"`
    pub window: Option<Dur<1, WEEK>>,
    /// Interval of the epoch ticker. Example: `epoch-tick = "10ms"`
    pub epoch_tick: Option<Dur<1, SEC>>,
    /// Crash reports kept per plugin. Example: `crash-reports = 100`
    pub crash_reports: Option<Count<1, 10_000>>,
    /// Dead letters kept per plugin. Example: `dead-letters = 1000`
    pub dead_letters: Option<Count<1, 100_000>>,
    /// Wasm coredumps of crashed instances: a disk budget, or "off".
    /// Example: `coredumps = "256MiB"`
    pub coredumps: Option<SizeOrOff<1, { 1024 * GIB }>>,
    /// Disk budget of the compile cache, or "off". Example: `compile-cache = "1GiB"`
    pub compile_cache: Option<SizeOrOff<1, { 1024 * GIB }>>,
    /// Largest plugin file read; a larger one is refused. Example:
    /// `max-plugin-file = "256MiB"`
    pub max_plugin_file: Option<Size<1, { 4 * GIB }>>,
    /// Watch DIR and apply changes while running. Example: `watch = true`
    pub watch: Option<bool>,
    /// Plugin instances the pooling allocator holds slots for; 0: no pool.
    /// Example: `instance-pool = 1000`
    pub instance_pool: Option<Count<0, 15_000>>,
    /// Compile fuel metering into plugin code (`fuel` limits). Example:
    /// `fuel-metering = true`
    pub fuel_metering: Option<bool>,
    /// Join a cluster on this PostgreSQL database. Example:
    /// `cluster = "postgres://wasm_sup@db:5432/wasm_sup"`
    pub cluster: Option<String>,
    /// This node's name in the cluster. Example: `node = "node-a"`
    pub node: Option<String>,
    /// The address other nodes forward requests to. Example:
    /// `advertise = "10.0.0.5:9070"`
    pub advertise: Option<String>,
    /// How long a node's lease lasts without renewal. Example: `lease = "10s"`
    pub lease: Option<Dur<1000, { 600 * SEC }>>,
}

/// One layer of plugin settings (`[defaults]`, `[plugins.NAME]`, `NAME.toml`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a table of plugin keys"
)]
pub struct PluginLayer {
    /// Max linear memory per instance. Example: `memory = "64MiB"`
    pub memory: Option<Size<{ 64 * KIB }, { 4 * GIB }>>,
    /// Fuel per call, 0 = unmetered. Example: `fuel = 1_000_000_000`
    pub fuel: Option<Count<0, { u64::MAX }>>,
    /// Wall clock per call. Example: `timeout = "5s"`
    pub timeout: Option<Dur<1, HOUR>>,
    /// How long a synchronous sender waits. Example: `reply-timeout = "30s"`
    pub reply_timeout: Option<Dur<1, HOUR>>,
    /// How long the answer to an `Idempotency-Key` is kept. Example:
    /// `idempotency-window = "24h"`
    pub idempotency_window: Option<Dur<SEC, WEEK>>,
    /// Largest message accepted. Example: `max-message = "1MiB"`
    pub max_message: Option<Size<0, { 64 * MIB }>>,
    /// Largest reply accepted. Example: `max-reply = "1MiB"`
    pub max_reply: Option<Size<0, { 64 * MIB }>>,
    /// Mailbox capacity. Example: `mailbox = 1024`
    pub mailbox: Option<Count<1, 1_000_000>>,
    /// Guest stdout/stderr bytes per second. Example: `output = "64KiB"`
    pub output: Option<Size<0, { 64 * MIB }>>,
    /// Time for a graceful stop. Example: `shutdown-timeout = "5s"`
    pub shutdown_timeout: Option<Dur<0, HOUR>>,
    /// Served through wasi:config. Example: `config = { greeting = "hi" }`
    pub config: Option<ConfigTable>,
    /// Environment granted. Example: `env = { LANG = "C" }`
    pub env: Option<EnvTable>,
    /// Preopened directories.
    /// Example: `dirs = [{ host = "data/counter", guest = "/data", mode = "ro" }]`
    pub dirs: Option<List<DirLayer>>,
    /// Network access. Example: `network = ["127.0.0.1:6379"]`
    pub network: Option<NetworkLayer>,
    /// Periodic message. Example: `tick = "1s"`
    pub tick: Option<OffOr<1, DAY>>,
    /// Rollback window after an upgrade. Example: `upgrade-probation = "30s"`
    pub upgrade_probation: Option<Dur<0, WEEK>>,
    /// `[restart]` keys.
    pub restart: Option<RestartLayer>,
    /// `[health]` keys.
    pub health: Option<HealthLayer>,
    /// `[state]` keys.
    pub state: Option<StateLayer>,
}

/// A preopened directory grant.
#[derive(Clone, Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a directory grant like { host = \"data\", guest = \"/data\" }"
)]
pub struct DirLayer {
    /// Host path, relative to DIR.
    pub host: String,
    /// Path seen by the guest, absolute.
    #[serde(deserialize_with = "absolute_guest_path")]
    pub guest: String,
    /// `ro` (default) or `rw`.
    #[serde(default = "default_dir_mode")]
    pub mode: DirMode,
}

impl ListOf for DirLayer {
    const EXPECTING: &'static str =
        "a list of tables like [{ host = \"data\", guest = \"/data\", mode = \"ro\" }]";
}

fn default_dir_mode() -> DirMode {
    DirMode::Ro
}

/// `network = false | true | ["host:port", …]`.
#[derive(Clone, Debug)]
pub enum NetworkLayer {
    /// All or nothing.
    All(bool),
    /// Allowed `host:port` patterns.
    Patterns(Vec<AddrPattern>),
}

impl<'de> Deserialize<'de> for NetworkLayer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NetworkLayer;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true, false or a list of patterns like [\"127.0.0.1:6379\"]")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<NetworkLayer, E> {
                Ok(NetworkLayer::All(v))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<NetworkLayer, A::Error> {
                let mut patterns = Vec::new();
                while let Some(p) = seq.next_element()? {
                    patterns.push(p);
                }
                Ok(NetworkLayer::Patterns(patterns))
            }
        }
        d.deserialize_any(V)
    }
}

/// `[restart]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a table of restart keys"
)]
pub struct RestartLayer {
    /// Example: `type = "transient"`
    #[serde(rename = "type")]
    pub kind: Option<RestartType>,
    /// Example: `backoff = "fixed"`
    pub backoff: Option<BackoffKind>,
    /// Example: `initial = "100ms"`; must not exceed `max` (the span places that error)
    pub initial: Option<Spanned<Dur<0, HOUR>>>,
    /// Example: `max = "30s"`
    pub max: Option<Spanned<Dur<0, HOUR>>>,
    /// Example: `multiplier = 2.0`
    pub multiplier: Option<Multiplier>,
    /// Example: `jitter = 0.1`
    pub jitter: Option<Fraction>,
    /// Example: `max-restarts = 5`
    pub max_restarts: Option<Count<0, U32>>,
    /// Example: `window = "60s"`
    pub window: Option<Dur<1, WEEK>>,
    /// Example: `reset-after = "60s"`
    pub reset_after: Option<Dur<0, WEEK>>,
    /// Example: `max-attempts = 2`
    pub max_attempts: Option<Count<1, U32>>,
    /// Example: `cooldown = "60s"` or `"off"`
    pub cooldown: Option<OffOr<1, WEEK>>,
    /// Example: `cooldown-max = "10m"`
    pub cooldown_max: Option<Dur<1, WEEK>>,
}

/// `[health]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a table of health keys"
)]
pub struct HealthLayer {
    /// Example: `interval = "10s"`
    pub interval: Option<Dur<1, DAY>>,
    /// Example: `timeout = "1s"`
    pub timeout: Option<Dur<1, HOUR>>,
    /// Example: `threshold = 3`
    pub threshold: Option<Count<1, U32>>,
}

/// `[state]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a table of state keys"
)]
pub struct StateLayer {
    /// Example: `max-keys = 100_000`
    pub max_keys: Option<Count<0, { u64::MAX }>>,
    /// Example: `max-bytes = "64MiB"`
    pub max_bytes: Option<Size<0, { 1024 * GIB }>>,
}

/// `[groups.NAME]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    expecting = "a table of group keys"
)]
pub struct GroupLayer {
    /// Example: `strategy = "one-for-all"`
    pub strategy: Option<Strategy>,
    /// Start order. Example: `members = ["db", "api"]`
    #[serde(default)]
    pub members: List<String>,
    /// Example: `max-restarts = 3`
    pub max_restarts: Option<Count<0, U32>>,
    /// Example: `window = "60s"`
    pub window: Option<Dur<1, WEEK>>,
    /// Parent group; the root when absent. Example: `parent = "backend"`
    pub parent: Option<String>,
    /// Example: `auto-shutdown = "never"`
    pub auto_shutdown: Option<AutoShutdown>,
    /// Members whose normal exit counts for `auto-shutdown`.
    #[serde(default)]
    pub significant: List<String>,
}

macro_rules! overlay_fields {
    ($base:ident, $top:ident; $($field:ident),*) => {
        $( if $top.$field.is_some() { $base.$field = $top.$field; } )*
    };
}

impl PluginLayer {
    /// Lays `top` over `self`: every key `top` sets wins.
    pub fn overlay(mut self, top: PluginLayer) -> PluginLayer {
        let PluginLayer {
            config,
            env,
            restart,
            health,
            state,
            ..
        } = top.clone();
        overlay_fields!(self, top; memory, fuel, timeout, reply_timeout, idempotency_window, max_message,
            max_reply, mailbox, output, shutdown_timeout, dirs, network, tick,
            upgrade_probation);
        if let Some(c) = config {
            self.config
                .get_or_insert_with(ConfigTable::default)
                .0
                .extend(c.0);
        }
        if let Some(e) = env {
            self.env.get_or_insert_with(EnvTable::default).0.extend(e.0);
        }
        if let Some(r) = restart {
            let base = self.restart.get_or_insert_with(RestartLayer::default);
            overlay_fields!(base, r; kind, backoff, initial, max, multiplier, jitter,
                max_restarts, window, reset_after, max_attempts, cooldown, cooldown_max);
        }
        if let Some(h) = health {
            let base = self.health.get_or_insert_with(HealthLayer::default);
            overlay_fields!(base, h; interval, timeout, threshold);
        }
        if let Some(s) = state {
            let base = self.state.get_or_insert_with(StateLayer::default);
            overlay_fields!(base, s; max_keys, max_bytes);
        }
        self
    }
}
