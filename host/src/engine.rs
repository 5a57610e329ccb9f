//! The host's one wasmtime [`Engine`] and its epoch ticker.
//!
//! Every plugin is compiled for this engine. Fuel metering and epoch
//! interruption are always on; a plugin with `fuel = 0` gets `u64::MAX` fuel
//! per call. One [`EpochTicker`] thread increments the epoch every tick; each
//! store's epoch callback yields to tokio at every tick and traps once the
//! call's deadline has passed (see [`crate::instance`]).

use anyhow::{Context, Result};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::{Config, Engine};

/// Builds the host's engine; `coredumps` captures a wasm coredump at each trap.
pub fn engine(coredumps: bool) -> Result<Engine> {
    let mut config = Config::new();
    config.coredump_on_trap(coredumps);
    config.consume_fuel(true);
    config.epoch_interruption(true);
    config.wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Disable);
    config.wasm_component_model(true);
    Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("failed to create the wasmtime engine")
}

/// Increments the engine's epoch every tick, on its own thread, until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    /// Starts ticking `engine` every `tick`.
    pub fn start(engine: &Engine, tick: Duration) -> Result<EpochTicker> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let engine = engine.weak();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("wasm-sup-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        match engine.upgrade() {
                            Some(e) => e.increment_epoch(),
                            None => break,
                        }
                    }
                })
                .context("failed to start the epoch ticker thread")?
        };
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
