//! The state capabilities keep: per instance ([`InstanceState`] and its [`Slices`]) and
//! per module or module version ([`StateMap`]).
//!
//! Each capability owns the types of its own state; the maps hold them by type, so a
//! new capability adds its state without changing any struct here. A capability finds
//! its slice with [`InstanceState::slice`] (and another capability's, when it builds on
//! it: events publish through the module's database).

use std::any::{Any, TypeId};
use std::sync::Arc;
use wasmtime::component::ResourceTable;

use crate::engine::limits::MemoryLimiter;
use crate::telemetry::span::LogSpan;
use crate::telemetry::trace::TraceContext;

/// Where an instance's current work sits in the request that caused it.
#[derive(Debug, Clone)]
pub struct Hop {
    /// How many module-to-module calls deep the work runs (0: a request or an event).
    pub depth: u32,
    /// The trace the work belongs to.
    pub trace: TraceContext,
    /// The originating request's routing key (its sticky header, hashed): calls it
    /// makes pick their callee's version by it during a canary.
    pub routing: Option<u64>,
    /// When the work must be done by: the request's timeout at the gateway, narrowed
    /// by each call's. Calls it makes end by then (`None`: only their own timeouts
    /// bound them).
    pub deadline: Option<tokio::time::Instant>,
    /// The id of the request the work serves (`x-request-id`), in the log of every
    /// call it causes, on every node; `None` for an event delivery.
    pub request_id: Option<Arc<str>>,
}

impl Hop {
    /// The first hop of new work in `trace`: a request (with its id), or an event
    /// delivery.
    pub fn start(trace: TraceContext, routing: Option<u64>, request_id: Option<Arc<str>>) -> Hop {
        Hop {
            depth: 0,
            trace,
            routing,
            deadline: None,
            request_id,
        }
    }

    /// This hop, to be done by `deadline`.
    pub fn until(self, deadline: tokio::time::Instant) -> Hop {
        Hop {
            deadline: Some(deadline),
            ..self
        }
    }
}

/// Everything one instance's store holds.
///
/// The core is what every instance has whatever it is granted: its module's name, its
/// resource table (shared by every capability's resources), its memory limiter, the
/// work it serves ([`Hop`]) and the span it logs in. Everything else is a capability's
/// [`Slices`], put there by that capability's `prepare` — and only if the module was
/// granted it.
pub struct InstanceState {
    pub(super) module: Arc<str>,
    /// The instance's resources (WASI streams, HTTP bodies, transactions…).
    pub table: ResourceTable,
    /// Memory accounting for this store.
    pub limiter: MemoryLimiter,
    /// The work the instance serves now.
    pub hop: Hop,
    /// The span the instance's output is logged in.
    pub log_span: LogSpan,
    /// Each granted capability's per-instance state.
    pub slices: Slices,
}

impl InstanceState {
    /// Fresh state for one instance of module `module`, its memory limited by
    /// `limiter`, serving `hop`; no capability prepared yet.
    pub fn new(module: &str, limiter: MemoryLimiter, hop: Hop) -> InstanceState {
        InstanceState {
            module: module.into(),
            table: ResourceTable::new(),
            limiter,
            hop,
            log_span: LogSpan::current(),
            slices: Slices::default(),
        }
    }

    /// The module this instance belongs to.
    pub fn module(&self) -> &str {
        &self.module
    }

    /// The module's name, shared.
    pub fn module_name(&self) -> &Arc<str> {
        &self.module
    }

    /// Capability state of type `T`, if it was prepared for this instance.
    pub fn slice<T: Any + Send>(&self) -> Option<&T> {
        self.slices.get::<T>()
    }

    /// Capability state of type `T`, mutably, if it was prepared for this instance.
    pub fn slice_mut<T: Any + Send>(&mut self) -> Option<&mut T> {
        self.slices.get_mut::<T>()
    }
}

/// Per-instance state of capabilities, by type.
///
/// A handful of entries at most, so a linear search over type ids beats hashing.
#[derive(Default)]
pub struct Slices(Vec<(TypeId, Box<dyn Any + Send>)>);

impl Slices {
    /// Puts `value` in, replacing an earlier value of its type.
    pub fn insert<T: Any + Send>(&mut self, value: T) {
        let id = TypeId::of::<T>();
        match self.0.iter_mut().find(|(t, _)| *t == id) {
            Some(entry) => entry.1 = Box::new(value),
            None => self.0.push((id, Box::new(value))),
        }
    }

    /// The value of type `T`, if there is one.
    pub fn get<T: Any + Send>(&self) -> Option<&T> {
        let id = TypeId::of::<T>();
        self.0
            .iter()
            .find(|(t, _)| *t == id)
            .and_then(|(_, value)| value.downcast_ref())
    }

    /// The value of type `T`, mutably, if there is one.
    pub fn get_mut<T: Any + Send>(&mut self) -> Option<&mut T> {
        let id = TypeId::of::<T>();
        self.0
            .iter_mut()
            .find(|(t, _)| *t == id)
            .and_then(|(_, value)| value.downcast_mut())
    }

    /// The value of type `T`, made by `make` if there is none yet.
    pub fn get_or_insert_with<T: Any + Send>(&mut self, make: impl FnOnce() -> T) -> &mut T {
        let id = TypeId::of::<T>();
        let index = match self.0.iter().position(|(t, _)| *t == id) {
            Some(index) => index,
            None => {
                self.0.push((id, Box::new(make())));
                self.0.len() - 1
            }
        };
        match self.0[index].1.downcast_mut() {
            Some(value) => value,
            // The entry under T's id holds a T: it was put there as one.
            None => unreachable!("slice type mismatch"),
        }
    }
}

/// Capability state of one module (shared by all its versions) or of one module
/// version, by type: what `open` and `configure` make and `prepare` hands out.
#[derive(Default, Clone)]
pub struct StateMap(Vec<(TypeId, Arc<dyn Any + Send + Sync>)>);

impl StateMap {
    /// A map with nothing in it.
    pub const fn empty() -> StateMap {
        StateMap(Vec::new())
    }

    /// Puts `value` in, replacing an earlier value of its type.
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) {
        self.insert_arc(Arc::new(value));
    }

    /// Puts a shared `value` in, replacing an earlier value of its type.
    pub fn insert_arc<T: Any + Send + Sync>(&mut self, value: Arc<T>) {
        let id = TypeId::of::<T>();
        let value: Arc<dyn Any + Send + Sync> = value;
        match self.0.iter_mut().find(|(t, _)| *t == id) {
            Some(entry) => entry.1 = value,
            None => self.0.push((id, value)),
        }
    }

    /// The value of type `T`, if there is one.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        let id = TypeId::of::<T>();
        self.0
            .iter()
            .find(|(t, _)| *t == id)
            .and_then(|(_, value)| value.downcast_ref())
    }

    /// The value of type `T`, shared, if there is one.
    pub fn get_arc<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        let id = TypeId::of::<T>();
        self.0
            .iter()
            .find(|(t, _)| *t == id)
            .and_then(|(_, value)| value.clone().downcast().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_keep_one_value_per_type() {
        let mut slices = Slices::default();
        slices.insert(1u32);
        slices.insert("two");
        slices.insert(3u32);
        assert_eq!(slices.get::<u32>(), Some(&3));
        assert_eq!(slices.get::<&str>(), Some(&"two"));
        assert_eq!(slices.get::<u64>(), None);
        *slices.get_or_insert_with(|| 0u64) += 5;
        assert_eq!(slices.get::<u64>(), Some(&5));

        let mut state = StateMap::default();
        state.insert(String::from("db"));
        assert_eq!(state.get::<String>().map(String::as_str), Some("db"));
        assert_eq!(
            state.get_arc::<String>().as_deref().map(String::as_str),
            Some("db")
        );
        assert!(state.get::<u8>().is_none());
    }
}
