//! The registry: every module of the deployment that runs on this node, loaded, linked
//! and ready to instantiate; the owner of the node's [`Directory`].
//!
//! Loading is the capabilities' lifecycle, driven alike for all of them:
//! 1. every component of the deployment is compiled (or taken from the compile cache)
//!    — all of them, wherever each runs, since contracts are checked across the whole
//!    deployment;
//! 2. the capabilities **check** the components together (calls: every import served
//!    by a granted exporter with the same signatures);
//! 3. the capabilities **link** the shared linker;
//! 4. each local module's version is pre-instantiated and **configured** by every
//!    capability (a version that imports what it was not granted is refused);
//! 5. the node **opens** each module ([`Registry::open`]) and **starts** the
//!    capabilities' background work ([`Registry::start`]).
//!
//! Every problem is reported, not just the first.

use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker};

use super::directory::{Directory, Placement, RemoteModule};
use super::http::HttpHandler;
use super::interface::Exports;
use super::slot::ModuleSlot;
use super::sources;
use super::swap::Swapper;
use super::version::{Module, ModuleVersion};
use super::versions::VersionStore;
use super::warm::WarmInstances;
use crate::capabilities::{
    wasi, Capabilities, Components, InstanceState, OpenContext, RunningModule, Service,
    VersionContext,
};
use crate::deployment::{AmendedDatabase, Deployment, Instances, ModuleSpec};
use crate::engine::{Engine, LoadedComponent};
use crate::telemetry::metrics::{Metrics, Sampled, VersionRole};

/// A module that failed to load, and why.
#[derive(Debug, thiserror::Error)]
#[error("module `{module}`: {error:#}")]
pub struct LoadError {
    /// The module (`(host)` for a failure of the host's own linking).
    pub module: String,
    /// What went wrong (the full cause chain).
    pub error: anyhow::Error,
}

impl LoadError {
    fn new(module: &str, error: anyhow::Error) -> LoadError {
        LoadError {
            module: module.to_string(),
            error,
        }
    }
}

/// Every module of a deployment that runs on this node, loaded.
pub struct Registry {
    deployment: Deployment,
    capabilities: Capabilities,
    directory: Arc<Directory>,
    swapper: Swapper,
    /// The capabilities' background work for the local modules, stopped with the node
    /// (or one module's part of it, when a new placement moves the module away).
    services: Mutex<Vec<Box<dyn Service>>>,
    /// Modules arriving from another node with their data, not yet serving.
    arrivals: Mutex<BTreeMap<String, super::extraction::Arrival>>,
    /// The modules whose database changed since the node started (a move onto
    /// Postgres): the deployment as it is now, with [`Self::deployment`].
    databases: Mutex<BTreeMap<String, AmendedDatabase>>,
    /// One lock per module arriving: its steps here (prepare, open, drop) one at a
    /// time, without holding off the node's other changes.
    arrival_locks: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A module's component, compiled but not yet linked.
pub(super) struct Compiled {
    pub(super) path: PathBuf,
    pub(super) loaded: LoadedComponent,
    pub(super) started: Instant,
}

impl Registry {
    /// Loads the modules of `deployment` that run on this node with `capabilities`,
    /// and publishes where each is served in `directory` (which the capabilities may
    /// already hold: calls are routed through it).
    pub fn load(
        engine: &Engine,
        deployment: &Deployment,
        capabilities: Capabilities,
        directory: Arc<Directory>,
    ) -> Result<Registry, Vec<LoadError>> {
        let versions = VersionStore::new(&deployment.data_dir);
        let mut errors = Vec::new();
        let mut compiled = BTreeMap::new();
        for spec in deployment.modules.values() {
            let started = Instant::now();
            // A module swapped at run time serves its last promoted version again; the
            // modules of other nodes are checked against the version last adopted.
            let result = component_path(spec).and_then(|base| {
                // A remembered version came through the admin API or another node:
                // Wasm only. The deployment's own path may be precompiled.
                let loaded = match versions.promoted(&spec.name, &base) {
                    Some(remembered) => (remembered.clone(), engine.load_wasm(&remembered)),
                    None => (base.clone(), engine.load(&base)),
                };
                let (path, loaded) = loaded;
                let loaded = loaded
                    .map_err(|error| explain_load_failure(&path, error))
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
                Err(error) => errors.push(LoadError::new(&spec.name, error)),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }

        let components: BTreeMap<String, Component> = compiled
            .iter()
            .map(|(name, c)| (name.clone(), c.loaded.component.clone()))
            .collect();
        let digests = compiled
            .iter()
            .map(|(name, c)| (name.clone(), c.loaded.digest.clone()))
            .collect();
        let all = Components {
            engine: engine.wasmtime(),
            deployment,
            components: &components,
        };
        let problems = capabilities.check(&all);
        if !problems.is_empty() {
            return Err(problems
                .into_iter()
                .map(|p| LoadError::new(&p.module, anyhow::anyhow!(p.problem)))
                .collect());
        }
        let mut linker = Linker::<InstanceState>::new(engine.wasmtime());
        if let Err(error) = capabilities.link(&mut linker, &all) {
            return Err(vec![LoadError::new("(host)", error)]);
        }

        let concurrent = Arc::new(ConcurrentLinker::default());
        let mut local = BTreeMap::new();
        for spec in deployment.local_modules() {
            let compiled = &compiled[&spec.name];
            let module = Arc::new(Module::new(spec.clone(), capabilities.clone()));
            let linkers = Linkers {
                serving: &linker,
                concurrent: &concurrent,
            };
            let linked = link_version(engine, linkers, deployment, &capabilities, module, compiled);
            match linked {
                Ok(version) => {
                    if component_path(spec).is_ok_and(|base| base != compiled.path) {
                        tracing::info!(module = %spec.name, version = %version.version, "serving the last promoted version");
                    }
                    let slot = ModuleSlot::new(Arc::new(version), deployment.rollout.clone());
                    local.insert(spec.name.clone(), Arc::new(slot));
                }
                Err(error) => errors.push(LoadError::new(&spec.name, error)),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let placement = Placement {
            local,
            remote: remote_modules(deployment),
            exporters: exporters(engine.wasmtime(), &components),
            components,
            digests,
            placed: deployment.placement.clone(),
        };
        directory.republish(move |now| *now = placement.clone());
        let swapper = Swapper::new(
            engine.clone(),
            linker,
            concurrent,
            deployment.clone(),
            capabilities.clone(),
            directory.clone(),
            versions,
        );
        Ok(Registry {
            deployment: deployment.clone(),
            capabilities,
            directory,
            swapper,
            services: Mutex::new(Vec::new()),
            arrivals: Mutex::new(BTreeMap::new()),
            databases: Mutex::new(BTreeMap::new()),
            arrival_locks: Mutex::new(BTreeMap::new()),
        })
    }

    /// What is served where: the node's one directory.
    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// Module `name`'s versions, if it runs on this node.
    pub fn slot(&self, name: &str) -> Option<Arc<ModuleSlot>> {
        self.directory.local(name)
    }

    /// The serving version of module `name`, if it runs on this node.
    pub fn get(&self, name: &str) -> Option<Arc<ModuleVersion>> {
        self.slot(name).map(|slot| slot.serving())
    }

    /// Every local module's versions, by name.
    pub fn slots(&self) -> Vec<Arc<ModuleSlot>> {
        self.directory.snapshot().local.values().cloned().collect()
    }

    /// The serving version of every local module.
    pub fn modules(&self) -> Vec<Arc<ModuleVersion>> {
        self.slots().iter().map(|slot| slot.serving()).collect()
    }

    /// Swaps, canaries, promotions and rollbacks of this node's modules.
    pub fn swapper(&self) -> &Swapper {
        &self.swapper
    }

    /// Opens every local module with every capability (its database, its tables…).
    /// A module that fails to open does not start — its requests and calls get 503
    /// with the reason — while every other module serves.
    pub async fn open(&self) {
        let departures = self.departures();
        for slot in self.slots() {
            let module = slot.serving().module.clone();
            // Its data here is what it left behind when it moved to another node: a
            // file that still places it here is out of date, and serving it would
            // serve old data beside the node that runs it.
            if let Some(to) = departures.get(module.name()) {
                let reason = format!(
                    "module {name} moved to node {to} with its data (modhost extract); this \
                     node's copy is out of date. The deployment file still places it here: \
                     write `{name} = [\"{to}\"]` in [placement] and restart, or move it back \
                     with `modhost extract {name} --to <this node>` asked of node {to}",
                    name = module.name()
                );
                tracing::error!(module = %module.name(), %reason, "module not started: it moved away");
                module.failed_to_start(reason);
                continue;
            }
            if let Err(reason) = self.open_module(&module).await {
                tracing::error!(module = %module.name(), %reason, "module not started: it did not open");
                module.failed_to_start(reason);
            }
        }
    }

    /// Opens `module` with every capability; the reason, when it does not open.
    pub(super) async fn open_module(&self, module: &Module) -> Result<(), String> {
        let opening = OpenContext {
            deployment: &self.deployment,
            spec: &module.spec,
        };
        match self.capabilities.open(opening).await {
            Ok(state) => {
                module.opened(state);
                Ok(())
            }
            Err(error) => Err(format!("{error:#}")),
        }
    }

    /// Starts the capabilities' background work for the local modules; [`Self::stop`]
    /// stops it.
    pub fn start(&self) {
        self.start_modules(&self.slots());
    }

    /// Starts the capabilities' background work for the modules of `slots`.
    pub(super) fn start_modules(&self, slots: &[Arc<ModuleSlot>]) {
        let modules: Vec<RunningModule> = slots
            .iter()
            .map(|slot| {
                let module = slot.serving().module.clone();
                RunningModule {
                    name: module.name().to_string(),
                    state: module.state().clone(),
                    not_started: module.not_started().map(str::to_string),
                    runner: slot.clone(),
                }
            })
            .collect();
        if modules.is_empty() {
            return;
        }
        let started = self.capabilities.start(&crate::capabilities::StartContext {
            deployment: &self.deployment,
            modules: &modules,
        });
        self.lock_services().extend(started);
    }

    /// Stops the capabilities' background work, letting each finish what it has in
    /// hand for at most `grace`.
    pub async fn stop(&self, grace: Duration) {
        let services = std::mem::take(&mut *self.lock_services());
        for service in services {
            service.stop(grace).await;
        }
    }

    /// Stops module `name`'s part of the capabilities' background work (a new
    /// placement moved it away), for at most `grace`.
    pub(super) async fn stop_module(&self, name: &str, grace: Duration) {
        // Each service within the same grace, side by side.
        let stopping: Vec<_> = self
            .lock_services()
            .iter()
            .map(|service| service.stop_module(name, grace))
            .collect();
        futures_util::future::join_all(stopping).await;
    }

    /// Forgets what this node reported of module `name`'s state: it no longer runs
    /// here.
    pub(super) fn forget_metrics(&self, name: &str) {
        let topics = self
            .deployment()
            .modules
            .get(name)
            .map(|spec| spec.subscribes.clone())
            .unwrap_or_default();
        crate::telemetry::metrics::metrics().forget_module(name, &topics);
    }

    pub(super) fn lock_arrivals(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<String, super::extraction::Arrival>> {
        self.arrivals.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds off every other change of this node's modules (swaps, placements, a
    /// module moving) while the caller makes its own.
    pub async fn one_change_at_a_time(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.swapper.one_change_at_a_time().await
    }

    /// The node's capabilities.
    pub(super) fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// Waits for module `name`'s arrival steps here to be this caller's alone.
    pub(super) async fn one_arrival_step(&self, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .arrival_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    pub(super) fn lock_databases(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<String, AmendedDatabase>> {
        self.databases.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_services(&self) -> std::sync::MutexGuard<'_, Vec<Box<dyn Service>>> {
        self.services.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The deployment as the node loaded it (its `[placement]` as of the start: the
    /// directory has the one applied now).
    pub fn deployment(&self) -> &Deployment {
        &self.deployment
    }

    /// Every local module's state, as `/readyz` and `modhost status` show it: serving
    /// (or failed, with the reason), its version, work in flight, and a canary or a
    /// version to roll back to when there is one.
    ///
    /// A module moving shows where it is in its move: `held` on the node it leaves
    /// while its last changes are copied, `arriving` on the node it goes to until it
    /// serves there (`stage`: `receiving` its data, or `ready` once checked and open;
    /// `received_bytes` of its files' `file_bytes` so far).
    pub fn status(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut status: serde_json::Map<String, serde_json::Value> = self
            .slots()
            .into_iter()
            .map(|slot| {
                let version = slot.serving();
                let module = &version.module;
                let serving = if slot.hold.is_held() {
                    "held"
                } else {
                    "serving"
                };
                let mut state = match module.not_started() {
                    None => serde_json::json!({
                        "status": serving,
                        "version": version.version,
                        "in_flight": module.in_flight(),
                    }),
                    Some(reason) => serde_json::json!({
                        "status": "failed",
                        "version": version.version,
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
            .collect();
        for arriving in self.arriving() {
            status.entry(arriving.name).or_insert_with(|| {
                serde_json::json!({
                    "status": "arriving",
                    "stage": arriving.stage,
                    "received_bytes": arriving.received_bytes,
                    "file_bytes": arriving.file_bytes,
                })
            });
        }
        status
    }
}

/// Every module of `deployment` that does not run on this node, with the nodes that
/// run it.
pub(super) fn remote_modules(deployment: &Deployment) -> BTreeMap<String, Arc<RemoteModule>> {
    deployment
        .modules
        .values()
        .filter(|module| !deployment.is_local(&module.name))
        .map(|module| {
            let placed = RemoteModule {
                nodes: deployment.nodes_of(&module.name).to_vec(),
                timeout: module.limits.timeout.duration(),
            };
            (module.name.clone(), Arc::new(placed))
        })
        .collect()
}

/// Which module exports each module interface, by unversioned name.
pub(super) fn exporters(
    engine: &wasmtime::Engine,
    components: &BTreeMap<String, Component>,
) -> BTreeMap<String, String> {
    components
        .iter()
        .flat_map(|(module, component)| {
            Exports::of(engine, component)
                .interfaces()
                .map(|interface| (interface, module.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The component file a module spec names (for a source, its build).
pub fn component_path(spec: &ModuleSpec) -> Result<PathBuf> {
    sources::component_file(&spec.component)
}

/// The linkers a version is linked with: the serving engine's, and the concurrent
/// engine's for a WASI 0.3 component.
#[derive(Clone, Copy)]
pub(super) struct Linkers<'a> {
    pub(super) serving: &'a Linker<InstanceState>,
    pub(super) concurrent: &'a ConcurrentLinker,
}

/// The concurrent engine's linker: WASI and `wasi:http` for WASI 0.3 modules, made
/// when the first of them loads (a node without one never makes it).
#[derive(Default)]
pub(super) struct ConcurrentLinker(OnceLock<Linker<InstanceState>>);

impl ConcurrentLinker {
    /// The linker for `engine` (the concurrent one), made with `capabilities` if this
    /// is the first WASI 0.3 module.
    fn get(
        &self,
        engine: &wasmtime::Engine,
        capabilities: &Capabilities,
    ) -> Result<&Linker<InstanceState>> {
        if let Some(linker) = self.0.get() {
            return Ok(linker);
        }
        let mut linker = Linker::new(engine);
        capabilities.link_concurrent(&mut linker)?;
        let _ = self.0.set(linker);
        self.0
            .get()
            .ok_or_else(|| anyhow::anyhow!("the concurrent linker was not kept"))
    }
}

/// Links one version of `module`, and has every capability configure it.
pub(super) fn link_version(
    engine: &Engine,
    linkers: Linkers<'_>,
    deployment: &Deployment,
    capabilities: &Capabilities,
    module: Arc<Module>,
    compiled: &Compiled,
) -> Result<ModuleVersion> {
    let path = &compiled.path;
    let spec = &module.spec;
    let component = &compiled.loaded.component;
    let unserved = wasi::unserved_imports(engine.wasmtime(), component);
    if !unserved.is_empty() {
        return Err(unserved_wasi(path, &unserved));
    }
    let concurrent = engine.is_concurrent(component);
    let linker = if concurrent {
        if let Some(refusal) = beyond_wasi(component, path) {
            return Err(refusal);
        }
        linkers.concurrent.get(component.engine(), capabilities)?
    } else {
        linkers.serving
    };
    let instance_pre = linker
        .instantiate_pre(component)
        .map_err(anyhow::Error::from)
        .with_context(|| link_hint(path, concurrent))?;
    let http = match HttpHandler::new(&instance_pre, concurrent) {
        Ok(handler) => Some(handler),
        Err(_) if spec.routes.is_empty() => None,
        Err(error) => {
            return Err(error).with_context(|| {
                format!(
                    "{} does not export wasi:http/incoming-handler (WASI 0.2) or \
                     wasi:http/handler (WASI 0.3), which a module with routes must",
                    path.display()
                )
            })
        }
    };
    let state = capabilities.configure(&VersionContext {
        engine: engine.wasmtime(),
        deployment,
        spec,
        path,
        component,
        instance_pre: &instance_pre,
    })?;
    let version = compiled.loaded.digest[..12].to_string();
    tracing::info!(
        module = %spec.name,
        version = %version,
        component = %path.display(),
        cached = compiled.loaded.precompiled,
        load_ms = compiled.started.elapsed().as_secs_f64() * 1000.0,
        "module loaded"
    );
    Ok(ModuleVersion {
        source: path.clone(),
        version,
        digest: compiled.loaded.digest.clone(),
        exports: Exports::of(engine.wasmtime(), component),
        instance_pre,
        http,
        warm: (spec.instances == Instances::Reuse).then(|| {
            WarmInstances::new(
                spec.limits.concurrency as usize,
                module.instances.idle.clone(),
            )
        }),
        state,
        module,
    })
}

/// What a WASI 0.3 module may import: the packages the capabilities link for it
/// (`Capability::link_concurrent`: WASI itself and `wasi:http`). `wasi:config` and
/// `wasi:keyvalue` are not among them: they are host capabilities granted by the
/// deployment, served to WASI 0.2 modules.
const WASI_0_3_MODULE_IMPORTS: [&str; 7] = [
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:filesystem/",
    "wasi:io/",
    "wasi:random/",
    "wasi:sockets/",
    "wasi:http/",
];

/// The refusal of a WASI 0.3 component that reaches beyond WASI and `wasi:http`, or
/// exports anything but a `wasi:http` handler: WASI 0.3 modules serve routes, and
/// the host's own capabilities, calls between modules and event handlers are served
/// to WASI 0.2 modules only (docs/writing-a-module.md says why). `None` when it does
/// neither.
fn beyond_wasi(component: &Component, path: &Path) -> Option<anyhow::Error> {
    let engine = component.engine();
    let ty = component.component_type();
    let imports: Vec<&str> = ty
        .imports(engine)
        .map(|(name, _)| name)
        .filter(|name| !WASI_0_3_MODULE_IMPORTS.iter().any(|p| name.starts_with(p)))
        .collect();
    let exports: Vec<&str> = ty
        .exports(engine)
        .map(|(name, _)| name)
        .filter(|name| !name.starts_with("wasi:http/handler@"))
        .collect();
    if imports.is_empty() && exports.is_empty() {
        return None;
    }
    let listed = |what: &str, names: &[&str]| {
        (!names.is_empty()).then(|| format!("{what} {}", names.join(", ")))
    };
    let reasons: Vec<String> = [listed("imports", &imports), listed("exports", &exports)]
        .into_iter()
        .flatten()
        .collect();
    Some(anyhow::anyhow!(
        "{} is a WASI 0.3 component and {}: a WASI 0.3 module may import WASI and \
         wasi:http only, and export only wasi:http/handler; the host's capabilities \
         (modhost:*), calls between modules and event handlers are served to WASI 0.2 \
         modules (see docs/writing-a-module.md, \"Which components modhost accepts\")",
        path.display(),
        reasons.join(" and ")
    ))
}

/// The refusal of a component that imports WASI this host does not serve.
pub(super) fn unserved_wasi(path: &Path, imports: &[String]) -> anyhow::Error {
    anyhow::anyhow!(
        "{} imports {}: modhost serves WASI {} and {} components (wasi:*@{}.x, \
         wasi:*@{}.x) only; rebuild it for WASI 0.2 (the wasm32-wasip2 target, \
         componentize-py, componentize-js), see docs/writing-a-module.md, \"Which \
         components modhost accepts\"",
        path.display(),
        imports.join(", "),
        wasi::SERVED_WASI[0],
        wasi::SERVED_WASI[1],
        wasi::SERVED_WASI[0],
        wasi::SERVED_WASI[1]
    )
}

/// `error`, a failure to load the component at `path`, or the reason behind it when
/// that is WASI this host does not serve (wasmtime's message would say so in its own
/// terms, if at all).
pub(super) fn explain_load_failure(path: &Path, error: anyhow::Error) -> anyhow::Error {
    let unserved = std::fs::read(path)
        .map(|bytes| wasi::unserved_imports_in(&bytes))
        .unwrap_or_default();
    if unserved.is_empty() {
        error
    } else {
        unserved_wasi(path, &unserved)
    }
}

fn link_hint(path: &Path, concurrent: bool) -> String {
    if concurrent {
        format!(
            "linking {}: it imports something the host does not provide to WASI 0.3 \
             modules (WASI 0.2 and 0.3, wasi:http 0.2 and 0.3: a WASI 0.3 release \
             candidate, wasi:*@0.3.0-rc-…, is not among them)",
            path.display()
        )
    } else {
        format!(
            "linking {}: it imports something neither the host nor another module provides \
             (modules get WASI, wasi:http, and the interfaces of modules they may call)",
            path.display()
        )
    }
}

/// At each scrape: every local module's versions by role, its canary's weight, and
/// its bulkhead's use — read from the slots that own them.
impl Sampled for Registry {
    fn sample(&self, metrics: &Metrics) {
        let slots = self.slots();
        let held: Vec<_> = slots
            .iter()
            .map(|slot| (slot.serving(), slot.canary(), slot.previous()))
            .collect();
        let mut versions = Vec::new();
        let mut weights = Vec::new();
        for (slot, (serving, canary, previous)) in slots.iter().zip(&held) {
            versions.push((
                slot.name.as_str(),
                serving.version.as_str(),
                VersionRole::Serving,
            ));
            if let Some(canary) = canary {
                versions.push((
                    slot.name.as_str(),
                    canary.module.version.as_str(),
                    VersionRole::Canary,
                ));
            }
            if let Some(previous) = previous {
                versions.push((
                    slot.name.as_str(),
                    previous.version.as_str(),
                    VersionRole::Previous,
                ));
            }
            weights.push((slot.name.as_str(), canary.as_ref().map_or(0, |c| c.weight)));
            let module = &serving.module;
            metrics.module_load(
                module.name(),
                module.in_flight(),
                module.limits().concurrency as usize,
            );
        }
        metrics.module_versions(versions, weights);
    }
}
