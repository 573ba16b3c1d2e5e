//! How a capability's background work runs code in a module: event delivery calls a
//! subscriber's export.
//!
//! Capabilities sit below the module layer, so they cannot pick a module's version or
//! make its instances themselves; the module layer hands each of them a
//! [`ModuleRunner`] instead. Work given to it runs the way every request and call does:
//! in a version picked from the module's slot (a canary gets its share), under the
//! module's bulkhead, memory limit and deadline, its outcome counted for that version.

use wasmtime::component::Instance;
use wasmtime::Store;

use super::state::{Hop, InstanceState};
use crate::runtime::BoxFuture;

/// Work to do in one instance of a module.
pub trait InstanceWork: Send {
    /// Does the work in `instance`, whose store is `store`. `Ok(true)`: it succeeded;
    /// `Ok(false)`: the module refused it (counted as a failure of its version);
    /// an error: the instance failed.
    fn run<'s>(
        &'s mut self,
        store: &'s mut Store<InstanceState>,
        instance: &'s Instance,
    ) -> BoxFuture<'s, wasmtime::Result<bool>>;
}

/// Runs work in a module's instances.
pub trait ModuleRunner: Send + Sync {
    /// The module's name.
    fn module(&self) -> &str;

    /// Runs `work` in an instance of the module at `hop`, waiting for one of its
    /// concurrency permits.
    fn run<'a>(
        &'a self,
        hop: Hop,
        work: &'a mut dyn InstanceWork,
    ) -> BoxFuture<'a, Result<(), WorkFailed>>;
}

/// Why the instance given some work failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct WorkFailed {
    /// A short, stable name of the failure (`module_timeout`, `module_trapped`…).
    pub code: &'static str,
    /// What happened.
    pub message: String,
}
