//! Hostile cases: peers (see the suite's module doc). Other plugins' state
//! and mailboxes, and the plugin's own lifecycle: `exit`, `init`,
//! `health.check` and `shutdown` that trap, spin or hang.

use super::{Arena, CANARY, expect_crash, expect_error};
use crate::util::{Admin, ONE_ATTEMPT, PluginDir, scrape};
use std::time::{Duration, Instant};
use wasm_sup_tests::PROBE;

const WITHIN: Duration = Duration::from_secs(15);

/// A metric's value (0 when absent).
async fn metric(admin: &Admin, key: &str) -> f64 {
    let text = admin.get("/metrics").await.text();
    scrape(&text).get(key).copied().unwrap_or(0.0)
}

/// Waits until `plugin`'s mailbox is empty, then until a message sent
/// behind what was queued is answered: everything queued was handled.
async fn drained(arena: &Arena, plugin: &str) {
    arena
        .admin()
        .wait_info(plugin, WITHIN, "drained", |i| i["mailbox_depth"] == 0)
        .await;
    assert_eq!(arena.send(plugin, "echo drained").await.ok(), "drained");
}

/// `key` of `plugin`'s default bucket read through the admin API, as a
/// number (0 when absent).
async fn stored_number(admin: &Admin, plugin: &str, key: &str) -> u64 {
    let a = admin
        .get(&format!("/v1/plugins/{plugin}/state/default/{key}"))
        .await;
    match a.status {
        404 => 0,
        _ => a.ok().parse().expect("a decimal number"),
    }
}

/// POSTs an operation (`stop`, `start`, `restart`) on `plugin`; returns the
/// answer's JSON and how long it took.
async fn operate(admin: &Admin, plugin: &str, op: &str) -> (serde_json::Value, Duration) {
    let t = Instant::now();
    let a = admin
        .post(&format!("/v1/plugins/{plugin}/{op}"), Vec::new())
        .await;
    let took = t.elapsed();
    assert_eq!(a.status, 200, "{op} {plugin}: {}", a.text());
    (a.json(), took)
}

/// The attack: a plugin opens the canary's bucket names (`default`, and a
/// bucket named after the canary), reads the canary's keys and overwrites
/// them. What must hold: it sees none of the canary's keys, its writes land
/// in its own buckets only, and the canary's state is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_plugins_buckets_are_invisible_and_untouched() {
    let dir = PluginDir::new();
    dir.plugin("thief", PROBE);
    let mut arena = Arena::start(dir).await;
    let canary_keys = arena.send(CANARY, "list-keys").await.ok();
    assert_eq!(canary_keys, "count,inits,planted");

    // Reading: nothing of the canary's is there.
    for read in [
        "get planted",
        "get count",
        "bucket-get default planted",
        "bucket-get canary planted",
        "bucket-get canary count",
    ] {
        expect_error(&arena.send("thief", read).await, "missing");
    }
    assert_eq!(arena.send("thief", "list-keys").await.ok(), "inits");

    // Writing the canary's keys, in every bucket name that might reach it.
    for write in [
        "set planted stolen",
        "set count 1000",
        "bucket default planted stolen",
        "bucket canary planted stolen",
        "bucket canary count 1000",
        "set-many planted=stolen,count=1000,inits=1000",
        "delete-many inits",
    ] {
        assert_eq!(arena.send("thief", write).await.ok(), "ok", "{write}");
    }
    // Bucket names that try to climb out are not identifiers.
    for name in ["../canary", "canary/default", "CANARY", ""] {
        let a = arena
            .send("thief", format!("bucket {name} planted stolen"))
            .await;
        assert_eq!(a.status, 422, "bucket {name:?}: {}", a.text());
    }
    // The thief's writes are its own.
    assert_eq!(arena.send("thief", "get planted").await.ok(), "stolen");
    assert_eq!(
        arena.send("thief", "bucket-get canary count").await.ok(),
        "1000"
    );

    // The canary sees its own keys only, with their values.
    assert_eq!(arena.send(CANARY, "list-keys").await.ok(), canary_keys);
    expect_error(
        &arena.send(CANARY, "bucket-get canary planted").await,
        "missing",
    );
    let state = arena.admin().get("/v1/plugins/canary/state").await.json();
    let keys = state["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 3, "{state}");
    assert!(
        keys.iter()
            .all(|k| k["bucket"] == "default" && k["text"] != "stolen" && k["text"] != "1000"),
        "{state}"
    );
    arena.assert_contained().await;
    arena.stop().await;
}

/// The attack: one plugin floods another's small mailbox (`send-many`), then
/// does it again and traps, then floods the canary itself. What must hold:
/// the sender gets `mailbox-full` (and `too-large`, `no-such-plugin`) at
/// once, a discarded call frees the slots it reserved, and the target and
/// the canary answer again once the flood is handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_flood_is_refused_with_mailbox_full_and_the_target_answers() {
    let dir = PluginDir::new();
    dir.plugin("flooder", PROBE)
        .plugin("victim", PROBE)
        .config(&format!(
            "{ONE_ATTEMPT}\n[plugins.victim]\nmailbox = 8\nmax-message = \"1KiB\"\n"
        ));
    let mut arena = Arena::start(dir).await;
    arena.plant("victim").await;

    let a = arena.send("flooder", "send-many victim 100 10").await;
    assert_eq!(a.ok(), "8 mailbox-full");
    drained(&arena, "victim").await;

    // A flooding call that traps: its reservations are freed.
    let a = arena.send("flooder", "send-many victim 100 10 trap").await;
    expect_crash(&a, 500, "unreachable");
    let a = arena.send("flooder", "send-many victim 8 10").await;
    assert_eq!(a.ok(), "8 none", "the trapped call's slots were not freed");
    drained(&arena, "victim").await;

    // The other refusals come back at once too.
    assert_eq!(
        arena.send("flooder", "send-many victim 1 2000").await.ok(),
        "0 too-large"
    );
    for to in ["nobody", "../victim", "VICTIM"] {
        expect_error(
            &arena.send("flooder", format!("send {to} count")).await,
            "no-such-plugin",
        );
    }

    // The canary itself (1024 slots): flooded, refused, then it answers.
    let a = arena.send("flooder", "send-many canary 5000 10").await.ok();
    let (accepted, refused) = a.split_once(' ').expect("N REFUSAL");
    let accepted: u32 = accepted.parse().expect("a count");
    assert!((1..=1024).contains(&accepted), "{a}");
    assert_eq!(refused, "mailbox-full", "{a}");
    drained(&arena, CANARY).await;
    drained(&arena, "victim").await;

    arena.assert_contained().await;
    arena.stop().await;
}

/// The attack: three plugins at once schedule `send-after` timers as fast
/// as they can, first a burst that falls due at once, then timers an hour
/// out until they are refused. What must hold: the burst is delivered and
/// handled, each plugin holds at most 10,000 timers (then `mailbox-full`),
/// and the host and the canary are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_after_storm_from_several_plugins_is_bounded() {
    const STORMERS: [&str; 3] = ["storm1", "storm2", "storm3"];
    let dir = PluginDir::new();
    for s in STORMERS {
        dir.plugin(s, PROBE);
    }
    let mut arena = Arena::start(dir).await;
    let admin = arena.admin().clone();

    // A burst that fires at once: 500 timers each, delivered to themselves
    // (each `mmmmmmmmmm` is an unknown command: an Err).
    let burst = STORMERS.map(|s| {
        let admin = admin.clone();
        async move { admin.send(s, "send-after-many 20 500 10").await.ok() }
    });
    for reply in futures::future::join_all(burst).await {
        assert_eq!(reply, "500 none");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for s in STORMERS {
        let key = format!("wasm_sup_messages_total{{outcome=err,plugin={s}}}");
        while metric(&admin, &key).await < 500.0 {
            assert!(
                Instant::now() < deadline,
                "{s}: the burst was not delivered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    arena.assert_contained().await;

    // Timers an hour out, until refused: all three at once.
    let storms = STORMERS.map(|s| {
        let admin = admin.clone();
        async move {
            let mut total = 0u32;
            for _ in 0..20 {
                let reply = admin.send(s, "send-after-many 3600000 2000 10").await.ok();
                let (accepted, refused) = reply.split_once(' ').expect("N REFUSAL");
                total += accepted.parse::<u32>().expect("a count");
                // A call's outbox holds 1,024 messages: refused at 1,024
                // every time until the plugin's timers are full.
                assert_eq!(refused, "mailbox-full", "{s}: {reply}");
                if accepted == "0" {
                    break;
                }
            }
            total
        }
    });
    for (s, total) in STORMERS.iter().zip(futures::future::join_all(storms).await) {
        assert_eq!(total, 10_000, "{s} holds more or fewer timers than 10,000");
        expect_error(
            &arena.send(s, "send-after 3600000 one-more").await,
            "mailbox-full",
        );
    }
    arena.assert_contained().await;
    arena.stop().await;
}

/// The attack: a plugin sends itself a message from every call, forever
/// (`loop`). What must hold: the host stays fair, the canary and the looper
/// itself answer promptly while it runs, and stopping the looper through
/// the admin API ends the loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_send_loop_does_not_starve_others_and_can_be_stopped() {
    let dir = PluginDir::new();
    dir.plugin("looper", PROBE);
    let mut arena = Arena::start(dir).await;
    let admin = arena.admin().clone();
    assert_eq!(arena.send("looper", "loop").await.ok(), "1");
    let deadline = Instant::now() + WITHIN;
    while stored_number(&admin, "looper", "loops").await < 200 {
        assert!(Instant::now() < deadline, "the loop does not run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        arena.assert_contained().await;
        assert_eq!(arena.send("looper", "echo here").await.ok(), "here");
        slowest = slowest.max(t.elapsed());
    }
    assert!(
        slowest < Duration::from_secs(1),
        "a check took {slowest:?} while the loop ran"
    );
    let before = stored_number(&admin, "looper", "loops").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        stored_number(&admin, "looper", "loops").await > before,
        "the loop stopped by itself"
    );

    let (answer, took) = operate(&admin, "looper", "stop").await;
    assert_eq!(answer["plugin"]["status"], "stopped", "{answer}");
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
    let stopped_at = stored_number(&admin, "looper", "loops").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        stored_number(&admin, "looper", "loops").await,
        stopped_at,
        "the loop goes on after the stop"
    );
    assert_eq!(arena.send("looper", "count").await.status, 503);
    arena.assert_contained().await;
    arena.stop().await;
}

/// The attack: `wasi:cli/exit` with an error status in `handle`. What must
/// hold: it is the crash `exit`, the plugin restarts and answers, and its
/// committed state survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_with_an_error_status_is_the_crash_exit() {
    let dir = PluginDir::new();
    dir.plugin("quitter", PROBE).config(ONE_ATTEMPT);
    let mut arena = Arena::start(dir).await;
    arena.plant("quitter").await;
    for code in ["1", "3", "255"] {
        let a = arena.send("quitter", format!("exit {code}")).await;
        expect_crash(&a, 500, "exit");
    }
    let info = arena.admin().info("quitter").await;
    assert_eq!(info["last_crash"], "exit", "{info}");
    assert_eq!(info["restarts"], 3, "{info}");
    assert_eq!(arena.send("quitter", "count").await.ok(), "1");
    arena.assert_contained().await;
    arena.stop().await;
}

/// The attack: `wasi:cli/exit(0)` in `handle`, for a permanent and for a
/// transient plugin. What must hold: a normal exit, not a crash (no
/// `last_crash`); the permanent plugin is restarted (its message
/// dead-lettered as `normal-exit`), the transient one stops (503); the host
/// and the canary are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_zero_is_a_normal_exit_and_the_host_is_fine() {
    let dir = PluginDir::new();
    dir.plugin("leaver", PROBE)
        .plugin("once", PROBE)
        .config(&format!(
            "{ONE_ATTEMPT}\n[plugins.once.restart]\ntype = \"transient\"\n"
        ));
    let mut arena = Arena::start(dir).await;
    arena.plant("leaver").await;
    let a = arena.send("leaver", "exit 0").await;
    expect_crash(&a, 500, "normal-exit");
    // The restart may still be instantiating when the answer arrives.
    let info = arena.admin().wait_status("leaver", "running", WITHIN).await;
    assert_eq!(info["last_crash"], serde_json::Value::Null, "{info}");
    assert_eq!(arena.send("leaver", "count").await.ok(), "1");

    let a = arena.send("once", "exit 0").await;
    assert_eq!(a.status, 503, "{}", a.text());
    assert_eq!(a.json()["status"], "stopped");
    let info = arena.admin().info("once").await;
    assert_eq!(info["status"], "stopped", "{info}");
    assert_eq!(info["last_crash"], serde_json::Value::Null, "{info}");
    arena.assert_contained().await;
    arena.stop().await;
}

/// Restart settings that give up after three starts, with no cooldown.
const GIVES_UP: &str = r#"
backoff = "immediate"
max-restarts = 2
cooldown = "off"
"#;

/// Waits until `plugin` is `failed` with `cause`, and checks its newest
/// crash report was in `call` and that messages are refused with 503.
async fn ends_failed(arena: &Arena, plugin: &str, cause: &str, call: &str) {
    let admin = arena.admin();
    let info = admin.wait_status(plugin, "failed", WITHIN).await;
    assert_eq!(info["last_crash"], cause, "{info}");
    // Three starts: two restarts, and the third crash is one too many.
    assert_eq!(info["restarts"], 2, "{info}");
    assert_eq!(info["generation"], 3, "{info}");
    let report = admin
        .get(&format!("/v1/plugins/{plugin}/crashes?limit=1"))
        .await
        .json()["crashes"][0]
        .clone();
    assert_eq!(report["cause"], cause, "{report}");
    assert_eq!(report["call"], call, "{report}");
    let a = arena.send(plugin, "count").await;
    assert_eq!(a.status, 503, "{}", a.text());
    assert_eq!(a.json()["status"], "failed");
}

/// The attack: `lifecycle.init` spins forever (unmetered fuel, so only the
/// call's `timeout` stops it). What must hold: each start ends with the
/// crash `timeout`, the plugin is `failed` within its restart policy, and
/// the canary is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_init_that_spins_ends_failed_within_its_policy() {
    let dir = PluginDir::new();
    dir.plugin("spinner", PROBE).config(&format!(
        "[plugins.spinner]\nfuel = 0\ntimeout = \"200ms\"\nconfig = {{ init = \"spin\" }}\n[plugins.spinner.restart]\n{GIVES_UP}"
    ));
    let mut arena = Arena::start(dir).await;
    ends_failed(&arena, "spinner", "timeout", "init").await;
    arena.assert_contained().await;
    arena.stop().await;
}

/// The attack: `lifecycle.init` traps on every start. What must hold: the
/// plugin never runs a message, ends `failed` within its restart policy
/// (cause `unreachable`, call `init`), and the canary is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_init_that_traps_ends_failed_within_its_policy() {
    let dir = PluginDir::new();
    dir.plugin("trapper", PROBE).config(&format!(
        "[plugins.trapper]\nconfig = {{ init = \"trap\" }}\n[plugins.trapper.restart]\n{GIVES_UP}"
    ));
    let mut arena = Arena::start(dir).await;
    ends_failed(&arena, "trapper", "unreachable", "init").await;
    assert_eq!(
        stored_number(arena.admin(), "trapper", "inits").await,
        0,
        "a trapped init committed its writes"
    );
    arena.assert_contained().await;
    arena.stop().await;
}

/// Health probes every 100 ms with a 300 ms timeout, and `GIVES_UP`.
fn sick(health: &str) -> String {
    format!(
        "[plugins.sick]\nconfig = {{ health = \"{health}\" }}\n[plugins.sick.health]\ninterval = \"100ms\"\ntimeout = \"300ms\"\n[plugins.sick.restart]\n{GIVES_UP}"
    )
}

/// The attack: `health.check` traps. What must hold: a probe that traps is
/// an ordinary crash (cause `unreachable`, call `check`, as docs/semantics.md "Health
/// probes" says, not `unhealthy`); the plugin is restarted until its policy
/// gives up, and the canary is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_check_that_traps_restarts_the_plugin_until_its_policy_gives_up() {
    let dir = PluginDir::new();
    dir.plugin("sick", PROBE).config(&sick("trap"));
    let mut arena = Arena::start(dir).await;
    ends_failed(&arena, "sick", "unreachable", "check").await;
    arena.assert_contained().await;
    arena.stop().await;
}

/// The attack: `health.check` hangs (sleeps 10 s). What must hold: past the
/// probe's 300 ms timeout it is the crash `unhealthy` (call `check`); the
/// plugin is restarted until its policy gives up, and the canary is
/// unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_check_that_hangs_is_unhealthy_and_restarts_the_plugin() {
    let dir = PluginDir::new();
    dir.plugin("sick", PROBE).config(&sick("hang"));
    let mut arena = Arena::start(dir).await;
    let t = Instant::now();
    ends_failed(&arena, "sick", "unhealthy", "check").await;
    // Three probes cut off at 300 ms each, not three 10 s sleeps.
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    let report = arena
        .admin()
        .get("/v1/plugins/sick/crashes?limit=1")
        .await
        .json()["crashes"][0]
        .clone();
    assert!(
        report["message"]
            .as_str()
            .unwrap_or_default()
            .contains("did not answer within its timeout of 300ms"),
        "{report}"
    );
    arena.assert_contained().await;
    arena.stop().await;
}

/// A plugin whose `lifecycle.shutdown` does `how`, unmetered, with
/// `shutdown-timeout`.
fn shutdown_config(plugin: &str, how: &str, timeout: &str) -> String {
    format!(
        "[plugins.{plugin}]\nfuel = 0\nshutdown-timeout = \"{timeout}\"\nconfig = {{ shutdown = \"{how}\" }}\n"
    )
}

/// The attack: `lifecycle.shutdown` traps. What must hold: `stop` and
/// `restart` through the admin API still finish, well within the
/// shutdown-timeout; the plugin can be started again, and the host and the
/// canary are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_that_traps_does_not_block_stop_or_restart() {
    let dir = PluginDir::new();
    dir.plugin("trapper", PROBE)
        .config(&shutdown_config("trapper", "trap", "2s"));
    let mut arena = Arena::start(dir).await;
    arena.plant("trapper").await;
    let admin = arena.admin().clone();

    let (answer, took) = operate(&admin, "trapper", "restart").await;
    assert!(took < Duration::from_secs(2), "restart took {took:?}");
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(arena.send("trapper", "count").await.ok(), "1");

    let (answer, took) = operate(&admin, "trapper", "stop").await;
    assert!(took < Duration::from_secs(2), "stop took {took:?}");
    assert_eq!(answer["plugin"]["status"], "stopped", "{answer}");
    assert_eq!(arena.send("trapper", "count").await.status, 503);
    // The trapping shutdown committed nothing.
    assert_eq!(stored_number(&admin, "trapper", "shutdowns").await, 0);

    operate(&admin, "trapper", "start").await;
    admin.wait_status("trapper", "running", WITHIN).await;
    assert_eq!(arena.send("trapper", "count").await.ok(), "2");
    arena.assert_contained().await;
    arena.stop().await;
}

/// The attack: `lifecycle.shutdown` spins forever (unmetered). What must
/// hold: `stop` through the admin API ends it at its 300 ms
/// shutdown-timeout, not later; the plugin can be started again, and the
/// host and the canary are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_that_spins_is_cut_off_at_its_shutdown_timeout() {
    let dir = PluginDir::new();
    dir.plugin("spinner", PROBE)
        .config(&shutdown_config("spinner", "spin", "300ms"));
    let mut arena = Arena::start(dir).await;
    arena.plant("spinner").await;
    let admin = arena.admin().clone();

    let (answer, took) = operate(&admin, "spinner", "stop").await;
    assert_eq!(answer["plugin"]["status"], "stopped", "{answer}");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "stop took {took:?}, want about the 300ms shutdown-timeout"
    );
    assert_eq!(arena.send("spinner", "count").await.status, 503);

    operate(&admin, "spinner", "start").await;
    admin.wait_status("spinner", "running", WITHIN).await;
    assert_eq!(arena.send("spinner", "count").await.ok(), "1");
    let (_, took) = operate(&admin, "spinner", "restart").await;
    assert!(took < Duration::from_secs(3), "restart took {took:?}");
    assert_eq!(arena.send("spinner", "count").await.ok(), "2");
    arena.assert_contained().await;
    arena.stop().await;
}

/// The attack: SIGTERM to a host (the real binary) one of whose plugins
/// spins in `lifecycle.shutdown` and another traps in it. What must hold:
/// the graceful stop cuts the spinner off at its shutdown-timeout and the
/// host exits 0 promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_host_stop_completes_despite_a_spinning_shutdown() {
    let dir = PluginDir::new();
    dir.plugin("spinner", PROBE)
        .plugin("trapper", PROBE)
        .config(&format!(
            "{}{}",
            shutdown_config("spinner", "spin", "500ms"),
            shutdown_config("trapper", "trap", "500ms")
        ));
    let mut arena = Arena::start_process(&dir, &["--state", "memory"]).await;
    arena.plant("spinner").await;
    arena.plant("trapper").await;
    arena.assert_contained().await;
    let t = Instant::now();
    arena.stop().await;
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the graceful stop took {:?}",
        t.elapsed()
    );
}
