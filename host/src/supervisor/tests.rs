//! Supervisor tests that need the host's own test hooks.

use super::*;
use crate::config::{Config, HostOverrides};
use crate::crash::Cause;
use crate::discovery::PluginSpec;
use crate::mailbox::Outcome;

/// A host panic while serving a call is contained as that plugin's
/// `host-error`: the host and the other plugins go on. The `log-panic` WAT
/// component logs with the context that makes the (test-only) logging host
/// function panic.
/// A supervisor with one memory backend and `names` all running `wat`,
/// configured by `toml`.
fn start_all(
    toml: &str,
    wat: &str,
    names: &[&str],
) -> (
    SupervisorHandle,
    crate::engine::EpochTicker,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("wasm-sup.toml"), toml).unwrap();
    let config = Config::load(dir.path(), &HostOverrides::default()).unwrap();
    let engine = crate::engine::engine(false, 0).unwrap();
    let ticker = crate::engine::EpochTicker::start(&[&engine], config.host.epoch_tick).unwrap();
    let linker = crate::compile::linker(&engine).unwrap();
    let compiled =
        crate::compile::compile(&engine, &linker, &wat::parse_str(wat).unwrap()).unwrap();
    let backend: std::sync::Arc<dyn crate::state::StateBackend> =
        std::sync::Arc::new(crate::state::memory::MemoryBackend::new());
    let sup = SupervisorHandle::new(config.host.clone(), backend, &config.groups).unwrap();
    for name in names {
        let spec = PluginSpec {
            name: name.to_string(),
            path: dir.path().join(format!("{name}.wasm")),
            config: config.plugin(name).unwrap(),
        };
        sup.start_plugin(&spec, compiled.clone(), None);
    }
    (sup, ticker, dir)
}

const IMMEDIATE_ONE_ATTEMPT: &str =
    "[defaults.restart]\nbackoff = \"immediate\"\nmax-attempts = 1\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_panic_is_contained_as_host_error() {
    let wat = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wat/log-panic.wat"),
    )
    .unwrap();
    let (sup, _ticker, _dir) = start_all(IMMEDIATE_ONE_ATTEMPT, &wat, &["panicky", "bystander"]);
    for _ in 0..3 {
        let (rx, _) = sup.send("panicky", b"x".to_vec(), None).unwrap();
        match rx.await.unwrap() {
            Outcome::DeadLettered { causes, .. } => assert_eq!(causes, ["host-error"]),
            other => panic!("{other:?}"),
        }
    }
    let info = sup.get("panicky").unwrap();
    assert_eq!(
        (info.last_crash, info.restarts),
        (Some(Cause::HostError), 3)
    );
    assert_eq!(sup.get("bystander").unwrap().status, Status::Running);
    sup.shutdown().await;
}

/// A plugin whose `handle` answers Ok with an empty reply.
const OK_EMPTY: &str = r#"(component
  (core module $m
    (memory (export "memory") 1)
    (func (export "handle") (param i32 i32) (result i32)
      (i32.store (i32.const 16) (i32.const 0))
      (i32.store (i32.const 20) (i32.const 0))
      (i32.store (i32.const 24) (i32.const 0))
      (i32.const 16))
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) i32.const 1024))
  (core instance $i (instantiate $m))
  (func $handle (param "message" (list u8)) (result (result (list u8) (error string)))
    (canon lift (core func $i "handle") (memory (core memory $i "memory")) (realloc (core func $i "cabi_realloc"))))
  (instance $h (export "handle" (func $handle)))
  (export "wasm-sup:plugin/handler@0.1.0" (instance $h)))"#;

/// Hole 5 of the adversarial run: a panic in a plugin's task outside any
/// guest call ended the task, and the plugin claimed `running` for good
/// while its messages were never answered. Now it is the plugin's
/// `host-error` crash, reported, and the plugin restarts under its policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole05_a_panic_outside_a_guest_call_is_a_host_error_crash() {
    let (sup, _ticker, _dir) = start_all(IMMEDIATE_ONE_ATTEMPT, OK_EMPTY, &["victim", "bystander"]);
    let (rx, _) = sup
        .send("victim", child::TEST_PANIC.to_vec(), None)
        .unwrap();
    // The message in flight is the crash's: with one delivery allowed, it
    // is dead-lettered and its sender told why.
    match rx.await.unwrap() {
        Outcome::DeadLettered { causes, .. } => assert_eq!(causes, ["host-error"]),
        other => panic!("{other:?}"),
    }
    // The task lives on: the next message is answered by a new instance.
    let (rx, _) = sup.send("victim", b"x".to_vec(), None).unwrap();
    assert_eq!(rx.await.unwrap(), Outcome::Reply(Vec::new()));
    let info = sup.get("victim").unwrap();
    assert_eq!(info.status, Status::Running);
    assert_eq!(
        (info.last_crash, info.restarts),
        (Some(Cause::HostError), 1)
    );
    let (rx, _) = sup.send("bystander", b"x".to_vec(), None).unwrap();
    assert_eq!(rx.await.unwrap(), Outcome::Reply(Vec::new()));
    sup.shutdown().await;
}
