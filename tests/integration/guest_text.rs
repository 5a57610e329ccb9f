//! Guest text is data (DESIGN.md, "Execution model"): `wasi:logging` shares
//! the plugin's `output` budget (hole 7), no guest text can forge a host log
//! line in either log format (hole 8), guest text kept in status and crash
//! reports is capped (hole 9), and a stalled reader of the host's stderr
//! drops log lines instead of stalling plugins (hole 10).

use crate::util::{Admin, HostProcess, PluginDir, TestHost, free_port, scrape, wasm_sup_bin};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wasm_sup_tests::PROBE;

const WITHIN: Duration = Duration::from_secs(20);

async fn metric(admin: &Admin, key: &str) -> f64 {
    let text = admin.get("/metrics").await.text();
    scrape(&text).get(key).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole07_wasi_logging_shares_the_output_budget() {
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE);
    let host = HostProcess::start(dir.path(), &[]).await;
    // 20 MB of wasi:logging in one call, against the default 64 KiB a second.
    let line = "y".repeat(1000);
    let started = Instant::now();
    let flood = host
        .admin
        .send("probe", format!("log-many 20000 {line}"))
        .await;
    assert_eq!(flood.ok(), "logged 20000");
    // 64 KiB is 65 lines of 1000 bytes: at most 66 in each second it ran.
    let seconds = started.elapsed().as_secs() as usize + 2;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The next second's first line brings the warning about the last one.
    assert_eq!(
        host.admin
            .send("probe", "log info after the flood")
            .await
            .ok(),
        "logged"
    );
    let log = host
        .wait_log("the dropped-output warning", |log| {
            log.contains("guest output over its budget was dropped")
        })
        .await;
    let logged = log.lines().filter(|l| l.contains(&line)).count();
    assert!(
        (1..=seconds * 66).contains(&logged),
        "{logged} flood lines of 1000 bytes reached the log, not at most 64 KiB a second"
    );
    assert!(log.len() < 1 << 20, "the log grew to {} bytes", log.len());
    let dropped = metric(
        &host.admin,
        "wasm_sup_guest_output_dropped_bytes_total{plugin=probe}",
    )
    .await;
    assert!(dropped > 19e6, "dropped bytes counted: {dropped}");
}

/// A guest log message that tries to forge a host line, and a terminal escape.
const FORGERY: &str = "first\n2030-01-01T00:00:00.000000Z ERROR wasm_sup: FORGED\r\u{1b}[2Jcleared";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole08_guest_text_cannot_forge_a_log_line() {
    for format in ["text", "json"] {
        let dir = PluginDir::new();
        dir.plugin("probe", PROBE).config(
            r#"
[plugins.probe.config]
health = "degraded 64"
[plugins.probe.health]
interval = "100ms"
"#,
        );
        let host = HostProcess::start(dir.path(), &["--log-format", format]).await;
        let sent = host
            .admin
            .send("probe", format!("log warn {FORGERY}"))
            .await;
        assert_eq!(sent.ok(), "logged");
        let log = host
            .wait_log("the guest's message and health reason", |log| {
                log.contains("FORGED") && log.contains("xxxx")
            })
            .await;
        assert!(
            !log.contains('\u{1b}'),
            "{format}: a raw escape reached the log"
        );
        assert!(
            !log.contains('\r'),
            "{format}: a raw carriage return reached the log"
        );
        for l in log.lines() {
            assert!(
                !l.starts_with("2030-01-01") && !l.starts_with("xxxx"),
                "{format}: guest text began a log line of its own: {l}"
            );
        }
        match format {
            "text" => assert!(
                log.lines()
                    .any(|l| l.contains(r"first\n2030-01-01") && l.contains(r"FORGED\r")),
                "the message is one line, escaped:\n{log}"
            ),
            _ => {
                let events: Vec<serde_json::Value> = log
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                    .collect();
                assert!(
                    events.iter().any(|e| e["fields"]["message"] == FORGERY),
                    "the message is one event, intact:\n{log}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole09_guest_text_in_status_and_crash_reports_is_capped() {
    let dir = PluginDir::new();
    dir.plugin("slow", PROBE).plugin("sick", PROBE).config(
        r#"
[defaults.health]
interval = "100ms"
threshold = 1
[defaults.restart]
backoff = "immediate"
max-restarts = 100
[plugins.slow.config]
health = "degraded 8000000"
[plugins.sick.config]
health = "unhealthy 8000000"
"#,
    );
    let h = TestHost::start(dir).await;
    let info = h
        .admin
        .wait_info("slow", WITHIN, "degraded", |i| {
            i["health"]
                .as_str()
                .is_some_and(|s| s.starts_with("degraded"))
        })
        .await;
    let health = info["health"].as_str().unwrap();
    assert!(
        health.len() < 1100 && health.ends_with("[cut: 8000000 bytes in all]"),
        "health is {} bytes: {}…",
        health.len(),
        &health[..64]
    );
    h.admin
        .wait_info("sick", WITHIN, "restarted as unhealthy", |i| {
            i["last_crash"] == "unhealthy"
        })
        .await;
    let crashes = h.admin.get("/v1/plugins/sick/crashes").await;
    assert!(
        crashes.body.len() < 64 << 10,
        "crashes: {} bytes",
        crashes.body.len()
    );
    let message = crashes.json()["crashes"][0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.len() < 1200 && message.ends_with(" bytes in all]"),
        "the report's message is {} bytes",
        message.len()
    );
    let all = h.admin.get("/v1/plugins").await;
    assert!(
        all.body.len() < 64 << 10,
        "GET /v1/plugins: {} bytes",
        all.body.len()
    );
    h.stop().await;
}

/// `wasm-sup run DIR` whose stderr is a pipe nobody reads; killed when dropped.
struct UnreadStderr(Child);

impl Drop for UnreadStderr {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole10_a_stalled_log_reader_drops_lines_not_plugins() {
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE)
        .config("[plugins.probe]\noutput = \"64MiB\"\n");
    let addr = free_port();
    let _host = UnreadStderr(
        Command::new(wasm_sup_bin())
            .arg("run")
            .arg(dir.path())
            .arg("--admin")
            .arg(addr.to_string())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wasm-sup"),
    );
    let admin = Admin::new(addr);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(admin.try_send("probe", "echo up").await, Ok(a) if a.status == 200) {
        assert!(Instant::now() < deadline, "the host never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // 2,000 messages of 20 log lines each: far more than a pipe and the
    // writer's queue hold.
    let line = "z".repeat(100);
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let (admin, message) = (admin.clone(), format!("log-many 20 {line}"));
            tokio::spawn(async move {
                for i in 0..500 {
                    let answer = tokio::time::timeout(
                        Duration::from_secs(10),
                        admin.send("probe", message.clone()),
                    )
                    .await
                    .unwrap_or_else(|_| panic!("message {i} was not answered within 10 s"));
                    assert_eq!(answer.ok(), "logged 20");
                }
            })
        })
        .collect();
    for s in senders {
        s.await.expect("every message answered");
    }
    let dropped = metric(&admin, "wasm_sup_log_lines_dropped_total{}").await;
    assert!(dropped > 0.0, "dropped log lines counted: {dropped}");
}
