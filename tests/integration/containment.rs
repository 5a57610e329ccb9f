//! Regression tests for the holes an adversarial run found (issue 13), one
//! or more per hole, named after it: what a plugin or a client did that hurt
//! the host, and that it no longer does. Each checks the host and a canary
//! plugin beside it carry on.

use crate::util::{HostProcess, ONE_ATTEMPT, PluginDir, TestHost, wat};
use std::time::{Duration, Instant};
use wasm_sup_tests::PROBE;

/// A component whose `handle` grows `instances` memories of their own (one
/// per core instance, each starting empty) by `pages` pages each, then
/// answers Ok. Each memory alone stays under the plugin's `memory`.
pub(crate) fn many_memories(instances: usize, pages: u32) -> String {
    let mut wat = String::from(
        "(component\n  (core module $g (memory 0) (func (export \"grow\") (param i32) (result i32) local.get 0 memory.grow))\n",
    );
    for i in 0..instances {
        wat += &format!("  (core instance $g{i} (instantiate $g))\n");
    }
    wat += "  (core module $m\n";
    for i in 0..instances {
        wat +=
            &format!("    (import \"g{i}\" \"grow\" (func $grow{i} (param i32) (result i32)))\n");
    }
    wat += "    (memory (export \"memory\") 1)\n    (func (export \"handle\") (param i32 i32) (result i32)\n";
    for i in 0..instances {
        wat += &format!("      (drop (call $grow{i} (i32.const {pages})))\n");
    }
    wat += "      (i32.store (i32.const 16) (i32.const 0)) (i32.store (i32.const 20) (i32.const 0)) (i32.store (i32.const 24) (i32.const 0)) (i32.const 16))\n";
    wat += "    (func (export \"cabi_realloc\") (param i32 i32 i32 i32) (result i32) i32.const 1024))\n";
    wat += "  (core instance $i (instantiate $m";
    for i in 0..instances {
        wat += &format!(" (with \"g{i}\" (instance $g{i}))");
    }
    wat += "))\n";
    wat += r#"  (func $handle (param "message" (list u8)) (result (result (list u8) (error string)))
    (canon lift (core func $i "handle") (memory (core memory $i "memory")) (realloc (core func $i "cabi_realloc"))))
  (instance $h (export "handle" (func $handle)))
  (export "wasm-sup:plugin/handler@0.1.0" (instance $h)))"#;
    wat
}

/// A component with `instances` core instances whose memories start at
/// `pages` pages each, beside a handler that answers Ok.
fn big_initial_memories(instances: usize, pages: u32) -> String {
    let mut extra = format!("(core module $g (memory {pages}))");
    for i in 0..instances {
        extra += &format!(" (core instance $g{i} (instantiate $g))");
    }
    wat::ok_empty().replacen("(component", &format!("(component {extra}"), 1)
}

/// The canary answers and its count went up by one.
async fn canary_counts(h: &TestHost, expected: u64) {
    assert_eq!(h.send("canary", "count").await.ok(), expected.to_string());
}

/// Hole 1: `memory` bounded each memory, not the plugin: four memories of
/// 60 MiB each answered 200 under `memory = "64MiB"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole01_memories_that_add_up_past_memory_are_memory_limit() {
    let dir = PluginDir::new();
    dir.wat("bomb", &many_memories(4, 960))
        .wat("fits", &many_memories(4, 200))
        .plugin("canary", PROBE)
        .config(&format!("{ONE_ATTEMPT}\n[defaults]\nmemory = \"64MiB\"\n"));
    let h = TestHost::start(dir).await;
    canary_counts(&h, 1).await;
    let a = h.send("bomb", "x").await;
    assert_eq!(a.status, 500, "{}", a.text());
    assert_eq!(a.json()["causes"], serde_json::json!(["memory-limit"]));
    let crashes = h.admin.get("/v1/plugins/bomb/crashes").await.json();
    let report = &crashes["crashes"][0];
    assert!(
        report["memory_bytes"].as_u64().unwrap() <= 64 << 20,
        "{report}"
    );
    // Four memories of 12.5 MiB each fit in 64 MiB together.
    assert_eq!(h.send("fits", "x").await.status, 200);
    canary_counts(&h, 2).await;
    h.stop().await;
}

/// Hole 1, at instantiation: memories that already exceed `memory` when
/// the instance is made crash its start with `memory-limit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole01_memories_over_memory_at_instantiation_crash_the_start() {
    let dir = PluginDir::new();
    dir.wat("wide", &big_initial_memories(3, 400))
        .plugin("canary", PROBE)
        .config(&format!("{ONE_ATTEMPT}\n[defaults]\nmemory = \"64MiB\"\n"));
    let h = TestHost::start(dir).await;
    let info = h
        .admin
        .wait_info("wide", Duration::from_secs(10), "crashed", |i| {
            i["last_crash"] == "memory-limit"
        })
        .await;
    assert_ne!(info["status"], "running", "{info}");
    canary_counts(&h, 1).await;
    h.stop().await;
}

/// Hole 2: durable timers bypassed the state quota (1,500 timers of 1 MB
/// were accepted with the quota's usage at 0). Their messages count in
/// `state.max-bytes`, a plugin holds at most 10,000, and a delay past 366
/// days is `too-large`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole02_timers_count_against_the_state_quota() {
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE)
        .plugin("many", PROBE)
        .plugin("canary", PROBE)
        .config(&format!(
            "{ONE_ATTEMPT}\n[plugins.probe.state]\nmax-bytes = \"64KiB\"\n"
        ));
    let h = TestHost::start_with(dir, None).await;
    // 1 KiB timers an hour away: about 64 fit, then `mailbox-full`.
    let a = h
        .send("probe", "send-after-many 3600000 100 1024")
        .await
        .ok();
    let (accepted, refusal) = a.split_once(' ').unwrap();
    let accepted: u32 = accepted.parse().unwrap();
    assert!((60..=64).contains(&accepted), "{a}");
    assert_eq!(refusal, "mailbox-full");
    // Committed: the quota is used up for keys too, and stays so when the
    // host starts again and reads the usage from the state file.
    let big = format!("set k {}", "v".repeat(4096));
    let a = h.send("probe", big.as_str()).await;
    assert_eq!(a.status, 422, "{}", a.text());
    assert!(a.text().contains("quota exceeded"), "{}", a.text());
    let h = TestHost::start_with(h.stop().await, None).await;
    assert_eq!(
        h.send("probe", "send-after-many 3600000 1 1024").await.ok(),
        "0 mailbox-full"
    );
    // At most 10,000 timers, whatever their size.
    let mut total = 0;
    for _ in 0..10 {
        let a = h.send("many", "send-after-many 3600000 1024 1").await.ok();
        total += a.split_once(' ').unwrap().0.parse::<u32>().unwrap();
    }
    assert_eq!(total, 10_000);
    assert_eq!(
        h.send("many", "send-after-many 3600000 1 1").await.ok(),
        "0 mailbox-full"
    );
    // A year and a day is the longest delay.
    let a = h.send("many", "send-after 31708800001 late").await;
    assert_eq!((a.status, a.text()), (422, "too-large".to_string()));
    canary_counts(&h, 1).await;
    h.stop().await;
}

/// Hole 3: one call queued 1,024 messages of 1 MB and then trapped, holding
/// about 1 GB. A call's outbox holds at most 1,024 messages and 16 ×
/// `max-message` bytes; past them `send` answers `mailbox-full`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole03_a_calls_outbox_is_bounded() {
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE)
        .plugin("sink", PROBE)
        .plugin("canary", PROBE)
        .config(&format!(
            "{ONE_ATTEMPT}\n[plugins.sink]\nmailbox = 5000\n[plugins.probe]\nmax-message = \"64KiB\"\n"
        ));
    let h = TestHost::start(dir).await;
    // 16 × 64 KiB: sixteen messages of 64 KiB, then the outbox is full.
    assert_eq!(
        h.send("probe", "send-many sink 100 65536").await.ok(),
        "16 mailbox-full"
    );
    assert_eq!(
        h.send("probe", "send-many sink 2000 1").await.ok(),
        "1024 mailbox-full"
    );
    // A flood that traps: discarded, and the slots it reserved are free again.
    let a = h.send("probe", "send-many sink 2000 1 trap").await;
    assert_eq!(a.status, 500, "{}", a.text());
    let sink = h
        .admin
        .wait_info("sink", Duration::from_secs(30), "drained", |i| {
            i["mailbox_depth"] == 0
        })
        .await;
    assert_eq!(sink["status"], "running");
    canary_counts(&h, 1).await;
    h.stop().await;
}

/// Hole 6: an `Err` reason of 5 MB came back as a 422 body with `max-reply`
/// at 1 MiB. An `Err` over `max-reply` is a `reply-too-large` crash, like an
/// `Ok` reply over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole06_an_err_reason_over_max_reply_is_reply_too_large() {
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE)
        .plugin("canary", PROBE)
        .config(&format!(
            "{ONE_ATTEMPT}\n[plugins.probe]\nmax-reply = \"1KiB\"\n"
        ));
    let h = TestHost::start(dir).await;
    let a = h.send("probe", "err short").await;
    assert_eq!((a.status, a.text()), (422, "short".to_string()));
    let long = format!("err {}", "e".repeat(2000));
    let a = h.send("probe", long.as_str()).await;
    assert_eq!(a.status, 500, "{}", a.text());
    assert_eq!(a.json()["causes"], serde_json::json!(["reply-too-large"]));
    canary_counts(&h, 1).await;
    h.stop().await;
}

/// Hole 11: while plugins compiled at start, the admin API accepted
/// connections and answered nothing (a `send` hung 26 s, `/healthz` too).
/// Now `/healthz` answers at once, `/readyz` says `loading N/M`, and a
/// message for a plugin still loading gets 503 `loading` with `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole11_the_admin_api_answers_while_plugins_compile() {
    let dir = PluginDir::new();
    let probe = std::fs::read(PROBE).unwrap();
    // Distinct bytes, so each is compiled (no cache, no sharing).
    for i in 0..12 {
        dir.bytes(
            &format!("p{i:02}"),
            &wasm_sup_tests::variant(&probe, &format!("{i}")),
        );
    }
    dir.config("[host]\ncompile-cache = \"off\"\n");
    let mut host = HostProcess::start_live(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    let base = format!("http://{}", host.admin.addr);
    let (mut saw_loading, mut saw_message_loading) = (false, false);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let started = Instant::now();
        let healthz = client.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(healthz.status(), 200);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "/healthz took {:?}",
            started.elapsed()
        );
        let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
        if ready.status() == 200 {
            break;
        }
        let body: serde_json::Value = ready.json().await.unwrap();
        if body["status"] == "loading" {
            saw_loading = true;
            assert!(
                body["reason"].as_str().unwrap().starts_with("loading "),
                "{body}"
            );
            let sent = client
                .post(format!("{base}/v1/plugins/p11/messages"))
                // Read-only: p11 may have started between /readyz and this.
                .body("get k")
                .send()
                .await
                .unwrap();
            if sent.status() == 503 {
                assert!(sent.headers().contains_key("retry-after"));
                let j: serde_json::Value = sent.json().await.unwrap();
                assert_eq!(j["status"], "loading", "{j}");
                saw_message_loading = true;
            }
        }
        assert!(
            Instant::now() < deadline,
            "never ready:\n{}",
            host.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_loading && saw_message_loading, "{}", host.log_text());
    assert_eq!(host.admin.send("p11", "count").await.ok(), "1");
    host.signal("TERM");
    assert_eq!(host.wait_exit(Duration::from_secs(30)), Some(0));
}

/// The admin API's connection bounds: a client that sends half its headers
/// is cut off after 10 s, and idle connections do not keep others out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_admin_clients_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = PluginDir::new();
    dir.plugin("canary", PROBE);
    let mut host = HostProcess::start(dir.path(), &[]).await;
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(
            tokio::net::TcpStream::connect(host.admin.addr)
                .await
                .unwrap(),
        );
    }
    let mut slow = tokio::net::TcpStream::connect(host.admin.addr)
        .await
        .unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert_eq!(host.admin.send("canary", "count").await.ok(), "1");
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the half-sent request was never cut off");
    assert!(started.elapsed() >= Duration::from_secs(8));
    assert_eq!(host.admin.send("canary", "count").await.ok(), "2");
    drop(idle);
    host.signal("TERM");
    assert_eq!(host.wait_exit(Duration::from_secs(30)), Some(0));
}

/// Refinement 9: load-balancer probes send no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_need_no_token() {
    let dir = PluginDir::new();
    dir.plugin("canary", PROBE);
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let mut host = HostProcess::start(dir.path(), &["--token-file", token.to_str().unwrap()]).await;
    // Loaded, but the canary may still be starting: ready within a while,
    // and never asked for the token.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = host.admin.get("/readyz").await.status;
        assert_ne!(status, 401);
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(host.admin.get("/healthz").await.status, 200);
    assert_eq!(host.admin.get("/v1/plugins").await.status, 401);
    assert_eq!(
        host.admin
            .with_token("s3cret")
            .get("/v1/plugins")
            .await
            .status,
        200
    );
    host.signal("TERM");
    assert_eq!(host.wait_exit(Duration::from_secs(30)), Some(0));
}
