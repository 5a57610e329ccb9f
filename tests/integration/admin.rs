//! The operations surface through a real HTTP server on loopback: every
//! endpoint with its errors, metrics parsed as Prometheus text, the bearer
//! token, and the CLI subcommands run as processes.

use crate::util::{
    Admin, HostProcess, ONE_ATTEMPT, PluginDir, TestHost, free_port, scrape, wasm_sup_bin,
};
use std::process::Command;
use std::time::Duration;
use wasm_sup_tests::{MINIMAL, PROBE};

async fn post(a: &Admin, path: &str) -> crate::util::Answer {
    a.post(path, Vec::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_start_restart_one_and_all() {
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE)
        .plugin("echo", MINIMAL)
        .config(ONE_ATTEMPT);
    let h = TestHost::start(dir).await;
    h.send("probe", "set k v").await.ok();
    let a = post(&h.admin, "/v1/plugins/probe/stop").await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["plugin"]["status"], "stopped");
    let r = h.send("probe", "get k").await;
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (503, Some("stopped"))
    );
    assert_eq!(h.admin.get("/readyz").await.status, 503);
    post(&h.admin, "/v1/plugins/probe/start").await.ok();
    assert_eq!(h.send("probe", "get k").await.ok(), "v");
    assert_eq!(
        h.send("probe", "get shutdowns").await.ok(),
        "1",
        "stop ran lifecycle.shutdown"
    );
    let before = h.admin.info("probe").await["generation"].as_u64().unwrap();
    post(&h.admin, "/v1/plugins/probe/restart").await.ok();
    h.send("probe", "count").await.ok();
    assert_eq!(
        h.admin.info("probe").await["generation"].as_u64(),
        Some(before + 1)
    );
    // All at once.
    let a = post(&h.admin, "/v1/plugins/stop").await;
    assert_eq!(a.json()["ok"], true, "{}", a.text());
    for p in h.admin.get("/v1/plugins").await.json()["plugins"]
        .as_array()
        .unwrap()
    {
        assert_eq!(p["status"], "stopped");
    }
    post(&h.admin, "/v1/plugins/start").await.ok();
    assert_eq!(h.send("echo", "back").await.ok(), "back");
    post(&h.admin, "/v1/plugins/restart").await.ok();
    assert_eq!(h.send("echo", "again").await.ok(), "again");
    // A failed plugin comes back with start, its restart history forgotten.
    assert_eq!(
        post(&h.admin, "/v1/plugins/ghost/restart").await.status,
        404
    );
    assert_eq!(post(&h.admin, "/v1/plugins/Bad!/restart").await.status, 400);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_reports_name_the_guest_function_and_page_newest_first() {
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE).config(ONE_ATTEMPT);
    let h = TestHost::start(dir).await;
    assert_eq!(h.send("probe", "crash").await.status, 500);
    assert_eq!(h.send("probe", "unreachable").await.status, 500);
    tokio::time::sleep(Duration::from_millis(200)).await; // written off the restart path
    let v = h
        .admin
        .get("/v1/plugins/probe/crashes?limit=1")
        .await
        .json();
    let newest = &v["crashes"][0];
    assert_eq!(newest["cause"], "unreachable");
    assert_eq!(newest["handling"]["text"], "unreachable");
    assert!(v["next_offset"].as_u64() == Some(1), "{v}");
    let older = h
        .admin
        .get("/v1/plugins/probe/crashes?offset=1")
        .await
        .json();
    let report = &older["crashes"][0];
    assert_eq!(report["call"], "handle");
    assert!(report["fuel_used"].as_u64().unwrap() > 0);
    assert!(report["memory_bytes"].as_u64().unwrap() > 0);
    assert!(
        report["decision"].as_str().unwrap().starts_with("restart"),
        "{report}"
    );
    let frames: Vec<&str> = report["backtrace"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        frames
            .iter()
            .any(|f| f.contains("probe::") && f.contains("handle")),
        "no frame names the guest's handle function: {frames:#?}"
    );
    assert!(older["next_offset"].is_null());
    assert_eq!(h.admin.get("/v1/plugins/ghost/crashes").await.status, 404);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_list_replay_and_drop() {
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE).config(ONE_ATTEMPT);
    let h = TestHost::start(dir).await;
    let first = h.send("probe", "crash").await.json()["dead_letter"]
        .as_u64()
        .unwrap();
    let list = h.admin.get("/v1/plugins/probe/dead-letters").await.json();
    assert_eq!(list["dead_letters"][0]["id"].as_u64(), Some(first));
    assert_eq!(list["dead_letters"][0]["message"]["text"], "crash");
    assert_eq!(
        list["dead_letters"][0]["causes"],
        serde_json::json!(["unreachable"])
    );
    // Replay queues it again: it crashes again and becomes a new dead letter.
    let a = post(
        &h.admin,
        &format!("/v1/plugins/probe/dead-letters/{first}/replay"),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let mut ids = Vec::new();
    for _ in 0..50 {
        let list = h.admin.get("/v1/plugins/probe/dead-letters").await.json();
        ids = list["dead_letters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_u64().unwrap())
            .collect();
        if ids.len() == 1 && ids[0] != first {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ids.len() == 1 && ids[0] != first, "{ids:?}");
    assert_eq!(
        post(
            &h.admin,
            &format!("/v1/plugins/probe/dead-letters/{first}/replay")
        )
        .await
        .status,
        404
    );
    post(
        &h.admin,
        &format!("/v1/plugins/probe/dead-letters/{}/drop", ids[0]),
    )
    .await
    .ok();
    let list = h.admin.get("/v1/plugins/probe/dead-letters").await.json();
    assert!(list["dead_letters"].as_array().unwrap().is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_list_get_and_reset_with_confirmation() {
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE).plugin("other", PROBE);
    let h = TestHost::start(dir).await;
    h.send("probe", "set greeting hello").await.ok();
    h.send("probe", "bucket notes n1 x").await.ok();
    h.send("other", "set mine kept").await.ok();
    let v = h.admin.get("/v1/plugins/probe/state").await.json();
    let keys: Vec<(String, String, u64)> = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["bucket"].as_str().unwrap().into(),
                k["key"].as_str().unwrap().into(),
                k["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        keys.contains(&("default".into(), "greeting".into(), 5)),
        "{keys:?}"
    );
    assert!(keys.contains(&("notes".into(), "n1".into(), 1)), "{keys:?}");
    assert!(
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["text"] == "hello"),
        "{v}"
    );
    assert_eq!(
        h.admin
            .get("/v1/plugins/probe/state?key=greeting")
            .await
            .ok(),
        "hello"
    );
    assert_eq!(
        h.admin
            .get("/v1/plugins/probe/state?bucket=notes&key=n1")
            .await
            .ok(),
        "x"
    );
    assert_eq!(
        h.admin
            .get("/v1/plugins/probe/state/default/greeting")
            .await
            .ok(),
        "hello"
    );
    assert_eq!(
        h.admin
            .get("/v1/plugins/probe/state/default/nope")
            .await
            .status,
        404
    );
    assert_eq!(
        post(&h.admin, "/v1/plugins/probe/state/reset").await.status,
        400
    );
    assert_eq!(
        post(&h.admin, "/v1/plugins/probe/state/reset?confirm=other")
            .await
            .status,
        400
    );
    h.admin
        .post(
            "/v1/plugins/probe/state/reset",
            br#"{"confirm": "probe"}"#.to_vec(),
        )
        .await
        .ok();
    assert_eq!(h.send("probe", "get greeting").await.text(), "missing");
    assert_eq!(
        h.send("probe", "get inits").await.ok(),
        "1",
        "started fresh after the reset"
    );
    assert_eq!(
        h.send("other", "get mine").await.ok(),
        "kept",
        "other plugins untouched"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_messages_crashes_and_restarts() {
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE).config(ONE_ATTEMPT);
    let h = TestHost::start(dir).await;
    h.admin
        .wait_status("probe", "running", Duration::from_secs(10))
        .await;
    let a = h.admin.get("/metrics").await;
    assert_eq!(a.status, 200);
    let m0 = scrape(&a.text());
    assert_eq!(
        m0.get("wasm_sup_plugin_status{plugin=probe,status=running}"),
        Some(&1.0),
        "{m0:#?}"
    );
    assert_eq!(m0.get("wasm_sup_plugins_loaded{}"), Some(&1.0));
    h.send("probe", "count").await.ok();
    h.send("probe", "count").await.ok();
    assert_eq!(h.send("probe", "err no").await.status, 422);
    assert_eq!(h.send("probe", "crash").await.status, 500);
    h.send("probe", "count").await.ok();
    let m = scrape(&h.admin.get("/metrics").await.text());
    let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
    assert_eq!(get("wasm_sup_messages_total{outcome=ok,plugin=probe}"), 3.0);
    assert_eq!(
        get("wasm_sup_messages_total{outcome=err,plugin=probe}"),
        1.0
    );
    assert_eq!(
        get("wasm_sup_messages_total{outcome=crashed,plugin=probe}"),
        1.0
    );
    assert_eq!(
        get("wasm_sup_messages_total{outcome=dead-lettered,plugin=probe}"),
        1.0
    );
    assert_eq!(
        get("wasm_sup_crashes_total{cause=unreachable,plugin=probe}"),
        1.0
    );
    assert_eq!(get("wasm_sup_restarts_total{plugin=probe}"), 1.0);
    assert_eq!(get("wasm_sup_dead_letters_pending{plugin=probe}"), 1.0);
    assert!(get("wasm_sup_fuel_consumed_total{plugin=probe}") > 0.0);
    assert!(get("wasm_sup_memory_bytes{plugin=probe}") > 0.0);
    assert_eq!(
        get("wasm_sup_handle_duration_seconds_count{plugin=probe}"),
        5.0
    );
    assert!(get("wasm_sup_state_commit_duration_seconds_count{}") >= 3.0);
    assert_eq!(get("wasm_sup_mailbox_depth{plugin=probe}"), 0.0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors() {
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE)
        .config("[plugins.probe]\nmax-message = \"1KiB\"\n");
    let h = TestHost::start(dir).await;
    assert_eq!(h.admin.get("/v1/plugins/ghost").await.status, 404);
    assert_eq!(h.admin.get("/v1/plugins/NOT_OK").await.status, 400);
    assert_eq!(h.send("ghost", "x").await.status, 404);
    let big = h.send("probe", vec![b'x'; 4096]).await;
    assert_eq!(big.status, 413);
    assert!(
        big.json()["error"]
            .as_str()
            .unwrap()
            .contains("max-message")
    );
    assert_eq!(h.admin.get("/healthz").await.status, 200);
    h.admin
        .wait_status("probe", "running", Duration::from_secs(10))
        .await;
    assert_eq!(h.admin.get("/readyz").await.status, 200);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_admin_address_needs_a_token_and_the_token_is_checked() {
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE);
    let out = Command::new(wasm_sup_bin())
        .args(["run", dir.path().to_str().unwrap(), "--admin", "0.0.0.0:0"])
        .env_remove("WASM_SUP_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("without a token") && err.contains("--token-file"),
        "{err}"
    );

    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let host = HostProcess::start(dir.path(), &["--token-file", token.to_str().unwrap()]).await;
    assert_eq!(
        host.admin.get("/healthz").await.status,
        200,
        "health needs no token"
    );
    assert_eq!(host.admin.get("/v1/plugins").await.status, 401);
    let authed = host.admin.with_token("s3cret");
    assert_eq!(authed.get("/v1/plugins").await.status, 200);
    assert_eq!(
        host.admin
            .with_token("wrong")
            .get("/v1/plugins")
            .await
            .status,
        401
    );
    let cli = Command::new(wasm_sup_bin())
        .args([
            "status",
            "--admin",
            &host.admin.addr.to_string(),
            "--token-file",
            token.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        cli.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_subcommands_against_a_running_host() {
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE).config(ONE_ATTEMPT);
    let host = HostProcess::start(dir.path(), &[]).await;
    assert_eq!(host.cli(&["send", "probe", "set k v"]).0, 0);
    assert_eq!(host.cli(&["send", "probe", "crash"]).0, 1);
    let (code, out, _) = host.cli(&["status"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("PLUGIN") && out.contains("probe") && out.contains("unreachable"),
        "{out}"
    );
    let (_, out, _) = host.cli(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["plugins"][0]["restarts"], 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (code, out, _) = host.cli(&["crashes", "probe"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("unreachable in handle") && out.contains("backtrace:"),
        "{out}"
    );
    let (_, out, _) = host.cli(&["crashes", "probe", "--json"]);
    assert!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["crashes"][0]["backtrace"]
            .is_array()
    );
    let (code, out, _) = host.cli(&["dead-letters", "probe"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("\"crash\"") && out.contains("unreachable"),
        "{out}"
    );
    let (_, out, _) = host.cli(&["dead-letters", "probe", "--json"]);
    let id = serde_json::from_str::<serde_json::Value>(&out).unwrap()["dead_letters"][0]["id"]
        .as_u64()
        .unwrap();
    assert_eq!(
        host.cli(&["dead-letters", "probe", "drop", &id.to_string()])
            .0,
        0
    );
    assert_eq!(
        host.cli(&["dead-letters", "probe", "drop", &id.to_string()])
            .0,
        1,
        "already dropped"
    );
    let (code, out, _) = host.cli(&["state", "probe"]);
    assert_eq!(code, 0);
    assert!(out.contains("default") && out.contains(" k "), "{out}");
    assert_eq!(host.cli(&["state", "probe", "k"]).1, "v");
    let (code, _, err) = host.cli(&["state", "probe", "--reset"]);
    assert_eq!(code, 2, "no terminal, no --yes: refused");
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(host.cli(&["state", "probe", "--reset", "--yes"]).0, 0);
    assert_eq!(host.cli(&["state", "probe", "k"]).0, 1);
    let (code, out, _) = host.cli(&["restart", "--all"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("probe: restart ok"), "{out}");
    assert_eq!(host.cli(&["stop", "probe"]).0, 0);
    assert_eq!(host.cli(&["send", "probe", "count"]).0, 1);
    assert_eq!(host.cli(&["start", "probe"]).0, 0);
    assert_eq!(host.cli(&["send", "probe", "count"]).0, 0);
    assert_eq!(host.cli(&["restart", "ghost"]).0, 1);
    // Usage and connection errors are exit 2.
    let out = Command::new(wasm_sup_bin())
        .args(["restart"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(wasm_sup_bin())
        .args(["status", "--admin", &free_port().to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_says_what_a_file_is() {
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE)
        .plugin("echo", MINIMAL)
        .bytes("junk", b"not wasm at all");
    let run = |f: &str, json: bool| {
        let mut c = Command::new(wasm_sup_bin());
        c.args(["check", dir.path().join(f).to_str().unwrap()]);
        if json {
            c.arg("--json");
        }
        let out = c.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run("probe.wasm", false);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("valid plugin") && out.contains("wasm-sup:plugin/supervised-worker"),
        "{out}"
    );
    assert!(
        out.contains("wasi:keyvalue/store@0.2.0-draft")
            && out.contains("wasm-sup:plugin/handler@0.1.0"),
        "{out}"
    );
    let (code, out) = run("echo.wasm", true);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["valid"].as_bool(), v["world"].as_str()),
        (Some(true), Some("worker"))
    );
    let (code, out) = run("junk.wasm", false);
    assert_eq!(code, Some(1));
    assert!(
        out.contains("not a valid plugin") && out.contains("not a WebAssembly file"),
        "{out}"
    );
    let out = Command::new(wasm_sup_bin())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("wasm-sup"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coredumps_when_switched_on_are_kept_within_their_budget() {
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE)
        .config(&format!("[host]\ncoredumps = \"64MiB\"\n{ONE_ATTEMPT}"));
    let h = TestHost::start(dir).await;
    assert_eq!(h.send("probe", "crash").await.status, 500);
    let mut path = serde_json::Value::Null;
    for _ in 0..100 {
        let v = h.admin.get("/v1/plugins/probe/crashes").await.json();
        path = v["crashes"][0]["coredump"].clone();
        if path.is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let path = std::path::PathBuf::from(path.as_str().expect("the report names its coredump"));
    assert!(
        path.starts_with(h.dir.path().join(".wasm-sup/coredumps")),
        "{}",
        path.display()
    );
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes.starts_with(b"\0asm"), "a coredump is a wasm file");
    // Off by default: no coredump.
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE).config(ONE_ATTEMPT);
    let h2 = TestHost::start(dir).await;
    assert_eq!(h2.send("probe", "crash").await.status, 500);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let v = h2.admin.get("/v1/plugins/probe/crashes").await.json();
    assert!(v["crashes"][0]["coredump"].is_null(), "{v}");
    h.stop().await;
    h2.stop().await;
}
