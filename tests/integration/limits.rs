//! Each limit as an obeyed/violated pair, and the isolation of one plugin's
//! spinning from another's replies.

use crate::util::{ONE_ATTEMPT, PluginDir, TestHost};
use std::time::{Duration, Instant};
use wasm_sup_tests::{MINIMAL, PROBE};

async fn host(extra: &str) -> TestHost {
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE)
        .config(&format!("{ONE_ATTEMPT}\n[plugins.probe]\n{extra}"));
    TestHost::start(dir).await
}

fn cause(a: &crate::util::Answer) -> String {
    assert_eq!(a.status, 500, "{}", a.text());
    a.json()["causes"][0].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_obeyed_and_violated() {
    let h = host("memory = \"24MiB\"").await;
    assert_eq!(h.send("probe", "grow 8").await.ok(), "grew 8");
    assert_eq!(cause(&h.send("probe", "grow 40").await), "memory-limit");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_limit_obeyed_and_violated() {
    let h = host("fuel = 20_000_000").await;
    assert_eq!(h.send("probe", "burn 1000").await.ok(), "burned");
    assert_eq!(
        cause(&h.send("probe", "burn 100000000").await),
        "out-of-fuel"
    );
    // Fuel is per call: many small calls never run out.
    for _ in 0..20 {
        h.send("probe", "burn 100000").await.ok();
    }
    h.stop().await;
}

/// `[host] fuel-metering = false` compiles no fuel counting: the same call
/// that ran out of fuel above completes, and `timeout` still stops a spin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fuel_metering_fuel_is_not_enforced_and_timeout_still_is() {
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE).config(&format!(
        "[host]\nfuel-metering = false\n{ONE_ATTEMPT}\n[plugins.probe]\nfuel = 20_000_000\ntimeout = \"1s\"\n"
    ));
    let h = TestHost::start(dir).await;
    assert_eq!(h.send("probe", "burn 100000000").await.ok(), "burned");
    assert_eq!(cause(&h.send("probe", "spin").await), "timeout");
    assert_eq!(h.send("probe", "echo still here").await.ok(), "still here");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_obeyed_and_violated_in_guest_code_and_in_host_calls() {
    let h = host("timeout = \"400ms\"\nfuel = 0").await;
    assert_eq!(h.send("probe", "sleep 50").await.ok(), "slept");
    let t = Instant::now();
    assert_eq!(cause(&h.send("probe", "spin").await), "timeout");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let t = Instant::now();
    assert_eq!(cause(&h.send("probe", "sleep 10000").await), "timeout");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_and_reply_size_obeyed_and_violated() {
    let h = host("max-message = \"100B\"\nmax-reply = \"1KiB\"").await;
    assert_eq!(
        h.send("probe", format!("echo {}", "a".repeat(90)))
            .await
            .status,
        200
    );
    let a = h.send("probe", format!("echo {}", "a".repeat(200))).await;
    assert_eq!(a.status, 413, "{}", a.text());
    assert_eq!(h.send("probe", "reply-bytes 1024").await.ok().len(), 1024);
    assert_eq!(
        cause(&h.send("probe", "reply-bytes 1025").await),
        "reply-too-large"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailbox_capacity_obeyed_and_violated() {
    let h = host("mailbox = 2").await;
    // One call in flight (sleeping) and two queued fill the mailbox.
    let busy = {
        let a = h.admin.clone();
        tokio::spawn(async move { a.send("probe", "sleep 700").await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let q1 = {
        let a = h.admin.clone();
        tokio::spawn(async move { a.send("probe", "count").await })
    };
    let q2 = {
        let a = h.admin.clone();
        tokio::spawn(async move { a.send("probe", "count").await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(h.send("probe", "count").await.status, 429);
    assert_eq!(busy.await.unwrap().ok(), "slept");
    let mut counts = vec![q1.await.unwrap().ok(), q2.await.unwrap().ok()];
    counts.sort();
    assert_eq!(counts, ["1", "2"]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_timeout_answers_504_and_the_message_completes_later() {
    let h = host("reply-timeout = \"200ms\"").await;
    let a = h.send("probe", "set-then-err late yes").await;
    assert_eq!(a.status, 422);
    let a = h.send("probe", "sleep 600").await;
    assert_eq!(a.status, 504, "{}", a.text());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(h.send("probe", "get late").await.ok(), "yes");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_spinning_plugins_do_not_delay_a_third() {
    let dir = PluginDir::new();
    dir.plugin("spin1", PROBE)
        .plugin("spin2", PROBE)
        .plugin("quick", MINIMAL)
        .config(
            r#"
[defaults]
fuel = 0
timeout = "4s"
"#,
        );
    let h = TestHost::start(dir).await;
    let s1 = {
        let a = h.admin.clone();
        tokio::spawn(async move { a.send("spin1", "spin").await })
    };
    let s2 = {
        let a = h.admin.clone();
        tokio::spawn(async move { a.send("spin2", "spin").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut worst = Duration::ZERO;
    for i in 0..50 {
        let t = Instant::now();
        assert_eq!(h.send("quick", format!("m{i}")).await.ok(), format!("m{i}"));
        assert_eq!(h.admin.get("/healthz").await.status, 200);
        worst = worst.max(t.elapsed());
    }
    assert!(
        worst < Duration::from_secs(1),
        "a reply took {worst:?} while two plugins spun"
    );
    assert_eq!(s1.await.unwrap().status, 500);
    assert_eq!(s2.await.unwrap().status, 500);
    h.stop().await;
}
