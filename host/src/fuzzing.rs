//! Fuzzing entry points: the functions that the `cargo fuzz` targets in
//! `fuzz/` call with libFuzzer's inputs, and that the stable `cargo test`
//! (`tests/integration/fuzz_corpus.rs`) replays the kept corpus through.
//!
//! This module owns the three harnesses, each taking arbitrary bytes and
//! returning `Ok` or `Err` (the error as the user would read it); none may
//! panic on any input, so a panic (libFuzzer turns one into a crash) is a bug
//! in the code under test:
//!
//! - [`config`]: the configuration loader, [`Config::load`] and
//!   [`Config::plugin`], on the input as `wasm-sup.toml` (and `NAME.toml`).
//! - [`component`]: what `wasm-sup check FILE` does to a file,
//!   [`compile::compile`]: classification (empty, not wasm, core module,
//!   other layer), validation, and compilation and the contract checks when
//!   the bytes validate as a component.
//! - [`admin`]: the input as the raw bytes of an HTTP/1.1 connection to the
//!   admin API, served as `admin::serve` serves one, by the real router,
//!   against a real host running one small plugin.
//!
//! Nothing else in the host uses this module.

use crate::compile;
use crate::config::{Config, HOST_CONFIG_FILE, HostOverrides};
use crate::host::{Host, RunOptions};
use crate::instance::HostState;
use crate::supervisor::{Operation, Status, SupervisorHandle};
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmtime::Engine;
use wasmtime::component::Linker;

/// A private folder for one harness of this process, made empty.
fn scratch_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wasm-sup-fuzz-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot make the fuzzing folder {}: {e}", dir.display()));
    dir
}

/// The plugin name whose `NAME.toml` the [`config`] harness writes.
const CONFIG_PLUGIN: &str = "p";
/// Most `[plugins.NAME]` tables [`config`] resolves per input.
const CONFIG_PLUGINS_RESOLVED: usize = 8;

/// The configuration loader on `data`: the bytes up to the first NUL are
/// `DIR/wasm-sup.toml`; the bytes after it, if any, are `DIR/p.toml`. Loads
/// the folder's configuration as `wasm-sup run` does (no command-line
/// overrides), then resolves plugin `p` and the first few `[plugins.NAME]`
/// tables as each plugin's start does. The first error is returned as the
/// user reads it (`{:#}`).
///
/// The files are written to a folder of this process, made afresh for each
/// input and removed after it: the loader reads files, and this is the path a
/// user's configuration takes.
pub fn config(data: &[u8]) -> Result<(), String> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _one_at_a_time = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let dir = scratch_dir("config");
    let result = load_config(&dir, data);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn load_config(dir: &Path, data: &[u8]) -> Result<(), String> {
    let (host, plugin) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(dir.join(name), bytes)
            .unwrap_or_else(|e| panic!("cannot write {name} in {}: {e}", dir.display()))
    };
    write(HOST_CONFIG_FILE, host);
    if let Some(plugin) = plugin {
        write(&format!("{CONFIG_PLUGIN}.toml"), plugin);
    }
    let config = Config::load(dir, &HostOverrides::default()).map_err(|e| format!("{e:#}"))?;
    let configured: Vec<String> = config
        .configured_plugins()
        .take(CONFIG_PLUGINS_RESOLVED)
        .map(str::to_string)
        .collect();
    let mut first_error = None;
    for name in std::iter::once(CONFIG_PLUGIN.to_string()).chain(configured) {
        if let Err(e) = config.plugin(&name) {
            first_error.get_or_insert_with(|| format!("{e:#}"));
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The engine and linker of `wasm-sup check`, made once per process.
fn checker() -> &'static (Engine, Linker<HostState>) {
    static CHECKER: OnceLock<(Engine, Linker<HostState>)> = OnceLock::new();
    CHECKER.get_or_init(|| {
        let engine = crate::engine::engine(false, 0).expect("the engine of `check` builds");
        let linker = compile::linker(&engine).expect("the linker of `check` builds");
        (engine, linker)
    })
}

/// The component loader on `data` as a plugin file: `wasm-sup check`'s
/// [`compile::compile`] with its engine (no instance pool) and linker. Bytes
/// that are not a valid component stop at classification or validation;
/// those that are get compiled and checked against the plugin contract.
/// `Ok` is a summary of what `check` reports of a valid plugin; the error is
/// the one line it prints of an invalid one.
pub fn component(data: &[u8]) -> Result<String, String> {
    let (engine, linker) = checker();
    let compiled = compile::compile(engine, linker, data).map_err(|e| format!("{e:#}"))?;
    Ok(format!(
        "lifecycle {}, health {}, imports [{}], exports [{}], sha256 {}",
        compiled.init.is_some() && compiled.shutdown.is_some(),
        compiled.check.is_some(),
        compiled.imports.join(", "),
        compiled.exports.join(", "),
        compiled.sha256
    ))
}

/// The plugin of the [`admin`] harness's host.
const ADMIN_PLUGIN: &str = "p";

/// `p.wasm`: a plugin that answers every message with an empty reply. Built
/// from this WAT (the `ok_empty` plugin of tests/integration/util.rs):
///
/// ```text
/// (component
///   (core module $m
///     (memory (export "memory") 1)
///     (func (export "handle") (param i32 i32) (result i32) i32.const 16 i32.const 0 i32.store
///       i32.const 20 i32.const 0 i32.store i32.const 24 i32.const 0 i32.store i32.const 16)
///     (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) i32.const 1024))
///   (core instance $i (instantiate $m))
///   (func $handle (param "message" (list u8)) (result (result (list u8) (error string)))
///     (canon lift (core func $i "handle") (memory (core memory $i "memory"))
///       (realloc (core func $i "cabi_realloc"))))
///   (instance $h (export "handle" (func $handle)))
///   (export "wasm-sup:plugin/handler@0.1.0" (instance $h)))
/// ```
const ADMIN_PLUGIN_WASM: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00, 0x01, 0x75, 0x00, 0x61, 0x73, 0x6d, 0x01, 0x00,
    0x00, 0x00, 0x01, 0x0f, 0x02, 0x60, 0x02, 0x7f, 0x7f, 0x01, 0x7f, 0x60, 0x04, 0x7f, 0x7f, 0x7f,
    0x7f, 0x01, 0x7f, 0x03, 0x03, 0x02, 0x00, 0x01, 0x05, 0x03, 0x01, 0x00, 0x01, 0x07, 0x22, 0x03,
    0x06, 0x6d, 0x65, 0x6d, 0x6f, 0x72, 0x79, 0x02, 0x00, 0x06, 0x68, 0x61, 0x6e, 0x64, 0x6c, 0x65,
    0x00, 0x00, 0x0c, 0x63, 0x61, 0x62, 0x69, 0x5f, 0x72, 0x65, 0x61, 0x6c, 0x6c, 0x6f, 0x63, 0x00,
    0x01, 0x0a, 0x21, 0x02, 0x19, 0x00, 0x41, 0x10, 0x41, 0x00, 0x36, 0x02, 0x00, 0x41, 0x14, 0x41,
    0x00, 0x36, 0x02, 0x00, 0x41, 0x18, 0x41, 0x00, 0x36, 0x02, 0x00, 0x41, 0x10, 0x0b, 0x05, 0x00,
    0x41, 0x80, 0x08, 0x0b, 0x00, 0x09, 0x04, 0x6e, 0x61, 0x6d, 0x65, 0x00, 0x02, 0x01, 0x6d, 0x02,
    0x04, 0x01, 0x00, 0x00, 0x00, 0x07, 0x17, 0x04, 0x70, 0x7d, 0x70, 0x7d, 0x6a, 0x01, 0x01, 0x01,
    0x73, 0x40, 0x01, 0x07, 0x6d, 0x65, 0x73, 0x73, 0x61, 0x67, 0x65, 0x00, 0x00, 0x02, 0x06, 0x28,
    0x03, 0x00, 0x00, 0x01, 0x00, 0x06, 0x68, 0x61, 0x6e, 0x64, 0x6c, 0x65, 0x00, 0x02, 0x01, 0x00,
    0x06, 0x6d, 0x65, 0x6d, 0x6f, 0x72, 0x79, 0x00, 0x00, 0x01, 0x00, 0x0c, 0x63, 0x61, 0x62, 0x69,
    0x5f, 0x72, 0x65, 0x61, 0x6c, 0x6c, 0x6f, 0x63, 0x08, 0x0a, 0x01, 0x00, 0x00, 0x00, 0x02, 0x03,
    0x00, 0x04, 0x01, 0x03, 0x05, 0x0d, 0x01, 0x01, 0x01, 0x00, 0x06, 0x68, 0x61, 0x6e, 0x64, 0x6c,
    0x65, 0x01, 0x00, 0x0b, 0x23, 0x01, 0x00, 0x1d, 0x77, 0x61, 0x73, 0x6d, 0x2d, 0x73, 0x75, 0x70,
    0x3a, 0x70, 0x6c, 0x75, 0x67, 0x69, 0x6e, 0x2f, 0x68, 0x61, 0x6e, 0x64, 0x6c, 0x65, 0x72, 0x40,
    0x30, 0x2e, 0x31, 0x2e, 0x30, 0x05, 0x00, 0x00, 0x00, 0x32, 0x0e, 0x63, 0x6f, 0x6d, 0x70, 0x6f,
    0x6e, 0x65, 0x6e, 0x74, 0x2d, 0x6e, 0x61, 0x6d, 0x65, 0x01, 0x06, 0x00, 0x11, 0x01, 0x00, 0x01,
    0x6d, 0x01, 0x06, 0x00, 0x12, 0x01, 0x00, 0x01, 0x69, 0x01, 0x0a, 0x01, 0x01, 0x00, 0x06, 0x68,
    0x61, 0x6e, 0x64, 0x6c, 0x65, 0x01, 0x05, 0x05, 0x01, 0x00, 0x01, 0x68,
];

/// `wasm-sup.toml` of the [`admin`] harness's host: no folder watcher, no
/// compile cache and no instance pool (nothing on disk after the start, a
/// fast start), and a `reply-timeout` well inside [`ADMIN_DEADLINE`].
const ADMIN_CONFIG: &str = r#"[host]
watch = false
compile-cache = "off"
instance-pool = 0

[defaults]
reply-timeout = "1s"
"#;

/// The bearer token of the [`admin`] harness's guarded router.
pub const ADMIN_TOKEN: &str = "fuzz-token";

/// Time to answer all the requests of one [`admin`] input.
const ADMIN_DEADLINE: Duration = Duration::from_secs(2);

/// Name of the threads of the [`admin`] harness's runtime: a panic on one is
/// a panic of the host, counted in [`HOST_PANICS`].
const ADMIN_THREAD: &str = "wasm-sup-fuzz-host";

/// Panics on the threads of the [`admin`] harness's runtime so far. The
/// host contains some panics (a plugin task's, as a crash); each is still a
/// bug, and this is how a replay sees one that libFuzzer (which aborts on
/// any panic) would report.
static HOST_PANICS: AtomicUsize = AtomicUsize::new(0);

/// A host started once per process for [`admin`].
struct AdminHost {
    runtime: tokio::runtime::Runtime,
    host: Host,
    /// The router as `wasm-sup run` serves it without a token.
    open: Router,
    /// The router behind `require_token(ADMIN_TOKEN)`.
    guarded: Router,
}

fn admin_host() -> &'static AdminHost {
    static HOST: OnceLock<AdminHost> = OnceLock::new();
    HOST.get_or_init(|| {
        count_host_panics();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(ADMIN_THREAD)
            .enable_all()
            .build()
            .expect("the admin harness's runtime builds");
        let dir = scratch_dir("admin");
        std::fs::write(dir.join(HOST_CONFIG_FILE), ADMIN_CONFIG).expect("write wasm-sup.toml");
        std::fs::write(dir.join(format!("{ADMIN_PLUGIN}.wasm")), ADMIN_PLUGIN_WASM)
            .expect("write the plugin");
        let opts = RunOptions {
            overrides: HostOverrides {
                state: Some("memory".to_string()),
                admin: None,
                ..Default::default()
            },
            admin_token: None,
        };
        let (host, _config) = runtime
            .block_on(crate::host::start(&dir, &opts))
            .expect("the admin harness's host starts");
        // The plugin is compiled and its state is in memory: the folder is
        // not read again.
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            host.refused.is_empty() && host.supervisor.contains(ADMIN_PLUGIN),
            "the admin harness's plugin did not load: {:?}",
            host.refused
        );
        runtime.block_on(restore(&host.supervisor));
        let open = crate::admin::router(host.supervisor.clone());
        let guarded = crate::admin::require_token(open.clone(), ADMIN_TOKEN.to_string());
        AdminHost {
            runtime,
            host,
            open,
            guarded,
        }
    })
}

/// Counts panics on [`ADMIN_THREAD`] threads in [`HOST_PANICS`], then hands
/// each panic on to the hook installed before (libFuzzer's aborts).
fn count_host_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some(ADMIN_THREAD) {
                HOST_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

/// The admin API on `data` as one connection: the first byte chooses the
/// router (bit 0 set: behind the bearer token [`ADMIN_TOKEN`], as with
/// `--token-file`; clear: without), the rest is what the client sends,
/// possibly several pipelined requests. The connection is served as
/// `admin::serve` serves one (hyper's HTTP/1 builder, its header timeout),
/// over an in-memory pipe. `Ok` is the status line of each answer, in order;
/// `Err` when hyper ends the connection with an error (a malformed request),
/// or when the answers take longer than [`ADMIN_DEADLINE`].
///
/// All inputs share one host whose plugin `p` answers every message with an
/// empty reply; after each input, `p` is started again if the input stopped
/// it, so each input meets the same host. A panic in the host's tasks while
/// serving the input is re-raised here.
///
/// The client's end is closed for writing after the input, so the server is
/// built with `half_close(true)` (the real one keeps hyper's default): the
/// end of the input means the client is done sending, not gone, and every
/// request read is answered before the connection closes.
pub fn admin(data: &[u8]) -> Result<String, String> {
    let h = admin_host();
    let (flags, stream) = data.split_first().unwrap_or((&0, &[]));
    let app = if flags & 1 == 1 {
        h.guarded.clone()
    } else {
        h.open.clone()
    };
    let panics_before = HOST_PANICS.load(Ordering::SeqCst);
    let result = h.runtime.block_on(async {
        let answered = tokio::time::timeout(ADMIN_DEADLINE, exchange(app, stream)).await;
        restore(&h.host.supervisor).await;
        answered
    });
    let panics = HOST_PANICS.load(Ordering::SeqCst) - panics_before;
    assert!(
        panics == 0,
        "the host panicked {panics} time(s) while serving this input (the panic is printed above)"
    );
    match result {
        Ok(Ok(answers)) => Ok(status_lines(&answers)),
        Ok(Err(e)) => Err(format!("the connection ended with an error: {e}")),
        Err(_) => Err(format!("no answer within {ADMIN_DEADLINE:?}")),
    }
}

/// Sends `request` on a new connection to `app`, closes the sending side,
/// and reads the answers until the server closes the connection.
async fn exchange(app: Router, request: &[u8]) -> Result<Vec<u8>, hyper::Error> {
    // Room for the whole request: it is written before the server reads.
    let (mut client, server) = tokio::io::duplex(request.len().max(1));
    client
        .write_all(request)
        .await
        .expect("the pipe holds the whole request");
    client
        .shutdown()
        .await
        .expect("an in-memory pipe shuts down");
    let served = crate::admin::http1()
        .half_close(true)
        .serve_connection(TokioIo::new(server), TowerToHyperService::new(app));
    let mut answers = Vec::new();
    let read = client.read_to_end(&mut answers);
    let (served, _read) = tokio::join!(served, read);
    served.map(|()| answers)
}

/// The status lines in `answers` (`200 OK, 404 Not Found`): what follows
/// each `HTTP/1.1 ` to the end of its line (an answer's body may end without
/// a newline, so the next status line need not start a line).
fn status_lines(answers: &[u8]) -> String {
    let text = String::from_utf8_lossy(answers);
    text.split("HTTP/1.")
        .skip(1)
        .filter_map(|rest| rest.get(2..)?.split("\r\n").next())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Starts the harness's plugin again if an input stopped it (or waits while
/// it restarts), so that the next input finds it running.
async fn restore(sup: &SupervisorHandle) {
    for _ in 0..500 {
        match sup.get(ADMIN_PLUGIN).map(|p| p.status) {
            Some(Status::Running) => return,
            Some(Status::Stopped | Status::Failed) => {
                let _ = sup.operate(ADMIN_PLUGIN, Operation::Start).await;
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the admin harness's plugin is not running again after 5 s");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of `p.wasm` are a plugin `check` accepts.
    #[test]
    fn the_admin_plugin_is_a_valid_plugin() {
        component(ADMIN_PLUGIN_WASM).expect("p.wasm is a plugin");
    }
}
