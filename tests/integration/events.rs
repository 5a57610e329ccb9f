//! Issue 16: the event stream (`GET /v1/events`, Server-Sent Events) and the
//! health endpoints for load balancers, through a real HTTP server on
//! loopback with the probe guest: ordering, the plugin filter, resuming with
//! `Last-Event-ID`, `event: reset`, a stuck subscriber, `/health` and
//! `/v1/plugins/{name}/health` with their status codes, and `wasm-sup events`.

use crate::util::{Frame, HostProcess, ONE_ATTEMPT, PluginDir, Stream, TestHost, WITHIN};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasm_sup_tests::PROBE;

/// A host running the probe, one delivery per message.
async fn probe_host() -> TestHost {
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE).config(ONE_ATTEMPT);
    let h = TestHost::start(dir).await;
    h.admin.wait_status("probe", "running", WITHIN).await;
    h
}

fn kinds(frames: &[Frame]) -> Vec<String> {
    frames
        .iter()
        .map(|f| f.data["kind"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn is(kind: &'static str, generation: u64) -> impl Fn(&Frame) -> bool {
    move |f| f.data["kind"] == kind && f.data["generation"] == generation
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_is_told_in_order_crashed_restarting_dead_lettered_started() {
    let h = probe_host().await;
    let mut s = Stream::open(&h.admin, "", None).await;
    assert_eq!(h.send("probe", "unreachable").await.status, 500);
    let seen = s.until(is("started", 2)).await;
    assert_eq!(
        kinds(&seen),
        ["crashed", "restarting", "dead-lettered", "started"],
        "{seen:?}"
    );
    let crashed = &seen[0].data;
    assert_eq!(crashed["plugin"], "probe");
    assert_eq!(crashed["cause"], "unreachable");
    assert_eq!(crashed["call"], "handle");
    assert_eq!(crashed["generation"], 1);
    assert!(crashed["report"].is_u64(), "{crashed}");
    assert!(crashed["decision"].as_str().unwrap().contains("restart"));
    assert!(
        humantime::parse_rfc3339(crashed["time"].as_str().unwrap()).is_ok(),
        "{crashed}"
    );
    assert_eq!(seen[1].data["restarts"], 1);
    assert_eq!(seen[2].data["causes"], serde_json::json!(["unreachable"]));
    // Each event's id is its SSE id, and ids grow.
    let ids: Vec<u64> = seen
        .iter()
        .map(|f| {
            assert_eq!(f.id.as_deref(), f.data["id"].as_str());
            f.id.as_ref()
                .unwrap()
                .rsplit('-')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");

    // An operator's stop and start.
    h.admin
        .post("/v1/plugins/probe/stop", Vec::new())
        .await
        .ok();
    h.admin
        .post("/v1/plugins/probe/start", Vec::new())
        .await
        .ok();
    let seen = s.until(is("started", 3)).await;
    assert_eq!(kinds(&seen), ["stopped", "started"], "{seen:?}");
    assert_eq!(seen[0].data["reason"], "stopped by an operator");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filter_keeps_one_plugin_and_a_bad_name_is_400() {
    let dir = PluginDir::new();
    dir.plugin("a", PROBE)
        .plugin("b", PROBE)
        .config(ONE_ATTEMPT);
    let h = TestHost::start(dir).await;
    h.admin.wait_status("a", "running", WITHIN).await;
    h.admin.wait_status("b", "running", WITHIN).await;
    let mut only_b = Stream::open(&h.admin, "?plugin=b", None).await;
    h.send("a", "unreachable").await;
    h.send("b", "unreachable").await;
    let seen = only_b.until(is("started", 2)).await;
    assert!(seen.iter().all(|f| f.data["plugin"] == "b"), "{seen:?}");
    assert_eq!(seen[0].data["kind"], "crashed");
    let bad = h.admin.get("/v1/events?plugin=Not%20A%20Name").await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(
        bad.json()["error"]
            .as_str()
            .unwrap()
            .contains("not a valid plugin name")
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_after_its_last_id_and_an_unknown_id_is_reset() {
    let h = probe_host().await;
    let mut s = Stream::open(&h.admin, "", None).await;
    h.send("probe", "unreachable").await;
    let all = s.until(is("started", 2)).await;
    drop(s);
    // Reconnect after the first: the rest again, in order, then live.
    let mut again = Stream::open(&h.admin, "", all[0].id.as_deref()).await;
    let resumed = again.until(is("started", 2)).await;
    let ids = |v: &[Frame]| v.iter().map(|f| f.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&resumed), ids(&all[1..]));
    h.admin
        .post("/v1/plugins/probe/stop", Vec::new())
        .await
        .ok();
    assert_eq!(again.next().await.data["kind"], "stopped");

    // An id of another run (a host restarted since), or nonsense: reset first.
    for id in ["0badc0de-3", "nonsense"] {
        let mut s = Stream::open(&h.admin, "", Some(id)).await;
        let first = s.next().await;
        assert_eq!(first.event.as_deref(), Some("reset"), "{first:?}");
        assert!(
            first.data["error"].as_str().unwrap().contains("missed"),
            "{first:?}"
        );
        h.admin
            .post("/v1/plugins/probe/start", Vec::new())
            .await
            .ok();
        let live = s.next().await;
        assert_eq!(live.data["kind"], "started", "then the live stream");
        h.admin
            .post("/v1/plugins/probe/stop", Vec::new())
            .await
            .ok();
    }
    h.stop().await;
}

/// A subscriber that never reads does not slow the plugins: 600 stop/start
/// operations (1,200 events, more than a subscriber may fall behind) take
/// the time they take without it, a reading subscriber sees every event, and
/// the stuck one, read at last, ends with `event: dropped` if it fell behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_subscriber_never_slows_a_plugin() {
    let h = probe_host().await;
    let mut stuck = tokio::net::TcpStream::connect(h.admin.addr).await.unwrap();
    stuck
        .write_all(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut reader = Stream::open(&h.admin, "", None).await;
    let started = std::time::Instant::now();
    for _ in 0..600 {
        h.admin
            .post("/v1/plugins/probe/stop", Vec::new())
            .await
            .ok();
        h.admin
            .post("/v1/plugins/probe/start", Vec::new())
            .await
            .ok();
    }
    let took = started.elapsed();
    assert_eq!(h.send("probe", "count").await.status, 200);
    let mut n = 0;
    while n < 1200 {
        let f = reader.next().await;
        assert!(
            f.event.is_none(),
            "a reading subscriber is not dropped: {f:?}"
        );
        n += 1;
    }
    // Generous: 1,200 operations on loopback, whatever the subscriber does.
    assert!(took < Duration::from_secs(60), "{took:?}");
    let mut text = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stuck.read_to_end(&mut text)).await;
    let text = String::from_utf8_lossy(&text);
    if let Some(at) = text.find("event: dropped") {
        assert!(
            !text[at..].contains("\nid: "),
            "nothing follows the drop notice"
        );
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_200_or_503_for_the_host_and_each_plugin() {
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE).plugin("other", PROBE).config(
        r#"
[defaults.health]
interval = "100ms"
timeout = "300ms"
threshold = 2
[defaults.restart]
backoff = "immediate"
max-restarts = 100
[plugins.other.restart]
type = "transient"
"#,
    );
    let h = TestHost::start(dir).await;
    h.admin.wait_status("probe", "running", WITHIN).await;
    h.admin.wait_status("other", "running", WITHIN).await;
    let all = h.admin.get("/health").await;
    assert_eq!(all.status, 200, "{}", all.text());
    assert_eq!(all.json()["status"], "healthy");
    let plugins = all.json()["plugins"].as_array().unwrap().clone();
    assert_eq!(plugins.len(), 2);
    assert!(
        plugins.iter().all(|p| p["health"] == "healthy"),
        "{plugins:?}"
    );
    let one = h.admin.get("/v1/plugins/probe/health").await;
    assert_eq!(
        (one.status, one.json()["health"].clone()),
        (200, "healthy".into())
    );

    // Degraded: still served.
    let mut events = Stream::open(&h.admin, "?plugin=probe", None).await;
    h.send("probe", "set health degraded").await.ok();
    let told = events.until(|f| f.data["kind"] == "health").await;
    assert_eq!(told.last().unwrap().data["health"], "degraded: told to");
    let one = h.admin.get("/v1/plugins/probe/health").await;
    assert_eq!(one.status, 200, "{}", one.text());
    assert_eq!(one.json()["health"], "degraded");
    assert_eq!(one.json()["detail"], "degraded: told to");
    assert_eq!(h.admin.get("/health").await.status, 200);

    // A stopped transient plugin does not make the host unhealthy; it is 503 itself.
    h.admin
        .post("/v1/plugins/other/stop", Vec::new())
        .await
        .ok();
    let other = h.admin.get("/v1/plugins/other/health").await;
    assert_eq!(other.status, 503, "{}", other.text());
    assert_eq!(other.json()["health"], serde_json::Value::Null);
    assert_eq!(h.admin.get("/health").await.status, 200);

    // A stopped permanent plugin does.
    h.admin
        .post("/v1/plugins/probe/stop", Vec::new())
        .await
        .ok();
    let all = h.admin.get("/health").await;
    assert_eq!(all.status, 503, "{}", all.text());
    assert_eq!(all.json()["status"], "unhealthy");
    assert_eq!(h.admin.get("/v1/plugins/nosuch/health").await.status, 404);
    assert_eq!(h.admin.get("/v1/plugins/Bad!/health").await.status, 400);
    h.stop().await;
}

/// `/health` needs no token; `/v1/events` does; `wasm-sup events` tails the
/// stream as lines of text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_open_events_need_the_token_and_the_cli_tails_them() {
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE).config(ONE_ATTEMPT);
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token-for-events\n").unwrap();
    let host = HostProcess::start(dir.path(), &["--token-file", token.to_str().unwrap()]).await;
    let admin = host.admin.clone();
    assert_eq!(admin.get("/health").await.status, 200);
    assert_eq!(admin.get("/v1/events").await.status, 401);
    let mut tail = std::process::Command::new(crate::util::wasm_sup_bin())
        .args(["events", "--admin", &host.admin.addr.to_string()])
        .args(["--token-file", token.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The tail is connected once an operation's events reach it.
    let authed = admin.with_token("s3cret-token-for-events");
    let mut out = String::new();
    let stdout = tail.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains(" crashed "))
    });
    let deadline = std::time::Instant::now() + WITHIN;
    while !lines.is_finished() && std::time::Instant::now() < deadline {
        authed.send("probe", "unreachable").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = tail.kill();
    let _ = tail.wait();
    if let Ok(Some(line)) = lines.join() {
        out = line;
    }
    assert!(
        out.contains("probe") && out.contains("unreachable in handle"),
        "a crash line: {out:?}"
    );
}

/// The sample alerting rules in `dist/` are valid rules, every metric they
/// name is one the host serves, and a live scrape passes `promtool check
/// metrics`; every family is there before anything happened, with zero
/// counters, `build_info`, `up`, health and the process metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_there_from_the_start_and_the_alert_rules_check() {
    let h = probe_host().await;
    let text = h.admin.get("/metrics").await.ok();
    let values = crate::util::scrape(&text);
    for (series, want) in [
        ("wasm_sup_crashes_total{cause=trap,plugin=probe}", 0.0),
        (
            "wasm_sup_messages_total{outcome=dead-lettered,plugin=probe}",
            0.0,
        ),
        ("wasm_sup_restarts_total{plugin=probe}", 0.0),
        ("wasm_sup_group_restarts_total{group=root}", 0.0),
        ("wasm_sup_plugin_up{plugin=probe}", 1.0),
        ("wasm_sup_plugin_health{health=healthy,plugin=probe}", 1.0),
        ("wasm_sup_plugin_health{health=unhealthy,plugin=probe}", 0.0),
        ("wasm_sup_restart_budget_used{}", 0.0),
    ] {
        assert_eq!(values.get(series), Some(&want), "{series} in\n{text}");
    }
    for name in [
        "wasm_sup_build_info",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} in\n{text}"
        );
    }
    let Some(promtool) = crate::util::tool("promtool", "prometheus") else {
        h.stop().await;
        return;
    };
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/../dist/wasm-sup-alerts.yml");
    let out = std::process::Command::new(promtool)
        .args(["check", "rules", rules])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Every wasm_sup_ metric the rules name is served.
    let rules_text = std::fs::read_to_string(rules).unwrap();
    for word in rules_text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("wasm_sup_") {
            assert!(
                text.contains(word),
                "the rules name {word}, which is not served"
            );
        }
    }
    let mut check = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = check.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
    }
    let out = check.wait_with_output().unwrap();
    // Lint findings are printed; only an unparsable scrape fails.
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("error while linting"),
        "promtool check metrics: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    h.stop().await;
}

/// A live upgrade is `upgraded` from the old version to the new one; a new
/// version over its intensity within its probation is `rolled-back`; the
/// old one past its intensity is `failed` with its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_a_rollback_and_a_give_up_are_told() {
    let probe = std::fs::read(PROBE).unwrap();
    let dir = PluginDir::new();
    dir.bytes("probe", &probe).config(
        r#"
[defaults.restart]
backoff = "immediate"
max-restarts = 1
max-attempts = 1
cooldown = "off"
"#,
    );
    let h = TestHost::start(dir).await;
    h.admin.wait_status("probe", "running", WITHIN).await;
    let mut s = Stream::open(&h.admin, "", None).await;
    let v2 = wasm_sup_tests::variant(&probe, "v2");
    h.dir.replace("probe", &v2);
    let seen = s.until(|f| f.data["kind"] == "upgraded").await;
    let up = &seen.last().unwrap().data;
    let (old, new) = (crate::util::sha256(&probe), crate::util::sha256(&v2));
    assert_eq!(
        (&up["from"], &up["to"]),
        (&old.clone().into(), &new.clone().into())
    );
    s.until(|f| f.data["kind"] == "started").await;

    // Two crashes within the probation: back to the old version.
    h.send("probe", "unreachable").await;
    h.admin.wait_status("probe", "running", WITHIN).await;
    h.send("probe", "unreachable").await;
    let seen = s.until(|f| f.data["kind"] == "rolled-back").await;
    let n = seen.len();
    assert_eq!(
        seen[n - 2].data["kind"],
        "crashed",
        "the crash is told before the rollback it caused: {seen:?}"
    );
    let back = &seen.last().unwrap().data;
    assert_eq!((&back["from"], &back["to"]), (&new.into(), &old.into()));
    assert!(
        back["reason"].as_str().unwrap().contains("max-restarts"),
        "{back}"
    );

    // The old version crashing past its intensity gives up: failed.
    for _ in 0..4 {
        h.admin
            .wait_info("probe", WITHIN, "running or failed", |i| {
                i["status"] == "running" || i["status"] == "failed"
            })
            .await;
        h.send("probe", "unreachable").await;
    }
    let seen = s.until(|f| f.data["kind"] == "failed").await;
    let failed = &seen.last().unwrap().data;
    assert!(!failed["reason"].as_str().unwrap().is_empty(), "{failed}");
    assert_eq!(
        failed["retry_in_secs"],
        serde_json::Value::Null,
        "cooldown off"
    );
    h.stop().await;
}
