//! Warm instances of a module that opted into reuse (`instances = "reuse"`).
//!
//! Instantiating is most of what a call into a fresh instance costs. A module on a
//! hot path may instead keep instances between calls: a call takes an idle one (or
//! makes one when none is idle) and gives it back when it returns normally. An
//! instance whose call trapped, timed out or exhausted its memory is never given back,
//! so a broken instance serves exactly one failed call.
//!
//! The pool never holds more idle instances than the module's concurrency limit: with
//! one permit per running call, that is the most the module ever needed at once.

use prometheus_client::metrics::gauge::Gauge;
use std::sync::Mutex;
use wasmtime::component::Instance;
use wasmtime::Store;

use crate::capabilities::InstanceState;

/// An instance kept for reuse, with the store it lives in.
pub struct WarmInstance {
    /// The instance's store: its memory, limits and host state.
    pub store: Store<InstanceState>,
    /// The instance itself.
    pub instance: Instance,
}

/// A module's idle warm instances.
pub struct WarmInstances {
    idle: Mutex<Vec<WarmInstance>>,
    capacity: usize,
    /// The module's gauge of idle instances, which this pool's count in.
    counted: Gauge,
}

impl WarmInstances {
    /// An empty pool keeping at most `capacity` idle instances, counted in `counted`.
    pub fn new(capacity: usize, counted: Gauge) -> WarmInstances {
        WarmInstances {
            idle: Mutex::new(Vec::new()),
            capacity,
            counted,
        }
    }

    /// An idle instance, if there is one. The most recently returned comes first: its
    /// memory is the most likely to still be in cache.
    pub fn take(&self) -> Option<WarmInstance> {
        let taken = self.lock().pop();
        if taken.is_some() {
            self.counted.dec();
        }
        taken
    }

    /// Gives back an instance whose call returned normally. Beyond capacity it is
    /// dropped instead.
    pub fn give_back(&self, instance: WarmInstance) {
        let mut idle = self.lock();
        if idle.len() < self.capacity {
            idle.push(instance);
            self.counted.inc();
        }
    }

    /// How many instances are idle now.
    pub fn idle(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<WarmInstance>> {
        // A panic while holding the lock cannot leave the Vec half-changed (push and
        // pop are the only operations), so a poisoned lock is still sound to use.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for WarmInstances {
    /// A version swapped out drops its idle instances, and their count with them.
    fn drop(&mut self) {
        let idle = i64::try_from(self.lock().len()).unwrap_or(i64::MAX);
        self.counted.dec_by(idle);
    }
}
