//! State: transactions per call, isolation, keyvalue semantics, quotas,
//! durability across host restarts, the mailbox interface and timers. The
//! state tests run on both durable backends (redb and PostgreSQL).

use crate::on_both_backends;
use crate::util::{Backend, ONE_ATTEMPT, PluginDir, TestHost};
use std::time::{Duration, Instant};
use wasm_sup_tests::{COUNTER, PROBE};

fn two_probes() -> PluginDir {
    let dir = PluginDir::new();
    dir.plugin("a", PROBE)
        .plugin("b", PROBE)
        .config(ONE_ATTEMPT);
    dir
}

async fn a_crashed_calls_writes_are_discarded_and_earlier_writes_kept(backend: Backend) {
    let state = backend.state().await;
    let h = TestHost::start_with(two_probes(), state.as_deref()).await;
    h.send("a", "set k one").await.ok();
    assert_eq!(h.send("a", "set-then-trap k two").await.status, 500);
    assert_eq!(h.send("a", "get k").await.ok(), "one");
    // Err replies commit.
    let r = h.send("a", "set-then-err k three").await;
    assert_eq!((r.status, r.text().as_str()), (422, "failed after write"));
    assert_eq!(h.send("a", "get k").await.ok(), "three");
    // A trapped call's outbox is discarded too; a committed one is released.
    assert_eq!(h.send("a", "send-then-trap b count").await.status, 500);
    h.send("a", "send b count").await.ok();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.send("b", "get count").await.ok(), "1");
    h.stop().await;
}

async fn buckets_are_private_to_their_plugin(backend: Backend) {
    let state = backend.state().await;
    let h = TestHost::start_with(two_probes(), state.as_deref()).await;
    h.send("a", "set secret a-only").await.ok();
    h.send("a", "bucket notes k v").await.ok();
    assert_eq!(h.send("b", "get secret").await.text(), "missing");
    assert_eq!(h.send("b", "bucket-get notes k").await.text(), "missing");
    assert_eq!(h.send("a", "bucket-get notes k").await.ok(), "v");
    let bad = h.send("a", "bucket Bad/Name k v").await;
    assert_eq!(bad.status, 422);
    assert!(
        bad.text().contains("invalid bucket identifier"),
        "{}",
        bad.text()
    );
    h.stop().await;
}

async fn keyvalue_store_atomics_and_batch(backend: Backend) {
    let state = backend.state().await;
    let h = TestHost::start_with(two_probes(), state.as_deref()).await;
    assert_eq!(h.send("a", "incr n").await.ok(), "1");
    assert_eq!(h.send("a", "incr n").await.ok(), "2");
    assert_eq!(
        h.send("a", "get n").await.ok(),
        "2",
        "stored as decimal ASCII"
    );
    h.send("a", "set-many x=1,y=2").await.ok();
    assert_eq!(h.send("a", "get-many x,y,z").await.ok(), "x=1,y=2,z=<none>");
    h.send("a", "delete-many x").await.ok();
    assert_eq!(h.send("a", "exists x").await.ok(), "false");
    assert_eq!(h.send("a", "exists y").await.ok(), "true");
    h.send("a", "delete y").await.ok();
    assert_eq!(h.send("a", "list-keys").await.ok(), "inits,n");
    // More keys than one list-keys page (1000): the cursor pages through all.
    let many: Vec<String> = (0..2500).map(|i| format!("k{i:04}=v")).collect();
    h.send("a", format!("set-many {}", many.join(",")))
        .await
        .ok();
    let keys = h.send("a", "list-keys").await.ok();
    assert_eq!(keys.split(',').count(), 2502);
    h.stop().await;
}

async fn state_quota_is_an_error_to_the_guest_not_a_crash(backend: Backend) {
    let state = backend.state().await;
    let dir = PluginDir::new();
    dir.plugin("a", PROBE).config(
        r#"
[plugins.a.state]
max-keys = 3
max-bytes = "1KiB"
"#,
    );
    let h = TestHost::start_with(dir, state.as_deref()).await;
    // `inits` is one key already.
    h.send("a", "set k1 v").await.ok();
    h.send("a", "set k2 v").await.ok();
    let r = h.send("a", "set k3 v").await;
    assert_eq!(r.status, 422);
    assert!(r.text().contains("quota exceeded"), "{}", r.text());
    h.send("a", "set k1 overwrite-is-fine").await.ok();
    let r = h.send("a", format!("set k2 {}", "x".repeat(2000))).await;
    assert!(r.text().contains("quota exceeded"), "{}", r.text());
    let info = h.admin.info("a").await;
    assert_eq!(
        (info["restarts"].as_u64(), info["status"].as_str()),
        (Some(0), Some("running"))
    );
    h.stop().await;
}

async fn state_survives_a_host_restart_and_init_and_shutdown_are_transactions(backend: Backend) {
    let state = backend.state().await;
    let dir = PluginDir::new();
    dir.plugin("counter", COUNTER).plugin("probe", PROBE);
    let h = TestHost::start_with(dir, state.as_deref()).await;
    for want in ["1", "2", "3"] {
        assert_eq!(h.send("counter", "hello").await.ok(), want);
    }
    h.send("probe", "set kept yes").await.ok();
    let dir = h.stop().await;
    if backend == Backend::Redb {
        assert!(dir.path().join(".wasm-sup/state.redb").exists());
    }
    let h = TestHost::start_with(dir, state.as_deref()).await;
    assert_eq!(h.send("counter", "hello").await.ok(), "4");
    assert_eq!(h.send("probe", "get kept").await.ok(), "yes");
    assert_eq!(
        h.send("probe", "get inits").await.ok(),
        "2",
        "init ran and committed once per start"
    );
    assert_eq!(
        h.send("probe", "get shutdowns").await.ok(),
        "1",
        "shutdown committed at the graceful stop"
    );
    h.stop().await;
}

async fn pipelined_calls_read_each_others_writes_and_a_crash_among_them_discards_only_its_own(
    backend: Backend,
) {
    let state = backend.state().await;
    let dir = PluginDir::new();
    dir.plugin("a", PROBE).config(ONE_ATTEMPT);
    let h = TestHost::start_with(dir, state.as_deref()).await;
    // Many at once: each call runs before the previous one's commit is
    // durable, reads its write, and is answered after its own commit.
    let replies = futures::future::join_all((0..200).map(|_| h.send("a", "incr n"))).await;
    let mut counts: Vec<u64> = replies.iter().map(|r| r.ok().parse().unwrap()).collect();
    counts.sort_unstable();
    assert_eq!(counts, (1..=200).collect::<Vec<u64>>());
    // A crash among them: the calls before it keep their writes and answers,
    // its own write is discarded, and the ones after it run on the next
    // instance on top of every committed write.
    let messages = (0..100).map(|i| {
        if i == 50 {
            "set-then-trap n 0"
        } else {
            "incr n"
        }
    });
    let replies = futures::future::join_all(messages.map(|m| h.send("a", m))).await;
    assert_eq!(replies.iter().filter(|r| r.status == 500).count(), 1);
    let mut counts: Vec<u64> = replies
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.text().parse().unwrap())
        .collect();
    counts.sort_unstable();
    assert_eq!(counts, (201..=299).collect::<Vec<u64>>());
    let dir = h.stop().await;
    let h = TestHost::start_with(dir, state.as_deref()).await;
    assert_eq!(
        h.send("a", "get n").await.ok(),
        "299",
        "every answered write is durable"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailbox_send_errors_self_info_config_and_logging() {
    let dir = PluginDir::new();
    dir.plugin("a", PROBE).plugin("b", PROBE).config(
        r#"
[plugins.a]
config = { greeting = "hello", answer = 42 }
[plugins.b]
max-message = "16B"
"#,
    );
    let h = TestHost::start(dir).await;
    assert_eq!(h.send("a", "send nobody hi").await.text(), "no-such-plugin");
    assert_eq!(
        h.send("a", format!("send b {}", "x".repeat(17)))
            .await
            .text(),
        "too-large"
    );
    assert_eq!(h.send("a", "self-info").await.ok(), "a 1 0");
    assert_eq!(h.send("a", "config greeting").await.ok(), "hello");
    assert_eq!(
        h.send("a", "config-all").await.ok(),
        "answer=42,greeting=hello"
    );
    assert_eq!(h.send("b", "config greeting").await.text(), "missing");
    assert_eq!(h.send("a", "log info from the guest").await.ok(), "logged");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_reserves_a_slot_so_mailbox_full_is_answered_at_once() {
    let dir = PluginDir::new();
    dir.plugin("a", PROBE)
        .plugin("b", PROBE)
        .config("[plugins.b]\nmailbox = 1\n");
    let h = TestHost::start(dir).await;
    // b is busy; its one slot is taken by the first send, the second is refused.
    let busy = {
        let a = h.admin.clone();
        tokio::spawn(async move { a.send("b", "sleep 500").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.send("a", "send b count").await.ok(), "sent");
    assert_eq!(h.send("a", "send b count").await.text(), "mailbox-full");
    busy.await.unwrap().ok();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.send("b", "get count").await.ok(), "1");
    h.stop().await;
}

async fn send_after_is_durable_across_plugin_and_host_restarts(backend: Backend) {
    let state = backend.state().await;
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE);
    let h = TestHost::start_with(dir, state.as_deref()).await;
    assert_eq!(
        h.send("probe", "send-after 300 count").await.ok(),
        "scheduled"
    );
    h.send("probe", "send-after 1 incr soon").await.ok();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(h.send("probe", "get soon").await.ok(), "1");
    // Crash the plugin before the timer is due: the timer survives.
    assert_eq!(h.send("probe", "crash").await.status, 500);
    let t = Instant::now();
    loop {
        if h.send("probe", "get count").await.status == 200 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "timer never fired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Across a host restart.
    assert_eq!(
        h.send("probe", "send-after 700 incr later").await.ok(),
        "scheduled"
    );
    let dir = h.stop().await;
    let h = TestHost::start_with(dir, state.as_deref()).await;
    assert_eq!(h.send("probe", "get later").await.text(), "missing");
    let t = Instant::now();
    loop {
        if h.send("probe", "get later").await.status == 200 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "timer lost across the host restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        h.send("probe", "get later").await.ok(),
        "1",
        "delivered exactly once"
    );
    h.stop().await;
}

on_both_backends!(
    a_crashed_calls_writes_are_discarded_and_earlier_writes_kept,
    buckets_are_private_to_their_plugin,
    keyvalue_store_atomics_and_batch,
    state_quota_is_an_error_to_the_guest_not_a_crash,
    state_survives_a_host_restart_and_init_and_shutdown_are_transactions,
    pipelined_calls_read_each_others_writes_and_a_crash_among_them_discards_only_its_own,
    send_after_is_durable_across_plugin_and_host_restarts,
);
