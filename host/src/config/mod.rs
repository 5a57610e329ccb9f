//! Configuration: `DIR/wasm-sup.toml` and `DIR/NAME.toml` into validated types.
//!
//! Parsing is two steps, as ripgrep does with its flags: the files deserialize
//! into [`layer`] structs (every key optional, unknown keys refused), then
//! [`Config::plugin`] resolves the layers `[defaults]` < `[plugins.NAME]` <
//! `NAME.toml` into a [`PluginConfig`] of concrete values. Bad values are caught
//! while deserializing, so every error names the file, the line and the key.
//!
//! Every duration, size and count is bounded while it is deserialized (see
//! [`values`]), so a value out of range is an error naming its file, line, key
//! and range, never an overflow at run time.
//!
//! The defaults live in the `default_*` functions below; if one changes, update
//! the configuration reference in README.md and DESIGN.md.

pub mod layer;
pub mod values;

use anyhow::{Context, Result, bail};
use layer::{FileLayer, GroupLayer, NetworkLayer, PluginLayer};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;
pub use values::{AutoShutdown, BackoffKind, DirMode, RestartType, Strategy, instant_after};

/// The name of the host-wide configuration file inside DIR.
pub const HOST_CONFIG_FILE: &str = "wasm-sup.toml";

// Defaults. If one changes, update README.md ("Configuration") and DESIGN.md.
fn default_memory() -> u64 {
    64 << 20
}
fn default_fuel() -> u64 {
    1_000_000_000
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_reply_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_message() -> u64 {
    1 << 20
}
fn default_max_reply() -> u64 {
    1 << 20
}
fn default_mailbox() -> usize {
    1024
}
fn default_output() -> u64 {
    64 << 10
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_upgrade_probation() -> Duration {
    Duration::from_secs(30)
}
/// The default restart policy (DESIGN.md's `[defaults.restart]`).
pub(crate) fn default_restart() -> RestartPolicy {
    RestartPolicy {
        kind: RestartType::Permanent,
        backoff: BackoffKind::Exponential,
        initial: Duration::from_millis(100),
        max: Duration::from_secs(30),
        multiplier: 2.0,
        jitter: 0.1,
        max_restarts: 5,
        window: Duration::from_secs(60),
        reset_after: Duration::from_secs(60),
        max_attempts: NonZeroU32::new(2).expect("2 is not zero"),
        cooldown: Some(Duration::from_secs(60)),
        cooldown_max: Duration::from_secs(600),
    }
}
fn default_health() -> HealthPolicy {
    HealthPolicy {
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(1),
        threshold: NonZeroU32::new(3).expect("3 is not zero"),
    }
}
fn default_state_quota() -> StateQuota {
    StateQuota {
        max_keys: 100_000,
        max_bytes: 64 << 20,
    }
}
/// Default admin API address.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9070";
fn default_root_max_restarts() -> u32 {
    100
}
fn default_root_window() -> Duration {
    Duration::from_secs(60)
}
fn default_epoch_tick() -> Duration {
    Duration::from_millis(10)
}
fn default_crash_reports() -> usize {
    100
}
/// `[host] instance-pool` by default.
pub const DEFAULT_INSTANCE_POOL: u32 = 1000;

fn default_compile_cache() -> u64 {
    1 << 30
}
fn default_dead_letters() -> usize {
    1000
}
fn default_max_plugin_file() -> u64 {
    256 << 20
}

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

/// Host-wide settings (`[host]`).
#[derive(Debug, Clone, PartialEq)]
pub struct HostConfig {
    /// Where plugin state lives.
    pub state: StateLocation,
    /// Admin API address.
    pub admin: SocketAddr,
    /// The root group's restart budget: restarts within `window`.
    pub max_restarts: u32,
    /// Window of the root budget.
    pub window: Duration,
    /// Epoch ticker interval.
    pub epoch_tick: Duration,
    /// Crash reports kept per plugin.
    pub crash_reports: usize,
    /// Dead letters kept per plugin.
    pub dead_letters: usize,
    /// Disk budget for wasm coredumps of crashed instances; `None`: off.
    pub coredumps: Option<u64>,
    /// Where coredumps are written: `coredumps/` beside the state file
    /// (`DIR/.wasm-sup/coredumps` with the memory backend).
    pub coredump_dir: PathBuf,
    /// Disk budget of the compile cache; `None`: off.
    pub compile_cache: Option<u64>,
    /// Where compiled components (and rollback markers) are kept: `cache/`
    /// beside the state file (`DIR/.wasm-sup/cache` with the memory backend).
    pub cache_dir: PathBuf,
    /// Plugin instances the pooling allocator reserves slots for (each
    /// running plugin is one); 0: instances are allocated on demand.
    pub instance_pool: u32,
    /// Whether plugin code counts fuel. Off, `fuel` limits are not enforced
    /// (the `timeout` still stops a runaway call) and CPU-bound code runs
    /// faster (see the README's Performance).
    pub fuel_metering: bool,
    /// Whether DIR is watched for added, changed and removed files.
    pub watch: bool,
    /// Largest plugin file read, bytes; a larger one is refused at load.
    pub max_plugin_file: u64,
}

/// Where plugin state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateLocation {
    /// A redb file.
    Redb(PathBuf),
    /// In memory: atomic, not durable.
    Memory,
}

impl StateLocation {
    /// Parses `"memory"` or a path (relative to `base`).
    pub fn parse(s: &str, base: &Path) -> StateLocation {
        if s == "memory" {
            StateLocation::Memory
        } else {
            StateLocation::Redb(base.join(s))
        }
    }
}

/// A validated `[groups.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupConfig {
    /// Restart strategy.
    pub strategy: Strategy,
    /// Members in start order (plugins or groups).
    pub members: Vec<String>,
    /// Intensity: restarts within `window`.
    pub max_restarts: u32,
    /// Intensity window.
    pub window: Duration,
    /// Parent group (`None`: the root).
    pub parent: Option<String>,
    /// OTP auto_shutdown.
    pub auto_shutdown: AutoShutdown,
    /// Significant members.
    pub significant: Vec<String>,
}

/// Everything the host needs to know about one plugin, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    /// Max linear memory per instance, bytes.
    pub memory: u64,
    /// Fuel per call; `None` = unmetered.
    pub fuel: Option<u64>,
    /// Wall clock per call.
    pub timeout: Duration,
    /// How long a synchronous sender waits for an outcome.
    pub reply_timeout: Duration,
    /// Largest message, bytes.
    pub max_message: u64,
    /// Largest reply, bytes.
    pub max_reply: u64,
    /// Mailbox capacity.
    pub mailbox: usize,
    /// Guest output bytes per second.
    pub output: u64,
    /// Time for a graceful stop.
    pub shutdown_timeout: Duration,
    /// wasi:config values.
    pub config: BTreeMap<String, String>,
    /// Environment granted.
    pub env: BTreeMap<String, String>,
    /// Preopened directories (host path resolved against DIR).
    pub dirs: Vec<DirGrant>,
    /// Network grant.
    pub network: NetworkGrant,
    /// Periodic message interval.
    pub tick: Option<Duration>,
    /// Upgrade probation.
    pub upgrade_probation: Duration,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Health probe settings.
    pub health: HealthPolicy,
    /// State quota.
    pub state: StateQuota,
}

/// A preopened directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    /// Host directory.
    pub host: PathBuf,
    /// Guest path.
    pub guest: String,
    /// Access mode.
    pub mode: DirMode,
}

/// What network a plugin may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkGrant {
    /// None (the default).
    Denied,
    /// Any address.
    Any,
    /// Addresses matching one of these patterns.
    Patterns(Vec<AddrPattern>),
}

/// `host:port` where either may be `*`; host is an IP address or `localhost`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrPattern {
    /// `None` = any host.
    pub ips: Option<Vec<std::net::IpAddr>>,
    /// `None` = any port.
    pub port: Option<u16>,
}

impl AddrPattern {
    fn parse(s: &str) -> Result<AddrPattern, String> {
        let bad = || {
            format!(
                "invalid network pattern {s:?}: write \"IP:PORT\", \"localhost:PORT\", \"[::1]:PORT\", with * for any host or port"
            )
        };
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port = match port {
            "*" => None,
            p => Some(p.parse::<u16>().map_err(|_| bad())?),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ips = match host {
            "*" => None,
            "localhost" => Some(vec![
                std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::Ipv6Addr::LOCALHOST.into(),
            ]),
            h => Some(vec![h.parse().map_err(|_| bad())?]),
        };
        Ok(AddrPattern { ips, port })
    }

    /// Whether `addr` matches.
    pub fn matches(&self, addr: &SocketAddr) -> bool {
        self.port.is_none_or(|p| p == addr.port())
            && self.ips.as_ref().is_none_or(|ips| ips.contains(&addr.ip()))
    }
}

impl NetworkGrant {
    /// Whether the guest may use `addr`.
    pub fn allows(&self, addr: &SocketAddr) -> bool {
        match self {
            NetworkGrant::Denied => false,
            NetworkGrant::Any => true,
            NetworkGrant::Patterns(p) => p.iter().any(|p| p.matches(addr)),
        }
    }
}

/// The `[restart]` policy of a plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartPolicy {
    /// permanent | transient | temporary.
    pub kind: RestartType,
    /// immediate | fixed | exponential.
    pub backoff: BackoffKind,
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Exponential growth per consecutive crash.
    pub multiplier: f64,
    /// Random spread, as a fraction of the delay.
    pub jitter: f64,
    /// Restarts allowed within `window` before the plugin is `failed`.
    pub max_restarts: u32,
    /// Intensity window.
    pub window: Duration,
    /// Healthy uptime that resets the backoff.
    pub reset_after: Duration,
    /// Deliveries of one message before it is dead-lettered.
    pub max_attempts: NonZeroU32,
    /// Time before a failed plugin is tried again; `None` = stays failed.
    pub cooldown: Option<Duration>,
    /// Largest cooldown.
    pub cooldown_max: Duration,
}

/// The `[health]` settings of a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Probe interval.
    pub interval: Duration,
    /// Probe timeout.
    pub timeout: Duration,
    /// Unhealthy answers in a row that restart the plugin.
    pub threshold: NonZeroU32,
}

/// The `[state]` quota of a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateQuota {
    /// Keys across all buckets.
    pub max_keys: u64,
    /// Bytes of keys and values across all buckets.
    pub max_bytes: u64,
}

/// Parses one TOML file into `T`; errors read `FILE:LINE: key `K`: message`.
pub fn parse_file<T: serde::de::DeserializeOwned>(path: &Path, src: &str) -> Result<T> {
    toml::from_str(src).map_err(|e| anyhow::anyhow!(describe_toml_error(path, src, &e)))
}

fn describe_toml_error(path: &Path, src: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return format!("{}: {}", path.display(), e.message());
    };
    let line_no = src[..span.start.min(src.len())].matches('\n').count() + 1;
    let line = src.lines().nth(line_no - 1).unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && !k.starts_with('['))
        .map(|k| format!(" key `{}`", k.trim_matches('"')))
        .unwrap_or_default();
    let table = current_table(src, line_no)
        .map(|t| format!(" [{t}]"))
        .unwrap_or_default();
    format!(
        "{}:{line_no}:{table}{key}: {}",
        path.display(),
        e.message().trim()
    )
}

/// A value that parsed but is not valid, naming its key (`restart.initial`)
/// so the error can point at the line.
#[derive(Debug)]
pub struct KeyError {
    /// Dotted key below the plugin table, e.g. `restart.initial`.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "key `{}`: {}", self.key, self.message)
    }
}

impl std::error::Error for KeyError {}

fn key_error(key: &'static str, message: impl Into<String>) -> anyhow::Error {
    KeyError {
        key,
        message: message.into(),
    }
    .into()
}

/// Formats an error of resolving the plugin table `table` of `src`: a
/// [`KeyError`] gets the line of its key.
fn locate(path: &Path, src: &str, table: &str, e: anyhow::Error) -> anyhow::Error {
    let Some(k) = e.downcast_ref::<KeyError>() else {
        return anyhow::anyhow!("{}: [{table}]: {e:#}", path.display());
    };
    let (sub, leaf) = match k.key.rsplit_once('.') {
        Some((sub, leaf)) => (format!("{table}.{sub}"), leaf),
        None => (table.to_string(), k.key),
    };
    // The key is either under its own [table.sub] header, or inline.
    let line = key_line(src, &sub, leaf)
        .or_else(|| key_line(src, table, k.key.split('.').next().unwrap_or(leaf)));
    match line {
        Some(n) => anyhow::anyhow!(
            "{}:{n}: [{sub}] key `{leaf}`: {}",
            path.display(),
            k.message
        ),
        None => anyhow::anyhow!("{}: [{table}] {k}", path.display()),
    }
}

/// The 1-based line of `key = …` inside `[table]` (the top level when `table` is empty).
fn key_line(src: &str, table: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    for (i, l) in src.lines().enumerate() {
        let t = l.trim();
        if t.starts_with('[') {
            current = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        } else if current == table
            && t.split_once('=')
                .is_some_and(|(k, _)| k.trim().trim_matches('"') == key)
        {
            return Some(i + 1);
        }
    }
    None
}

/// The `[table]` header in force at `line_no` (1-based), if any.
fn current_table(src: &str, line_no: usize) -> Option<String> {
    src.lines()
        .take(line_no)
        .filter_map(|l| {
            let l = l.trim();
            (l.starts_with('[') && !l.starts_with("[["))
                .then(|| l.trim_matches(|c| c == '[' || c == ']').to_string())
        })
        .last()
}

/// The 1-based line of the first line of `src` that starts with `needle`.
fn line_of(src: &str, needle: &str) -> usize {
    src.lines()
        .position(|l| l.trim_start().starts_with(needle))
        .map_or(1, |i| i + 1)
}

/// Settings given on the command line, which win over `[host]`.
#[derive(Debug, Clone, Default)]
pub struct HostOverrides {
    /// `--state`.
    pub state: Option<String>,
    /// `--admin`.
    pub admin: Option<SocketAddr>,
}

impl Config {
    /// Loads `DIR/wasm-sup.toml` (absent = all defaults). `NAME.toml` files are read
    /// later, per plugin, by [`Config::plugin`].
    pub fn load(dir: &Path, overrides: &HostOverrides) -> Result<Config> {
        let path = dir.join(HOST_CONFIG_FILE);
        let (file, src) = match std::fs::read_to_string(&path) {
            Ok(src) => (parse_file::<FileLayer>(&path, &src)?, src),
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
        let state = overrides
            .state
            .clone()
            .or(h.state)
            .map(|s| StateLocation::parse(&s, dir))
            .unwrap_or_else(|| StateLocation::Redb(dir.join(".wasm-sup").join("state.redb")));
        let admin = match (overrides.admin, h.admin) {
            (Some(a), _) => a,
            (None, Some(a)) => a.parse().map_err(|_| {
                anyhow::anyhow!(
                    "{}:{}: [host] key `admin`: invalid address {a:?}: write e.g. \"127.0.0.1:9070\"",
                    path.display(),
                    line_of(src, "admin")
                )
            })?,
            (None, None) => DEFAULT_ADMIN_ADDR.parse().expect("the default address parses"),
        };
        // Coredumps and the compile cache live beside the state file.
        let data_dir = match &state {
            StateLocation::Redb(p) => p.parent().unwrap_or(dir).to_path_buf(),
            StateLocation::Memory => dir.join(".wasm-sup"),
        };
        let host = HostConfig {
            state: state.clone(),
            admin,
            max_restarts: h.max_restarts.unwrap_or_else(default_root_max_restarts),
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
            coredump_dir: data_dir.join("coredumps"),
            compile_cache: h
                .compile_cache
                .map_or(Some(default_compile_cache()), |c| c.0),
            cache_dir: data_dir.join("cache"),
            watch: h.watch.unwrap_or(true),
            instance_pool: h.instance_pool.map_or(DEFAULT_INSTANCE_POOL, |n| {
                u32::try_from(n.0).unwrap_or(u32::MAX)
            }),
            fuel_metering: h.fuel_metering.unwrap_or(true),
        };
        for name in file.plugins.keys() {
            if let Err(why) = crate::discovery::validate_name(name) {
                bail!(
                    "{}:{}: [plugins.{name}]: {why}",
                    path.display(),
                    line_of(src, &format!("[plugins.{name}"))
                );
            }
        }
        let groups = validate_groups(path, src, file.groups)?;
        let config = Config {
            dir: dir.to_path_buf(),
            host,
            groups,
            defaults: file.defaults,
            plugins: file.plugins,
        };
        // Resolve the defaults and each [plugins.NAME] now, so that a bad
        // combination is reported at load, before any plugin starts.
        for name in config.plugins.keys() {
            config
                .resolve(name, None)
                .map_err(|e| locate(path, src, &format!("plugins.{name}"), e))?;
        }
        PluginConfig::resolve(config.defaults.clone(), dir)
            .map_err(|e| locate(path, src, "defaults", e))?;
        Ok(config)
    }

    /// The resolved settings of plugin `name`, reading `DIR/NAME.toml` if present.
    pub fn plugin(&self, name: &str) -> Result<PluginConfig> {
        let path = self.dir.join(format!("{name}.toml"));
        match std::fs::read_to_string(&path) {
            Ok(src) => {
                let own = parse_file::<PluginLayer>(&path, &src)?;
                self.resolve(name, Some(own))
                    .map_err(|e| locate(&path, &src, "", e))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.resolve(name, None),
            Err(e) => Err(e).with_context(|| format!("failed to read {}", path.display())),
        }
    }

    fn resolve(&self, name: &str, own: Option<PluginLayer>) -> Result<PluginConfig> {
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

impl PluginConfig {
    /// Resolves a fully overlaid layer into concrete values.
    pub fn resolve(l: PluginLayer, dir: &Path) -> Result<PluginConfig> {
        let mut restart = default_restart();
        if let Some(r) = l.restart {
            macro_rules! set {
                ($($f:ident $(. $inner:tt)?),*) => {
                    $( if let Some(v) = r.$f { restart.$f = v $(. $inner)?; } )*
                };
            }
            set!(
                kind,
                backoff,
                initial.0,
                max.0,
                multiplier.0,
                jitter.0,
                max_restarts,
                window.0,
                reset_after.0,
                max_attempts,
                cooldown_max.0
            );
            if let Some(c) = r.cooldown {
                restart.cooldown = c.get();
            }
        }
        if restart.initial > restart.max {
            return Err(key_error(
                "restart.initial",
                format!(
                    "{:?} is larger than restart.max ({:?})",
                    restart.initial, restart.max
                ),
            ));
        }
        let mut health = default_health();
        if let Some(h) = l.health {
            if let Some(v) = h.interval {
                health.interval = v.0;
            }
            if let Some(v) = h.timeout {
                health.timeout = v.0;
            }
            if let Some(v) = h.threshold {
                health.threshold = v;
            }
        }
        let mut state = default_state_quota();
        if let Some(s) = l.state {
            if let Some(v) = s.max_keys {
                state.max_keys = v;
            }
            if let Some(v) = s.max_bytes {
                state.max_bytes = v.0;
            }
        }
        let config = l
            .config
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| {
                config_value(&k, v)
                    .map(|v| (k, v))
                    .map_err(|m| key_error("config", m))
            })
            .collect::<Result<_>>()?;
        let network = match l.network {
            None | Some(NetworkLayer::All(false)) => NetworkGrant::Denied,
            Some(NetworkLayer::All(true)) => NetworkGrant::Any,
            Some(NetworkLayer::Patterns(p)) => NetworkGrant::Patterns(
                p.iter()
                    .map(|s| AddrPattern::parse(s))
                    .collect::<Result<_, _>>()
                    .map_err(|m| key_error("network", m))?,
            ),
        };
        let dirs = l
            .dirs
            .unwrap_or_default()
            .into_iter()
            .map(|d| {
                if !d.guest.starts_with('/') {
                    return Err(key_error(
                        "dirs",
                        format!("guest path {:?} must be absolute (start with /)", d.guest),
                    ));
                }
                Ok(DirGrant {
                    host: dir.join(&d.host),
                    guest: d.guest,
                    mode: d.mode,
                })
            })
            .collect::<Result<_>>()?;
        Ok(PluginConfig {
            memory: l.memory.map_or_else(default_memory, |s| s.0),
            fuel: match l.fuel.unwrap_or_else(default_fuel) {
                0 => None,
                n => Some(n),
            },
            timeout: l.timeout.map_or_else(default_timeout, |d| d.0),
            reply_timeout: l.reply_timeout.map_or_else(default_reply_timeout, |d| d.0),
            max_message: l.max_message.map_or_else(default_max_message, |s| s.0),
            max_reply: l.max_reply.map_or_else(default_max_reply, |s| s.0),
            mailbox: l.mailbox.map_or_else(default_mailbox, |n| n.get()),
            output: l.output.map_or_else(default_output, |s| s.0),
            shutdown_timeout: l
                .shutdown_timeout
                .map_or_else(default_shutdown_timeout, |d| d.0),
            config,
            env: l.env.unwrap_or_default(),
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

fn config_value(key: &str, v: toml::Value) -> Result<String, String> {
    Ok(match v {
        toml::Value::String(s) => s,
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(_) | toml::Value::Table(_) => {
            return Err(format!(
                "value of {key:?} must be a string, number or boolean (wasi:config serves strings)"
            ));
        }
    })
}

fn validate_groups(
    path: &Path,
    src: &str,
    groups: BTreeMap<String, GroupLayer>,
) -> Result<BTreeMap<String, GroupConfig>> {
    let err = |name: &str, msg: String| {
        anyhow::anyhow!(
            "{}:{}: [groups.{name}]: {msg}",
            path.display(),
            line_of(src, &format!("[groups.{name}"))
        )
    };
    let mut seen_members = BTreeSet::new();
    for (name, g) in &groups {
        crate::discovery::validate_name(name).map_err(|why| err(name, why))?;
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
            cur = groups.get(&p).and_then(|g| g.parent.clone());
        }
    }
    let restart = default_restart();
    Ok(groups
        .into_iter()
        .map(|(name, g)| {
            let cfg = GroupConfig {
                strategy: g.strategy.unwrap_or(Strategy::OneForOne),
                members: g.members,
                max_restarts: g.max_restarts.unwrap_or(restart.max_restarts),
                window: g.window.map_or(restart.window, |d| d.0),
                parent: g.parent,
                auto_shutdown: g.auto_shutdown.unwrap_or(AutoShutdown::Never),
                significant: g.significant,
            };
            (name, cfg)
        })
        .collect())
}

#[cfg(test)]
mod tests;
