//! The conformance suite: one set of scenarios, run against the counter
//! example of every language (`guest-examples/README.md` has the protocol).
//!
//! Rust's counter is built from source by `tests/build.rs`; the others are
//! built into `guest-examples/plugins/` by `scripts/build-examples.sh`, which
//! `scripts/test.sh` runs first. A language whose component is missing is
//! reported as skipped, with the reason the build script recorded, unless
//! `CI=true` or `WASM_SUP_ALL_LANGUAGES=1`: then it fails.
//!
//! Each language gets the real `wasm-sup` binary, with the example as
//! `counter-LANG` and the Rust counter as `sink`, and walks through every
//! scenario in order on one host, then on a restarted one.

use crate::util::HostProcess;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One language's example.
struct Example {
    language: &'static str,
    /// The component's file name in `guest-examples/plugins/`.
    file: &'static str,
}

const RUST: Example = Example {
    language: "rust",
    file: "counter.wasm",
};
const PYTHON: Example = Example {
    language: "python",
    file: "counter-python.wasm",
};
const JAVASCRIPT: Example = Example {
    language: "javascript",
    file: "counter-js.wasm",
};
const C: Example = Example {
    language: "c",
    file: "counter-c.wasm",
};
const GO: Example = Example {
    language: "go",
    file: "counter-go.wasm",
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_path_buf()
}

/// The example's component, or why it is not there.
fn component(example: &Example) -> Result<PathBuf, String> {
    if example.language == "rust" {
        return Ok(PathBuf::from(wasm_sup_tests::COUNTER));
    }
    let path = repo().join("guest-examples/plugins").join(example.file);
    if path.is_file() {
        return Ok(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    let recorded =
        std::fs::read_to_string(target.join("wasm-guests/skipped").join(example.language));
    Err(match recorded {
        Ok(reason) => reason.trim().to_string(),
        Err(_) => format!(
            "{} is not built (run scripts/build-examples.sh {})",
            path.display(),
            example.language
        ),
    })
}

/// Whether every language must run (CI).
fn all_required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("WASM_SUP_ALL_LANGUAGES").is_ok_and(|v| v == "1")
}

async fn conformance(example: Example) {
    let path = match component(&example) {
        Ok(path) => path,
        Err(reason) if !all_required() => {
            // Written past the test harness's capture, so that it shows.
            let _ = writeln!(
                std::io::stderr(),
                "conformance: skipped {}: {reason}",
                example.language
            );
            return;
        }
        Err(reason) => panic!("{}: {reason}", example.language),
    };
    Suite::new(example.language, &path).run().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust() {
    conformance(RUST).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python() {
    conformance(PYTHON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript() {
    conformance(JAVASCRIPT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c() {
    conformance(C).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go() {
    conformance(GO).await;
}

/// The scenarios, against one language's component.
struct Suite {
    language: &'static str,
    plugin: String,
    dir: tempfile::TempDir,
    /// A loopback listener the guest is not granted.
    listener: std::net::TcpListener,
}

impl Suite {
    fn new(language: &'static str, component: &Path) -> Suite {
        let dir = tempfile::tempdir().expect("tempdir");
        let plugin = format!("counter-{language}");
        std::fs::copy(component, dir.path().join(format!("{plugin}.wasm"))).expect("copy");
        std::fs::copy(wasm_sup_tests::COUNTER, dir.path().join("sink.wasm")).expect("copy");
        // Fuel high enough for any of the runtimes to handle a message, low
        // enough that `spin` runs out of it well inside the 3 s timeout.
        std::fs::write(
            dir.path().join("wasm-sup.toml"),
            format!(
                r#"
[plugins.{plugin}]
fuel = 300_000_000
timeout = "3s"
memory = "128MiB"
[plugins.{plugin}.config]
greeting = "hej from {language}"
[plugins.{plugin}.restart]
backoff = "immediate"
max-restarts = 100
max-attempts = 1
"#
            ),
        )
        .expect("config");
        Suite {
            language,
            plugin,
            dir,
            listener: std::net::TcpListener::bind("127.0.0.1:0").expect("bind"),
        }
    }

    async fn run(self) {
        let host = HostProcess::start(self.dir.path(), &[]).await;
        self.counting(&host).await;
        self.crash_discards_its_write(&host).await;
        self.config(&host).await;
        self.mailbox(&host).await;
        self.logs(&host).await;
        self.sandbox(&host).await;
        self.limits(&host).await;
        self.survives_a_host_restart(host).await;
    }

    async fn send(&self, host: &HostProcess, message: &str) -> crate::util::Answer {
        host.admin.send(&self.plugin, message.to_string()).await
    }

    /// Sends `message` and expects `Ok(reply)`.
    async fn expect_ok(&self, host: &HostProcess, message: &str, reply: &str) {
        let a = self.send(host, message).await;
        assert_eq!(
            (a.status, a.text().as_str()),
            (200, reply),
            "{}: `{message}`",
            self.language
        );
    }

    /// Sends `message` and expects `Err(..)`; returns its text.
    async fn expect_err(&self, host: &HostProcess, message: &str) -> String {
        let a = self.send(host, message).await;
        assert_eq!(
            a.status,
            422,
            "{}: `{message}`: {}",
            self.language,
            a.text()
        );
        a.text()
    }

    /// Sends `message` and expects it to crash with `cause`; then waits for
    /// the plugin to be running again.
    async fn expect_crash(&self, host: &HostProcess, message: &str, cause: &str) {
        let a = self.send(host, message).await;
        assert_eq!(
            a.status,
            500,
            "{}: `{message}`: {}",
            self.language,
            a.text()
        );
        assert_eq!(
            a.json()["causes"],
            serde_json::json!([cause]),
            "{}: `{message}`",
            self.language
        );
        host.admin
            .wait_status(&self.plugin, "running", Duration::from_secs(30))
            .await;
    }

    async fn counting(&self, host: &HostProcess) {
        for n in 1..=3 {
            self.expect_ok(host, "hello", &n.to_string()).await;
        }
        self.expect_ok(host, "info", &format!("{} 1 0", self.plugin))
            .await;
    }

    async fn crash_discards_its_write(&self, host: &HostProcess) {
        self.expect_crash(host, "crash", "unreachable").await;
        // `crash` incremented the count before it trapped: the write is gone.
        self.expect_ok(host, "hello", "4").await;
        self.expect_ok(host, "info", &format!("{} 2 1", self.plugin))
            .await;
    }

    async fn config(&self, host: &HostProcess) {
        self.expect_ok(host, "greet", &format!("hej from {}", self.language))
            .await;
    }

    async fn mailbox(&self, host: &HostProcess) {
        self.expect_ok(host, "send sink ping", "sent").await;
        // `ping` is in sink's mailbox before this message.
        let a = host.admin.send("sink", "count").await;
        assert_eq!(a.ok(), "2", "{}: sink did not get `ping`", self.language);
        let e = self.expect_err(host, "send nobody hi").await;
        assert!(e.contains("no-such-plugin"), "{}: {e}", self.language);
    }

    async fn logs(&self, host: &HostProcess) {
        let marker = format!("printed-by-{}", self.language);
        self.expect_ok(host, &format!("print {marker}"), "printed")
            .await;
        let wanted = [
            "counter starting".to_string(),
            "count is 4".to_string(),
            marker,
        ];
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let log = host.log_text();
            let missing: Vec<&String> = wanted
                .iter()
                .filter(|w| {
                    !log.lines()
                        .any(|l| l.contains(w.as_str()) && l.contains(&self.plugin))
                })
                .collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{}: no log line naming {} with {missing:?}",
                self.language,
                self.plugin
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn sandbox(&self, host: &HostProcess) {
        self.expect_err(host, "read-file /etc/passwd").await;
        self.expect_err(host, "read-file wasm-sup.toml").await;
        self.expect_ok(host, "env", "0").await;
        let addr = self.listener.local_addr().expect("addr");
        self.expect_err(host, &format!("connect {addr}")).await;
    }

    async fn limits(&self, host: &HostProcess) {
        self.expect_crash(host, "spin", "out-of-fuel").await;
        self.expect_crash(host, "grow", "memory-limit").await;
        self.expect_crash(host, "sleep 10000", "timeout").await;
        self.expect_ok(host, "sleep 10", "slept").await;
        // Nothing the crashed calls did stayed; the count goes on.
        self.expect_ok(host, "hello", "5").await;
    }

    async fn survives_a_host_restart(&self, mut host: HostProcess) {
        host.signal("TERM");
        assert_eq!(host.wait_exit(Duration::from_secs(20)), Some(0));
        let log = host.log_text();
        assert!(
            log.lines()
                .any(|l| l.contains("counter stopping") && l.contains(&self.plugin)),
            "{}: shutdown did not run:\n{log}",
            self.language
        );
        let host = HostProcess::start(self.dir.path(), &[]).await;
        self.expect_ok(&host, "hello", "6").await;
        self.expect_ok(&host, "info", &format!("{} 1 0", self.plugin))
            .await;
    }
}

/// A plugin that imports `wasi:random/random` at WASI version `0.2.PATCH`
/// and calls it in `handle`, replying Ok with an empty list.
fn wasi_import_at(patch: u32) -> String {
    format!(
        r#"(component
  (import "wasi:random/random@0.2.{patch}" (instance $r (export "get-random-u64" (func (result u64)))))
  (core func $rand (canon lower (func $r "get-random-u64")))
  (core instance $host (export "rand" (func $rand)))
  (core module $m
    (import "host" "rand" (func $rand (result i64)))
    (memory (export "memory") 1)
    (func (export "handle") (param i32 i32) (result i32)
      call $rand drop
      i32.const 16 i32.const 0 i32.store
      i32.const 20 i32.const 0 i32.store
      i32.const 24 i32.const 0 i32.store
      i32.const 16)
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) i32.const 1024))
  (core instance $i (instantiate $m (with "host" (instance $host))))
  (func $handle (param "message" (list u8)) (result (result (list u8) (error string)))
    (canon lift (core func $i "handle") (memory (core memory $i "memory")) (realloc (core func $i "cabi_realloc"))))
  (instance $h (export "handle" (func $handle)))
  (export "wasm-sup:plugin/handler@0.1.0" (instance $h)))"#
    )
}

/// The toolchains emit WASI 0.2.6 (Rust), 0.2.0 to 0.2.12 (the others); the
/// host links each patch version of 0.2 to its own WASI implementation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_wasi_0_2_patch_version_links() {
    let dir = crate::util::PluginDir::new();
    for patch in 0..=12 {
        dir.wat(&format!("wasi-0-2-{patch}"), &wasi_import_at(patch));
    }
    let h = crate::util::TestHost::start(dir).await;
    for patch in 0..=12 {
        let a = h.send(&format!("wasi-0-2-{patch}"), "x").await;
        assert_eq!(a.status, 200, "WASI 0.2.{patch}: {}", a.text());
    }
    h.stop().await;
}

/// The SHA-256 of `wit/` as `scripts/regenerate-bindings.sh` records it:
/// `find wit -type f | LC_ALL=C sort | xargs sha256sum | sha256sum`.
fn wit_sha256() -> String {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read wit/") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let root = repo();
    let mut files = Vec::new();
    walk(&root.join("wit"), &mut files);
    let mut names: Vec<String> = files
        .iter()
        .map(|p| {
            p.strip_prefix(&root)
                .expect("under the repository")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    let listing: String = names
        .iter()
        .map(|name| {
            let bytes = std::fs::read(root.join(name)).expect("read wit file");
            format!("{}  {name}\n", crate::util::sha256(&bytes))
        })
        .collect();
    crate::util::sha256(listing.as_bytes())
}

/// The C and Go bindings are generated by the wit-bindgen CLI, an install
/// too slow for every build, so they are committed: each generated folder
/// records the hash of the `wit/` it came from, and must match today's.
#[test]
fn committed_bindings_match_the_wit() {
    let current = wit_sha256();
    let mut checked = Vec::new();
    for language in ["c", "go"] {
        let example = repo().join("guest-examples").join(language).join("counter");
        let mut stamps = Vec::new();
        find_named(&example, "WIT-SHA256", &mut stamps);
        assert!(
            !stamps.is_empty(),
            "{}: no WIT-SHA256 beside the generated bindings",
            example.display()
        );
        for stamp in stamps {
            let text = std::fs::read_to_string(&stamp).expect("read stamp");
            let recorded = text.split_whitespace().next().unwrap_or_default();
            assert_eq!(
                recorded,
                current,
                "{} is stale: wit/ changed since its bindings were generated; run scripts/regenerate-bindings.sh",
                stamp.display()
            );
            checked.push(stamp);
        }
    }
    assert!(checked.len() >= 2, "{checked:?}");
}

fn find_named(dir: &Path, name: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if entry.file_name() != "node_modules" {
                find_named(&path, name, out);
            }
        } else if entry.file_name() == name {
            out.push(path);
        }
    }
}
