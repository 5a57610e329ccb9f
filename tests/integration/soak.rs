//! The restart-leak soak: one plugin crashed and restarted many times, with
//! tokio tasks, open file descriptors and RSS flat.
//! Crashes: `WASM_SUP_SOAK_CRASHES` (default 10,000; CI runs the default, a
//! longer run is `WASM_SUP_SOAK_CRASHES=200000 scripts/test.sh soak`).

#[allow(
    dead_code,
    reason = "helpers shared with the integration binary; the soak uses a few"
)]
#[path = "util.rs"]
mod util;

use util::{PluginDir, TestHost};
use wasm_sup::mailbox::Outcome;
use wasm_sup_tests::PROBE;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

async fn crash_n(h: &TestHost, n: u64) {
    for i in 0..n {
        let (rx, _) = h
            .host
            .supervisor
            .send("probe", b"crash".to_vec(), None)
            .expect("accepted");
        match rx.await.expect("answered") {
            Outcome::DeadLettered { .. } => {}
            other => panic!("crash {i}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_many_times_leaks_no_tasks_fds_or_memory() {
    let crashes: u64 = std::env::var("WASM_SUP_SOAK_CRASHES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE).config(
        r#"
[host]
max-restarts = 4_000_000_000
window = "1s"
[plugins.probe.restart]
backoff = "immediate"
max-restarts = 4_000_000_000
window = "1s"
max-attempts = 1
"#,
    );
    let h = TestHost::start(dir).await;
    let warmup = (crashes / 10).max(100);
    crash_n(&h, warmup).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let (tasks0, fds0, rss0) = (metrics.num_alive_tasks(), open_fds(), rss_bytes());
    let started = std::time::Instant::now();
    crash_n(&h, crashes).await;
    let elapsed = started.elapsed();
    // Crash reports are written by short-lived tasks: give the ones still in
    // flight a moment (a leak does not go away by waiting).
    let settle = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while metrics.num_alive_tasks() > tasks0 + 2 && std::time::Instant::now() < settle {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (tasks1, fds1, rss1) = (metrics.num_alive_tasks(), open_fds(), rss_bytes());
    eprintln!(
        "soak: {crashes} crashes+restarts in {elapsed:?} ({:.0} µs each); tasks {tasks0} -> {tasks1}, fds {fds0} -> {fds1}, rss {} -> {} KiB",
        elapsed.as_micros() as f64 / crashes as f64,
        rss0 / 1024,
        rss1 / 1024
    );
    let info = h.admin.info("probe").await;
    assert_eq!(info["restarts"].as_u64(), Some(warmup + crashes), "{info}");
    assert_eq!(h.send("probe", "count").await.ok(), "1");
    assert!(
        tasks1 <= tasks0 + 2,
        "tokio tasks grew: {tasks0} -> {tasks1}"
    );
    assert!(fds1 <= fds0 + 4, "file descriptors grew: {fds0} -> {fds1}");
    assert!(
        rss1 <= rss0 + (32 << 20),
        "RSS grew by {} KiB",
        (rss1.saturating_sub(rss0)) / 1024
    );
    h.stop().await;
}
