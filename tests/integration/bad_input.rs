//! Bad plugin files are refused with one line naming the file and the reason,
//! while every other plugin runs.

use crate::util::{HostProcess, PluginDir, wat};
use wasm_sup_tests::{MINIMAL, PROBE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_file_is_refused_with_one_clear_line_and_the_rest_run() {
    let dir = PluginDir::new();
    let probe = std::fs::read(PROBE).unwrap();
    dir.plugin("good", MINIMAL)
        .bytes("empty", b"")
        .bytes(
            "random",
            &[0x13, 0x37, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8],
        )
        .bytes("truncated", &probe[..probe.len() / 2])
        .wat("core", wat::CORE_MODULE)
        .wat("nohandler", wat::NO_HANDLER)
        .wat("imports", wat::UNKNOWN_IMPORT)
        .plugin("Bad_Name", MINIMAL)
        .plugin("wasm-sup", MINIMAL);
    let host = HostProcess::start(dir.path(), &[]).await;
    assert_eq!(
        host.admin.send("good", "still here").await.ok(),
        "still here"
    );
    let log = host.log_text();
    let refused: Vec<&str> = log.lines().filter(|l| l.contains("refused")).collect();
    let expect = [
        ("empty.wasm", "empty (0 bytes)"),
        ("random.wasm", "not a WebAssembly file"),
        ("truncated.wasm", "not a valid component"),
        ("core.wasm", "core wasm module, not a component"),
        (
            "nohandler.wasm",
            "exports no `wasm-sup:plugin/handler@0.1.0`",
        ),
        (
            "imports.wasm",
            "imports something the host does not provide",
        ),
        ("Bad_Name.wasm", "not a valid plugin name"),
        ("wasm-sup.wasm", "reserved"),
    ];
    for (file, why) in expect {
        let lines: Vec<_> = refused.iter().filter(|l| l.contains(file)).collect();
        assert_eq!(
            lines.len(),
            1,
            "{file}: want one line, got {lines:?}\n{log}"
        );
        assert!(
            lines[0].contains(why),
            "{file}: {:?} lacks {why:?}",
            lines[0]
        );
    }
    assert!(
        log.contains("acme:nope/thing"),
        "the missing import is named"
    );
    let list = host.admin.get("/v1/plugins").await.json();
    assert_eq!(list["plugins"].as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_only_wat_component_loads_and_answers() {
    let dir = PluginDir::new();
    dir.wat("tiny", &wat::ok_empty());
    let h = crate::util::TestHost::start(dir).await;
    assert_eq!(h.send("tiny", "anything").await.ok(), "");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_stops_the_host_with_file_line_and_key() {
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE)
        .config("[defaults]\nmemory = \"64MiB\"\nfuell = 5\n");
    let err = run_expecting_exit_2(&dir);
    assert!(err.contains("wasm-sup.toml:3"), "{err}");
    assert!(err.contains("fuell"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    dir.config("")
        .plugin_config("probe", "[restart]\nbackoff = \"sometimes\"\n");
    let err = run_expecting_exit_2(&dir);
    assert!(err.contains("probe.toml:2"), "{err}");
    assert!(err.contains("backoff"), "{err}");
}

/// Runs `wasm-sup run DIR`, expects exit code 2, and returns its stderr.
fn run_expecting_exit_2(dir: &PluginDir) -> String {
    let out = std::process::Command::new(crate::util::wasm_sup_bin())
        .args([
            "run",
            dir.path().to_str().unwrap(),
            "--admin",
            &crate::util::free_port().to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    String::from_utf8_lossy(&out.stderr).into_owned()
}
