//! The plugin folder is live (DESIGN.md, "Drop-in"): real file operations on
//! a temporary folder while the host runs.

use crate::util::{PluginDir, TestHost, scrape, sha256, wat};
use std::io::Write;
use std::time::Duration;
use wasm_sup_tests::{PROBE, variant};

const WITHIN: Duration = Duration::from_secs(15);

fn probe() -> Vec<u8> {
    std::fs::read(PROBE).expect("probe guest")
}

/// A host running `probe` from a new folder, and probe's info.
async fn host_with_probe() -> (TestHost, serde_json::Value) {
    let dir = PluginDir::new();
    dir.bytes("probe", &probe());
    let h = TestHost::start(dir).await;
    let info = h.admin.wait_status("probe", "running", WITHIN).await;
    (h, info)
}

/// Replaces `name`'s file and waits until the plugin runs those bytes and is
/// `status`.
async fn replace_and_wait(
    h: &TestHost,
    name: &str,
    bytes: &[u8],
    status: &str,
) -> serde_json::Value {
    h.dir.replace(name, bytes);
    let sha = sha256(bytes);
    h.admin
        .wait_info(name, WITHIN, &format!("{status} on the new file"), |i| {
            i["sha256"] == sha && i["status"] == status
        })
        .await
}

/// `wasm-sup restart NAME`, and its info once it runs again.
async fn restart(h: &TestHost, name: &str) -> serde_json::Value {
    let a = h
        .admin
        .post(&format!("/v1/plugins/{name}/restart"), vec![])
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    h.admin.wait_status(name, "running", WITHIN).await
}

async fn metric(h: &TestHost, key: &str) -> f64 {
    let text = h.admin.get("/metrics").await.text();
    scrape(&text).get(key).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_file_starts_and_a_removed_one_stops_keeping_its_state() {
    let h = TestHost::start_with(PluginDir::new(), None).await;
    assert_eq!(
        h.admin.get("/v1/plugins").await.json()["plugins"],
        serde_json::json!([])
    );
    h.dir.replace("probe", &probe());
    h.admin.wait_status("probe", "running", WITHIN).await;
    assert_eq!(h.send("probe", "set k kept").await.ok(), "ok");

    std::fs::remove_file(h.dir.path().join("probe.wasm")).unwrap();
    h.admin.wait_gone("probe", WITHIN).await;
    assert_eq!(h.send("probe", "get k").await.status, 404);

    h.dir.replace("probe", &probe());
    let info = h.admin.wait_status("probe", "running", WITHIN).await;
    assert_eq!(info["generation"], 1, "a new plugin, not a restart: {info}");
    assert_eq!(h.send("probe", "get k").await.ok(), "kept", "state resumed");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_keeps_state_and_delivers_queued_messages_once() {
    let (h, _) = host_with_probe().await;
    assert_eq!(h.send("probe", "set before yes").await.ok(), "ok");

    // One call in flight for long enough to queue messages behind it and to
    // replace the file; the upgrade waits for it.
    let admin = h.admin.clone();
    let slow = tokio::spawn(async move { admin.send("probe", "sleep 3000").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut queued = Vec::new();
    for _ in 0..10 {
        let admin = h.admin.clone();
        queued.push(tokio::spawn(
            async move { admin.send("probe", "incr n").await },
        ));
    }
    let v2 = variant(&probe(), "v2");
    h.dir.replace("probe", &v2);
    // The upgrade happens between calls; whatever is queued after it (and
    // these messages, queued before) goes to the new version.
    h.admin
        .wait_info("probe", WITHIN, "upgraded", |i| i["sha256"] == sha256(&v2))
        .await;
    assert_eq!(
        slow.await.unwrap().ok(),
        "slept",
        "the call in flight finished"
    );
    let mut values: Vec<u64> = Vec::new();
    for q in queued {
        values.push(q.await.unwrap().ok().parse().unwrap());
    }
    values.sort();
    assert_eq!(
        values,
        (1..=10).collect::<Vec<_>>(),
        "each queued message handled exactly once"
    );
    let info = h.admin.wait_status("probe", "running", WITHIN).await;
    assert_eq!(info["generation"], 2, "{info}");
    assert_eq!(info["restarts"], 0, "an upgrade is not a crash: {info}");
    assert_eq!(
        h.send("probe", "get before").await.ok(),
        "yes",
        "state kept"
    );
    assert_eq!(
        h.send("probe", "get shutdowns").await.status,
        200,
        "old version shut down"
    );
    assert_eq!(
        metric(&h, "wasm_sup_upgrades_total{plugin=probe,result=upgraded}").await,
        1.0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_replacement_leaves_the_old_version_running() {
    let (h, before) = host_with_probe().await;
    assert_eq!(h.send("probe", "count").await.ok(), "1");

    h.dir.replace("probe", b"this is not a component");
    let key = "wasm_sup_upgrades_total{plugin=probe,result=refused}";
    let deadline = std::time::Instant::now() + WITHIN;
    while metric(&h, key).await < 1.0 {
        assert!(std::time::Instant::now() < deadline, "never refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let info = h.admin.info("probe").await;
    assert_eq!(info["sha256"], before["sha256"], "{info}");
    assert_eq!(info["generation"], 1, "not even restarted: {info}");
    assert_eq!(h.send("probe", "count").await.ok(), "2");
    assert_eq!(metric(&h, "wasm_sup_plugins_refused{}").await, 1.0);

    // A valid file later is taken.
    let v2 = variant(&probe(), "v2");
    replace_and_wait(&h, "probe", &v2, "running").await;
    assert_eq!(h.send("probe", "count").await.ok(), "3");
    assert_eq!(metric(&h, "wasm_sup_plugins_refused{}").await, 0.0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_upgrade_is_rolled_back_also_after_a_host_restart() {
    let dir = PluginDir::new();
    dir.bytes("probe", &probe()).config(
        r#"
[defaults.restart]
backoff = "immediate"
max-restarts = 2
"#,
    );
    // The redb backend: state and rollback marker outlive the host.
    let h = TestHost::start_with(dir, None).await;
    h.admin.wait_status("probe", "running", WITHIN).await;
    assert_eq!(h.send("probe", "set k v").await.ok(), "ok");
    // A healthy upgrade, right before the bad one: the rollback target,
    // though its own probation has not passed.
    let v2 = variant(&probe(), "v2");
    replace_and_wait(&h, "probe", &v2, "running").await;

    let bad = ::wat::parse_str(wat::INIT_TRAPS).unwrap();
    h.dir.replace("probe", &bad);
    let info = h
        .admin
        .wait_info("probe", WITHIN, "rolled back", |i| {
            !i["rollback"].is_null() && i["status"] == "running"
        })
        .await;
    assert_eq!(info["sha256"], sha256(&v2), "{info}");
    assert_eq!(info["rollback"]["bad_sha256"], sha256(&bad), "{info}");
    assert_eq!(info["last_crash"], "unreachable", "{info}");
    assert_eq!(h.send("probe", "get k").await.ok(), "v", "state intact");
    assert_eq!(
        metric(
            &h,
            "wasm_sup_upgrades_total{plugin=probe,result=rolled-back}"
        )
        .await,
        1.0
    );

    // The file still holds the bad version: after a host restart the good
    // one runs, from the compile cache.
    let dir = h.stop().await;
    let h = TestHost::start_with(dir, None).await;
    let info = h.admin.wait_status("probe", "running", WITHIN).await;
    assert_eq!(info["sha256"], sha256(&v2), "{info}");
    assert_eq!(info["rollback"]["bad_sha256"], sha256(&bad), "{info}");
    assert_eq!(h.send("probe", "get k").await.ok(), "v");

    // A new file is tried again, and the marker is gone.
    let v3 = variant(&probe(), "fixed");
    let info = replace_and_wait(&h, "probe", &v3, "running").await;
    assert!(info["rollback"].is_null(), "{info}");
    assert_eq!(h.send("probe", "get k").await.ok(), "v");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_partial_write_never_runs_half_a_component() {
    let h = TestHost::start(PluginDir::new()).await;
    let bytes = probe();
    let path = h.dir.path().join("slow.wasm");
    let mut f = std::fs::File::create(&path).unwrap();
    let cut = bytes.len() * 2 / 5;
    f.write_all(&bytes[..cut]).unwrap();
    f.flush().unwrap();
    // A writer that pauses for longer than the settle time: the half file is
    // stable, invalid, and refused (once), never started.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(h.admin.get("/v1/plugins/slow").await.status, 404);
    // The rest arrives in pieces, faster than the settle time.
    for chunk in bytes[cut..].chunks(bytes.len() / 5 + 1) {
        f.write_all(chunk).unwrap();
        f.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(f);
    let info = h.admin.wait_status("slow", "running", WITHIN).await;
    assert_eq!(info["generation"], 1, "{info}");
    assert_eq!(info["restarts"], 0, "{info}");
    assert_eq!(info["sha256"], sha256(&bytes), "{info}");
    assert_eq!(h.send("slow", "count").await.ok(), "1");
    assert_eq!(
        h.admin.get("/v1/plugins/slow/crashes").await.json()["crashes"],
        serde_json::json!([])
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_change_applies_at_the_next_start_and_a_bad_one_is_refused() {
    let dir = PluginDir::new();
    dir.bytes("probe", &probe())
        .plugin_config("probe", "config = { greeting = \"one\" }\n");
    let h = TestHost::start(dir).await;
    h.admin.wait_status("probe", "running", WITHIN).await;
    assert_eq!(h.send("probe", "config greeting").await.ok(), "one");

    h.dir
        .plugin_config("probe", "config = { greeting = \"two\" }\nmailbox = 7\n");
    h.admin
        .wait_info("probe", WITHIN, "pending", |i| i["config_pending"] == true)
        .await;
    assert_eq!(
        h.send("probe", "config greeting").await.ok(),
        "one",
        "the running instance keeps its configuration"
    );
    let info = restart(&h, "probe").await;
    assert_eq!(info["config_pending"], false, "{info}");
    assert_eq!(info["limits"]["mailbox"], 7, "{info}");
    assert_eq!(h.send("probe", "config greeting").await.ok(), "two");

    // A bad file is refused; the previous configuration stays in force.
    h.dir.plugin_config("probe", "greeting = \"three\"\n");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let info = h.admin.info("probe").await;
    assert_eq!(info["config_pending"], false, "{info}");
    restart(&h, "probe").await;
    assert_eq!(h.send("probe", "config greeting").await.ok(), "two");

    // So is a bad wasm-sup.toml, and a new plugin waits for a good one.
    h.dir.config("[defaults]\nmemory = \"lots\"\n");
    h.dir.replace("other", &probe());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(h.admin.get("/v1/plugins/other").await.status, 404);
    h.dir.config("[defaults]\nmemory = \"32MiB\"\n");
    let info = h.admin.wait_status("other", "running", WITHIN).await;
    assert_eq!(info["limits"]["memory"], 32 << 20, "{info}");
    h.stop().await;
}

/// Starts a host on `dir`, waits for `probe`, and returns the folder and
/// how many loads had compile cache result `result`.
async fn cache_result(dir: PluginDir, result: &str) -> (PluginDir, f64) {
    let h = TestHost::start(dir).await;
    h.admin.wait_status("probe", "running", WITHIN).await;
    assert_eq!(h.send("probe", "echo hi").await.ok(), "hi");
    let n = metric(
        &h,
        &format!("wasm_sup_compile_cache_total{{result={result}}}"),
    )
    .await;
    (h.stop().await, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compile_cache_is_hit_on_restart_and_a_corrupt_entry_is_rebuilt() {
    let dir = PluginDir::new();
    dir.bytes("probe", &probe());
    let (dir, misses) = cache_result(dir, "miss").await;
    assert_eq!(misses, 1.0);
    let (dir, hits) = cache_result(dir, "hit").await;
    assert_eq!(hits, 1.0, "no compile on a host restart");

    // Flip one byte in the middle of the entry.
    let cache = dir.path().join(".wasm-sup/cache");
    let entry = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .expect("a cache entry");
    let mut bytes = std::fs::read(&entry).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&entry, &bytes).unwrap();
    let (dir, rebuilt) = cache_result(dir, "rebuilt").await;
    assert_eq!(rebuilt, 1.0, "a corrupt entry is compiled again");

    // A truncated entry too.
    let len = std::fs::metadata(&entry).unwrap().len();
    std::fs::File::options()
        .write(true)
        .open(&entry)
        .unwrap()
        .set_len(len / 3)
        .unwrap();
    let (dir, rebuilt) = cache_result(dir, "rebuilt").await;
    assert_eq!(rebuilt, 1.0, "a truncated entry is compiled again");
    let (_, hits) = cache_result(dir, "hit").await;
    assert_eq!(hits, 1.0, "the rebuilt entry is used");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_folder_contents_are_refused_and_the_host_keeps_running() {
    let (h, _) = host_with_probe().await;
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("x.wasm"), probe()).unwrap();
    let p = h.dir.path();
    std::fs::write(p.join("Bad Name.wasm"), probe()).unwrap();
    std::fs::write(p.join("shout.WASM"), probe()).unwrap();
    std::fs::write(p.join("junk.wasm"), b"junk").unwrap();
    std::fs::write(p.join("notes.txt"), b"hello").unwrap();
    std::fs::create_dir(p.join("folder.wasm")).unwrap();
    std::fs::create_dir(p.join("sub")).unwrap();
    std::fs::write(p.join("sub/inner.wasm"), probe()).unwrap();
    std::os::unix::fs::symlink(outside.path().join("x.wasm"), p.join("escape.wasm")).unwrap();
    std::os::unix::fs::symlink("probe.wasm", p.join("alias.wasm")).unwrap();
    let mkfifo = std::process::Command::new("mkfifo")
        .arg(p.join("fifo.wasm"))
        .status()
        .unwrap();
    assert!(mkfifo.success());

    // The symlink inside the folder is a plugin of its own.
    h.admin.wait_status("alias", "running", WITHIN).await;
    let deadline = std::time::Instant::now() + WITHIN;
    while metric(&h, "wasm_sup_plugins_refused{}").await < 6.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "not all refused: {}",
            h.admin.get("/metrics").await.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let names = h.admin.plugin_names().await;
    assert_eq!(names, ["probe", "alias"]);
    assert_eq!(h.send("probe", "count").await.ok(), "1");
    assert_eq!(metric(&h, "wasm_sup_plugins_refused{}").await, 6.0);

    // Cleaning up clears the refusals.
    for f in [
        "Bad Name.wasm",
        "shout.WASM",
        "junk.wasm",
        "escape.wasm",
        "fifo.wasm",
    ] {
        std::fs::remove_file(p.join(f)).unwrap();
    }
    std::fs::remove_dir(p.join("folder.wasm")).unwrap();
    let deadline = std::time::Instant::now() + WITHIN;
    while metric(&h, "wasm_sup_plugins_refused{}").await > 0.0 {
        assert!(std::time::Instant::now() < deadline, "refusals not cleared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_plugin_starts_with_a_new_version_and_without_a_good_one_follows_its_policy() {
    let bad = ::wat::parse_str(wat::INIT_TRAPS).unwrap();
    let dir = PluginDir::new();
    dir.bytes("p", &bad).config(
        r#"
[defaults.restart]
backoff = "immediate"
max-restarts = 1
"#,
    );
    let h = TestHost::start(dir).await;
    h.admin.wait_status("p", "failed", WITHIN).await;

    // Another bad version: nothing ran healthily before it, so no rollback.
    let bad2 = variant(&bad, "2");
    let info = replace_and_wait(&h, "p", &bad2, "failed").await;
    assert!(info["rollback"].is_null(), "{info}");

    // A good version brings the failed plugin back.
    replace_and_wait(&h, "p", &probe(), "running").await;
    assert_eq!(h.send("p", "count").await.ok(), "1");
    h.stop().await;
}

/// Past `[host] instance-pool` a new plugin is refused with the fix, and the
/// others run on; when a slot frees up, the waiting file starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_instance_pool_refuses_the_next_plugin_until_a_slot_frees() {
    let dir = PluginDir::new();
    dir.config("[host]\ninstance-pool = 2\n")
        .wat("a", &wat::ok_empty())
        .wat("b", &wat::ok_empty());
    let h = TestHost::start(dir).await;
    assert_eq!(h.admin.plugin_names().await, ["a", "b"]);
    h.dir
        .replace("c", &::wat::parse_str(wat::ok_empty()).unwrap());
    let deadline = std::time::Instant::now() + WITHIN;
    while metric(&h, "wasm_sup_plugins_refused{}").await < 1.0 {
        assert!(std::time::Instant::now() < deadline, "c was never refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(h.admin.plugin_names().await, ["a", "b"]);
    assert_eq!(h.send("a", "x").await.status, 200, "the others run on");

    std::fs::remove_file(h.dir.path().join("a.wasm")).unwrap();
    h.admin.wait_status("c", "running", WITHIN).await;
    assert_eq!(h.send("c", "x").await.status, 200);
    h.stop().await;
}

/// Issue 16: a message for a file just dropped in is told the plugin is
/// loading (503 with `Retry-After`) while the file settles and compiles,
/// never 404 once the folder has seen it; then it is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_for_a_file_just_dropped_in_is_told_it_is_loading() {
    let h = TestHost::start_with(PluginDir::new(), None).await;
    // A variant nobody compiled yet: a compile, after the settle time.
    h.dir.replace("fresh", &variant(&probe(), "fresh"));
    let deadline = std::time::Instant::now() + WITHIN;
    let mut loading = 0;
    let answer = loop {
        assert!(std::time::Instant::now() < deadline, "never answered");
        let a = h.send("fresh", "count").await;
        match a.status {
            404 => assert_eq!(loading, 0, "404 after loading: {}", a.text()),
            503 => {
                assert_eq!(a.json()["status"], "loading", "{}", a.text());
                assert!(
                    a.json()["reason"]
                        .as_str()
                        .unwrap()
                        .contains("fresh.wasm was just added"),
                    "{}",
                    a.text()
                );
                loading += 1;
            }
            _ => break a,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(answer.ok(), "1");
    assert!(
        loading > 0,
        "the settle time and the compile are told as loading"
    );
    h.stop().await;
}
