//! Every Prometheus metric of the host, declared in one place and served at
//! `GET /metrics` (OpenMetrics text, which Prometheus scrapes).
//!
//! Counters and histograms are updated where things happen (the child);
//! gauges that describe the present (status, up, health, mailbox depth,
//! plugins loaded and failed, the restart budget) are set from the
//! supervisor's view when a scrape comes in.
//!
//! Every family is present from the first scrape, and every series a plugin
//! can have is created at zero when the plugin is added
//! ([`Metrics::add_plugin`]), so that `rate()` and alerts work before the
//! first event. `wasm_sup_build_info` names the version; the standard
//! `process_*` metrics come from [`process`].

mod process;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::OnceLock;
use tracing_appender::non_blocking::ErrorCounter;

/// `{plugin}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabel {
    /// Plugin name.
    pub plugin: String,
}

/// Handles on one plugin's per-call metrics (see [`Metrics::calls`]); they
/// share their values with the registry's families.
#[derive(Clone)]
pub struct CallMetrics {
    /// Its `wasm_sup_handle_duration_seconds`.
    pub handle_seconds: Histogram,
    /// Its `wasm_sup_fuel_consumed_total`.
    pub fuel: Counter,
    /// Its `wasm_sup_memory_bytes`.
    pub memory: Gauge,
    /// Its `wasm_sup_messages_total{outcome="ok"}`.
    pub ok: Counter,
    /// Its `wasm_sup_messages_total{outcome="err"}`.
    pub err: Counter,
}

/// `{plugin, outcome}`: `ok`, `err`, `crashed` (a delivery that crashed),
/// `dead-lettered`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// Plugin name.
    pub plugin: String,
    /// Outcome.
    pub outcome: &'static str,
}

/// `{plugin, cause}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabels {
    /// Plugin name.
    pub plugin: String,
    /// Crash cause.
    pub cause: &'static str,
}

/// `{plugin, status}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// Plugin name.
    pub plugin: String,
    /// Status.
    pub status: &'static str,
}

/// `{plugin, result}`: for upgrades `upgraded`, `refused` (invalid; the old
/// version stays), `rolled-back`; for health checks `healthy`, `degraded`,
/// `unhealthy`, `failed` (trapped or timed out).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// Plugin name.
    pub plugin: String,
    /// Result.
    pub result: &'static str,
}

/// `{result}`: `hit`, `miss`, `rebuilt` (an invalid entry compiled again).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// Result.
    pub result: &'static str,
}

/// `{plugin, health}`: `healthy`, `degraded`, `unhealthy`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthLabels {
    /// Plugin name.
    pub plugin: String,
    /// Health.
    pub health: &'static str,
}

/// Every `outcome` of `wasm_sup_messages_total`.
pub const OUTCOMES: [&str; 4] = ["ok", "err", "crashed", "dead-lettered"];
/// Every `result` of `wasm_sup_upgrades_total`.
pub const UPGRADE_RESULTS: [&str; 3] = ["upgraded", "refused", "rolled-back"];
/// Every `result` of `wasm_sup_health_checks_total`.
pub const HEALTH_RESULTS: [&str; 4] = ["healthy", "degraded", "unhealthy", "failed"];
/// Every `health` of `wasm_sup_plugin_health`.
pub const HEALTHS: [&str; 3] = ["healthy", "degraded", "unhealthy"];
/// Every `result` of `wasm_sup_compile_cache_total`.
pub const CACHE_RESULTS: [&str; 3] = ["hit", "miss", "rebuilt"];

/// `{version, wasmtime}` of `wasm_sup_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// wasm-sup's version.
    pub version: &'static str,
    /// The embedded wasmtime's version.
    pub wasmtime: &'static str,
}

/// `{group}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabel {
    /// Group name (`root` for the root).
    pub group: String,
}

/// The wasmtime this host embeds, for `wasm_sup_build_info`.
/// (A test checks it against Cargo.lock.)
const WASMTIME_VERSION: &str = "48.0.8";

fn seconds_histogram() -> Histogram {
    // 10 µs .. ~2.6 min
    Histogram::new(exponential_buckets(0.000_01, 4.0, 13))
}

/// The host's metrics. See the module doc.
pub struct Metrics {
    registry: Registry,
    /// `wasm_sup_messages_total{plugin,outcome}`.
    pub messages: Family<OutcomeLabels, Counter>,
    /// `wasm_sup_handle_duration_seconds{plugin}`.
    pub handle_seconds: Family<PluginLabel, Histogram, fn() -> Histogram>,
    /// `wasm_sup_crashes_total{plugin,cause}`.
    pub crashes: Family<CauseLabels, Counter>,
    /// `wasm_sup_restarts_total{plugin}`.
    pub restarts: Family<PluginLabel, Counter>,
    /// `wasm_sup_fuel_consumed_total{plugin}`.
    pub fuel: Family<PluginLabel, Counter>,
    /// `wasm_sup_memory_bytes{plugin}`: linear memory after the last call.
    pub memory: Family<PluginLabel, Gauge>,
    /// `wasm_sup_state_commit_duration_seconds`.
    pub commit_seconds: Histogram,
    /// `wasm_sup_dead_letters_pending{plugin}`.
    pub dead_letters: Family<PluginLabel, Gauge>,
    /// `wasm_sup_plugin_status{plugin,status}`: 1 for the current status.
    pub status: Family<StatusLabels, Gauge>,
    /// `wasm_sup_mailbox_depth{plugin}`.
    pub mailbox_depth: Family<PluginLabel, Gauge>,
    /// `wasm_sup_plugins_loaded`.
    pub plugins_loaded: Gauge,
    /// `wasm_sup_plugins_failed`: plugins `failed` now.
    pub plugins_failed: Gauge,
    /// `wasm_sup_plugins_refused`: files refused now.
    pub plugins_refused: Gauge,
    /// `wasm_sup_upgrades_total{plugin,result}`.
    pub upgrades: Family<ResultLabels, Counter>,
    /// `wasm_sup_health_checks_total{plugin,result}`.
    pub health_checks: Family<ResultLabels, Counter>,
    /// `wasm_sup_group_restarts_total{group}`: coordinated restarts a group
    /// carried out (one-for-all, rest-for-one, or a child group restarted whole).
    pub group_restarts: Family<GroupLabel, Counter>,
    /// `wasm_sup_escalations_total{group}`: times a group exceeded its
    /// intensity and escalated to its parent.
    pub escalations: Family<GroupLabel, Counter>,
    /// `wasm_sup_compile_cache_total{result}`.
    pub compile_cache: Family<CacheLabels, Counter>,
    /// `wasm_sup_guest_output_dropped_bytes_total{plugin}`: guest output
    /// over the plugin's `output` budget.
    pub guest_output_dropped: Family<PluginLabel, Counter>,
    /// `wasm_sup_owner_lost_total{plugin}`: commits refused because another
    /// node of the cluster took the plugin over (its fence moved on).
    pub owner_lost: Family<PluginLabel, Counter>,
    /// `wasm_sup_plugin_up{plugin}`: 1 while the plugin is running.
    pub up: Family<PluginLabel, Gauge>,
    /// `wasm_sup_plugin_health{plugin,health}`: 1 for the running plugin's
    /// health (all 0 while it is not running).
    pub health: Family<HealthLabels, Gauge>,
    /// `wasm_sup_restart_budget_used`: restarts counted against the host's
    /// budget within its window now.
    pub budget_used: Gauge,
    /// `wasm_sup_restart_budget_max`: restarts the host's budget allows
    /// within its window.
    pub budget_max: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Declares and registers every metric.
    pub fn new() -> Metrics {
        // Ours under `wasm_sup_`, the process metrics under their standard names.
        let mut root = Registry::default();
        root.register_collector(Box::new(process::Process));
        let registry = root.sub_registry_with_prefix("wasm_sup");
        let m = Metrics {
            messages: Family::default(),
            handle_seconds: Family::new_with_constructor(seconds_histogram),
            crashes: Family::default(),
            restarts: Family::default(),
            fuel: Family::default(),
            memory: Family::default(),
            commit_seconds: seconds_histogram(),
            dead_letters: Family::default(),
            status: Family::default(),
            mailbox_depth: Family::default(),
            plugins_loaded: Gauge::default(),
            plugins_failed: Gauge::default(),
            plugins_refused: Gauge::default(),
            upgrades: Family::default(),
            health_checks: Family::default(),
            group_restarts: Family::default(),
            escalations: Family::default(),
            compile_cache: Family::default(),
            guest_output_dropped: Family::default(),
            owner_lost: Family::default(),
            up: Family::default(),
            health: Family::default(),
            budget_used: Gauge::default(),
            budget_max: Gauge::default(),
            registry: Registry::default(),
        };
        for result in CACHE_RESULTS {
            zero(&m.compile_cache, &CacheLabels { result });
        }
        registry.register(
            "messages",
            "Messages handled, by outcome",
            m.messages.clone(),
        );
        registry.register(
            "handle_duration_seconds",
            "Duration of handle calls",
            m.handle_seconds.clone(),
        );
        registry.register("crashes", "Crashes, by cause", m.crashes.clone());
        registry.register("restarts", "Instance restarts", m.restarts.clone());
        registry.register("fuel_consumed", "Fuel consumed by calls", m.fuel.clone());
        registry.register(
            "memory_bytes",
            "Linear memory of the instance after its last call",
            m.memory.clone(),
        );
        registry.register(
            "state_commit_duration_seconds",
            "Duration of state commits (until durable)",
            m.commit_seconds.clone(),
        );
        registry.register(
            "dead_letters_pending",
            "Dead letters stored and not yet replayed or dropped",
            m.dead_letters.clone(),
        );
        registry.register(
            "plugin_status",
            "1 for the plugin's current status",
            m.status.clone(),
        );
        registry.register("mailbox_depth", "Messages queued", m.mailbox_depth.clone());
        registry.register("plugins_loaded", "Plugins loaded", m.plugins_loaded.clone());
        registry.register(
            "plugins_failed",
            "Plugins failed now",
            m.plugins_failed.clone(),
        );
        registry.register(
            "plugins_refused",
            "Plugin files refused (invalid names, unreadable or invalid components)",
            m.plugins_refused.clone(),
        );
        registry.register(
            "upgrades",
            "Live upgrades from the plugin folder, by result",
            m.upgrades.clone(),
        );
        registry.register(
            "group_restarts",
            "Coordinated restarts carried out by a group",
            m.group_restarts.clone(),
        );
        registry.register(
            "escalations",
            "Groups that exceeded their intensity and escalated to their parent",
            m.escalations.clone(),
        );
        registry.register(
            "health_checks",
            "Health probes, by answer",
            m.health_checks.clone(),
        );
        registry.register(
            "compile_cache",
            "Component loads, by compile cache result",
            m.compile_cache.clone(),
        );
        registry.register(
            "guest_output_dropped_bytes",
            "Guest stdout, stderr and wasi:logging bytes dropped over the plugin's `output` budget",
            m.guest_output_dropped.clone(),
        );
        registry.register(
            "owner_lost",
            "Commits refused because another node of the cluster owns the plugin now",
            m.owner_lost.clone(),
        );
        registry.register(
            "log_lines_dropped",
            "Host log lines dropped because the reader of stderr fell behind",
            LogLinesDropped,
        );
        registry.register("plugin_up", "1 while the plugin is running", m.up.clone());
        registry.register(
            "plugin_health",
            "1 for the running plugin's health (healthy until a probe says otherwise)",
            m.health.clone(),
        );
        registry.register(
            "restart_budget_used",
            "Restarts counted against the host's restart budget within its window",
            m.budget_used.clone(),
        );
        registry.register(
            "restart_budget_max",
            "Restarts the host's restart budget allows within its window; past it the host stops",
            m.budget_max.clone(),
        );
        // A gauge at 1 rather than OpenMetrics' `info` type, which the
        // classic text format (and `promtool check metrics`) does not know.
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                wasmtime: WASMTIME_VERSION,
            })
            .set(1);
        registry.register(
            "build_info",
            "The version of wasm-sup and of the wasmtime it embeds (always 1)",
            build,
        );
        Metrics {
            registry: root,
            ..m
        }
    }

    /// Creates every series of `plugin` at zero (see the module doc).
    pub fn add_plugin(&self, plugin: &str) {
        let label = Metrics::plugin(plugin);
        for outcome in OUTCOMES {
            zero(
                &self.messages,
                &OutcomeLabels {
                    plugin: plugin.to_string(),
                    outcome,
                },
            );
        }
        for cause in crate::crash::Cause::ALL {
            zero(
                &self.crashes,
                &CauseLabels {
                    plugin: plugin.to_string(),
                    cause: cause.as_str(),
                },
            );
        }
        for result in UPGRADE_RESULTS {
            zero(
                &self.upgrades,
                &ResultLabels {
                    plugin: plugin.to_string(),
                    result,
                },
            );
        }
        for result in HEALTH_RESULTS {
            zero(
                &self.health_checks,
                &ResultLabels {
                    plugin: plugin.to_string(),
                    result,
                },
            );
        }
        zero(&self.restarts, &label);
        zero(&self.fuel, &label);
        zero(&self.handle_seconds, &label);
        zero(&self.dead_letters, &label);
        zero(&self.guest_output_dropped, &label);
        zero(&self.owner_lost, &label);
        zero(&self.up, &label);
    }

    /// Creates the counters of `group` at zero.
    pub fn add_group(&self, group: &str) {
        let label = GroupLabel {
            group: group.to_string(),
        };
        zero(&self.group_restarts, &label);
        zero(&self.escalations, &label);
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding into a String does not fail");
        out
    }

    /// Counts one upgrade result of `plugin`.
    pub fn upgrade(&self, plugin: &str, result: &'static str) {
        self.result(&self.upgrades, plugin, result);
    }

    /// Counts one `result` of `plugin` in `family`.
    pub fn result(
        &self,
        family: &Family<ResultLabels, Counter>,
        plugin: &str,
        result: &'static str,
    ) {
        family
            .get_or_create(&ResultLabels {
                plugin: plugin.to_string(),
                result,
            })
            .inc();
    }

    /// Counts one event of `group` in `family`.
    pub fn group(&self, family: &Family<GroupLabel, Counter>, group: &str) {
        family
            .get_or_create(&GroupLabel {
                group: group.to_string(),
            })
            .inc();
    }

    /// Forgets the present-state gauges of a plugin that was removed.
    pub fn forget(&self, plugin: &str) {
        for status in ["starting", "running", "backoff", "failed", "stopped"] {
            self.status.remove(&StatusLabels {
                plugin: plugin.to_string(),
                status,
            });
        }
        for health in HEALTHS {
            self.health.remove(&HealthLabels {
                plugin: plugin.to_string(),
                health,
            });
        }
        self.mailbox_depth.remove(&Metrics::plugin(plugin));
        self.memory.remove(&Metrics::plugin(plugin));
        self.up.remove(&Metrics::plugin(plugin));
    }

    /// The per-call metrics of `plugin`, looked up once: a worker updates
    /// them on every message without hashing labels or taking a family's lock.
    pub fn calls(&self, plugin: &str) -> CallMetrics {
        let label = Metrics::plugin(plugin);
        let outcome = |outcome| {
            self.messages
                .get_or_create(&OutcomeLabels {
                    plugin: plugin.to_string(),
                    outcome,
                })
                .clone()
        };
        CallMetrics {
            handle_seconds: self.handle_seconds.get_or_create(&label).clone(),
            fuel: self.fuel.get_or_create(&label).clone(),
            memory: self.memory.get_or_create(&label).clone(),
            ok: outcome("ok"),
            err: outcome("err"),
        }
    }

    /// Labels for `plugin`.
    pub fn plugin(plugin: &str) -> PluginLabel {
        PluginLabel {
            plugin: plugin.to_string(),
        }
    }
}

/// Creates the series `labels` of `family` (at zero) if it is not there.
fn zero<S, M, C>(family: &Family<S, M, C>, labels: &S)
where
    S: Clone + std::hash::Hash + Eq,
    C: prometheus_client::metrics::family::MetricConstructor<M>,
{
    drop(family.get_or_create(labels));
}

/// The host's non-blocking log writer's count of dropped lines.
static LOG_LINES_DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Makes `wasm_sup_log_lines_dropped_total` report `counter`, the dropped
/// lines of the host's log writer (`main` installs it once; without one, as
/// when the host runs inside tests, the metric stays 0).
pub fn count_dropped_log_lines(counter: ErrorCounter) {
    let _ = LOG_LINES_DROPPED.set(counter);
}

/// `wasm_sup_log_lines_dropped_total`, read from the log writer at each scrape.
#[derive(Debug)]
struct LogLinesDropped;

impl EncodeMetric for LogLinesDropped {
    fn encode(&self, mut encoder: MetricEncoder) -> std::fmt::Result {
        let dropped = LOG_LINES_DROPPED
            .get()
            .map_or(0, |c| c.dropped_lines() as u64);
        encoder.encode_counter::<NoLabelSet, _, u64>(&dropped, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_names_the_wasmtime_in_cargo_lock() {
        let lock = include_str!("../../../Cargo.lock");
        let entry = format!("name = \"wasmtime\"\nversion = \"{WASMTIME_VERSION}\"");
        assert!(
            lock.contains(&entry),
            "update WASMTIME_VERSION to Cargo.lock's wasmtime"
        );
    }

    #[test]
    fn every_family_and_a_new_plugins_series_are_there_at_zero() {
        let m = Metrics::new();
        m.add_plugin("p");
        m.add_group("root");
        let text = m.encode();
        for family in [
            "wasm_sup_messages_total{plugin=\"p\",outcome=\"crashed\"} 0",
            "wasm_sup_crashes_total{plugin=\"p\",cause=\"trap\"} 0",
            "wasm_sup_restarts_total{plugin=\"p\"} 0",
            "wasm_sup_health_checks_total{plugin=\"p\",result=\"unhealthy\"} 0",
            "wasm_sup_upgrades_total{plugin=\"p\",result=\"rolled-back\"} 0",
            "wasm_sup_group_restarts_total{group=\"root\"} 0",
            "wasm_sup_escalations_total{group=\"root\"} 0",
            "wasm_sup_compile_cache_total{result=\"miss\"} 0",
            "wasm_sup_log_lines_dropped_total 0",
            "wasm_sup_build_info{version=",
            "wasm_sup_plugin_up{plugin=\"p\"} 0",
            "wasm_sup_restart_budget_max 0",
            "# TYPE process_cpu_seconds counter",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(family), "missing {family} in\n{text}");
        }
    }
}
