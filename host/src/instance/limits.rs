//! Per-store resource limits, each a bound on the whole plugin instance, not
//! on one of its parts (a component holds many core instances, each with its
//! own memories and tables):
//!
//! - `memory` bounds the **sum** of the store's linear memories: a memory
//!   created or grown past what the others leave traps with cause
//!   `memory-limit`, at instantiation as well as during a call;
//! - the table elements of all the store's tables together are bounded by
//!   [`MAX_TABLE_ELEMENTS`];
//! - the numbers of core instances, memories and tables by the constants
//!   below (interpreted guests hold several core instances; a guest that asks
//!   for more is refused at instantiation).
//!
//! Written by hand over wasmtime's `StoreLimits` because the host needs what
//! it does not give: sums across memories and tables (`StoreLimits` bounds
//! each one alone), the current memory size (for crash reports), and an error
//! of our own type, so the crash is classified `memory-limit` exactly.

use std::fmt;
use wasmtime::ResourceLimiter;

/// Core instances one store may hold.
pub const MAX_INSTANCES: usize = 64;
/// Memories one store may hold.
pub const MAX_MEMORIES: usize = 64;
/// Tables one store may hold.
pub const MAX_TABLES: usize = 64;
/// Elements all the store's tables hold together (about 16 MiB of host
/// memory at most).
pub const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// The error a grow past the limit fails with.
#[derive(Debug, Clone, Copy)]
pub struct MemoryLimitExceeded {
    /// Bytes all the store's memories would hold.
    pub desired: u64,
    /// The limit.
    pub limit: u64,
}

impl fmt::Display for MemoryLimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "memory limit exceeded: the plugin's memories would hold {} bytes in all, past its limit of {} bytes (config key `memory`, the sum of all its linear memories)",
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
    /// Sum of the current sizes of the store's tables, elements.
    table_elements: usize,
    /// The sums before the last grow allowed, put back if it then fails
    /// (wasmtime can still fail it, e.g. when the host is out of memory).
    before_memory_grow: u64,
    before_table_grow: usize,
}

impl Limits {
    /// Limits with `memory_limit` bytes for all memories together.
    pub fn new(memory_limit: u64) -> Limits {
        Limits {
            memory_limit,
            memory_bytes: 0,
            table_elements: 0,
            before_memory_grow: 0,
            before_table_grow: 0,
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
        // `current` is 0 when a memory is created, so instantiation counts too.
        let others = self.memory_bytes.saturating_sub(current as u64);
        let total = others.saturating_add(desired as u64);
        if total > self.memory_limit {
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                desired: total,
                limit: self.memory_limit,
            }));
        }
        if maximum.is_some_and(|m| desired > m) {
            return Ok(false);
        }
        self.before_memory_grow = self.memory_bytes;
        self.memory_bytes = total;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_bytes = self.before_memory_grow;
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = (self.table_elements.saturating_sub(current)).saturating_add(desired);
        if total > MAX_TABLE_ELEMENTS || maximum.is_some_and(|m| desired > m) {
            return Ok(false);
        }
        self.before_table_grow = self.table_elements;
        self.table_elements = total;
        Ok(true)
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.table_elements = self.before_table_grow;
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    /// Hole 1 of the adversarial run: many memories each just under
    /// `memory` must not add up past it.
    #[test]
    fn hole01_memory_bounds_the_sum_of_all_memories() {
        let mut l = Limits::new(64 << 20);
        assert!(l.memory_growing(0, 60 * MIB, None).unwrap());
        let err = l.memory_growing(0, 60 * MIB, None).unwrap_err();
        assert!(err.is::<MemoryLimitExceeded>(), "{err}");
        assert!(l.memory_growing(0, 4 * MIB, None).unwrap());
        assert_eq!(l.memory_bytes, 64 << 20);
        // Growing the first memory again counts it once, not twice.
        assert!(l.memory_growing(60 * MIB, 61 * MIB, None).is_err());
        // A grow allowed and then failed by wasmtime leaves the sum as it was.
        let mut l = Limits::new(64 << 20);
        assert!(l.memory_growing(0, MIB, None).unwrap());
        assert!(l.memory_growing(MIB, 2 * MIB, None).unwrap());
        l.memory_grow_failed(wasmtime::Error::msg("out of memory"))
            .unwrap();
        assert_eq!(l.memory_bytes, MIB as u64);
    }

    #[test]
    fn hole01_table_elements_are_bounded_across_tables() {
        let mut l = Limits::new(64 << 20);
        assert!(l.table_growing(0, MAX_TABLE_ELEMENTS - 10, None).unwrap());
        assert!(!l.table_growing(0, 11, None).unwrap());
        assert!(l.table_growing(0, 10, None).unwrap());
        assert!(!l.table_growing(10, 11, None).unwrap());
    }
}
