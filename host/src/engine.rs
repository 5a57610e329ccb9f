//! The host's one wasmtime [`Engine`] and its epoch ticker.
//!
//! Every plugin is compiled for this engine. Fuel metering and epoch
//! interruption are always on; a plugin with `fuel = 0` gets `u64::MAX` fuel
//! per call. One [`EpochTicker`] thread increments the epoch every tick; each
//! store's epoch callback yields to tokio at every tick and traps once the
//! call's deadline has passed (see [`crate::instance`]).
//!
//! It also owns the pooling allocator's per-module limits, and so the one
//! message that names the limit a component exceeds ([`pool_misfit`]).

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
/// an instance. Up to [`POOL_KEEP_RESIDENT`] bytes of a memory or table are
/// reset in place rather than decommitted. Each
/// memory slot reserves the whole 4 GiB of a 32-bit memory, so any plugin's
/// `memory` limit fits; it is address space, not memory. Per component the
/// limits are generous enough for interpreters: a componentize-py component
/// instantiates 18 core modules (the Rust counter 6), hence 24 core instance
/// slots per plugin; their tables are large.
fn pooling(pool: u32) -> PoolingAllocationConfig {
    let mut p = PoolingAllocationConfig::new();
    p.total_component_instances(pool)
        .total_core_instances(pool.saturating_mul(24))
        .total_memories(pool.saturating_mul(POOL_MEMORIES_PER_MODULE))
        .total_tables(pool.saturating_mul(POOL_TABLES_PER_MODULE))
        .total_stacks(pool)
        .max_memory_size(POOL_MEMORY_BYTES)
        .max_memories_per_module(POOL_MEMORIES_PER_MODULE)
        .max_tables_per_module(POOL_TABLES_PER_MODULE)
        .table_elements(POOL_TABLE_ELEMENTS)
        .max_core_instance_size(POOL_INSTANCE_BYTES)
        .max_component_instance_size(POOL_INSTANCE_BYTES)
        .decommit_batch_size(8)
        .pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(POOL_KEEP_RESIDENT)
        .table_keep_resident(POOL_KEEP_RESIDENT);
    p
}

/// Bytes of a slot's linear memory and of each table that a dropped
/// instance leaves resident: the pages it touched (found with Linux's
/// `PAGEMAP_SCAN` where the kernel has it, 6.7 and later) are reset in place
/// with `memset` instead of `madvise`d away, so the next instance in the slot
/// (a restart reuses its plugin's slot) takes no page faults there and no
/// other thread takes a TLB flush. On the restart figure: crash → ready p50
/// from 185 µs to 129 to 150 µs, the raw instance layer from 57 µs to 24 to
/// 38 µs (docs/performance.md). The cost: a free slot keeps the pages its
/// last instance touched, at most this much per memory and table.
pub const POOL_KEEP_RESIDENT: usize = 1 << 20;

/// Linear memories a core module may define under the pool.
pub const POOL_MEMORIES_PER_MODULE: u32 = 2;
/// Tables a core module may define under the pool.
pub const POOL_TABLES_PER_MODULE: u32 = 4;
/// Initial elements of a table under the pool.
pub const POOL_TABLE_ELEMENTS: usize = 1 << 17;
/// Bytes of one memory slot: a whole 32-bit memory.
pub const POOL_MEMORY_BYTES: usize = 1 << 32;
/// Bytes of instance data (`VMContext`) of a core module, and of a component
/// with all its core instances.
pub const POOL_INSTANCE_BYTES: usize = 1 << 22;

/// Why a component does not fit the pool, when `e` (from compiling or
/// deserializing it) is wasmtime's refusal of its per-module limits: the
/// limit it exceeds and wasmtime's detail. `None` for any other error.
pub fn pool_misfit(e: &anyhow::Error) -> Option<String> {
    if !e
        .chain()
        .any(|c| c.to_string().contains("pooling allocator"))
    {
        return None;
    }
    let root = e.root_cause().to_string();
    // The first sentence: the instance-size refusal goes on with a breakdown.
    let detail = root.split(['\n', ';']).next().unwrap_or_default().trim();
    let limits = [
        (
            "defined memories count",
            format!("{POOL_MEMORIES_PER_MODULE} memories per core module"),
        ),
        (
            "memory has a minimum byte size",
            format!("{} GiB per memory", POOL_MEMORY_BYTES >> 30),
        ),
        ("memory is shared", "0 shared memories".to_string()),
        (
            "defined tables count",
            format!("{POOL_TABLES_PER_MODULE} tables per core module"),
        ),
        (
            "minimum element size",
            format!("{POOL_TABLE_ELEMENTS} initial elements per table"),
        ),
        (
            "allocation for this module",
            format!(
                "{} MiB of instance data per core module",
                POOL_INSTANCE_BYTES >> 20
            ),
        ),
        (
            "allocation for this component",
            format!(
                "{} MiB of instance data per component",
                POOL_INSTANCE_BYTES >> 20
            ),
        ),
    ];
    let limit = limits
        .iter()
        .find(|(phrase, _)| detail.contains(phrase))
        .map_or("per-module limits".to_string(), |(_, l)| {
            format!("limit of {l}")
        });
    Some(format!("exceeds the instance pool's {limit} ({detail})"))
}

/// Increments the epoch of every engine it serves every tick, on its own
/// thread, until dropped: one ticker for all the host's engines.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    /// Starts ticking `engines` every `tick`.
    pub fn start(engines: &[&Engine], tick: Duration) -> Result<EpochTicker> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let engines: Vec<_> = engines.iter().map(|e| e.weak()).collect();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("wasm-sup-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        let mut alive = false;
                        for engine in engines.iter().filter_map(|e| e.upgrade()) {
                            engine.increment_epoch();
                            alive = true;
                        }
                        if !alive {
                            break;
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
