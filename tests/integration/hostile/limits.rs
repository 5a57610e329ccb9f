//! Hostile cases: limits (see the suite's module doc). Every resource a
//! plugin can use up in one call (fuel, time, memory, tables, instances,
//! stack, reply size, log output, state and timer quotas, its outbox) is
//! bounded: past the bound the call crashes with a cause from the closed
//! list, or the guest gets the documented error, and the host, the canary
//! and the planted state carry on.
//!
//! With [`ONE_ATTEMPT`] each message is delivered once, so a crash answers
//! 500 with causes `[cause]`.

use super::{Arena, PLANTED_KEY, PLANTED_VALUE, expect_crash, expect_error};
use crate::util::{ONE_ATTEMPT, PluginDir, scrape, wat};
use std::time::{Duration, Instant};
use wasm_sup_tests::PROBE;

/// The hostile plugin.
const PROBE_NAME: &str = "probe";

/// An arena with a probe configured by `settings` (lines of
/// `[plugins.probe]`), every message delivered once, and its state planted.
async fn probe_arena(settings: &str) -> Arena {
    let dir = PluginDir::new();
    dir.plugin(PROBE_NAME, PROBE).config(&format!(
        "{ONE_ATTEMPT}\n[plugins.{PROBE_NAME}]\n{settings}\n"
    ));
    let mut arena = Arena::start(dir).await;
    arena.plant(PROBE_NAME).await;
    arena
}

/// An arena with the WAT component `wat` as plugin `name` beside the canary,
/// every message delivered once, and `settings` as `[defaults]`.
async fn wat_arena(name: &str, wat: &str, settings: &str) -> Arena {
    let dir = PluginDir::new();
    dir.wat(name, wat)
        .config(&format!("{ONE_ATTEMPT}\n[defaults]\n{settings}\n"));
    Arena::start(dir).await
}

/// A `handle` body's ending that answers Ok with an empty reply.
const OK_EMPTY: &str = "i32.const 16 i32.const 0 i32.store i32.const 20 i32.const 0 i32.store i32.const 24 i32.const 0 i32.store i32.const 16";

/// A component whose `handle` grows a table by 65,536 null elements at a
/// time up to 32 Mi elements (a quarter GiB of host memory or more), stops
/// at the first refused grow, then reads element 24 Mi, which exists only if
/// nothing bounded the growth, and answers Ok.
fn table_bomb() -> String {
    let body = format!(
        "(block $done
           (loop $more
             (br_if $done (i32.eq (table.grow $t (ref.null func) (i32.const 65536)) (i32.const -1)))
             (br_if $more (i32.lt_u (table.size $t) (i32.const 0x2000000)))))
         (drop (table.get $t (i32.const 0x1800000)))
         {OK_EMPTY}"
    );
    wat::handler(&body).replacen(
        "(memory (export \"memory\") 1)",
        "(memory (export \"memory\") 1) (table $t 0 funcref)",
        1,
    )
}

/// A component with `instances` core instances of an empty module beside
/// the one that answers Ok.
fn many_instances(instances: usize) -> String {
    let mut extra = String::from("(core module $e)");
    for i in 0..instances {
        extra += &format!(" (core instance $e{i} (instantiate $e))");
    }
    wat::ok_empty().replacen("(component", &format!("(component {extra}"), 1)
}

/// The bytes of `plugin`'s output dropped so far, from `/metrics`.
async fn dropped_output(arena: &Arena, plugin: &str) -> f64 {
    let text = arena.admin().get("/metrics").await.text();
    let key = format!("wasm_sup_guest_output_dropped_bytes_total{{plugin={plugin}}}");
    scrape(&text).get(&key).copied().unwrap_or(0.0)
}

/// Fuel: a loop far longer than the call's fuel, and an endless one, are
/// stopped with `out-of-fuel`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burning_past_the_fuel_is_out_of_fuel() {
    let mut arena = probe_arena("fuel = 20_000_000\ntimeout = \"30s\"").await;
    let started = Instant::now();
    expect_crash(
        &arena.send(PROBE_NAME, "burn 1000000000000").await,
        500,
        "out-of-fuel",
    );
    expect_crash(&arena.send(PROBE_NAME, "spin").await, 500, "out-of-fuel");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "fuel took {:?} to stop two calls",
        started.elapsed()
    );
    arena.assert_contained().await;
    arena.stop().await;
}

/// Time: an endless loop with fuel unmetered is stopped by the epoch
/// deadline with `timeout`, soon after `timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spinning_without_fuel_is_a_timeout() {
    let mut arena = probe_arena("fuel = 0\ntimeout = \"300ms\"").await;
    let started = Instant::now();
    expect_crash(&arena.send(PROBE_NAME, "spin").await, 500, "timeout");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    arena.assert_contained().await;
    arena.stop().await;
}

/// A call blocked in a host call (a 10-minute sleep) is stopped at its
/// `timeout` like guest code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_host_call_is_a_timeout() {
    let mut arena = probe_arena("timeout = \"300ms\"").await;
    let started = Instant::now();
    expect_crash(
        &arena.send(PROBE_NAME, "sleep 600000").await,
        500,
        "timeout",
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    arena.assert_contained().await;
    arena.stop().await;
}

/// Memory: growing past `memory` (by a little, and by 2,000 MiB at once) is
/// `memory-limit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growing_past_memory_is_memory_limit() {
    let mut arena = probe_arena("memory = \"24MiB\"").await;
    expect_crash(
        &arena.send(PROBE_NAME, "grow 40").await,
        500,
        "memory-limit",
    );
    expect_crash(
        &arena.send(PROBE_NAME, "grow 2000").await,
        500,
        "memory-limit",
    );
    assert_eq!(arena.send(PROBE_NAME, "grow 8").await.ok(), "grew 8");
    arena.assert_contained().await;
    arena.stop().await;
}

/// Several memories, each under `memory` but adding up past it (eight of
/// 12.5 MiB under 64 MiB), are `memory-limit`, and the crash report's memory
/// stays within the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memories_adding_up_past_memory_are_memory_limit() {
    let mut arena = wat_arena(
        "bomb",
        &crate::containment::many_memories(8, 200),
        "memory = \"64MiB\"",
    )
    .await;
    expect_crash(&arena.send("bomb", "x").await, 500, "memory-limit");
    let crashes = arena.admin().get("/v1/plugins/bomb/crashes").await.json();
    let bytes = crashes["crashes"][0]["memory_bytes"].as_u64().unwrap();
    assert!(bytes <= 64 << 20, "{crashes}");
    arena.assert_contained().await;
    arena.stop().await;
}

/// A table grown toward 32 Mi elements: the host refuses the growth long
/// before (at most 1 Mi elements in all), so the read past it is an
/// `out-of-bounds` crash rather than a quarter GiB of host memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_grown_huge_is_bounded() {
    let mut arena = wat_arena("tables", &table_bomb(), "").await;
    expect_crash(&arena.send("tables", "x").await, 500, "out-of-bounds");
    let crashes = arena.admin().get("/v1/plugins/tables/crashes").await.json();
    let message = crashes["crashes"][0]["message"].as_str().unwrap();
    assert!(message.contains("table"), "{crashes}");
    arena.assert_contained().await;
    arena.stop().await;
}

/// Many core instances in one component: 40 load and answer; 200 (201
/// with the handler's own) are past the host's bound of 64 per plugin, so
/// every instantiation would fail: the file is refused at load with one line
/// naming the count and the bound, instead of crash-looping through the
/// restart budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_core_instances_load_or_are_refused_clearly() {
    let dir = PluginDir::new();
    dir.wat("forty", &many_instances(40))
        .wat("swarm", &many_instances(200))
        .config(ONE_ATTEMPT);
    let mut arena = Arena::start_process(&dir, &[]).await;
    assert_eq!(arena.send("forty", "x").await.status, 200);
    assert_eq!(arena.send("swarm", "x").await.status, 404);
    let log = arena.process().expect("a host process").log_text();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused") && l.contains("swarm.wasm"))
        .collect();
    assert_eq!(refused.len(), 1, "{log}");
    assert!(
        refused[0].contains("declares 201 core instances") && refused[0].contains("at most 64"),
        "{}",
        refused[0]
    );
    assert_eq!(arena.send("forty", "x").await.status, 200);
    arena.assert_contained().await;
    arena.stop().await;
}

/// Deep recursion in the Rust guest runs off its shadow stack in linear
/// memory: `out-of-bounds` (what the host classifies it as), while a
/// moderate depth answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_recursion_in_the_rust_guest_is_out_of_bounds() {
    let mut arena = probe_arena("").await;
    assert_eq!(arena.send(PROBE_NAME, "recurse 100").await.ok(), "recursed");
    expect_crash(
        &arena.send(PROBE_NAME, "recurse 10000000").await,
        500,
        "out-of-bounds",
    );
    arena.assert_contained().await;
    arena.stop().await;
}

/// Unbounded recursion in wasm itself exhausts the native wasm stack:
/// `stack-overflow`, and the host's own stack is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_recursion_is_a_stack_overflow() {
    let mut arena = wat_arena("deep", &wat::stack_overflow(), "").await;
    expect_crash(&arena.send("deep", "x").await, 500, "stack-overflow");
    expect_crash(&arena.send("deep", "x").await, 500, "stack-overflow");
    arena.assert_contained().await;
    arena.stop().await;
}

/// A reply far over `max-reply` (10 MB against 1 KiB) is `reply-too-large`;
/// the reply at the limit still passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_reply_is_reply_too_large() {
    let mut arena = probe_arena("max-reply = \"1KiB\"").await;
    expect_crash(
        &arena.send(PROBE_NAME, "reply-bytes 10000000").await,
        500,
        "reply-too-large",
    );
    assert_eq!(
        arena.send(PROBE_NAME, "reply-bytes 1024").await.ok().len(),
        1024
    );
    arena.assert_contained().await;
    arena.stop().await;
}

/// An `Err` whose reason is far over `max-reply` (500 KB against 1 KiB) is
/// `reply-too-large` too, not a 422 carrying it (the answer stays small); a
/// short reason is still the guest's 422.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_err_reason_is_reply_too_large() {
    let mut arena = probe_arena("max-reply = \"1KiB\"").await;
    let a = arena
        .send(PROBE_NAME, format!("err {}", "e".repeat(500_000)))
        .await;
    expect_crash(&a, 500, "reply-too-large");
    assert!(
        a.body.len() < 64 << 10,
        "the answer is {} bytes",
        a.body.len()
    );
    expect_error(&arena.send(PROBE_NAME, "err short").await, "short");
    arena.assert_contained().await;
    arena.stop().await;
}

/// A stdout flood (10 MB against `output` = 1 KiB a second) is answered,
/// and all but the budget is dropped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdout_flood_is_dropped_and_counted() {
    let plugin = "stdout-flood";
    let dir = PluginDir::new();
    dir.plugin(plugin, PROBE).config(&format!(
        "{ONE_ATTEMPT}\n[plugins.{plugin}]\noutput = \"1KiB\"\n"
    ));
    let mut arena = Arena::start(dir).await;
    arena.plant(plugin).await;
    let before = dropped_output(&arena, plugin).await;
    let started = Instant::now();
    assert_eq!(arena.send(plugin, "print 10000000").await.ok(), "printed");
    let seconds = started.elapsed().as_secs_f64().ceil() + 1.0;
    let dropped = dropped_output(&arena, plugin).await - before;
    // 10 MB in lines of 101 bytes, less at most 1 KiB for each second it ran.
    assert!(
        dropped >= 10_100_000.0 - 1024.0 * seconds,
        "{dropped} bytes dropped in {seconds} s"
    );
    arena.assert_contained().await;
    arena.stop().await;
}

/// A `wasi:logging` flood (100,000 messages of 100 bytes against 1 KiB a
/// second) is answered, and all but the budget is dropped and counted. (In
/// the `wasm-sup` binary: a level the log filters out costs nothing, and
/// this test process installs no log subscriber.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logging_flood_is_dropped_and_counted() {
    let plugin = "log-flood";
    let dir = PluginDir::new();
    dir.plugin(plugin, PROBE).config(&format!(
        "{ONE_ATTEMPT}\n[plugins.{plugin}]\noutput = \"1KiB\"\n"
    ));
    let mut arena = Arena::start_process(&dir, &[]).await;
    arena.plant(plugin).await;
    let before = dropped_output(&arena, plugin).await;
    let started = Instant::now();
    let line = "l".repeat(100);
    assert_eq!(
        arena
            .send(plugin, format!("log-many 100000 {line}"))
            .await
            .ok(),
        "logged 100000"
    );
    let seconds = started.elapsed().as_secs_f64().ceil() + 1.0;
    let dropped = dropped_output(&arena, plugin).await - before;
    assert!(
        dropped >= 10_000_000.0 - 1024.0 * seconds,
        "{dropped} bytes dropped in {seconds} s"
    );
    arena.assert_contained().await;
    arena.stop().await;
}

/// Guest text that tries to forge host log lines: a `wasi:logging` message
/// with a line break, a carriage return and ANSI escapes, and stdout text
/// with a line shaped like a host log line. Neither begins a log line of
/// its own, and no raw escape or carriage return reaches the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_text_cannot_forge_a_host_log_line() {
    let dir = PluginDir::new();
    dir.plugin(PROBE_NAME, PROBE);
    let mut arena = Arena::start_process(&dir, &[]).await;
    arena.plant(PROBE_NAME).await;
    let forged = "2030-01-01T00:00:00.000000Z ERROR wasm_sup::supervisor: plugin";
    let log = format!("log error first\n{forged} LOGGED-FORGERY\r\u{1b}[2J\u{1b}[31mred\u{1b}[0m");
    assert_eq!(arena.send(PROBE_NAME, log).await.ok(), "logged");
    let print = format!("print-text \n{forged} PRINTED-FORGERY\n\r\u{1b}[2K{forged} PRINTED-CR");
    assert_eq!(arena.send(PROBE_NAME, print).await.ok(), "printed");
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = arena.process().unwrap().log_text();
        if ["LOGGED-FORGERY", "PRINTED-FORGERY", "PRINTED-CR"]
            .iter()
            .all(|m| text.contains(m))
        {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the guest's text never reached the log:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!text.contains('\u{1b}'), "a raw escape reached the log");
    assert!(
        !text.contains('\r'),
        "a raw carriage return reached the log"
    );
    for line in text.lines() {
        assert!(
            !line.starts_with("2030-01-01"),
            "guest text began a log line of its own: {line}"
        );
        if line.contains("FORGERY") || line.contains("PRINTED-CR") {
            assert!(
                line.contains("wasm_sup::guest"),
                "the guest's text is not marked as the guest's: {line}"
            );
        }
    }
    arena.assert_contained().await;
    arena.stop().await;
}

/// `state.max-keys`: keys past the quota are refused with `quota exceeded`
/// (one at a time and in a batch), with no crash; the keys already there,
/// the planted one included, still read back and can be overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_quota_refuses_more_keys() {
    // `inits` (counted by init) and the planted key use two of the five.
    let mut arena = probe_arena("[plugins.probe.state]\nmax-keys = 5").await;
    for k in ["k1", "k2", "k3"] {
        assert_eq!(
            arena.send(PROBE_NAME, format!("set {k} v")).await.ok(),
            "ok"
        );
    }
    expect_error(&arena.send(PROBE_NAME, "set k4 v").await, "quota exceeded");
    expect_error(
        &arena.send(PROBE_NAME, "set-many a=1,b=2,c=3").await,
        "quota exceeded",
    );
    expect_error(
        &arena.send(PROBE_NAME, "bucket other k v").await,
        "quota exceeded",
    );
    assert_eq!(arena.send(PROBE_NAME, "set k1 w").await.ok(), "ok");
    assert_eq!(
        arena.send(PROBE_NAME, "list-keys").await.ok(),
        format!("inits,k1,k2,k3,{PLANTED_KEY}")
    );
    assert_eq!(arena.send(PROBE_NAME, "get k1").await.ok(), "w");
    arena.assert_contained().await;
    arena.stop().await;
}

/// `state.max-bytes`: a value past the quota (and a batch adding up past
/// it) is refused with `quota exceeded`, with no crash; the big value is not
/// stored, nor the whole batch, and the planted value is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_byte_quota_refuses_more_bytes() {
    let mut arena = probe_arena("[plugins.probe.state]\nmax-bytes = \"1KiB\"").await;
    let big = "v".repeat(2000);
    expect_error(
        &arena.send(PROBE_NAME, format!("set big {big}")).await,
        "quota exceeded",
    );
    let half = "h".repeat(400);
    expect_error(
        &arena
            .send(PROBE_NAME, format!("set-many a={half},b={half},c={half}"))
            .await,
        "quota exceeded",
    );
    expect_error(
        &arena
            .send(PROBE_NAME, format!("set {PLANTED_KEY} {big}"))
            .await,
        "quota exceeded",
    );
    // A batch is not atomic (wasi:keyvalue): some of it may be stored, but
    // not all of it, and not the big value.
    let stored = arena.send(PROBE_NAME, "get-many big,a,b,c").await.ok();
    assert!(stored.starts_with("big=<none>,"), "{stored}");
    assert!(
        stored.matches("=<none>").count() >= 2,
        "all of the batch was stored: {stored}"
    );
    assert_eq!(
        arena
            .send(PROBE_NAME, format!("get {PLANTED_KEY}"))
            .await
            .ok(),
        PLANTED_VALUE
    );
    arena.assert_contained().await;
    arena.stop().await;
}

/// Timers: 1 KiB timers an hour away stop at `state.max-bytes` (64 KiB)
/// with `mailbox-full`, and a plugin holds at most 10,000 timers whatever
/// their size; the guest gets the error, nothing crashes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_stop_at_the_quota() {
    let dir = PluginDir::new();
    dir.plugin(PROBE_NAME, PROBE)
        .plugin("many", PROBE)
        .config(&format!(
            "{ONE_ATTEMPT}\n[plugins.{PROBE_NAME}.state]\nmax-bytes = \"64KiB\"\n"
        ));
    let mut arena = Arena::start(dir).await;
    arena.plant(PROBE_NAME).await;
    arena.plant("many").await;
    let a = arena
        .send(PROBE_NAME, "send-after-many 3600000 1000 1024")
        .await
        .ok();
    let (accepted, refusal) = a.split_once(' ').unwrap();
    let accepted: u32 = accepted.parse().unwrap();
    assert!((1..=64).contains(&accepted), "{a}");
    assert_eq!(refusal, "mailbox-full", "{a}");
    let mut total = 0;
    for _ in 0..10 {
        let a = arena
            .send("many", "send-after-many 3600000 1024 1")
            .await
            .ok();
        total += a.split_once(' ').unwrap().0.parse::<u32>().unwrap();
    }
    assert_eq!(total, 10_000);
    assert_eq!(
        arena.send("many", "send-after-many 3600000 1 1").await.ok(),
        "0 mailbox-full"
    );
    arena.assert_contained().await;
    arena.stop().await;
}

/// The outbox of one call: 2,000 one-byte sends stop at 1,024 with
/// `mailbox-full`, 64 KiB sends at 16 × `max-message`; nothing crashes and
/// the receiver drains what was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calls_outbox_stops_at_its_bound() {
    let dir = PluginDir::new();
    dir.plugin(PROBE_NAME, PROBE)
        .plugin("sink", PROBE)
        .config(&format!(
            "{ONE_ATTEMPT}\n[plugins.sink]\nmailbox = 5000\n[plugins.{PROBE_NAME}]\nmax-message = \"64KiB\"\n"
        ));
    let mut arena = Arena::start(dir).await;
    arena.plant(PROBE_NAME).await;
    arena.plant("sink").await;
    assert_eq!(
        arena.send(PROBE_NAME, "send-many sink 2000 1").await.ok(),
        "1024 mailbox-full"
    );
    assert_eq!(
        arena
            .send(PROBE_NAME, "send-many sink 100 65536")
            .await
            .ok(),
        "16 mailbox-full"
    );
    let sink = arena
        .admin()
        .wait_info("sink", Duration::from_secs(30), "drained", |i| {
            i["mailbox_depth"] == 0
        })
        .await;
    assert_eq!(sink["status"], "running", "{sink}");
    arena.assert_contained().await;
    arena.stop().await;
}
