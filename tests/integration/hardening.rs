//! Sandbox holes of issue 13, each with the test that would have failed
//! before its fix: config values that overflowed at run time (hole 4), host
//! files readable by every user (hole 12), the pool's per-module limits
//! reported as a corrupt file (hole 13; such a component now runs on the
//! on-demand engine), and `[host] max-plugin-file`.

use crate::util::{HostProcess, ONE_ATTEMPT, PluginDir, TestHost, config_error, padded, wat};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;
use wasm_sup::private_files::{DIR_MODE, FILE_MODE};
use wasm_sup_tests::PROBE;

#[test]
fn hole04_a_huge_timeout_is_a_config_error_at_startup() {
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE)
        .config("[defaults]\ntimeout = \"10000000000s\"\n");
    let err = config_error(&dir, &[]);
    assert!(
        err.contains("wasm-sup.toml:2: [defaults] key `timeout`: invalid duration \"10000000000s\": must be between 1ms and 1h"),
        "{err}"
    );
    dir.config("")
        .plugin_config("probe", "[restart]\ninitial = \"10000000000s\"\n");
    let err = config_error(&dir, &[]);
    assert!(
        err.contains("probe.toml:2: [restart] key `initial`: invalid duration \"10000000000s\": must be between 0s and 1h"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole12_state_coredumps_and_the_compile_cache_are_owner_only() {
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE)
        .config(&format!("[host]\ncoredumps = \"64MiB\"\n{ONE_ATTEMPT}"));
    // The default state: DIR/.wasm-sup/state.redb.
    let h = TestHost::start_with(dir, None).await;
    assert_eq!(h.send("probe", "crash").await.status, 500);
    let mut coredump = serde_json::Value::Null;
    for _ in 0..250 {
        let v = h.admin.get("/v1/plugins/probe/crashes").await.json();
        coredump = v["crashes"][0]["coredump"].clone();
        if coredump.is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(coredump.is_string(), "no coredump was written");
    let dir = h.stop().await;
    let data = dir.path().join(".wasm-sup");
    let mut seen = Vec::new();
    check_owner_only(&data, &mut seen);
    for want in ["state.redb", ".coredump", ".cwasm"] {
        assert!(
            seen.iter().any(|p| p.ends_with(want)),
            "no {want} under .wasm-sup: {seen:?}"
        );
    }
}

/// Asserts `path` and everything under it is owner-only; collects the paths.
fn check_owner_only(path: &Path, seen: &mut Vec<String>) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    let mode = meta.permissions().mode() & 0o777;
    let want = if meta.is_dir() { DIR_MODE } else { FILE_MODE };
    assert_eq!(mode, want, "{} is {mode:o}", path.display());
    seen.push(path.display().to_string());
    if meta.is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            check_owner_only(&e.unwrap().path(), seen);
        }
    }
}

/// A valid plugin (it answers Ok) whose core module also holds `extra`.
fn ok_plugin_with(extra: &str) -> String {
    let memory = "(memory (export \"memory\") 1)";
    let wat = wat::ok_empty();
    assert!(wat.contains(memory));
    wat.replace(memory, &format!("{memory} {extra}"))
}

/// Hole 13: a component over a per-module limit of the instance pool was
/// refused as "truncated or corrupt?". It now runs, outside the pool on the
/// on-demand engine, and the log names the limit that sent it there; a
/// restart of it works like any other (it crashed on a trap here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole13_a_component_over_the_pool_limits_runs_on_demand_naming_the_limit() {
    let dir = PluginDir::new();
    dir.wat("good", &wat::ok_empty())
        .wat("memories", &ok_plugin_with("(memory 1) (memory 1)"))
        .wat("table", &ok_plugin_with("(table 200000 funcref)"))
        .config(ONE_ATTEMPT);
    // The default pool.
    let mut host = HostProcess::start(dir.path(), &[]).await;
    for plugin in ["good", "memories", "table"] {
        assert_eq!(host.admin.send(plugin, "x").await.ok(), "");
    }
    let log = host
        .wait_log("both on-demand lines", |log| {
            ["memories", "table"].iter().all(|p| {
                log.lines().any(|l| {
                    l.contains(&format!("plugin=\"{p}\"")) && l.contains("on-demand engine")
                })
            })
        })
        .await;
    for (plugin, limit) in [
        ("memories", "limit of 2 memories per core module"),
        ("table", "limit of 131072 initial elements per table"),
    ] {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("plugin=\"{plugin}\"")) && l.contains("on-demand engine"))
            .unwrap_or_else(|| panic!("no on-demand line for {plugin}:\n{log}"));
        assert!(line.contains(limit), "{line}");
        assert!(!line.contains("truncated or corrupt"), "{line}");
    }
    assert!(
        !log.lines()
            .any(|l| l.contains("plugin=\"good\"") && l.contains("on-demand")),
        "{log}"
    );
    host.signal("TERM");
    assert_eq!(host.wait_exit(Duration::from_secs(30)), Some(0));
    // Started again: from the on-demand engine's compile cache.
    let mut host = HostProcess::start(dir.path(), &[]).await;
    assert_eq!(host.admin.send("memories", "x").await.ok(), "");
    let log = host.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("plugin=memories") && l.contains("from=\"cache\"")),
        "{log}"
    );
    assert!(!log.contains("rebuilt"), "{log}");
    host.signal("TERM");
    assert_eq!(host.wait_exit(Duration::from_secs(30)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_over_max_plugin_file_is_refused_and_the_others_run() {
    let small = ::wat::parse_str(wat::ok_empty()).unwrap();
    let big = padded(&small, small.len() + 4096);
    let dir = PluginDir::new();
    dir.bytes("small", &small)
        .bytes("big", &big)
        .config("[host]\nmax-plugin-file = \"2KiB\"\n");
    let h = TestHost::start(dir).await;
    assert_eq!(h.send("small", "x").await.ok(), "");
    let [refused] = h.host.refused.as_slice() else {
        panic!("{:?}", h.host.refused);
    };
    assert!(refused.path.ends_with("big.wasm"));
    assert!(
        refused.reason.ends_with(&format!(
            "big.wasm: the file is {} bytes, more than `[host] max-plugin-file` (2KiB = 2048 bytes): raise max-plugin-file in wasm-sup.toml, or make the build smaller",
            big.len()
        )),
        "{}",
        refused.reason
    );
    // Dropped in while running: refused too, and the others run on.
    h.dir.replace("late", &big);
    let refused_now = || async {
        let text = h.admin.get("/metrics").await.text();
        crate::util::scrape(&text)
            .get("wasm_sup_plugins_refused{}")
            .copied()
    };
    for _ in 0..500 {
        if refused_now().await == Some(2.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(refused_now().await, Some(2.0), "late.wasm was not refused");
    assert_eq!(h.admin.get("/v1/plugins/late").await.status, 404);
    assert_eq!(h.send("small", "x").await.ok(), "");
    // The same bytes under the default limit are a good plugin.
    let dir = h.stop().await;
    dir.config("");
    let h = TestHost::start(dir).await;
    assert!(h.host.refused.is_empty(), "{:?}", h.host.refused);
    assert_eq!(h.send("late", "x").await.ok(), "");
    h.stop().await;
}
