//! Supervisor tests that need the host's own test hooks.

use super::*;
use crate::config::{Config, HostOverrides};
use crate::mailbox::Outcome;

/// A host panic while serving a call is contained as that plugin's
/// `host-error`: the host and the other plugins go on. The `log-panic` WAT
/// component logs with the context that makes the (test-only) logging host
/// function panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_panic_is_contained_as_host_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wasm-sup.toml"),
        "[defaults.restart]\nbackoff = \"immediate\"\nmax-attempts = 1\n",
    )
    .unwrap();
    let config = Config::load(dir.path(), &HostOverrides::default()).unwrap();
    let engine = crate::engine::engine(false, 0).unwrap();
    let _ticker = crate::engine::EpochTicker::start(&engine, config.host.epoch_tick).unwrap();
    let linker = crate::compile::linker(&engine).unwrap();
    let wat = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wat/log-panic.wat"),
    )
    .unwrap();
    let compiled =
        crate::compile::compile(&engine, &linker, &wat::parse_str(&wat).unwrap()).unwrap();
    let backend = crate::state::open(&crate::config::StateLocation::Memory).unwrap();
    let sup = SupervisorHandle::new(config.host.clone(), backend, &config.groups).unwrap();
    for name in ["panicky", "bystander"] {
        let spec = PluginSpec {
            name: name.into(),
            path: dir.path().join(format!("{name}.wasm")),
            config: config.plugin(name).unwrap(),
        };
        sup.start_plugin(&spec, compiled.clone(), None);
    }
    for _ in 0..3 {
        let (rx, _) = sup.send("panicky", b"x".to_vec()).unwrap();
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
