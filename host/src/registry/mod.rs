//! The module registry: every module of the deployment, loaded, linked and ready to
//! instantiate.
//!
//! Loading a module means finding its component (a `.wasm`, a `.cwasm`, or a built
//! crate), compiling it (or taking it from the compile cache), linking it against the
//! host's capabilities, and checking it exports `wasi:http/incoming-handler` when it
//! owns routes. The result is one `InstancePre` per module version: creating an
//! instance from it per request is a matter of microseconds.

pub mod crates;
pub mod http;
pub mod slot;
pub mod swap;
pub mod versions;
pub mod warm;

use anyhow::{Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, ComponentExportIndex, Instance, InstancePre, Linker};
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::calls::contract::InterfaceName;
use crate::calls::{self, dispatch, dispatch::Directory, dispatch::Served};
use crate::capabilities::events::{self, ModuleEvents, SubscriberIndices};
use crate::capabilities::sql::{self, Database};
use crate::capabilities::{self, InstanceState};
use crate::deployment::{ComponentSource, Deployment, Instances, ModuleLimits, ModuleSpec};
use crate::engine::{Engine, LoadedComponent, EPOCH_TICK};
use crate::telemetry::trace::TraceContext;
use http::{classify, Failure};
use slot::ModuleSlot;
use swap::Swapper;
use warm::{WarmInstance, WarmInstances};

/// One module version, linked and ready to instantiate.
pub struct LoadedModule {
    /// The module's name.
    pub name: String,
    /// The component file it was loaded from.
    pub source: PathBuf,
    /// Short hash of the component: the version's identity in logs and status.
    pub version: String,
    /// Hex SHA-256 of the component: the version's whole identity.
    pub digest: String,
    /// Its exports of module interfaces, by `interface-without-version#function`:
    /// where calls into this version land.
    pub exports: HashMap<String, ComponentExportIndex>,
    /// The linked component, ready to instantiate (for calls into the module).
    pub instance_pre: InstancePre<InstanceState>,
    /// Its `wasi:http/proxy` view, when it serves HTTP.
    pub proxy: Option<ProxyPre<InstanceState>>,
    /// Its limits from the deployment.
    pub limits: ModuleLimits,
    /// Its bulkhead: one permit per request or call it may serve at once.
    pub permits: Arc<Semaphore>,
    /// Its idle warm instances, when calls into it reuse instances.
    pub warm: Option<WarmInstances>,
    /// Its own database, once the node has opened it (`database = …`).
    pub database: OnceLock<Arc<Database>>,
    /// Why the module does not serve, when its start failed after it loaded (its
    /// database did not open, a migration failed): its requests and calls get 503.
    pub broken: OnceLock<String>,
    /// What it may publish, and where its outbox relay waits (when it publishes).
    pub events: Option<Arc<ModuleEvents>>,
    /// Its `modhost:events/subscriber` export, when it subscribes to topics.
    pub subscriber: Option<SubscriberIndices>,
}

impl LoadedModule {
    /// One of the module's concurrency permits, if it has one free (its bulkhead):
    /// held for as long as a request or call runs in one of its instances.
    pub fn try_admit(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// How long the host waits for one of this module's instances before giving up.
    /// The epoch deadline ([`Self::new_store`]) interrupts an instance that computes
    /// too long and says precisely so; this backstop, a little later, covers one that
    /// waits too long (on host I/O), where no epoch check runs.
    pub fn backstop(&self) -> Duration {
        self.limits.timeout.duration() + 2 * EPOCH_TICK
    }

    /// A fresh store for one instance of this module, `call_depth` calls deep, in
    /// `trace`: its own memory limit, and an epoch deadline of the module's timeout.
    pub fn new_store(
        &self,
        call_depth: u32,
        trace: TraceContext,
        routing: Option<u64>,
    ) -> Store<InstanceState> {
        let mut state = InstanceState::new(&self.name, self.limits.memory.bytes(), trace);
        state.database = self.database.get().cloned();
        state.events = self.events.clone();
        let mut store = Store::new(self.instance_pre.engine(), state);
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_trap();
        self.rearm(&mut store, call_depth, trace, routing);
        store
    }

    /// Readies a store for one more request or call, `call_depth` calls deep, in
    /// `trace`: a new epoch deadline of the module's timeout. A warm instance's store
    /// is re-armed before every call it serves.
    pub fn rearm(
        &self,
        store: &mut Store<InstanceState>,
        call_depth: u32,
        trace: TraceContext,
        routing: Option<u64>,
    ) {
        let state = store.data_mut();
        state.call_depth = call_depth;
        state.trace = trace;
        state.routing = routing;
        state.limiter.forget_refusal();
        state.log_span.follow_current();
        store.set_epoch_deadline(Engine::deadline_ticks(self.limits.timeout.duration()));
    }

    /// Runs `work` in an instance of this module, `call_depth` calls deep, in `trace`,
    /// within the module's deadline: a warm instance when the module reuses them and
    /// one is idle, otherwise a fresh one. Whatever goes wrong becomes a [`Failure`];
    /// an instance that failed is never reused. The caller holds the module's permit.
    pub async fn run<R>(
        &self,
        call_depth: u32,
        trace: TraceContext,
        routing: Option<u64>,
        work: impl AsyncFnOnce(&mut Store<InstanceState>, &Instance) -> wasmtime::Result<R>,
    ) -> Result<R, Failure> {
        let warm = self.warm.as_ref().and_then(|warm| warm.take());
        let (mut store, warm_instance) = match warm {
            Some(WarmInstance {
                mut store,
                instance,
            }) => {
                self.rearm(&mut store, call_depth, trace, routing);
                (store, Some(instance))
            }
            None => (self.new_store(call_depth, trace, routing), None),
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
                    warm.give_back(WarmInstance { store, instance });
                }
                Ok(output)
            }
            Ok(Err(error)) => Err(classify(error, store.data())),
            Err(_) => Err(Failure::DeadlineExceeded),
        }
    }
}

/// A module that failed to load, and why.
#[derive(Debug)]
pub struct LoadError {
    /// The module.
    pub module: String,
    /// What went wrong (the full cause chain).
    pub error: anyhow::Error,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "module `{}`: {:#}", self.module, self.error)
    }
}

/// Every module of a deployment that runs on this node, loaded.
pub struct Registry {
    slots: BTreeMap<String, Arc<ModuleSlot>>,
    directory: Arc<Directory>,
    swapper: Swapper,
}

/// A module's component, compiled but not yet linked.
struct Compiled {
    path: PathBuf,
    loaded: LoadedComponent,
    started: Instant,
}

impl Registry {
    /// Loads the modules of `deployment` that run on this node: compiles every
    /// component (all of them: the contracts between modules are checked across the
    /// whole deployment, wherever each runs), checks the contracts against the
    /// grants, links imports to the dispatcher, and pre-instantiates the local ones.
    /// Reports every module that fails, not just the first.
    pub fn load(engine: &Engine, deployment: &Deployment) -> Result<Registry, Vec<LoadError>> {
        let fail = |module: &str, error: anyhow::Error| LoadError {
            module: module.to_string(),
            error,
        };
        let mut errors = Vec::new();
        let mut compiled = BTreeMap::new();
        let versions = versions::VersionStore::new(&deployment.data_dir);
        for spec in deployment.modules.values() {
            let started = Instant::now();
            // A module swapped at run time serves its last promoted version again.
            let result = component_path(spec).and_then(|base| {
                let path = if deployment.is_local(&spec.name) {
                    versions.promoted(&spec.name, &base).unwrap_or(base)
                } else {
                    base
                };
                let loaded = engine
                    .load(&path)
                    .with_context(|| format!("loading {}", path.display()))?;
                Ok(Compiled {
                    path,
                    loaded,
                    started,
                })
            });
            match result {
                Ok(component) => {
                    compiled.insert(spec.name.clone(), component);
                }
                Err(error) => errors.push(fail(&spec.name, error)),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }

        let components: BTreeMap<String, Component> = compiled
            .iter()
            .map(|(name, c)| (name.clone(), c.loaded.component.clone()))
            .collect();
        let exports =
            calls::check(engine.wasmtime(), deployment, &components).map_err(|errors| {
                errors
                    .into_iter()
                    .map(|e| fail(&e.module, anyhow::anyhow!(e.problem)))
                    .collect::<Vec<_>>()
            })?;

        let mut linker = Linker::<InstanceState>::new(engine.wasmtime());
        let directory = Arc::new(Directory::default());
        let linked = capabilities::link(&mut linker)
            .map_err(|e| fail("(host)", e))
            .and_then(|()| {
                for (exporter, interface) in exports.values() {
                    dispatch::link_interface(
                        &mut linker,
                        &directory,
                        exporter,
                        &components[exporter],
                        interface,
                    )
                    .map_err(|e| fail(exporter, e))?;
                }
                Ok(())
            });
        if let Err(error) = linked {
            return Err(vec![error]);
        }

        let mut slots = BTreeMap::new();
        for spec in deployment.local_modules() {
            let compiled = &compiled[&spec.name];
            match link_module(&linker, spec, compiled, None) {
                Ok(module) => {
                    if component_path(spec).is_ok_and(|base| base != compiled.path) {
                        tracing::info!(module = %spec.name, version = %module.version, "serving the last promoted version");
                    }
                    let slot = ModuleSlot::new(Arc::new(module), deployment.rollout.clone());
                    slots.insert(spec.name.clone(), Arc::new(slot));
                }
                Err(error) => errors.push(fail(&spec.name, error)),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let served = served(engine.wasmtime(), &exports, &slots, &components);
        directory.publish(slots.clone(), served);
        let swapper = Swapper::new(
            engine.clone(),
            linker,
            deployment.clone(),
            components,
            versions,
        );
        Ok(Registry {
            slots,
            directory,
            swapper,
        })
    }

    /// Where every module runs, for calls and forwarded requests.
    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// Module `name`'s versions, if it runs on this node.
    pub fn slot(&self, name: &str) -> Option<&Arc<ModuleSlot>> {
        self.slots.get(name)
    }

    /// Every local module's versions, by name.
    pub fn slots(&self) -> impl Iterator<Item = &Arc<ModuleSlot>> {
        self.slots.values()
    }

    /// The serving version of module `name`.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedModule>> {
        self.slots.get(name).map(|slot| slot.serving())
    }

    /// The serving version of every local module.
    pub fn modules(&self) -> Vec<Arc<LoadedModule>> {
        self.slots.values().map(|slot| slot.serving()).collect()
    }

    /// Swaps, canaries, promotions and rollbacks of this node's modules.
    pub fn swapper(&self) -> &Swapper {
        &self.swapper
    }

    /// Every local module's state, as `/readyz` and `modhost status` show it: serving
    /// (or failed, with the reason), its version, work in flight, and a canary or a
    /// version to roll back to when there is one.
    pub fn status(&self) -> serde_json::Map<String, serde_json::Value> {
        self.slots
            .values()
            .map(|slot| {
                let module = slot.serving();
                let mut state = match module.broken.get() {
                    None => serde_json::json!({
                        "status": "serving",
                        "version": module.version,
                        "in_flight": module.limits.concurrency as usize - module.permits.available_permits(),
                    }),
                    Some(reason) => serde_json::json!({
                        "status": "failed",
                        "version": module.version,
                        "reason": reason,
                    }),
                };
                if let Some(canary) = slot.canary() {
                    let (requests, errors) = canary.outcomes();
                    state["canary"] = serde_json::json!({
                        "version": canary.module.version,
                        "weight": canary.weight,
                        "requests": requests,
                        "errors": errors,
                    });
                }
                if let Some(previous) = slot.previous() {
                    state["previous"] = previous.version.clone().into();
                }
                (slot.name.clone(), state)
            })
            .collect()
    }
}

/// The exports of local modules that other nodes may call, by
/// `interface-without-version#function`.
fn served(
    engine: &wasmtime::Engine,
    exports: &calls::Exports,
    slots: &BTreeMap<String, Arc<ModuleSlot>>,
    components: &BTreeMap<String, Component>,
) -> BTreeMap<String, Served> {
    let mut served = BTreeMap::new();
    for (key, (exporter, interface)) in exports {
        let (Some(slot), Some(component)) = (slots.get(exporter), components.get(exporter)) else {
            continue;
        };
        let name = interface.name.to_string();
        for function in interface.functions.keys() {
            let types = dispatch::function_types(engine, component, &name, function);
            if let Some((params, results)) = types {
                served.insert(
                    format!("{key}#{function}"),
                    Served {
                        slot: slot.clone(),
                        key: format!("{key}#{function}"),
                        interface: interface.name.clone(),
                        params,
                        results,
                    },
                );
            }
        }
    }
    served
}

/// A component's exports of module interfaces (not host ones), by
/// `interface-without-version#function`.
fn module_exports(
    engine: &wasmtime::Engine,
    component: &Component,
) -> HashMap<String, ComponentExportIndex> {
    let mut exports = HashMap::new();
    let ty = component.component_type();
    for (name, item) in ty.exports(engine) {
        let (Some(parsed), ComponentItem::ComponentInstance(instance)) =
            (InterfaceName::parse(name), &item.ty)
        else {
            continue;
        };
        let Some(interface) = component.get_export_index(None, name) else {
            continue;
        };
        for (function, item) in instance.exports(engine) {
            if let ComponentItem::ComponentFunc(_) = item.ty {
                if let Some(index) = component.get_export_index(Some(&interface), function) {
                    exports.insert(format!("{}#{function}", parsed.unversioned()), index);
                }
            }
        }
    }
    exports
}

/// The component file a module spec names (for a crate, its built artefact).
pub fn component_path(spec: &ModuleSpec) -> Result<PathBuf> {
    match &spec.component {
        ComponentSource::Wasm(path) | ComponentSource::Precompiled(path) => Ok(path.clone()),
        ComponentSource::Crate { dir, package } => crates::built_artifact(dir, package),
    }
}

/// Links one version of a module. A successor (`predecessor` given: a swap or a
/// canary) shares its predecessor's bulkhead, database and event grants: they belong
/// to the module, not the version.
fn link_module(
    linker: &Linker<InstanceState>,
    spec: &ModuleSpec,
    compiled: &Compiled,
    predecessor: Option<&LoadedModule>,
) -> Result<LoadedModule> {
    let path = &compiled.path;
    let instance_pre = linker
        .instantiate_pre(&compiled.loaded.component)
        .map_err(anyhow::Error::from)
        .with_context(|| link_hint(path))?;
    let proxy = match ProxyPre::new(instance_pre.clone()) {
        Ok(proxy) => Some(proxy),
        Err(_) if spec.routes.is_empty() => None,
        Err(error) => {
            return Err(anyhow::Error::from(error)).with_context(|| {
                format!(
                "{} does not export wasi:http/incoming-handler, which a module with routes must",
                path.display()
            )
            })
        }
    };
    let imports = |prefix: &str| {
        compiled
            .loaded
            .component
            .component_type()
            .imports(linker.engine())
            .any(|(name, _)| name.starts_with(prefix))
    };
    let imports_sql = imports("modhost:sql/");
    if imports_sql && spec.database.is_none() {
        anyhow::bail!(
            "{} imports {} but the module has no database: add `database = \"sqlite\"` \
             (or postgres) under [modules.{}]",
            path.display(),
            sql::INTERFACE,
            spec.name
        );
    }
    if imports("modhost:events/publisher") && spec.publishes.is_empty() {
        anyhow::bail!(
            "{} imports {} but the module may publish to no topic: list its topics in \
             `publishes = [...]` under [modules.{}]",
            path.display(),
            events::PUBLISHER,
            spec.name
        );
    }
    let subscriber = if spec.subscribes.is_empty() {
        None
    } else {
        Some(
            SubscriberIndices::new(&instance_pre)
                .map_err(anyhow::Error::from)
                .with_context(|| {
                    format!(
                        "{} subscribes to {} but does not export {}",
                        path.display(),
                        spec.subscribes.join(", "),
                        events::SUBSCRIBER
                    )
                })?,
        )
    };
    // Migrations are applied when the node starts; their names are checked now, so
    // `modhost check` catches a misnamed or duplicated file.
    if let Some(dir) = spec.database.as_ref().and_then(|db| db.migrations.as_ref()) {
        sql::migrations::read(dir)?;
    }
    let version = compiled.loaded.digest[..12].to_string();
    tracing::info!(
        module = %spec.name,
        version = %version,
        component = %path.display(),
        cached = compiled.loaded.precompiled,
        load_ms = compiled.started.elapsed().as_secs_f64() * 1000.0,
        "module loaded"
    );
    let exports = module_exports(linker.engine(), &compiled.loaded.component);
    let database = OnceLock::new();
    if let Some(db) = predecessor.and_then(|p| p.database.get()) {
        let _ = database.set(db.clone());
    }
    Ok(LoadedModule {
        name: spec.name.clone(),
        source: path.clone(),
        version,
        digest: compiled.loaded.digest.clone(),
        exports,
        instance_pre,
        proxy,
        limits: spec.limits,
        permits: predecessor.map_or_else(
            || Arc::new(Semaphore::new(spec.limits.concurrency as usize)),
            |p| p.permits.clone(),
        ),
        warm: (spec.instances == Instances::Reuse)
            .then(|| WarmInstances::new(spec.limits.concurrency as usize)),
        database,
        broken: OnceLock::new(),
        events: match predecessor {
            Some(p) => p.events.clone(),
            None => (!spec.publishes.is_empty())
                .then(|| Arc::new(ModuleEvents::new(&spec.name, &spec.publishes))),
        },
        subscriber,
    })
}

fn link_hint(path: &Path) -> String {
    format!(
        "linking {}: it imports something neither the host nor another module provides \
         (modules get WASI 0.2, wasi:http, and the interfaces of modules they may call)",
        path.display()
    )
}
