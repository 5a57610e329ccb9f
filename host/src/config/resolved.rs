//! The resolved configuration: the concrete values the rest of the host reads
//! ([`HostConfig`], [`PluginConfig`], [`GroupConfig`] and their parts), with no
//! `Option` left for "unset". Built only by [`super::resolve`] and
//! [`super::Config`]; every key is described in docs/configuration.md.

use super::values::{AutoShutdown, BackoffKind, DirMode, RestartType, Strategy};
use serde::{Deserialize, Deserializer, de};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// faster (see docs/performance.md).
    pub fuel_metering: bool,
    /// Whether DIR is watched for added, changed and removed files.
    pub watch: bool,
    /// Largest plugin file read, bytes; a larger one is refused at load.
    pub max_plugin_file: u64,
    /// Cluster mode (`--cluster`), when on.
    pub cluster: Option<ClusterConfig>,
}

/// Cluster mode's settings (DESIGN.md, "Cluster mode").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The PostgreSQL database holding leases, ownership and state.
    pub url: String,
    /// This node's name (unique in the cluster).
    pub node: String,
    /// Where other nodes reach this node's admin API (`HOST:PORT`).
    pub advertise: String,
    /// How long a lease lasts without renewal; renewed every third of it.
    pub lease: Duration,
}

/// Where plugin state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateLocation {
    /// A redb file.
    Redb(PathBuf),
    /// In memory: atomic, not durable.
    Memory,
    /// A PostgreSQL database: `postgres://USER[:PASSWORD]@HOST[:PORT]/DB`.
    Postgres(String),
}

impl StateLocation {
    /// Parses `"memory"`, a `postgres://` (or `postgresql://`) URL, or a
    /// path (relative to `base`).
    pub fn parse(s: &str, base: &Path) -> StateLocation {
        if s == "memory" {
            StateLocation::Memory
        } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            StateLocation::Postgres(s.to_string())
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
    /// How long the answer to an `Idempotency-Key` is kept.
    pub idempotency_window: Duration,
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
    /// Parses `"IP:PORT"`, `"localhost:PORT"` or `"[::1]:PORT"`, `*` for any.
    pub fn parse(s: &str) -> Result<AddrPattern, String> {
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

/// A pattern is written as a string and checked while it is read, so a bad
/// one is reported at its own line.
impl<'de> Deserialize<'de> for AddrPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = AddrPattern;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an address pattern like \"127.0.0.1:6379\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<AddrPattern, E> {
                AddrPattern::parse(s).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
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
