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
pub mod warm;

use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{Component, Instance, InstancePre, Linker};
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::calls::{self, dispatch, dispatch::Directory, dispatch::Served};
use crate::capabilities::events::{self, ModuleEvents, SubscriberIndices};
use crate::capabilities::sql::{self, Database};
use crate::capabilities::{self, InstanceState};
use crate::deployment::{ComponentSource, Deployment, Instances, ModuleLimits, ModuleSpec};
use crate::engine::{Engine, LoadedComponent, EPOCH_TICK};
use crate::telemetry::trace::TraceContext;
use http::{classify, Failure};
use warm::{WarmInstance, WarmInstances};

/// One module version, linked and ready to instantiate.
pub struct LoadedModule {
    /// The module's name.
    pub name: String,
    /// The component file it was loaded from.
    pub source: PathBuf,
    /// Short hash of the component: the version's identity in logs and status.
    pub version: String,
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
    pub fn new_store(&self, call_depth: u32, trace: TraceContext) -> Store<InstanceState> {
        let mut state = InstanceState::new(&self.name, self.limits.memory.bytes(), trace);
        state.database = self.database.get().cloned();
        state.events = self.events.clone();
        let mut store = Store::new(self.instance_pre.engine(), state);
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_trap();
        self.rearm(&mut store, call_depth, trace);
        store
    }

    /// Readies a store for one more request or call, `call_depth` calls deep, in
    /// `trace`: a new epoch deadline of the module's timeout. A warm instance's store
    /// is re-armed before every call it serves.
    pub fn rearm(&self, store: &mut Store<InstanceState>, call_depth: u32, trace: TraceContext) {
        let state = store.data_mut();
        state.call_depth = call_depth;
        state.trace = trace;
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
        work: impl AsyncFnOnce(&mut Store<InstanceState>, &Instance) -> wasmtime::Result<R>,
    ) -> Result<R, Failure> {
        let warm = self.warm.as_ref().and_then(|warm| warm.take());
        let (mut store, warm_instance) = match warm {
            Some(WarmInstance {
                mut store,
                instance,
            }) => {
                self.rearm(&mut store, call_depth, trace);
                (store, Some(instance))
            }
            None => (self.new_store(call_depth, trace), None),
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
    modules: BTreeMap<String, Arc<LoadedModule>>,
    directory: Arc<Directory>,
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
        for spec in deployment.modules.values() {
            let started = Instant::now();
            let result = component_path(spec).and_then(|path| {
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

        let mut modules = BTreeMap::new();
        for spec in deployment.local_modules() {
            match link_module(&linker, spec, &compiled[&spec.name]) {
                Ok(module) => {
                    modules.insert(spec.name.clone(), Arc::new(module));
                }
                Err(error) => errors.push(fail(&spec.name, error)),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let served = served(engine.wasmtime(), &exports, &modules, &components);
        directory.publish(modules.clone(), served);
        Ok(Registry { modules, directory })
    }

    /// Where every module runs, for calls and forwarded requests.
    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// The module called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<LoadedModule>> {
        self.modules.get(name)
    }

    /// Every module, by name.
    pub fn modules(&self) -> impl Iterator<Item = &Arc<LoadedModule>> {
        self.modules.values()
    }
}

/// The exports of local modules that other nodes may call, by
/// `interface-without-version#function`.
fn served(
    engine: &wasmtime::Engine,
    exports: &calls::Exports,
    modules: &BTreeMap<String, Arc<LoadedModule>>,
    components: &BTreeMap<String, Component>,
) -> BTreeMap<String, Served> {
    let mut served = BTreeMap::new();
    for (key, (exporter, interface)) in exports {
        let (Some(module), Some(component)) = (modules.get(exporter), components.get(exporter))
        else {
            continue;
        };
        let name = interface.name.to_string();
        let Some(interface_index) = component.get_export_index(None, &name) else {
            continue;
        };
        for function in interface.functions.keys() {
            let export = component.get_export_index(Some(&interface_index), function);
            let types = dispatch::function_types(engine, component, &name, function);
            if let (Some(export), Some((params, results))) = (export, types) {
                served.insert(
                    format!("{key}#{function}"),
                    Served {
                        module: module.clone(),
                        interface: interface.name.clone(),
                        export,
                        params,
                        results,
                    },
                );
            }
        }
    }
    served
}

/// The component file a module spec names (for a crate, its built artefact).
pub fn component_path(spec: &ModuleSpec) -> Result<PathBuf> {
    match &spec.component {
        ComponentSource::Wasm(path) | ComponentSource::Precompiled(path) => Ok(path.clone()),
        ComponentSource::Crate { dir, package } => crates::built_artifact(dir, package),
    }
}

fn link_module(
    linker: &Linker<InstanceState>,
    spec: &ModuleSpec,
    compiled: &Compiled,
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
    Ok(LoadedModule {
        name: spec.name.clone(),
        source: path.clone(),
        version,
        instance_pre,
        proxy,
        limits: spec.limits,
        permits: Arc::new(Semaphore::new(spec.limits.concurrency as usize)),
        warm: (spec.instances == Instances::Reuse)
            .then(|| WarmInstances::new(spec.limits.concurrency as usize)),
        database: OnceLock::new(),
        broken: OnceLock::new(),
        events: (!spec.publishes.is_empty())
            .then(|| Arc::new(ModuleEvents::new(&spec.name, &spec.publishes))),
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
