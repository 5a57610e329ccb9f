//! The standard process metrics (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
//! `process_open_fds`, `process_max_fds`, `process_start_time_seconds`),
//! read from `/proc/self` at each scrape under the names every Prometheus
//! user's dashboards and alerts already use. On a system without `/proc`
//! nothing is reported.
//!
//! Read by hand rather than with the `procfs` crate: six numbers from four
//! files do not justify its dependency tree, and a field that cannot be read
//! is simply left out of the scrape. Times in `/proc/self/stat` are in
//! `USER_HZ` ticks, which Linux fixes at 100 for user space whatever the
//! kernel's own tick rate; sizes come from `/proc/self/status` in kB, so no
//! `sysconf` (and no `unsafe`) is needed.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// The process collector (see the module doc).
#[derive(Debug)]
pub struct Process;

/// What one scrape read.
#[derive(Debug, Default, PartialEq)]
struct Reading {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<i64>,
    virtual_bytes: Option<i64>,
    open_fds: Option<i64>,
    max_fds: Option<i64>,
    start_time_seconds: Option<f64>,
}

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let r = read();
        if let Some(v) = r.cpu_seconds {
            let m = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(v).encode(m)?;
        }
        let gauges: [(&str, &str, Option<i64>); 4] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                r.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                r.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                r.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                r.max_fds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
                ConstGauge::new(v).encode(m)?;
            }
        }
        if let Some(v) = r.start_time_seconds {
            let m = encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(v).encode(m)?;
        }
        Ok(())
    }
}

/// Linux's clock ticks per second as user space sees them.
const USER_HZ: f64 = 100.0;

fn read() -> Reading {
    let text = |path: &str| std::fs::read_to_string(path).ok();
    let mut r = parse(
        text("/proc/self/stat").as_deref(),
        text("/proc/self/status").as_deref(),
        text("/proc/stat").as_deref(),
        text("/proc/self/limits").as_deref(),
    );
    r.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as i64 - 1); // less the read_dir's own descriptor
    r
}

/// The fields of `/proc/self/stat` after the command (which may hold spaces
/// and parentheses, so the split starts after its last `)`), `VmRSS` and
/// `VmSize` of `/proc/self/status`, `/proc/stat`'s `btime` and the soft
/// `Max open files` of `/proc/self/limits`.
fn parse(
    stat: Option<&str>,
    status: Option<&str>,
    boot: Option<&str>,
    limits: Option<&str>,
) -> Reading {
    let fields: Vec<&str> = stat
        .and_then(|s| s.rsplit_once(')'))
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // Numbered as in proc(5): the first field after the command is field 3.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let kb = |key: &str| {
        status?
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<i64>().ok())
            .map(|v| v * 1024)
    };
    let btime = boot.and_then(|b| {
        b.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<u64>().ok())
    });
    Reading {
        cpu_seconds: field(14)
            .zip(field(15))
            .map(|(u, s)| (u + s) as f64 / USER_HZ),
        start_time_seconds: btime
            .zip(field(22))
            .map(|(b, start)| b as f64 + start as f64 / USER_HZ),
        resident_bytes: kb("VmRSS:"),
        virtual_bytes: kb("VmSize:"),
        max_fds: limits.and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
        }),
        open_fds: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proc_files_are_read_field_by_field() {
        // A command with a space and a parenthesis, as proc(5) allows.
        let stat = "4242 (wasm sup) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 1000 123456789 2500 18446744073709551615";
        let status = "Name:\twasm-sup\nVmSize:\t  120560 kB\nVmRSS:\t    10000 kB\n";
        let boot = "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        let r = parse(Some(stat), Some(status), Some(boot), Some(limits));
        assert_eq!(r.cpu_seconds, Some(3.0));
        assert_eq!(r.start_time_seconds, Some(1_700_000_010.0));
        assert_eq!(r.virtual_bytes, Some(120_560 * 1024));
        assert_eq!(r.resident_bytes, Some(10_000 * 1024));
        assert_eq!(r.max_fds, Some(1024));
    }

    #[test]
    fn unreadable_files_leave_the_metrics_out() {
        assert_eq!(parse(None, None, None, None), Reading::default());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reads() {
        let r = read();
        assert!(r.cpu_seconds.is_some() && r.resident_bytes.unwrap() > 0);
        assert!(r.open_fds.unwrap() > 0 && r.max_fds.unwrap() > 0);
        assert!(r.start_time_seconds.unwrap() > 1_600_000_000.0);
    }
}
