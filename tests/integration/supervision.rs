//! Health probes, the circuit breaker (cooldown and half-open) and `tick`
//! (DESIGN.md, "Health", "Restart policy", "Mailbox"), with short intervals.

use crate::util::{HostProcess, PluginDir, TestHost, scrape};
use std::time::{Duration, Instant};
use wasm_sup_tests::PROBE;

const WITHIN: Duration = Duration::from_secs(15);

async fn host(config: &str) -> TestHost {
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE).config(config);
    let h = TestHost::start(dir).await;
    h.admin.wait_status("probe", "running", WITHIN).await;
    h
}

async fn counter(h: &TestHost, key: &str) -> f64 {
    let text = h.admin.get("/metrics").await.text();
    scrape(&text).get(key).copied().unwrap_or(0.0)
}

const FAST_HEALTH: &str = r#"
[defaults.health]
interval = "100ms"
timeout = "300ms"
threshold = 3
[defaults.restart]
backoff = "immediate"
max-restarts = 100
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_answers_restart_the_plugin_after_the_threshold() {
    let h = host(FAST_HEALTH).await;
    h.admin
        .wait_info("probe", WITHIN, "healthy", |i| i["health"] == "healthy")
        .await;

    // Degraded is shown, not acted on.
    assert_eq!(h.send("probe", "set health degraded").await.ok(), "ok");
    let info = h
        .admin
        .wait_info("probe", WITHIN, "degraded", |i| {
            i["health"] == "degraded: told to"
        })
        .await;
    assert_eq!(info["restarts"], 0, "{info}");

    assert_eq!(h.send("probe", "set health unhealthy").await.ok(), "ok");
    let info = h
        .admin
        .wait_info("probe", WITHIN, "restarted as unhealthy", |i| {
            i["last_crash"] == "unhealthy"
        })
        .await;
    assert!(info["restarts"].as_u64().unwrap() >= 1, "{info}");
    let crashes = h.admin.get("/v1/plugins/probe/crashes").await.json();
    let report = &crashes["crashes"].as_array().unwrap().last().unwrap();
    assert_eq!(report["cause"], "unhealthy", "{report}");
    assert_eq!(report["call"], "check", "{report}");
    assert!(
        report["message"]
            .as_str()
            .unwrap()
            .contains("unhealthy 3 times in a row: told to"),
        "{report}"
    );
    assert!(
        counter(
            &h,
            "wasm_sup_health_checks_total{plugin=probe,result=unhealthy}"
        )
        .await
            >= 3.0
    );

    // Healthy again: the restarts stop.
    assert_eq!(h.send("probe", "delete health").await.ok(), "ok");
    let info = h
        .admin
        .wait_info("probe", WITHIN, "healthy again", |i| {
            i["health"] == "healthy"
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = h.admin.info("probe").await;
    assert_eq!(later["restarts"], info["restarts"], "{later}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_probe_is_the_crash_unhealthy_and_a_trapping_one_an_ordinary_crash() {
    let dir = PluginDir::new();
    dir.plugin("hangs", PROBE)
        .plugin("traps", PROBE)
        .plugin_config("hangs", "config = { health = \"hang\" }\n")
        .plugin_config("traps", "config = { health = \"trap\" }\n")
        .config(FAST_HEALTH);
    let h = TestHost::start(dir).await;
    let info = h
        .admin
        .wait_info("hangs", WITHIN, "restarted", |i| {
            i["last_crash"] == "unhealthy"
        })
        .await;
    assert!(info["restarts"].as_u64().unwrap() >= 1, "{info}");
    let report = h
        .admin
        .get("/v1/plugins/hangs/crashes?limit=1")
        .await
        .json()["crashes"][0]
        .clone();
    assert!(
        report["message"]
            .as_str()
            .unwrap()
            .contains("did not answer within its timeout of 300ms"),
        "{report}"
    );
    let info = h
        .admin
        .wait_info("traps", WITHIN, "restarted", |i| {
            i["last_crash"] == "unreachable"
        })
        .await;
    assert!(info["restarts"].as_u64().unwrap() >= 1, "{info}");
    // Probes run between calls: messages still get through.
    assert_eq!(h.send("traps", "echo hi").await.status, 200);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_plugin_is_tried_again_after_a_doubling_cooldown_and_refused_meanwhile() {
    let h = host(
        r#"
[defaults.restart]
backoff = "immediate"
max-restarts = 0
max-attempts = 1
cooldown = "400ms"
cooldown-max = "10s"
reset-after = "1s"
"#,
    )
    .await;
    // Over the intensity: failed, with the next attempt scheduled.
    assert_eq!(h.send("probe", "crash").await.status, 500);
    let info = h.admin.info("probe").await;
    assert_eq!(info["status"], "failed", "{info}");
    assert_eq!(info["circuit"], "open", "{info}");
    assert!(
        info["reason"]
            .as_str()
            .unwrap()
            .ends_with("next attempt in 400ms (cooldown)"),
        "{info}"
    );
    let refused = h.send("probe", "count").await;
    assert_eq!(refused.status, 503);
    let body = refused.json();
    assert_eq!(body["status"], "failed", "{body}");
    assert_eq!(body["retry_after_secs"], 1, "{body}");

    // Half-open after the cooldown; a crash in the trial doubles it.
    let t = Instant::now();
    let info = h.admin.wait_status("probe", "running", WITHIN).await;
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(info["circuit"], "half-open", "{info}");
    assert_eq!(h.send("probe", "crash").await.status, 500);
    let info = h.admin.info("probe").await;
    assert_eq!(info["status"], "failed", "{info}");
    assert!(
        info["reason"].as_str().unwrap().contains("half-open trial")
            && info["reason"]
                .as_str()
                .unwrap()
                .ends_with("next attempt in 800ms (cooldown)"),
        "{info}"
    );

    // A trial that runs reset-after closes the breaker: the next failure
    // waits the base cooldown again.
    h.admin.wait_status("probe", "running", WITHIN).await;
    h.admin
        .wait_info("probe", WITHIN, "closed", |i| i["circuit"].is_null())
        .await;
    assert_eq!(h.send("probe", "count").await.ok(), "1");
    assert_eq!(h.send("probe", "crash").await.status, 500);
    let info = h.admin.info("probe").await;
    assert!(
        info["reason"]
            .as_str()
            .unwrap()
            .ends_with("next attempt in 400ms (cooldown)"),
        "{info}"
    );
    // An operator's start closes it at once.
    assert_eq!(
        h.admin.post("/v1/plugins/probe/start", vec![]).await.status,
        200
    );
    let info = h.admin.wait_status("probe", "running", WITHIN).await;
    assert!(info["circuit"].is_null(), "{info}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooldown_off_keeps_a_failed_plugin_failed() {
    let h = host(
        "[defaults.restart]\nbackoff = \"immediate\"\nmax-restarts = 0\nmax-attempts = 1\ncooldown = \"off\"\n",
    )
    .await;
    assert_eq!(h.send("probe", "crash").await.status, 500);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = h.send("probe", "count").await;
    assert_eq!(refused.status, 503);
    assert!(
        refused.json()["retry_after_secs"].is_null(),
        "{}",
        refused.text()
    );
    let info = h.admin.info("probe").await;
    assert_eq!(info["status"], "failed", "{info}");
    assert!(info["circuit"].is_null(), "{info}");
    h.stop().await;
}

async fn ticks(h: &TestHost) -> u64 {
    let a = h.send("probe", "get ticks").await;
    if a.status == 200 {
        a.text().parse().unwrap()
    } else {
        0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tick_delivers_a_message_every_interval_and_skips_while_busy_or_down() {
    let h = host("[defaults]\ntick = \"100ms\"\n").await;
    tokio::time::sleep(Duration::from_millis(1050)).await;
    let n = ticks(&h).await;
    assert!((5..=11).contains(&n), "about 10 ticks in a second, got {n}");

    // Busy for a second: the ticks due meanwhile are skipped, not queued.
    let before = ticks(&h).await;
    assert_eq!(h.send("probe", "sleep 1000").await.ok(), "slept");
    let after = ticks(&h).await;
    assert!(
        after - before <= 2,
        "ticks piled up while busy: {before} → {after}"
    );

    // Down for a second: none delivered, none queued.
    assert_eq!(
        h.admin.post("/v1/plugins/probe/stop", vec![]).await.status,
        200
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        h.admin.post("/v1/plugins/probe/start", vec![]).await.status,
        200
    );
    h.admin.wait_status("probe", "running", WITHIN).await;
    let restarted = ticks(&h).await;
    assert!(
        restarted - after <= 2,
        "ticks piled up while stopped: {after} → {restarted}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_exits_1_when_its_restart_budget_is_exhausted() {
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE).plugin("other", PROBE).config(
        r#"
[host]
max-restarts = 3
[defaults.restart]
backoff = "immediate"
max-restarts = 100
max-attempts = 1
"#,
    );
    let mut host = HostProcess::start(dir.path(), &[]).await;
    for _ in 0..3 {
        assert_eq!(host.admin.send("probe", "crash").await.status, 500);
    }
    let (code, out, err) = host.cli(&["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("host restart budget: 3 of 3 restarts used within 60s"),
        "{out}"
    );
    // The fourth restart, of another plugin, is one too many.
    let _ = host.admin.try_send("other", "crash").await;
    assert_eq!(
        host.wait_exit(Duration::from_secs(15)),
        Some(1),
        "{}",
        host.log_text()
    );
    let log = host.log_text();
    assert!(
        log.contains(
            "error: the host's restart budget is exhausted: 4 restarts within 60s exceed [host] max-restarts (3); the last was plugin `other` (cause: unreachable)"
        ),
        "{log}"
    );
}
