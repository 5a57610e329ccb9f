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
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Builds the default engine (fuel and epochs); `coredumps` captures a wasm
/// coredump at each trap; `pool` is `[host] instance-pool` (0: no pool).
pub fn engine(coredumps: bool, pool: u32) -> Result<Engine> {
    engine_with(coredumps, Metering::default(), pool)
}

/// Which of the two instrumentations compiled code carries. Epochs are always
/// on in the host (they enforce `timeout`); fuel follows `[host]
/// fuel-metering`. The limit-overhead benchmark compares all four.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metering {
    /// Fuel: a counter decremented as code runs (`fuel` per call).
    pub fuel: bool,
    /// Epoch checks at loop heads and function entries (the `timeout`).
    pub epoch: bool,
}

impl Default for Metering {
    fn default() -> Metering {
        Metering {
            fuel: true,
            epoch: true,
        }
    }
}

/// [`engine`] with the given metering. Stores of an engine without fuel run
/// unmetered (see [`crate::instance`]); without epochs, only the tokio
/// timeout bounds a call.
pub fn engine_with(coredumps: bool, metering: Metering, pool: u32) -> Result<Engine> {
    let mut config = Config::new();
    if pool > 0 {
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling(pool)));
    }
    config.coredump_on_trap(coredumps);
    config.consume_fuel(metering.fuel);
    config.epoch_interruption(metering.epoch);
    config.wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Disable);
    config.wasm_component_model(true);
    Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("failed to create the wasmtime engine")
}

/// The pooling allocator's limits for `pool` plugin instances at once.
///
/// Memories, tables, instance data and fiber stacks are reserved up front and
/// reused, so a restart maps and unmaps nothing (an unmap costs every other
/// thread a TLB flush): slots are reset with `madvise` and kept warm. Resets
/// are batched eight at a time, one flush for eight dropped instances (a
/// crash's instance drop went from about 21 µs to 8); a batch holds at most
/// eight dropped instances' memory, and a full pool flushes before it refuses
/// an instance. Each
/// memory slot reserves the whole 4 GiB of a 32-bit memory, so any plugin's
/// `memory` limit fits; it is address space, not memory. Per component the
/// limits are generous enough for interpreters: a componentize-py component
/// instantiates 18 core modules (the Rust counter 6), hence 24 core instance
/// slots per plugin; their tables are large.
fn pooling(pool: u32) -> PoolingAllocationConfig {
    let mut p = PoolingAllocationConfig::new();
    p.total_component_instances(pool)
        .total_core_instances(pool.saturating_mul(24))
        .total_memories(pool.saturating_mul(2))
        .total_tables(pool.saturating_mul(4))
        .total_stacks(pool)
        .max_memory_size(1 << 32)
        .max_memories_per_module(2)
        .max_tables_per_module(4)
        .table_elements(1 << 17)
        .max_core_instance_size(1 << 22)
        .max_component_instance_size(1 << 22)
        .decommit_batch_size(8);
    p
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
