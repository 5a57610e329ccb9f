//! A restart after each crash cause; redelivery and dead letters; intensity
//! leading to `failed`; the restart types.

use crate::util::{PluginDir, TestHost, wat};
use std::time::{Duration, Instant};
use wasm_sup_tests::{LIMITS, MINIMAL, PROBE};

/// Sends `message`, expects it dead-lettered with `cause` on every delivery,
/// then checks the plugin restarted and answers again.
async fn crashes_with(h: &TestHost, plugin: &str, message: &str, cause: &str, next: &str) {
    let a = h.send(plugin, message).await;
    assert_eq!(a.status, 500, "{message}: {}", a.text());
    let j = a.json();
    assert_eq!(
        j["causes"],
        serde_json::json!([cause, cause]),
        "{message}: {j}"
    );
    assert!(j["dead_letter"].as_u64().is_some());
    let info = h.admin.info(plugin).await;
    assert_eq!(info["last_crash"], cause);
    h.send(plugin, next).await.ok();
}

const FAST_RESTARTS: &str = r#"
[defaults.restart]
backoff = "immediate"
max-restarts = 100
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_after_each_trap_cause() {
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE)
        .plugin("slow", PROBE)
        .plugin("small", PROBE)
        .wat("deep", &wat::stack_overflow())
        .wat("divide", &wat::divide_by_zero())
        .config(&format!(
            "{FAST_RESTARTS}
[plugins.probe]
fuel = 50_000_000
max-reply = \"1KiB\"
[plugins.slow]
fuel = 0
timeout = \"300ms\"
[plugins.small]
memory = \"16MiB\"
"
        ));
    let h = TestHost::start(dir).await;
    crashes_with(&h, "probe", "crash", "unreachable", "count").await;
    crashes_with(&h, "probe", "unreachable", "unreachable", "count").await;
    crashes_with(&h, "probe", "spin", "out-of-fuel", "count").await;
    crashes_with(&h, "probe", "recurse 100000", "out-of-bounds", "count").await;
    crashes_with(&h, "probe", "exit 3", "exit", "count").await;
    crashes_with(&h, "probe", "reply-bytes 2048", "reply-too-large", "count").await;
    crashes_with(&h, "slow", "spin", "timeout", "count").await;
    crashes_with(&h, "slow", "sleep 5000", "timeout", "count").await;
    crashes_with(&h, "small", "grow 32", "memory-limit", "count").await;
    let a = h.send("deep", "x").await;
    assert_eq!(a.json()["causes"][0], "stack-overflow");
    let a = h.send("divide", "x").await;
    assert_eq!(a.json()["causes"][0], "trap");

    // Earlier state survived every crash: `count` ran once after each.
    assert_eq!(h.send("probe", "get count").await.ok(), "6");
    let info = h.admin.info("probe").await;
    assert_eq!(info["status"], "running");
    assert_eq!(info["restarts"], 12, "{info}");
    assert_eq!(info["generation"], 13, "{info}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_zero_is_a_normal_exit_not_a_crash() {
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE)
        .plugin("once", PROBE)
        .config(&format!(
            "{FAST_RESTARTS}
[plugins.once.restart]
type = \"transient\"
"
        ));
    let h = TestHost::start(dir).await;
    // Permanent: restarted; the message was not answered, so it is delivered
    // again, and after max-attempts it is dead-lettered with no crash cause.
    let a = h.send("probe", "exit 0").await;
    assert_eq!(
        a.json()["causes"],
        serde_json::json!(["normal-exit", "normal-exit"])
    );
    assert_eq!(
        h.admin.info("probe").await["last_crash"],
        serde_json::Value::Null
    );
    h.send("probe", "count").await.ok();
    // Transient: a normal exit stops it; the sender is told it is stopped.
    let a = h.send("once", "exit 0").await;
    assert_eq!(a.status, 503, "{}", a.text());
    assert_eq!(a.json()["status"], "stopped");
    assert_eq!(h.admin.info("once").await["status"], "stopped");
    assert_eq!(h.send("once", "count").await.status, 503);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_restarts_after_crash_and_temporary_does_not() {
    let dir = PluginDir::new();
    dir.plugin("trans", PROBE)
        .plugin("temp", PROBE)
        .config(&format!(
            "{FAST_RESTARTS}
[plugins.trans.restart]
type = \"transient\"
[plugins.temp.restart]
type = \"temporary\"
"
        ));
    let h = TestHost::start(dir).await;
    assert_eq!(h.send("trans", "crash").await.status, 500);
    h.send("trans", "count").await.ok();
    // A temporary plugin is not restarted: its message is dead-lettered at
    // once (no delivery is left for it) and it stops.
    let a = h.send("temp", "crash").await;
    assert_eq!(a.status, 500);
    assert_eq!(a.json()["causes"], serde_json::json!(["unreachable"]));
    assert_eq!(h.admin.info("temp").await["status"], "stopped");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_message_is_redelivered_then_dead_lettered_and_the_next_is_handled() {
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE).config(
        r#"
[plugins.probe.restart]
backoff = "fixed"
initial = "10ms"
max-attempts = 3
max-restarts = 10
"#,
    );
    let h = TestHost::start(dir).await;
    // The poison message and a good one behind it, sent together.
    let (poison, next) = tokio::join!(h.send("probe", "crash"), async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        h.send("probe", "count").await
    });
    assert_eq!(poison.status, 500);
    assert_eq!(
        poison.json()["causes"],
        serde_json::json!(["unreachable", "unreachable", "unreachable"])
    );
    assert_eq!(next.ok(), "1");
    let info = h.admin.info("probe").await;
    assert_eq!(
        info["restarts"], 3,
        "three deliveries, three crashes, three restarts: {info}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_failing_every_time_ends_failed_after_its_backoff_not_in_a_tight_loop() {
    let dir = PluginDir::new();
    dir.plugin("bad", PROBE).plugin("good", MINIMAL).config(
        r#"
[plugins.bad]
config = { init = "fail" }
[plugins.bad.restart]
backoff = "exponential"
initial = "40ms"
multiplier = 2.0
jitter = 0.0
max-restarts = 3
window = "60s"
"#,
    );
    let started = Instant::now();
    let h = TestHost::start(dir).await;
    let info = h
        .admin
        .wait_status("bad", "failed", Duration::from_secs(10))
        .await;
    let elapsed = started.elapsed();
    // 4 starts: three restarts after 40 + 80 + 160 ms of backoff, then failed.
    assert_eq!(info["generation"], 4, "{info}");
    assert_eq!(info["last_crash"], "init-failed");
    assert!(
        elapsed >= Duration::from_millis(280),
        "backoff was not applied: {elapsed:?}"
    );
    assert!(
        info["reason"]
            .as_str()
            .unwrap()
            .contains("exceed max-restarts"),
        "{info}"
    );
    // Messages are refused at once with 503 and the reason.
    let a = h.send("bad", "count").await;
    assert_eq!(a.status, 503);
    assert_eq!(a.json()["status"], "failed");
    // The other plugin is unaffected; readiness reflects the failed one.
    assert_eq!(h.send("good", "hi").await.ok(), "hi");
    assert_eq!(h.admin.get("/readyz").await.status, 503);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_queued_while_in_backoff_wait_and_are_handled() {
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE).config(
        r#"
[plugins.probe.restart]
backoff = "fixed"
initial = "300ms"
jitter = 0.0
max-attempts = 1
"#,
    );
    let h = TestHost::start(dir).await;
    assert_eq!(h.send("probe", "crash").await.status, 500);
    let info = h.admin.info("probe").await;
    assert_eq!(info["status"], "backoff", "{info}");
    let t = Instant::now();
    assert_eq!(h.send("probe", "count").await.ok(), "1");
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_example_demonstrates_each_limit() {
    let dir = PluginDir::new();
    dir.plugin("limits", LIMITS).config(&format!(
        "{FAST_RESTARTS}
[plugins.limits]
memory = \"32MiB\"
timeout = \"500ms\"
fuel = 0
"
    ));
    let h = TestHost::start(dir).await;
    assert_eq!(h.send("limits", "ok").await.ok(), "ok");
    for (msg, cause) in [
        ("spin", "timeout"),
        ("grow", "memory-limit"),
        ("recurse", "out-of-bounds"),
        ("sleep 2000", "timeout"),
    ] {
        let a = h.send("limits", msg).await;
        assert_eq!(a.json()["causes"][0], cause, "{msg}");
    }
    h.stop().await;
}
