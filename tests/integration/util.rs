//! Test helpers: a plugin directory ([`PluginDir`]), the host run in-process
//! with its admin API on a real loopback port ([`TestHost`]), and the real
//! `wasm-sup` binary as a child process ([`HostProcess`]).

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wasm_sup::config::HostOverrides;
use wasm_sup::host::{self, RunOptions};

/// Restart settings for tests that want every crash answered at once:
/// no backoff, one delivery per message, a generous intensity.
pub const ONE_ATTEMPT: &str = r#"
[defaults.restart]
backoff = "immediate"
max-restarts = 100
max-attempts = 1
"#;

/// A temporary plugin directory.
pub struct PluginDir {
    pub dir: tempfile::TempDir,
}

impl PluginDir {
    pub fn new() -> PluginDir {
        PluginDir {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Copies a guest component in as `NAME.wasm`.
    pub fn plugin(&self, name: &str, guest: &str) -> &Self {
        std::fs::copy(guest, self.path().join(format!("{name}.wasm"))).expect("copy guest");
        self
    }

    /// Writes `NAME.wasm` from bytes.
    pub fn bytes(&self, name: &str, bytes: &[u8]) -> &Self {
        std::fs::write(self.path().join(format!("{name}.wasm")), bytes).expect("write wasm");
        self
    }

    /// Writes a WAT component as `NAME.wasm`.
    pub fn wat(&self, name: &str, wat: &str) -> &Self {
        self.bytes(name, &::wat::parse_str(wat).expect("valid wat"))
    }

    /// Writes `wasm-sup.toml`.
    pub fn config(&self, toml: &str) -> &Self {
        std::fs::write(self.path().join("wasm-sup.toml"), toml).expect("write config");
        self
    }

    /// Replaces `NAME.wasm` the recommended way: written beside it under a
    /// hidden name, then renamed over it.
    pub fn replace(&self, name: &str, bytes: &[u8]) -> &Self {
        let tmp = self.path().join(format!(".{name}.wasm.tmp"));
        std::fs::write(&tmp, bytes).expect("write temp");
        std::fs::rename(&tmp, self.path().join(format!("{name}.wasm"))).expect("rename");
        self
    }

    /// Writes `NAME.toml`.
    pub fn plugin_config(&self, name: &str, toml: &str) -> &Self {
        std::fs::write(self.path().join(format!("{name}.toml")), toml).expect("write config");
        self
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// Asserts a 200 and returns the reply text.
    #[track_caller]
    pub fn ok(&self) -> String {
        assert_eq!(
            self.status,
            200,
            "expected 200, got {}: {}",
            self.status,
            self.text()
        );
        self.text()
    }
}

/// A client for an admin API at `addr`.
#[derive(Clone)]
pub struct Admin {
    pub addr: SocketAddr,
    http: reqwest::Client,
    token: Option<String>,
}

impl Admin {
    pub fn new(addr: SocketAddr) -> Admin {
        Admin {
            addr,
            // The host closes a keep-alive connection idle for 10 s (its
            // header timeout); a client must not reuse one that old.
            http: reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .expect("an HTTP client"),
            token: None,
        }
    }

    /// The same client, sending a bearer token.
    pub fn with_token(&self, token: &str) -> Admin {
        Admin {
            token: Some(token.to_string()),
            ..self.clone()
        }
    }

    async fn request(&self, req: reqwest::RequestBuilder) -> Result<Answer, reqwest::Error> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await?.to_vec();
        Ok(Answer { status, body })
    }

    pub async fn send(&self, plugin: &str, message: impl Into<Vec<u8>>) -> Answer {
        self.try_send(plugin, message)
            .await
            .expect("admin API reachable")
    }

    /// Like `send`, but a connection failure is an `Err`, not a panic.
    pub async fn try_send(
        &self,
        plugin: &str,
        message: impl Into<Vec<u8>>,
    ) -> Result<Answer, reqwest::Error> {
        let url = format!("http://{}/v1/plugins/{plugin}/messages", self.addr);
        self.request(self.http.post(url).body(message.into())).await
    }

    /// Sends with an `Idempotency-Key`.
    pub async fn send_keyed(&self, plugin: &str, key: &str, message: impl Into<Vec<u8>>) -> Answer {
        let url = format!("http://{}/v1/plugins/{plugin}/messages", self.addr);
        let req = self
            .http
            .post(url)
            .header("idempotency-key", key)
            .body(message.into());
        self.request(req).await.expect("admin API reachable")
    }

    pub async fn get(&self, path: &str) -> Answer {
        let url = format!("http://{}{path}", self.addr);
        self.request(self.http.get(url))
            .await
            .expect("admin API reachable")
    }

    pub async fn post(&self, path: &str, body: Vec<u8>) -> Answer {
        let url = format!("http://{}{path}", self.addr);
        self.request(self.http.post(url).body(body))
            .await
            .expect("admin API reachable")
    }

    pub async fn info(&self, plugin: &str) -> serde_json::Value {
        self.get(&format!("/v1/plugins/{plugin}")).await.json()
    }

    /// Waits until `plugin` exists and its JSON satisfies `pred`.
    pub async fn wait_info(
        &self,
        plugin: &str,
        within: Duration,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let a = self.get(&format!("/v1/plugins/{plugin}")).await;
            let info = if a.status == 200 {
                a.json()
            } else {
                serde_json::Value::Null
            };
            if a.status == 200 && pred(&info) {
                return info;
            }
            assert!(
                Instant::now() < deadline,
                "{plugin}: never {what}: HTTP {} {}",
                a.status,
                a.text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The names of the plugins, in start order.
    pub async fn plugin_names(&self) -> Vec<String> {
        self.get("/v1/plugins").await.json()["plugins"]
            .as_array()
            .expect("a list of plugins")
            .iter()
            .map(|p| p["name"].as_str().expect("a name").to_string())
            .collect()
    }

    /// Waits until there is no plugin called `plugin`.
    pub async fn wait_gone(&self, plugin: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while self.get(&format!("/v1/plugins/{plugin}")).await.status != 404 {
            assert!(Instant::now() < deadline, "{plugin} never went away");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `plugin` reports `status`.
    pub async fn wait_status(
        &self,
        plugin: &str,
        status: &str,
        within: Duration,
    ) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let info = self.info(plugin).await;
            if info["status"] == status {
                return info;
            }
            assert!(
                Instant::now() < deadline,
                "{plugin} never became {status}: {info}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The host run in this process, with its admin API on a loopback port.
pub struct TestHost {
    pub host: host::Host,
    pub admin: Admin,
    server: tokio::task::JoinHandle<()>,
    pub dir: PluginDir,
}

impl TestHost {
    /// Starts every plugin in `dir` with the memory backend.
    pub async fn start(dir: PluginDir) -> TestHost {
        Self::start_with(dir, Some("memory")).await
    }

    /// Starts with the given `--state` (`None`: the default redb file in DIR).
    pub async fn start_with(dir: PluginDir, state: Option<&str>) -> TestHost {
        let opts = RunOptions {
            overrides: HostOverrides {
                state: state.map(str::to_string),
                admin: None,
                ..Default::default()
            },
            admin_token: None,
        };
        let (host, _config) = host::start(dir.path(), &opts).await.expect("host starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = wasm_sup::admin::router(host.supervisor.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        TestHost {
            host,
            admin: Admin::new(addr),
            server,
            dir,
        }
    }

    pub async fn send(&self, plugin: &str, message: impl Into<Vec<u8>>) -> Answer {
        self.admin.send(plugin, message).await
    }

    /// Shuts down gracefully and returns the plugin directory.
    pub async fn stop(self) -> PluginDir {
        self.host.shutdown().await;
        self.server.abort();
        // The server task holds a supervisor handle (and so the state file)
        // until it is dropped.
        let _ = self.server.await;
        drop(self.host);
        self.dir
    }
}

/// The `wasm-sup` binary built beside this test.
pub fn wasm_sup_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("wasm-sup");
    let fix = "build it first: `cargo build --release --workspace --bins` (scripts/test.sh does)";
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} is missing: {fix}", bin.display()));
    // The binary must not be older than the library the tests link.
    let lib = std::fs::read_dir(dir.join("deps"))
        .expect("deps dir")
        .filter_map(|e| e.ok())
        .filter(|e| {
            // Only the compiled library: `cargo clippy` writes .rmeta files here too.
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("libwasm_sup-") && name.ends_with(".rlib")
        })
        .filter_map(|e| e.metadata().and_then(|m| m.modified()).ok())
        .max();
    if let Some(lib) = lib {
        assert!(
            built >= lib,
            "{} is older than the library: {fix}",
            bin.display()
        );
    }
    bin
}

/// A free loopback port (bound and released).
pub fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// `wasm-sup run DIR` as a child process; its stderr goes to a file that is
/// printed if the test fails.
pub struct HostProcess {
    pub child: Child,
    pub admin: Admin,
    pub log: PathBuf,
}

impl HostProcess {
    /// Starts the host and waits until its startup load is over (`/readyz`
    /// no longer says `loading`).
    pub async fn start(dir: &Path, extra: &[&str]) -> HostProcess {
        let p = Self::start_live(dir, extra).await;
        p.wait_loaded().await;
        p
    }

    /// Starts the host and waits only until `/healthz` answers, which it
    /// does while plugins are still loading.
    pub async fn start_live(dir: &Path, extra: &[&str]) -> HostProcess {
        Self::start_live_with_env(dir, extra, &[]).await
    }

    async fn wait_loaded(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let a = self.admin.get("/readyz").await;
            let loading = a.status == 503
                && serde_json::from_slice::<serde_json::Value>(&a.body)
                    .is_ok_and(|j| j["status"] == "loading");
            if !loading {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "host never finished loading:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = reqwest::Client::new();
        loop {
            let url = format!("http://{}/healthz", self.admin.addr);
            if let Ok(r) = client.get(url).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "host never became healthy:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Runs `wasm-sup ARGS --admin ADDR`; returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(wasm_sup_bin())
            .args(args)
            .arg("--admin")
            .arg(self.admin.addr.to_string())
            .output()
            .expect("run wasm-sup");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Waits until the host's log satisfies `pred` (the log is written by a
    /// thread of its own, a little after the event), within 20 s.
    pub async fn wait_log(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.log_text();
            if pred(&log) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "the log never showed {what}:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "host did not exit:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- wasm-sup log ({}) ---\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// WAT components for fault cases no toolchain is needed for.
pub mod wat {
    /// A component exporting `handler` whose `handle` runs `body` (core wasm
    /// instructions, leaving an i32 result pointer).
    pub fn handler(body: &str) -> String {
        format!(
            r#"(component
  (core module $m
    (memory (export "memory") 1)
    (func $recurse (call $recurse))
    (func (export "handle") (param i32 i32) (result i32) {body})
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) i32.const 1024))
  (core instance $i (instantiate $m))
  (func $handle (param "message" (list u8)) (result (result (list u8) (error string)))
    (canon lift (core func $i "handle") (memory (core memory $i "memory")) (realloc (core func $i "cabi_realloc"))))
  (instance $h (export "handle" (func $handle)))
  (export "wasm-sup:plugin/handler@0.1.0" (instance $h)))"#
        )
    }

    /// Recurses until the native stack is exhausted.
    pub fn stack_overflow() -> String {
        handler("(call $recurse) i32.const 0")
    }

    /// Divides by zero: a trap that is none of the named causes.
    pub fn divide_by_zero() -> String {
        handler("i32.const 1 i32.const 0 i32.div_s drop i32.const 0")
    }

    /// Replies Ok with an empty list (a valid, minimal plugin).
    pub fn ok_empty() -> String {
        // result discriminant 0 (ok), list ptr 0, len 0 at address 16.
        handler(
            "i32.const 16 i32.const 0 i32.store i32.const 20 i32.const 0 i32.store i32.const 24 i32.const 0 i32.store i32.const 16",
        )
    }

    /// A plugin whose `lifecycle.init` traps: it never starts.
    pub const INIT_TRAPS: &str = r#"(component
  (core module $m
    (memory (export "memory") 1)
    (func (export "handle") (param i32 i32) (result i32) unreachable)
    (func (export "init") (result i32) unreachable)
    (func (export "shutdown"))
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) i32.const 1024))
  (core instance $i (instantiate $m))
  (func $handle (param "message" (list u8)) (result (result (list u8) (error string)))
    (canon lift (core func $i "handle") (memory (core memory $i "memory")) (realloc (core func $i "cabi_realloc"))))
  (func $init (result (result (error string)))
    (canon lift (core func $i "init") (memory (core memory $i "memory")) (realloc (core func $i "cabi_realloc"))))
  (func $shutdown (canon lift (core func $i "shutdown")))
  (instance $h (export "handle" (func $handle)))
  (instance $l (export "init" (func $init)) (export "shutdown" (func $shutdown)))
  (export "wasm-sup:plugin/handler@0.1.0" (instance $h))
  (export "wasm-sup:plugin/lifecycle@0.1.0" (instance $l)))"#;

    /// A component that exports nothing.
    pub const NO_HANDLER: &str = "(component)";

    /// A component that imports an interface the host does not have.
    pub const UNKNOWN_IMPORT: &str = r#"(component
  (import "acme:nope/thing@1.0.0" (instance (export "f" (func))))
)"#;

    /// A core module.
    pub const CORE_MODULE: &str = "(module (func (export \"handle\")))";
}

/// A Prometheus scrape as `name{label=value,...}` → value (labels sorted).
pub fn scrape(text: &str) -> HashMap<String, f64> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    scrape
        .samples
        .into_iter()
        .filter_map(|s| {
            let v = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            let mut labels: Vec<String> =
                s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            Some((format!("{}{{{}}}", s.metric, labels.join(",")), v))
        })
        .collect()
}

/// SHA-256 of bytes, hex.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl HostProcess {
    /// [`HostProcess::start_live`] with extra environment variables (e.g. a
    /// fake `NOTIFY_SOCKET`): waits only until `/healthz` answers.
    pub async fn start_live_with_env(
        dir: &Path,
        extra: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> HostProcess {
        let addr = free_port();
        let log = dir.join(format!("host-{}.log", addr.port()));
        let child = Command::new(wasm_sup_bin())
            .arg("run")
            .arg(dir)
            .arg("--admin")
            .arg(addr.to_string())
            .args(extra)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn wasm-sup");
        let p = HostProcess {
            child,
            admin: Admin::new(addr),
            log,
        };
        p.wait_healthy().await;
        p
    }
}

/// Runs `wasm-sup run DIR EXTRA`, expects exit code 2 (a bad configuration)
/// within a minute, and returns its one `error:` line. A host that starts
/// instead is killed and the test fails (it does not hang).
pub fn config_error(dir: &PluginDir, extra: &[&str]) -> String {
    let log = dir.path().join("refused-start.log");
    let mut child = Command::new(wasm_sup_bin())
        .arg("run")
        .arg(dir.path())
        .arg("--admin")
        .arg(free_port().to_string())
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn wasm-sup");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the host started instead of refusing its configuration:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let err = std::fs::read_to_string(&log).expect("log");
    assert_eq!(status.code(), Some(2), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "one error line: {err}");
    lines[0].to_string()
}

/// `component` with a custom section appended, `len` bytes long in all:
/// still a valid plugin.
pub fn padded(component: &[u8], len: usize) -> Vec<u8> {
    let leb = |mut n: usize| {
        let mut out = Vec::new();
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n == 0 { byte } else { byte | 0x80 });
            if n == 0 {
                return out;
            }
        }
    };
    let extra = len - component.len();
    let mut body = vec![3, b'p', b'a', b'd'];
    body.resize(extra - 1 - leb(extra).len(), 0);
    let mut out = component.to_vec();
    out.push(0);
    out.extend(leb(body.len()));
    out.extend(body);
    assert_eq!(out.len(), len);
    out
}

/// `command` if it runs (`command --version`), or `None` with the reason
/// printed where it is missing outside CI. In CI (CI=true) a missing one
/// fails the test: scripts/test.sh installs it from Debian's `package`.
pub fn tool(command: &'static str, package: &str) -> Option<&'static str> {
    let found = std::process::Command::new(command)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some(command);
    }
    let why = format!("{command} is not installed (Debian package `{package}`)");
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
    eprintln!("skipped: {why}");
    None
}

/// Where a test host keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The default redb file in the plugin folder.
    Redb,
    /// A new database on the test process's PostgreSQL server.
    Postgres,
}

impl Backend {
    /// The `--state` value for a new host (`None`: the default redb file).
    pub async fn state(self) -> Option<String> {
        match self {
            Backend::Redb => None,
            Backend::Postgres => Some(
                wasm_sup_tests::postgres::Postgres::shared()
                    .database()
                    .await,
            ),
        }
    }

    /// `--state VALUE` as arguments of `wasm-sup run`.
    pub async fn args(self) -> Vec<String> {
        match self.state().await {
            Some(url) => vec!["--state".into(), url],
            None => Vec::new(),
        }
    }
}

/// Runs an `async fn(Backend)` test once per backend: `NAME::redb` and
/// `NAME::postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use $crate::util::Backend;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redb() {
                super::$name(Backend::Redb).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(Backend::Postgres).await
            }
        }
    )*};
}

/// The event stream (`GET /v1/events`, Server-Sent Events), read as a
/// client does.
/// How long [`Stream::next`] waits for an event.
pub const WITHIN: Duration = Duration::from_secs(15);

/// One SSE event as read off the stream.
#[derive(Debug, Clone)]
pub struct Frame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: serde_json::Value,
}

/// A reader of the event stream.
pub struct Stream {
    resp: reqwest::Response,
    buf: String,
}

impl Stream {
    pub async fn open(admin: &Admin, query: &str, last_id: Option<&str>) -> Stream {
        let mut req = reqwest::Client::new().get(format!("http://{}/v1/events{query}", admin.addr));
        if let Some(id) = last_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req.send().await.expect("the event stream opens");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Stream {
            resp,
            buf: String::new(),
        }
    }

    /// The next event (keep-alive comments skipped), within [`WITHIN`].
    pub async fn next(&mut self) -> Frame {
        tokio::time::timeout(WITHIN, async {
            loop {
                if let Some(end) = self.buf.find("\n\n") {
                    let block: String = self.buf.drain(..end + 2).collect();
                    let (mut id, mut event, mut data) = (None, None, String::new());
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("id: ") {
                            id = Some(v.to_string());
                        } else if let Some(v) = line.strip_prefix("event: ") {
                            event = Some(v.to_string());
                        } else if let Some(v) = line.strip_prefix("data: ") {
                            data.push_str(v);
                        }
                    }
                    if data.is_empty() {
                        continue; // a keep-alive comment
                    }
                    let data = serde_json::from_str(&data).expect("data is JSON");
                    return Frame { id, event, data };
                }
                let chunk = self.resp.chunk().await.expect("stream readable");
                let chunk = chunk.expect("the stream stays open");
                self.buf
                    .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
            }
        })
        .await
        .expect("an event within the time limit")
    }

    /// Events until `pred` holds for one (returned last).
    pub async fn until(&mut self, pred: impl Fn(&Frame) -> bool) -> Vec<Frame> {
        let mut seen = Vec::new();
        loop {
            let f = self.next().await;
            let done = pred(&f);
            seen.push(f);
            if done {
                return seen;
            }
        }
    }
}
