//! A module on this node ([`Module`]: what all its versions share) and one loaded
//! version of it ([`ModuleVersion`]: a component linked and ready to instantiate).
//!
//! What belongs to the module outlives any version: its bulkhead (the concurrency
//! permits), what the capabilities opened for it (its database, its event grants…),
//! and whether it started. A new version is handed the same [`Module`], so nothing is
//! copied across versions by hand.
//!
//! A version runs work the same way for everyone — requests, calls, event deliveries
//! ([`ModuleVersion::run`]): a warm instance when the module reuses them and one is
//! idle, else a fresh store prepared by every capability and an instance from the
//! version's `InstancePre`; the module's memory limit and epoch deadline; a backstop
//! timer for an instance waiting on host I/O; every failure classified.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{Instance, InstancePre};
use wasmtime::Store;

use super::failure::{classify, Failure};
use super::hold::Hold;
use super::http::HttpHandler;
use super::interface::Exports;
use super::warm::{WarmInstance, WarmInstances};
use crate::capabilities::{Capabilities, Hop, InstanceState, StateMap};
use crate::deployment::{ModuleLimits, ModuleSpec};
use crate::engine::limits::MemoryLimiter;
use crate::engine::{Engine, EPOCH_TICK};
use crate::telemetry::metrics::{metrics, InstanceGauges};

/// A module of the deployment that runs on this node.
pub struct Module {
    /// The module as deployed.
    pub spec: ModuleSpec,
    /// Its bulkhead: one permit per request, call or delivery it may serve at once.
    pub permits: Arc<Semaphore>,
    /// The node's capabilities, which prepare each of its instances.
    capabilities: Capabilities,
    /// What the capabilities opened for it, once the node has opened it.
    state: OnceLock<StateMap>,
    /// Why it does not serve, when its start failed after it loaded.
    not_started: OnceLock<String>,
    /// The gauges its instances count themselves in, whichever version they are of.
    pub instances: InstanceGauges,
    /// Set while its new work must wait (it is moving to another node).
    pub hold: Arc<Hold>,
}

/// Capability state before a module is opened: nothing granted yet.
static UNOPENED: StateMap = StateMap::empty();

impl Module {
    /// Module `spec`, served with `capabilities`, not opened yet.
    pub fn new(spec: ModuleSpec, capabilities: Capabilities) -> Module {
        Module {
            instances: metrics().instances(&spec.name),
            permits: Arc::new(Semaphore::new(spec.limits.concurrency as usize)),
            spec,
            capabilities,
            state: OnceLock::new(),
            not_started: OnceLock::new(),
            hold: Arc::default(),
        }
    }

    /// The module's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Its limits from the deployment.
    pub fn limits(&self) -> ModuleLimits {
        self.spec.limits
    }

    /// What the capabilities opened for it (nothing before it was opened).
    pub fn state(&self) -> &StateMap {
        self.state.get().unwrap_or(&UNOPENED)
    }

    /// Records what the capabilities opened for it: from now on its instances get it.
    pub fn opened(&self, state: StateMap) {
        let _ = self.state.set(state);
    }

    /// Records that the module did not start, and why: its requests and calls get 503.
    pub fn failed_to_start(&self, reason: String) {
        let _ = self.not_started.set(reason);
    }

    /// Why the module does not serve, if its start failed.
    pub fn not_started(&self) -> Option<&str> {
        self.not_started.get().map(String::as_str)
    }

    /// Requests and calls running in it now.
    pub fn in_flight(&self) -> usize {
        (self.spec.limits.concurrency as usize).saturating_sub(self.permits.available_permits())
    }
}

/// One version of a module, linked and ready to instantiate.
pub struct ModuleVersion {
    /// The module it is a version of.
    pub module: Arc<Module>,
    /// The component file it was loaded from.
    pub source: PathBuf,
    /// Short hash of the component: the version's identity in logs and status.
    pub version: String,
    /// Hex SHA-256 of the component: the version's whole identity.
    pub digest: String,
    /// Its exports of module interfaces: where calls into this version land.
    pub exports: Exports,
    /// The linked component, ready to instantiate.
    pub instance_pre: InstancePre<InstanceState>,
    /// Its `wasi:http` handler, when it serves HTTP.
    pub http: Option<HttpHandler>,
    /// Its idle warm instances, when calls into it reuse instances.
    pub warm: Option<WarmInstances>,
    /// What the capabilities configured for this version.
    pub state: StateMap,
}

impl ModuleVersion {
    /// The module's name.
    pub fn name(&self) -> &str {
        self.module.name()
    }

    /// The module's limits.
    pub fn limits(&self) -> ModuleLimits {
        self.module.limits()
    }

    /// One of the module's concurrency permits, if it has one free (its bulkhead):
    /// held for as long as a request or call runs in one of its instances.
    pub fn try_admit(&self) -> Option<OwnedSemaphorePermit> {
        self.module.permits.clone().try_acquire_owned().ok()
    }

    /// Whether the module takes no more work on this node: it moved to another one
    /// (work that arrives here now did not run, and goes where it serves).
    pub fn has_left(&self) -> bool {
        self.module.permits.is_closed()
    }

    /// One of the module's concurrency permits, waiting for one to free up (work in
    /// the background, which may wait its turn).
    pub async fn admit(&self) -> Option<OwnedSemaphorePermit> {
        self.module.permits.clone().acquire_owned().await.ok()
    }

    /// How long the host waits for one of this module's instances before giving up.
    /// The epoch deadline ([`Self::new_store`]) interrupts an instance that computes
    /// too long and says precisely so; this backstop, a little later, covers one that
    /// waits too long (on host I/O), where no epoch check runs.
    pub fn backstop(&self) -> Duration {
        self.limits().timeout.duration() + 2 * EPOCH_TICK
    }

    /// A fresh store for one instance of this version, serving `hop`: prepared by
    /// every capability, its own memory limit, an epoch deadline of the module's
    /// timeout.
    pub fn new_store(&self, hop: Hop) -> Store<InstanceState> {
        let module = &self.module;
        let limiter =
            MemoryLimiter::counted(self.limits().memory.bytes(), module.instances.clone());
        let mut state = InstanceState::new(module.name(), limiter, hop.clone());
        module
            .capabilities
            .prepare(&mut state, module.state(), &self.state);
        let mut store = Store::new(self.instance_pre.engine(), state);
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_trap();
        self.rearm(&mut store, hop);
        store
    }

    /// Readies a store for one more piece of work, `hop`: a new epoch deadline of the
    /// module's timeout. A warm instance's store is re-armed before every call.
    pub fn rearm(&self, store: &mut Store<InstanceState>, hop: Hop) {
        let state = store.data_mut();
        state.hop = hop;
        state.limiter.forget_refusal();
        state.log_span.follow_current();
        store.set_epoch_deadline(Engine::deadline_ticks(self.limits().timeout.duration()));
    }

    /// Runs `work` in an instance of this version, serving `hop`, within the module's
    /// deadline: a warm instance when the module reuses them and one is idle,
    /// otherwise a fresh one. Whatever goes wrong becomes a [`Failure`]; an instance
    /// that failed is never reused. The caller holds the module's permit.
    pub async fn run<R>(
        &self,
        hop: Hop,
        work: impl AsyncFnOnce(&mut Store<InstanceState>, &Instance) -> wasmtime::Result<R>,
    ) -> Result<R, Failure> {
        let warm = self.warm.as_ref().and_then(|warm| warm.take());
        let (mut store, warm_instance) = match warm {
            Some(WarmInstance {
                mut store,
                instance,
            }) => {
                self.rearm(&mut store, hop);
                (store, Some(instance))
            }
            None => (self.new_store(hop), None),
        };
        let run = async {
            let instance = match warm_instance {
                Some(instance) => instance,
                None => self.instance_pre.instantiate_async(&mut store).await?,
            };
            let output = work(&mut store, &instance).await?;
            Ok::<_, wasmtime::Error>((instance, output))
        };
        match tokio::time::timeout(self.backstop(), run).await {
            Ok(Ok((instance, output))) => {
                // Only an instance whose work ended normally is worth keeping.
                if let Some(warm) = &self.warm {
                    store.data().log_span.release();
                    warm.give_back(WarmInstance { store, instance });
                }
                Ok(output)
            }
            Ok(Err(error)) => Err(classify(error, store.data())),
            Err(_) => Err(Failure::DeadlineExceeded),
        }
    }
}

impl super::slot::Version for ModuleVersion {
    fn name(&self) -> &str {
        self.module.name()
    }

    fn version(&self) -> &str {
        &self.version
    }

    fn hold(&self) -> Arc<Hold> {
        self.module.hold.clone()
    }
}
