//! Running under systemd (DESIGN.md, "systemd"): the `wasm-sup` binary with
//! a fake `NOTIFY_SOCKET` (a datagram socket of the test's own) gets
//! `READY=1`, `STATUS=` and `STOPPING=1`, and `WATCHDOG=1` when
//! `WATCHDOG_USEC` is set; and `dist/wasm-sup.service` passes
//! `systemd-analyze verify` and `systemd-analyze security`. That a stalled
//! round trip through the supervisor sends no ping is shown by the unit tests
//! of `wasm_sup::systemd`.

use crate::util::{HostProcess, PluginDir, wasm_sup_bin};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use wasm_sup_tests::{COUNTER, MINIMAL};

/// A fake service manager: the datagram socket `NOTIFY_SOCKET` names, and
/// every notification it has received.
struct FakeNotify {
    socket: UnixDatagram,
    path: PathBuf,
    seen: Vec<String>,
    _dir: tempfile::TempDir,
}

impl FakeNotify {
    fn bind() -> FakeNotify {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        FakeNotify {
            socket,
            path,
            seen: Vec::new(),
            _dir: dir,
        }
    }

    fn env(&self) -> (&'static str, &std::ffi::OsStr) {
        ("NOTIFY_SOCKET", self.path.as_os_str())
    }

    /// The next notification within `within`, if any.
    fn next(&mut self, within: Duration) -> Option<String> {
        self.socket
            .set_read_timeout(Some(within.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let n = self.socket.recv(&mut buf).ok()?;
        let m = String::from_utf8(buf[..n].to_vec()).expect("UTF-8 notification");
        self.seen.push(m.clone());
        Some(m)
    }

    /// Receives until a notification satisfies `pred`, and returns it.
    fn wait_for(&mut self, what: &str, within: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(m) if pred(&m) => return m,
                Some(_) => {}
                None => panic!("no {what} within {within:?}; got {:?}", self.seen),
            }
        }
    }

    /// Every notification received within `within`.
    fn drain(&mut self, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next(left) {
                Some(m) => out.push(m),
                None => break,
            }
        }
        out
    }
}

/// The `STATUS=` of a notification, if it has one.
fn status_of(m: &str) -> Option<&str> {
    m.lines().find_map(|l| l.strip_prefix("STATUS="))
}

fn has(m: &str, line: &str) -> bool {
    m.lines().any(|l| l == line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_socket_gets_ready_loading_status_and_stopping() {
    let dir = PluginDir::new();
    dir.plugin("counter", COUNTER).plugin("echo", MINIMAL);
    let mut notify = FakeNotify::bind();
    let mut host = HostProcess::start_live_with_env(dir.path(), &[], &[notify.env()]).await;

    // The first notification is READY=1, with the startup load's STATUS=:
    // the admin API listens, the plugins are still loading.
    let ready = notify.wait_for("READY=1", Duration::from_secs(60), |m| has(m, "READY=1"));
    assert_eq!(notify.seen.len(), 1, "{:?}", notify.seen);
    let status = status_of(&ready).expect("STATUS= with READY=1");
    assert!(status.starts_with("loading"), "{status}");
    assert_eq!(host.admin.get("/healthz").await.status, 200);

    // Then the load's progress, then the plugins' statuses.
    let running = notify.wait_for(
        "STATUS=2 plugins: 2 running",
        Duration::from_secs(60),
        |m| status_of(m) == Some("2 plugins: 2 running"),
    );
    for m in &notify.seen {
        let s = status_of(m).unwrap_or_else(|| panic!("no STATUS= in {m:?}"));
        let loading = s == "loading plugins"
            || s.strip_prefix("loading ")
                .and_then(|s| s.strip_suffix(" plugins"))
                .and_then(|s| s.split_once('/'))
                .is_some_and(|(a, b)| a.parse::<u32>().is_ok() && b == "2");
        assert!(
            loading || s.starts_with("2 plugins: "),
            "unexpected STATUS= {s:?}"
        );
    }
    assert!(!has(&running, "READY=1"), "READY=1 is sent once");
    assert!(
        !notify.seen.iter().any(|m| has(m, "WATCHDOG=1")),
        "no watchdog without WATCHDOG_USEC: {:?}",
        notify.seen
    );

    // SIGTERM: STOPPING=1 at once, then the graceful stop.
    host.signal("TERM");
    let stopping = notify.wait_for("STOPPING=1", Duration::from_secs(30), |m| {
        has(m, "STOPPING=1")
    });
    assert!(
        status_of(&stopping).is_some_and(|s| s.starts_with("stopping")),
        "{stopping:?}"
    );
    assert_eq!(host.wait_exit(Duration::from_secs(30)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_pings_while_running_and_stops_at_shutdown() {
    let dir = PluginDir::new();
    dir.plugin("echo", MINIMAL);
    let mut notify = FakeNotify::bind();
    // A ping every 150 ms; WATCHDOG_PID is left unset (it would have to be
    // the child's own pid, unknown before it starts).
    let usec = std::ffi::OsString::from("300000");
    let mut host = HostProcess::start_live_with_env(
        dir.path(),
        &[],
        &[notify.env(), ("WATCHDOG_USEC", usec.as_os_str())],
    )
    .await;
    notify.wait_for("READY=1", Duration::from_secs(60), |m| has(m, "READY=1"));
    let seen = notify.drain(Duration::from_millis(1500));
    let pings = seen.iter().filter(|m| has(m, "WATCHDOG=1")).count();
    // Ten periods; a loaded machine may lose a few, never most.
    assert!(pings >= 4, "{pings} pings in 1.5 s: {seen:?}");
    // The messages are well formed: a ping is a notification of its own.
    assert!(
        seen.iter()
            .all(|m| m == "WATCHDOG=1\n" || status_of(m).is_some()),
        "{seen:?}"
    );

    host.signal("TERM");
    notify.wait_for("STOPPING=1", Duration::from_secs(30), |m| {
        has(m, "STOPPING=1")
    });
    assert_eq!(host.wait_exit(Duration::from_secs(30)), Some(0));
    let after = notify.drain(Duration::from_millis(300));
    assert!(
        after.iter().all(|m| !has(m, "WATCHDOG=1")),
        "pings after STOPPING=1: {after:?}"
    );
}

/// `systemd-analyze`, or `None` where it is missing outside CI.
fn systemd_analyze() -> Option<&'static str> {
    crate::util::tool("systemd-analyze", "systemd")
}

/// A copy of `dist/wasm-sup.service`, named as the original, in a folder of
/// its own, whose `ExecStart=` runs the built binary: `verify` checks that
/// the command exists. `User=wasm-sup` stays: verify does not look the user
/// up, and the unit is checked as shipped.
fn unit_copy() -> (tempfile::TempDir, PathBuf) {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/wasm-sup.service");
    let text = std::fs::read_to_string(&shipped).unwrap();
    let installed = "ExecStart=/usr/local/bin/wasm-sup ";
    assert_eq!(text.matches(installed).count(), 1, "one ExecStart=");
    let bin = wasm_sup_bin();
    let copy = text.replace(installed, &format!("ExecStart={} ", bin.display()));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wasm-sup.service");
    std::fs::write(&path, copy).unwrap();
    (dir, path)
}

#[test]
fn the_unit_passes_systemd_analyze_verify_and_security() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let (_dir, unit) = unit_copy();

    let out = Command::new(analyze)
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {:?}\n{said}",
        out.status
    );

    let out = Command::new(analyze)
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "systemd-analyze security: {:?}\n{report}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let exposure: f64 = report
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for wasm-sup.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure in:\n{report}"));
    assert!(exposure <= 3.0, "exposure {exposure} > 3.0:\n{report}");
    // The JIT needs writable-then-executable memory: the one setting that
    // would break it is off, on purpose.
    assert!(
        report
            .lines()
            .any(|l| l.contains("✗ MemoryDenyWriteExecute=")),
        "{report}"
    );
}

/// What the unit promises, read off the shipped file.
#[test]
fn the_unit_is_a_notify_service_that_does_not_restart_a_bad_config() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/wasm-sup.service");
    let text = std::fs::read_to_string(shipped).unwrap();
    let mut section = "";
    let mut settings = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            section = line;
            continue;
        }
        settings.push(format!("{section}{line}"));
    }
    for want in [
        "[Unit]StartLimitIntervalSec=300",
        "[Unit]StartLimitBurst=10",
        "[Service]Type=notify",
        "[Service]NotifyAccess=main",
        "[Service]WatchdogSec=30s",
        "[Service]Restart=on-failure",
        "[Service]RestartPreventExitStatus=2",
        "[Service]KillSignal=SIGTERM",
    ] {
        assert!(settings.iter().any(|s| s == want), "{want} missing");
    }
    assert!(
        !settings
            .iter()
            .any(|s| s.contains("MemoryDenyWriteExecute=")),
        "MemoryDenyWriteExecute= breaks the JIT"
    );
}
