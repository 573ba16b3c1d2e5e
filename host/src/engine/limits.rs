//! Per-store resource limits: how much memory one instance may use.
//!
//! When an instance asks for more memory than its module's limit the grow fails (the
//! guest sees `memory.grow` return -1, and a Rust guest aborts with a trap). The
//! limiter remembers that it refused, so the host can tell "out of memory" apart from
//! any other trap and answer accordingly.

use wasmtime::ResourceLimiter;

/// Tables larger than this are refused: no sane component needs more elements.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

/// Limits one store's linear memory to a fixed size and records a refusal.
#[derive(Debug, Clone)]
pub struct MemoryLimiter {
    limit: usize,
    exceeded: bool,
}

impl MemoryLimiter {
    /// A limiter allowing `limit` bytes of linear memory per memory.
    pub fn new(limit: u64) -> MemoryLimiter {
        MemoryLimiter {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            exceeded: false,
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
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.exceeded = true;
            return Ok(false);
        }
        Ok(true)
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
