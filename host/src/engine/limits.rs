//! Per-store resource limits: how much memory one instance may use.
//!
//! When an instance asks for more memory than its module's limit the grow fails (the
//! guest sees `memory.grow` return -1, and a Rust guest aborts with a trap). The
//! limiter remembers that it refused, so the host can tell "out of memory" apart from
//! any other trap and answer accordingly.
//!
//! A limiter lives exactly as long as its store, so it also keeps the module's
//! instance gauges: one live instance, and the memory it holds, until it is dropped.

use wasmtime::ResourceLimiter;

use crate::telemetry::metrics::InstanceGauges;

/// Tables larger than this are refused: no sane component needs more elements.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

/// Limits the linear memory of one store, all its memories together, to a fixed size,
/// and records a refusal. (A component may hold more than one memory; counted one by
/// one, each could grow to the limit.)
#[derive(Debug)]
pub struct MemoryLimiter {
    limit: usize,
    /// Bytes of linear memory the store's memories hold together.
    used: usize,
    /// The growth granted last, taken back if wasmtime then fails to make it.
    granted: usize,
    exceeded: bool,
    /// The module's instance gauges, this store counted in them.
    gauges: InstanceGauges,
}

impl MemoryLimiter {
    /// A limiter allowing `limit` bytes of linear memory in all, across the store's
    /// memories, counted in no module's gauges.
    pub fn new(limit: u64) -> MemoryLimiter {
        MemoryLimiter::counted(limit, InstanceGauges::default())
    }

    /// [`MemoryLimiter::new`], for a store counted in `gauges` (its module's) for as
    /// long as it lives.
    pub fn counted(limit: u64, gauges: InstanceGauges) -> MemoryLimiter {
        gauges.live.inc();
        MemoryLimiter {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            used: 0,
            granted: 0,
            exceeded: false,
            gauges,
        }
    }

    fn count_memory(&self, bytes: usize, grown: bool) {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        if grown {
            self.gauges.memory.inc_by(bytes);
        } else {
            self.gauges.memory.dec_by(bytes);
        }
    }

    /// Whether the instance tried to grow past its limit.
    pub fn exceeded(&self) -> bool {
        self.exceeded
    }

    /// Forgets an earlier refusal: a reused instance starts each call with a clean
    /// record, so a refusal its guest survived is not blamed on a later trap.
    pub fn forget_refusal(&mut self) {
        self.exceeded = false;
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        let total = self.used.saturating_add(growth);
        if total > self.limit {
            self.exceeded = true;
            self.granted = 0;
            return Ok(false);
        }
        self.used = total;
        self.granted = growth;
        self.count_memory(growth, true);
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        // Granted here, then refused by wasmtime (past the memory's own maximum).
        self.used = self.used.saturating_sub(self.granted);
        self.count_memory(self.granted, false);
        self.granted = 0;
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

impl Drop for MemoryLimiter {
    /// The store is gone, and its instance and memory with it.
    fn drop(&mut self) {
        self.gauges.live.dec();
        self.count_memory(self.used, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_counts_itself_and_its_memory_while_it_lives() {
        let gauges = InstanceGauges::default();
        let mut first = MemoryLimiter::counted(1 << 20, gauges.clone());
        let mut second = MemoryLimiter::counted(1 << 20, gauges.clone());
        assert!(first.memory_growing(0, 1 << 16, None).unwrap());
        assert!(second.memory_growing(0, 1 << 17, None).unwrap());
        // A growth wasmtime then fails to make is not counted.
        assert!(second.memory_growing(1 << 17, 1 << 18, None).unwrap());
        second
            .memory_grow_failed(wasmtime::format_err!("past the memory's maximum"))
            .unwrap();
        assert_eq!((gauges.live.get(), gauges.memory.get()), (2, 3 << 16));
        drop(first);
        assert_eq!((gauges.live.get(), gauges.memory.get()), (1, 1 << 17));
        drop(second);
        assert_eq!((gauges.live.get(), gauges.memory.get()), (0, 0));
    }

    #[test]
    fn growth_within_the_limit_is_allowed_and_past_it_refused_and_remembered() {
        let mut limiter = MemoryLimiter::new(1 << 20);
        assert!(limiter.memory_growing(0, 1 << 20, None).unwrap());
        assert!(!limiter.exceeded());
        assert!(!limiter
            .memory_growing(1 << 20, (1 << 20) + 65536, None)
            .unwrap());
        assert!(limiter.exceeded());
    }

    #[test]
    fn the_limit_covers_all_of_a_stores_memories_together() {
        let mut limiter = MemoryLimiter::new(1 << 20);
        // Two memories of 512 KiB each fill the limit together...
        assert!(limiter.memory_growing(0, 1 << 19, None).unwrap());
        assert!(limiter.memory_growing(0, 1 << 19, None).unwrap());
        // ...so neither may grow further, nor may a third be made.
        assert!(!limiter
            .memory_growing(1 << 19, (1 << 19) + 65536, None)
            .unwrap());
        assert!(!limiter.memory_growing(0, 65536, None).unwrap());
        assert!(limiter.exceeded());
    }

    #[test]
    fn a_growth_wasmtime_then_refuses_is_given_back() {
        let mut limiter = MemoryLimiter::new(1 << 20);
        assert!(limiter.memory_growing(0, 1 << 20, None).unwrap());
        limiter
            .memory_grow_failed(wasmtime::format_err!("past the memory's maximum"))
            .unwrap();
        assert!(limiter.memory_growing(0, 1 << 20, None).unwrap());
        assert!(!limiter.exceeded());
    }
}
