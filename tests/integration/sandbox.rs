//! The WASI sandbox: files, environment, arguments and network are denied by
//! default and granted exactly as configured; guest output is capped.

use crate::util::{PluginDir, TestHost};
use wasm_sup_tests::PROBE;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_is_denied_by_default() {
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE);
    let h = TestHost::start(dir).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    assert_eq!(h.send("probe", "read-file /etc/passwd").await.status, 422);
    assert_eq!(h.send("probe", "read-file wasm-sup.toml").await.status, 422);
    assert_eq!(h.send("probe", "write-file /tmp/x y").await.status, 422);
    assert_eq!(h.send("probe", "env-count").await.ok(), "0");
    assert_eq!(h.send("probe", "env HOME").await.text(), "not set");
    assert_eq!(h.send("probe", "args-count").await.ok(), "0");
    let c = h.send("probe", format!("connect {addr}")).await;
    assert_eq!(c.status, 422, "{}", c.text());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_grants_exactly_what_it_names() {
    let dir = PluginDir::new();
    std::fs::create_dir_all(dir.path().join("data/ro")).unwrap();
    std::fs::create_dir_all(dir.path().join("data/rw")).unwrap();
    std::fs::write(dir.path().join("data/ro/hello.txt"), "read me").unwrap();
    let allowed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let denied = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (allowed_addr, denied_addr) = (allowed.local_addr().unwrap(), denied.local_addr().unwrap());
    dir.plugin("probe", PROBE).config(&format!(
        r#"
[plugins.probe]
env = {{ GREETING = "hi" }}
dirs = [
  {{ host = "data/ro", guest = "/ro" }},
  {{ host = "data/rw", guest = "/rw", mode = "rw" }},
]
network = ["127.0.0.1:{}"]
"#,
        allowed_addr.port()
    ));
    let h = TestHost::start(dir).await;
    assert_eq!(
        h.send("probe", "read-file /ro/hello.txt").await.ok(),
        "read me"
    );
    assert_eq!(
        h.send("probe", "write-file /ro/new.txt nope").await.status,
        422
    );
    h.send("probe", "write-file /rw/new.txt written").await.ok();
    assert_eq!(
        std::fs::read_to_string(h.dir.path().join("data/rw/new.txt")).unwrap(),
        "written"
    );
    assert_eq!(h.send("probe", "read-file /etc/passwd").await.status, 422);
    assert_eq!(
        h.send("probe", "read-file /ro/../../wasm-sup.toml")
            .await
            .status,
        422
    );
    assert_eq!(h.send("probe", "env GREETING").await.ok(), "hi");
    assert_eq!(h.send("probe", "env-count").await.ok(), "1");
    assert_eq!(
        h.send("probe", format!("connect {allowed_addr}"))
            .await
            .ok(),
        "connected"
    );
    assert_eq!(
        h.send("probe", format!("connect {denied_addr}"))
            .await
            .status,
        422
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_granted_directory_is_a_clear_start_failure() {
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE).config(
        r#"
[plugins.probe]
dirs = [{ host = "does-not-exist", guest = "/data" }]
[plugins.probe.restart]
backoff = "immediate"
max-restarts = 1
"#,
    );
    let h = TestHost::start(dir).await;
    let info = h
        .admin
        .wait_status("probe", "failed", std::time::Duration::from_secs(5))
        .await;
    assert_eq!(info["last_crash"], "host-error");
    assert!(
        info["reason"].as_str().unwrap().contains("does-not-exist"),
        "{info}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_output_over_its_cap_is_dropped_not_fatal() {
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE)
        .config("[plugins.probe]\noutput = \"1KiB\"\n");
    let h = TestHost::start(dir).await;
    assert_eq!(h.send("probe", "print 100000").await.ok(), "printed");
    assert_eq!(h.send("probe", "count").await.ok(), "1");
    h.stop().await;
}
