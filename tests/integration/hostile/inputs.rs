//! Hostile cases: inputs (see the suite's module doc). What an operator or
//! a client hands the host: plugin files, configuration files, and admin
//! API requests, all run against the real `wasm-sup` binary.

use super::{Arena, CANARY};
use crate::util::{Admin, PluginDir, config_error, padded, scrape, wat};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wasm_sup_tests::PROBE;

const WITHIN: Duration = Duration::from_secs(20);

/// `--state memory`: these cases attack inputs, not the state file.
const MEMORY: &[&str] = &["--state", "memory"];

// ---------------------------------------------------------------------------
// Plugin files.

/// Writes `bytes` as `file` in `dir` the recommended way: under a hidden
/// name, then renamed into place.
fn drop_in(dir: &Path, file: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, bytes).expect("write temp");
    std::fs::rename(&tmp, dir.join(file)).expect("rename");
}

/// The lines of the host's log that name `file`.
fn lines_naming(log: &str, file: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(file))
        .map(str::to_string)
        .collect()
}

/// `wasm_sup_plugins_refused`.
async fn refused_count(admin: &Admin) -> f64 {
    let text = admin.get("/metrics").await.text();
    scrape(&text)
        .get("wasm_sup_plugins_refused{}")
        .copied()
        .unwrap_or(0.0)
}

/// Exactly one log line names `file`: a `refused` error that gives `why`.
fn assert_one_refusal(log: &str, file: &str, why: &[&str]) {
    let lines = lines_naming(log, file);
    assert_eq!(
        lines.len(),
        1,
        "{file}: want one line, got {lines:?}\n{log}"
    );
    let line = &lines[0];
    assert!(
        line.contains("ERROR") && line.contains("refused"),
        "{file}: {line}"
    );
    for why in why {
        assert!(line.contains(why), "{file}: {line:?} lacks {why:?}");
    }
}

/// The attack: a bad plugin file, as `before` (in the folder when the host
/// starts) and as `late` (dropped in while it runs, the folder watcher's
/// path). What must hold: each is refused with exactly one log line naming
/// the file and `why`, neither becomes a plugin, and the canary is
/// contained.
async fn refused_before_and_while_running(
    before: &str,
    late: &str,
    bytes: &[u8],
    why: &[&str],
    config: &str,
) {
    let dir = PluginDir::new();
    dir.config(config);
    std::fs::write(dir.path().join(before), bytes).expect("write the bad file");
    let mut arena = Arena::start_process(&dir, MEMORY).await;
    let admin = arena.admin().clone();
    let log = || std::fs::read_to_string(arena_log(&dir)).unwrap_or_default();
    // The log is written by a background thread: the line may trail the
    // host's readiness by a moment.
    let deadline = Instant::now() + WITHIN;
    while lines_naming(&log(), before).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_one_refusal(&log(), before, why);
    assert_eq!(refused_count(&admin).await, 1.0);
    arena.assert_contained().await;

    drop_in(dir.path(), late, bytes);
    let deadline = Instant::now() + WITHIN;
    while refused_count(&admin).await < 2.0 {
        assert!(
            Instant::now() < deadline,
            "{late} was not refused:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Another settling period and watcher pass: still one line each.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let text = log();
    assert_one_refusal(&text, before, why);
    assert_one_refusal(&text, late, why);
    assert_eq!(refused_count(&admin).await, 2.0);
    assert_eq!(admin.plugin_names().await, [CANARY]);
    arena.assert_contained().await;
    arena.stop().await;
}

/// The log file of the one host process started in `dir`.
fn arena_log(dir: &PluginDir) -> std::path::PathBuf {
    let logs: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("host-"))
        })
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    logs[0].clone()
}

/// Attack: an empty `.wasm` (0 bytes). Must hold: refused once, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_file_is_refused_once() {
    refused_before_and_while_running(
        "empty.wasm",
        "empty2.wasm",
        b"",
        &["the file is empty (0 bytes)"],
        "",
    )
    .await;
}

/// Attack: 4 KiB of random bytes. Must hold: refused once, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_of_random_bytes_is_refused_once() {
    let mut x = 0x2545_f491_u32;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect();
    assert_ne!(&bytes[..4], b"\0asm");
    refused_before_and_while_running(
        "random.wasm",
        "random2.wasm",
        &bytes,
        &["not a WebAssembly file"],
        "",
    )
    .await;
}

/// Attack: the probe component cut in half. Must hold: refused once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_component_is_refused_once() {
    let probe = std::fs::read(PROBE).expect("probe");
    refused_before_and_while_running(
        "truncated.wasm",
        "truncated2.wasm",
        &probe[..probe.len() / 2],
        &["is not a valid component (truncated or corrupt?)"],
        "",
    )
    .await;
}

/// Attack: a core module instead of a component. Must hold: refused once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_module_is_refused_once() {
    let bytes = ::wat::parse_str(wat::CORE_MODULE).expect("wat");
    refused_before_and_while_running(
        "core.wasm",
        "core2.wasm",
        &bytes,
        &["is a core wasm module, not a component"],
        "",
    )
    .await;
}

/// Attack: a component that exports no handler. Must hold: refused once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_without_a_handler_is_refused_once() {
    let bytes = ::wat::parse_str(wat::NO_HANDLER).expect("wat");
    refused_before_and_while_running(
        "nohandler.wasm",
        "nohandler2.wasm",
        &bytes,
        &["exports no `wasm-sup:plugin/handler@0.1.0` interface"],
        "",
    )
    .await;
}

/// A component exporting `wasm-sup:plugin/handler@0.1.0` whose `handle`
/// takes a string and returns a u32.
const WRONG_HANDLE_TYPE: &str = r#"(component
  (core module $m
    (memory (export "memory") 1)
    (func (export "handle") (param i32 i32) (result i32) i32.const 0)
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) i32.const 1024))
  (core instance $i (instantiate $m))
  (func $handle (param "message" string) (result u32)
    (canon lift (core func $i "handle") (memory (core memory $i "memory")) (realloc (core func $i "cabi_realloc"))))
  (instance $h (export "handle" (func $handle)))
  (export "wasm-sup:plugin/handler@0.1.0" (instance $h)))"#;

/// Attack: a handler export whose `handle` has the wrong signature. Must
/// hold: refused once, saying the type is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_of_the_wrong_type_is_refused_once() {
    let bytes = ::wat::parse_str(WRONG_HANDLE_TYPE).expect("wat");
    refused_before_and_while_running(
        "wrongtype.wasm",
        "wrongtype2.wasm",
        &bytes,
        &["its `handler.handle` has the wrong type"],
        "",
    )
    .await;
}

/// Attack: a component importing an interface the host does not have.
/// Must hold: refused once, naming the import.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_with_an_unknown_import_is_refused_once() {
    let bytes = ::wat::parse_str(wat::UNKNOWN_IMPORT).expect("wat");
    refused_before_and_while_running(
        "imports.wasm",
        "imports2.wasm",
        &bytes,
        &[
            "imports something the host does not provide",
            "acme:nope/thing",
        ],
        "",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_over_max_plugin_file_is_refused_once() {
    // The limit lets the canary (the probe) in.
    let limit = std::fs::metadata(PROBE).expect("probe").len() as usize + 4096;
    let small = ::wat::parse_str(wat::ok_empty()).expect("wat");
    let big = padded(&small, limit + 1);
    refused_before_and_while_running(
        "big.wasm",
        "big2.wasm",
        &big,
        &[
            &format!("the file is {} bytes", limit + 1),
            &format!("more than `[host] max-plugin-file` ({limit}"),
        ],
        &format!("[host]\nmax-plugin-file = {limit}\n"),
    )
    .await;
}

/// Attack: a good plugin under names that are not plugin names (capitals
/// and `_`; non-ASCII). Must hold: refused once, naming the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_with_a_bad_name_is_refused_once() {
    let probe = std::fs::read(PROBE).expect("probe");
    refused_before_and_while_running(
        "Bad_Name.wasm",
        "été.wasm",
        &probe,
        &["is not a valid plugin name"],
        "",
    )
    .await;
}

// ---------------------------------------------------------------------------
// Configuration files.

/// Replaces `file` in `dir` the way an editor that renames does, so the
/// watcher never reads it half-written.
fn write_config(dir: &Path, file: &str, text: &str) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).expect("write temp");
    std::fs::rename(&tmp, dir.join(file)).expect("rename");
}

/// Waits until the host's log has a line containing every one of `needles`
/// and returns the lines that do (checked again after a watcher pass).
async fn log_lines_with(dir: &PluginDir, needles: &[&str]) -> Vec<String> {
    let matching = || {
        let log = std::fs::read_to_string(arena_log(dir)).unwrap_or_default();
        log.lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + WITHIN;
    while matching().is_empty() {
        assert!(Instant::now() < deadline, "no log line with {needles:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    matching()
}

/// Restarts `plugin` and returns its wasi:config value `v`.
async fn config_v_after_restart(arena: &Arena, plugin: &str) -> String {
    let a = arena
        .admin()
        .post(&format!("/v1/plugins/{plugin}/restart"), Vec::new())
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    arena.admin().wait_status(plugin, "running", WITHIN).await;
    arena.send(plugin, "config v").await.ok()
}

/// The attack: a bad `wasm-sup.toml` (`bad`, which sets `v = "new"` for
/// plugin `tuned`) written while the host runs, then a start with it. What
/// must hold: live, one `configuration refused` line naming file, line and
/// key, the previous configuration stays in force (a restart still sees
/// `v = "old"`) and the canary is contained; at startup, exit code 2 with
/// one `error:` line naming them.
async fn a_bad_host_config_is_refused_live_and_at_start(bad: &str, needles: &[&str]) {
    let dir = PluginDir::new();
    dir.plugin("tuned", PROBE)
        .config("[plugins.tuned]\nconfig = { v = \"old\" }\n");
    let mut arena = Arena::start_process(&dir, MEMORY).await;
    assert_eq!(arena.send("tuned", "config v").await.ok(), "old");

    write_config(dir.path(), "wasm-sup.toml", bad);
    let mut want = vec!["configuration refused, the previous one stays in force"];
    want.extend_from_slice(needles);
    let lines = log_lines_with(&dir, &want).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("ERROR"), "{}", lines[0]);
    assert_eq!(config_v_after_restart(&arena, "tuned").await, "old");
    arena.assert_contained().await;
    arena.stop().await;

    let err = config_error(&dir, MEMORY);
    for needle in needles {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
}

/// Attack: an unknown key in `wasm-sup.toml` (a typo), live and at start.
/// Must hold: see [`a_bad_host_config_is_refused_live_and_at_start`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_key_in_wasm_sup_toml_is_refused_live_and_stops_a_start() {
    a_bad_host_config_is_refused_live_and_at_start(
        "[plugins.tuned]\nconfig = { v = \"new\" }\n[defaults]\nmemory = \"64MiB\"\nfuell = 5\n",
        &["wasm-sup.toml:5", "[defaults] key `fuell`", "unknown field"],
    )
    .await;
}

/// Attack: an out-of-range value in `wasm-sup.toml` (a mailbox of 0),
/// live and at start. Must hold: see
/// [`a_bad_host_config_is_refused_live_and_at_start`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_range_value_in_wasm_sup_toml_is_refused_live_and_stops_a_start() {
    a_bad_host_config_is_refused_live_and_at_start(
        "[plugins.tuned]\nconfig = { v = \"new\" }\nmailbox = 0\n",
        &[
            "wasm-sup.toml:3",
            "[plugins.tuned] key `mailbox`",
            "between 1",
        ],
    )
    .await;
}

/// The attack: a plugin's own `NAME.toml` changed to a bad value while the
/// host runs. What must hold: the change is refused with one log line
/// naming the file, line and key, the old configuration keeps running (a
/// restart still sees it), the canary is contained, and a good change
/// afterwards does apply (so the check could fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_plugin_config_change_is_refused_and_the_old_one_runs_on() {
    let dir = PluginDir::new();
    dir.plugin("tuned", PROBE)
        .plugin_config("tuned", "config = { v = \"old\" }\n");
    let mut arena = Arena::start_process(&dir, MEMORY).await;
    arena.plant("tuned").await;
    assert_eq!(arena.send("tuned", "config v").await.ok(), "old");

    write_config(
        dir.path(),
        "tuned.toml",
        "config = { v = \"new\" }\n[restart]\nbackoff = \"sometimes\"\n",
    );
    let lines = log_lines_with(&dir, &["refused", "tuned.toml:3", "`backoff`"]).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("the previous one stays in force"),
        "{}",
        lines[0]
    );
    let info = arena.admin().info("tuned").await;
    assert_eq!(info["config_pending"], false, "{info}");
    assert_eq!(config_v_after_restart(&arena, "tuned").await, "old");
    arena.assert_contained().await;

    // A good change is taken (at the next start).
    write_config(dir.path(), "tuned.toml", "config = { v = \"new\" }\n");
    arena
        .admin()
        .wait_info("tuned", WITHIN, "config pending", |i| {
            i["config_pending"] == true
        })
        .await;
    assert_eq!(config_v_after_restart(&arena, "tuned").await, "new");
    arena.assert_contained().await;
    arena.stop().await;
}

// ---------------------------------------------------------------------------
// Admin API requests.

/// An HTTP/1.1 answer read off a raw connection.
#[derive(Debug)]
struct RawAnswer {
    /// None: the connection closed without an answer.
    status: Option<u16>,
    text: String,
}

/// Sends `request` on a fresh connection and reads until the host closes
/// it (requests say `Connection: close`) or 10 s pass.
async fn raw(addr: SocketAddr, request: &[u8]) -> RawAnswer {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    // The host may answer and close before it has read everything.
    let _ = s.write_all(request).await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut chunk = [0u8; 8192];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within 10 s to {:?}", head(request));
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    RawAnswer { status, text }
}

/// The first 200 bytes of a request, for messages.
fn head(request: &[u8]) -> String {
    String::from_utf8_lossy(&request[..request.len().min(200)]).into_owned()
}

/// A raw `METHOD TARGET` request with an optional body.
fn request(method: &str, target: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// The attack: message bodies over the plugin's `max-message`, and bodies
/// over the API's 64 MiB limit (to a plugin, and to the state-reset
/// endpoint). What must hold: 413 with a JSON error, no
/// message is delivered and no state is reset, and the host is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_answered_413_and_nothing_is_delivered() {
    let dir = PluginDir::new();
    dir.plugin("small", PROBE)
        .config("[plugins.small]\nmax-message = \"1KiB\"\n");
    let mut arena = Arena::start_process(&dir, MEMORY).await;
    arena.plant("small").await;
    let admin = arena.admin().clone();

    // Over max-message: `count` padded with spaces would be a count.
    let mut message = b"count ".to_vec();
    message.resize(1025, b' ');
    let a = admin.send("small", message).await;
    assert_eq!(a.status, 413, "{}", a.text());
    assert!(
        a.json()["error"]
            .as_str()
            .unwrap_or_default()
            .contains("max-message")
    );
    let mut message = b"count ".to_vec();
    message.resize((1 << 20) + 1, b' ');
    let a = admin.send(CANARY, message).await;
    assert_eq!(a.status, 413, "{}", a.text());

    // Over the API's 64 MiB: answered 413 (or the connection is cut once
    // the limit is read), never delivered.
    let huge = vec![b' '; (64 << 20) + 1];
    for path in [
        "/v1/plugins/canary/messages",
        "/v1/plugins/small/state/reset?confirm=small",
    ] {
        let url = format!("http://{}{path}", admin.addr);
        match reqwest::Client::new()
            .post(url)
            .body(huge.clone())
            .send()
            .await
        {
            Ok(r) => {
                let status = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                assert_eq!(status, 413, "{path}: {body}");
                assert!(body.contains("\"error\""), "{path}: {body}");
            }
            Err(e) => panic!("{path}: no answer to a 64 MiB + 1 body: {e}"),
        }
    }
    // small's state was not reset (its planted key is checked), nothing
    // reached the canary (its count is checked).
    arena.assert_contained().await;
    arena.stop().await;
}

/// The attack: malformed and wrong JSON bodies to the one endpoint that
/// takes JSON (`state/reset`). What must hold: 400 with a JSON error that
/// says what to send, the state is not reset, and a well-formed
/// confirmation does reset (so the check could fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_answered_400_and_resets_nothing() {
    let dir = PluginDir::new();
    dir.plugin("victim", PROBE).plugin("other", PROBE);
    let mut arena = Arena::start_process(&dir, MEMORY).await;
    arena.plant("victim").await;
    let admin = arena.admin().clone();
    for body in [
        &b"{\"confirm\": "[..],
        b"{\"confirm\": \"victim\"",
        b"not json",
        b"{\"confirm\": 1}",
        b"{\"confirm\": null}",
        b"{\"confirm\": \"other\"}",
        b"{\"confirm\": false}",
        b"\xff\xfe{\"confirm\": true}",
        b"",
    ] {
        let a = admin
            .post("/v1/plugins/victim/state/reset", body.to_vec())
            .await;
        assert_eq!(
            a.status,
            400,
            "{}: {}",
            String::from_utf8_lossy(body),
            a.text()
        );
        let error = a.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(error.contains("confirm"), "{error}");
    }
    // The control: a good body resets `other`.
    assert_eq!(arena.send("other", "set k v").await.ok(), "ok");
    let a = admin
        .post(
            "/v1/plugins/other/state/reset",
            b"{\"confirm\": \"other\"}".to_vec(),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        admin.get("/v1/plugins/other/state/default/k").await.status,
        404
    );
    arena.assert_contained().await;
    arena.stop().await;
}

/// The attack: a JSON array instead of the documented object as the body
/// of `state/reset` (`["NAME"]`, `[true]`). What must hold: it is not a
/// confirmation (400), and the plugin's state stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_array_is_not_a_state_reset_confirmation() {
    let dir = PluginDir::new();
    dir.plugin("victim", PROBE);
    let mut arena = Arena::start_process(&dir, MEMORY).await;
    arena.plant("victim").await;
    for body in [&b"[\"victim\"]"[..], b"[true]"] {
        let a = arena
            .admin()
            .post("/v1/plugins/victim/state/reset", body.to_vec())
            .await;
        assert_eq!(
            a.status,
            400,
            "{}: {}",
            String::from_utf8_lossy(body),
            a.text()
        );
    }
    arena.assert_contained().await;
    arena.stop().await;
}

/// The attack: plugin names and keys in paths that try to climb out
/// (`..`, `%2e%2e%2f`), end early (`%00`), are very long, or are not ASCII,
/// sent raw so that no client normalizes them. What must hold: each is
/// answered 400 or 404 (414/431 for the longest), never a 5xx, nothing
/// from a host file comes back, and no message reaches the canary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_in_names_are_400_or_404_and_reach_nothing() {
    let dir = PluginDir::new();
    let mut arena = Arena::start_process(&dir, MEMORY).await;
    let addr = arena.admin().addr;
    let long = "a".repeat(65);
    let longer = "a".repeat(7000);
    let cases: Vec<(&str, String)> = vec![
        ("GET", "/v1/plugins/..".into()),
        ("GET", "/v1/plugins/../../../../etc/passwd".into()),
        ("GET", "/v1/plugins/%2e%2e%2f%2e%2e%2fetc%2fpasswd".into()),
        ("GET", "/v1/plugins/%2e%2e".into()),
        ("GET", "/v1/plugins/canary%00".into()),
        ("GET", "/v1/plugins/canary%00.wasm".into()),
        ("GET", "/v1/plugins/CANARY".into()),
        ("GET", "/v1/plugins/%C3%A9t%C3%A9".into()),
        ("GET", "/v1/plugins/%ff%fe".into()),
        ("GET", format!("/v1/plugins/{long}")),
        ("GET", format!("/v1/plugins/{longer}")),
        ("GET", "/v1/plugins/canary/../canary".into()),
        ("GET", "//v1/plugins/canary/../../etc/passwd".into()),
        (
            "GET",
            "/v1/plugins/canary/state/..%2f..%2f..%2fetc/passwd".into(),
        ),
        (
            "GET",
            "/v1/plugins/canary/state/default/..%2f..%2fplanted".into(),
        ),
        (
            "GET",
            "/v1/plugins/canary/state?bucket=..%2f..&key=..%2f..%2fetc%2fpasswd".into(),
        ),
        ("GET", "/v1/plugins/..%2fcanary/crashes".into()),
        ("GET", "/v1/plugins/canary%2f..%2f..%2f/dead-letters".into()),
        ("POST", "/v1/plugins/..%2fcanary/messages".into()),
        ("POST", "/v1/plugins/canary%00/messages".into()),
        ("POST", "/v1/plugins/canary%2fmessages/messages".into()),
        ("POST", "/v1/plugins/%2e%2e/state/reset?confirm=true".into()),
        ("POST", "/v1/plugins/%2e/restart".into()),
        ("POST", format!("/v1/plugins/{long}/stop")),
    ];
    for (method, target) in &cases {
        let a = raw(addr, &request(method, target, b"count")).await;
        let status = a
            .status
            .unwrap_or_else(|| panic!("{method} {target}: no answer"));
        let allowed: &[u16] = if target.len() > 1000 {
            &[400, 404, 414, 431]
        } else {
            &[400, 404]
        };
        assert!(
            allowed.contains(&status),
            "{method} {target}: {status}\n{}",
            a.text
        );
        assert!(!a.text.contains("root:"), "{method} {target}: {}", a.text);
    }
    // Raw non-ASCII bytes in the request target.
    let a = raw(addr, &request("GET", "/v1/plugins/été", b"")).await;
    assert!(
        matches!(a.status, Some(400 | 404) | None),
        "raw UTF-8 in a path: {a:?}"
    );
    arena.assert_contained().await;
    arena.stop().await;
}

/// The attack: slow clients. 50 connections that send half a request's
/// headers and 50 that send all headers but only part of a message body
/// to the canary, all held open. What must hold: other clients are served
/// promptly meanwhile, no partial message is delivered, and the host closes
/// a connection whose headers do not arrive within its 10 s header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_do_not_hold_up_the_others() {
    let dir = PluginDir::new();
    let mut arena = Arena::start_process(&dir, MEMORY).await;
    let admin = arena.admin().clone();
    let opened = Instant::now();
    let mut half_headers = Vec::new();
    let mut half_bodies = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(admin.addr).await.expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: loc")
            .await
            .expect("write");
        half_headers.push(s);
        let mut s = TcpStream::connect(admin.addr).await.expect("connect");
        s.write_all(
            b"POST /v1/plugins/canary/messages HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\ncou",
        )
        .await
        .expect("write");
        half_bodies.push(s);
    }
    let mut slowest = Duration::ZERO;
    for i in 0..50 {
        let t = Instant::now();
        if i % 2 == 0 {
            assert_eq!(admin.get("/healthz").await.status, 200);
        } else {
            assert_eq!(admin.get("/v1/plugins/canary").await.status, 200);
        }
        slowest = slowest.max(t.elapsed());
    }
    assert!(
        slowest < Duration::from_secs(1),
        "a request took {slowest:?}"
    );
    arena.assert_contained().await;

    // The header timeout closes a connection that never finishes its headers.
    let mut s = half_headers.pop().expect("a connection");
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "a half-sent request was held past 15 s");
    assert!(
        opened.elapsed() >= Duration::from_secs(9),
        "closed after {:?}, before the 10 s header timeout",
        opened.elapsed()
    );
    drop(half_headers);
    drop(half_bodies);
    let text = admin.get("/metrics").await.text();
    let errs = scrape(&text)
        .get("wasm_sup_messages_total{outcome=err,plugin=canary}")
        .copied()
        .unwrap_or(0.0);
    assert_eq!(errs, 0.0, "a partial body was delivered as a message");
    arena.assert_contained().await;
    arena.stop().await;
}

/// The attack: 10,000 requests as fast as 50 connections can send them:
/// probes, listings, messages, metrics and unknown names. What must hold:
/// every one is answered, none with a 5xx, every message's reply is right,
/// and the host is contained afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_rapid_requests_are_all_answered_without_a_5xx() {
    const CLIENTS: usize = 50;
    const EACH: usize = 200;
    let dir = PluginDir::new();
    dir.plugin("echo", PROBE);
    let mut arena = Arena::start_process(&dir, MEMORY).await;
    arena.plant("echo").await;
    let base = format!("http://{}", arena.admin().addr);
    let http = reqwest::Client::new();
    let t = Instant::now();
    let clients = (0..CLIENTS).map(|c| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let mut statuses = Vec::with_capacity(EACH);
            for i in 0..EACH {
                let n = c * EACH + i;
                let req = match n % 5 {
                    0 => http.get(format!("{base}/healthz")),
                    1 => http.get(format!("{base}/v1/plugins/echo")),
                    2 => http
                        .post(format!("{base}/v1/plugins/echo/messages"))
                        .body(format!("echo {n}")),
                    3 => http.get(format!("{base}/v1/plugins/nobody-{n}")),
                    _ if n % 50 == 4 => http.get(format!("{base}/metrics")),
                    _ => http.get(format!("{base}/readyz")),
                };
                let resp = req
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("request {n}: {e}"));
                let status = resp.status().as_u16();
                let body = resp.text().await.expect("a body");
                if n % 5 == 2 && status == 200 {
                    assert_eq!(body, n.to_string(), "request {n}");
                }
                statuses.push((n, status));
            }
            statuses
        }
    });
    let all: Vec<(usize, u16)> = futures::future::join_all(clients)
        .await
        .into_iter()
        .flatten()
        .collect();
    let took = t.elapsed();
    assert_eq!(all.len(), CLIENTS * EACH);
    let bad: Vec<_> = all.iter().filter(|(_, s)| *s >= 500).collect();
    assert!(
        bad.is_empty(),
        "{} answers were 5xx: {:?}",
        bad.len(),
        &bad[..bad.len().min(10)]
    );
    for (n, status) in &all {
        let want = match n % 5 {
            3 => 404,
            _ => 200,
        };
        assert_eq!(*status, want, "request {n}");
    }
    eprintln!("10,000 requests in {took:?}");
    arena.assert_contained().await;
    arena.stop().await;
}

/// The attack: requests that are not HTTP, or broken HTTP: garbage bytes,
/// an HTTP/2 preface, a 1 MiB header, a bad chunk size, a negative and two
/// conflicting Content-Lengths, a request line of 100 KiB. What must hold:
/// each is answered with a 4xx or the connection is closed, never a 5xx
/// from the API (505 for the HTTP/2 preface is allowed), no `count`
/// reaches the canary, and the host is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_http_is_refused_and_the_host_is_fine() {
    let dir = PluginDir::new();
    let mut arena = Arena::start_process(&dir, MEMORY).await;
    let addr = arena.admin().addr;
    let mut big_header = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: ".to_vec();
    big_header.extend(std::iter::repeat_n(b'a', 1 << 20));
    big_header.extend_from_slice(b"\r\n\r\n");
    let mut long_line = b"GET /".to_vec();
    long_line.extend(std::iter::repeat_n(b'a', 100 << 10));
    long_line.extend_from_slice(b" HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"HELLO THERE\r\n\r\n".to_vec()),
        ("binary", (0u8..=255).cycle().take(4096).collect()),
        ("http/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()),
        ("1 MiB header", big_header),
        ("100 KiB request line", long_line),
        (
            "bad chunk size",
            b"POST /v1/plugins/canary/messages HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\ncount\r\n0\r\n\r\n".to_vec(),
        ),
        (
            "negative length",
            b"POST /v1/plugins/canary/messages HTTP/1.1\r\nHost: localhost\r\nContent-Length: -5\r\n\r\ncount".to_vec(),
        ),
        (
            "two lengths",
            b"POST /v1/plugins/canary/messages HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nContent-Length: 3\r\n\r\ncount".to_vec(),
        ),
        (
            "length and chunked",
            b"POST /v1/plugins/canary/messages HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\necho!\r\n0\r\n\r\n".to_vec(),
        ),
    ];
    for (what, bytes) in &cases {
        let a = raw(addr, bytes).await;
        if let Some(status) = a.status {
            assert!(
                (400..500).contains(&status) || status == 505,
                "{what}: {status}\n{}",
                a.text
            );
        }
    }
    arena.assert_contained().await;
    arena.stop().await;
}
