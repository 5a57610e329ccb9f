//! Per-store resource limits: linear memory (a grow past the plugin's limit traps
//! with cause `memory-limit`), and the number of instances, memories and tables
//! (interpreted guests hold several core instances; a guest that asks for more
//! than these is refused at instantiation).
//!
//! Written by hand over wasmtime's `StoreLimits` because the host needs two
//! things it does not give: the current memory size (for crash reports) and an
//! error of our own type, so the crash is classified `memory-limit` exactly.

use std::fmt;
use wasmtime::ResourceLimiter;

/// Core instances one store may hold.
pub const MAX_INSTANCES: usize = 64;
/// Memories one store may hold.
pub const MAX_MEMORIES: usize = 64;
/// Tables one store may hold.
pub const MAX_TABLES: usize = 64;
/// Elements one table may hold.
pub const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// The error a grow past the limit fails with.
#[derive(Debug, Clone, Copy)]
pub struct MemoryLimitExceeded {
    /// Bytes asked for.
    pub desired: usize,
    /// The limit.
    pub limit: u64,
}

impl fmt::Display for MemoryLimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "memory limit exceeded: a memory grew to {} bytes, past the plugin's limit of {} bytes (config key `memory`)",
            self.desired, self.limit
        )
    }
}

impl std::error::Error for MemoryLimitExceeded {}

/// The limiter of one store.
#[derive(Debug)]
pub struct Limits {
    memory_limit: u64,
    /// Sum of the current sizes of the store's memories, bytes.
    pub memory_bytes: u64,
}

impl Limits {
    /// Limits with `memory_limit` bytes per memory.
    pub fn new(memory_limit: u64) -> Limits {
        Limits {
            memory_limit,
            memory_bytes: 0,
        }
    }
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.memory_limit {
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                desired,
                limit: self.memory_limit,
            }));
        }
        if maximum.is_some_and(|m| desired > m) {
            return Ok(false);
        }
        self.memory_bytes = self.memory_bytes + desired as u64 - current as u64;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS && maximum.is_none_or(|m| desired <= m))
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}
