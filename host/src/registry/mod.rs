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

use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;
use wasmtime::component::Linker;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::capabilities::{self, InstanceState};
use crate::deployment::{ComponentSource, Deployment, ModuleLimits, ModuleSpec};
use crate::engine::Engine;

/// One module version, linked and ready to instantiate.
pub struct LoadedModule {
    /// The module's name.
    pub name: String,
    /// The component file it was loaded from.
    pub source: PathBuf,
    /// Short hash of the component: the version's identity in logs and status.
    pub version: String,
    /// The pre-instantiated `wasi:http/proxy` world.
    pub proxy: ProxyPre<InstanceState>,
    /// Its limits from the deployment.
    pub limits: ModuleLimits,
    /// Its bulkhead: one permit per request it may serve at once.
    pub permits: Arc<Semaphore>,
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

/// Every module of a deployment, loaded.
pub struct Registry {
    modules: BTreeMap<String, Arc<LoadedModule>>,
}

impl Registry {
    /// Loads every module of `deployment`. Reports every module that fails, not just
    /// the first.
    pub fn load(engine: &Engine, deployment: &Deployment) -> Result<Registry, Vec<LoadError>> {
        let mut linker = Linker::<InstanceState>::new(engine.wasmtime());
        if let Err(error) = capabilities::link(&mut linker) {
            return Err(vec![LoadError {
                module: "(host)".into(),
                error,
            }]);
        }
        let mut modules = BTreeMap::new();
        let mut errors = Vec::new();
        for spec in deployment.modules.values() {
            match load_module(engine, &linker, spec) {
                Ok(module) => {
                    modules.insert(spec.name.clone(), Arc::new(module));
                }
                Err(error) => errors.push(LoadError {
                    module: spec.name.clone(),
                    error,
                }),
            }
        }
        if errors.is_empty() {
            Ok(Registry { modules })
        } else {
            Err(errors)
        }
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

/// The component file a module spec names (for a crate, its built artefact).
pub fn component_path(spec: &ModuleSpec) -> Result<PathBuf> {
    match &spec.component {
        ComponentSource::Wasm(path) | ComponentSource::Precompiled(path) => Ok(path.clone()),
        ComponentSource::Crate { dir, package } => crates::built_artifact(dir, package),
    }
}

fn load_module(
    engine: &Engine,
    linker: &Linker<InstanceState>,
    spec: &ModuleSpec,
) -> Result<LoadedModule> {
    let started = Instant::now();
    let path = component_path(spec)?;
    let loaded = engine
        .load(&path)
        .with_context(|| format!("loading {}", path.display()))?;
    let pre = linker
        .instantiate_pre(&loaded.component)
        .map_err(anyhow::Error::from)
        .with_context(|| link_hint(&path))?;
    let proxy = ProxyPre::new(pre)
        .map_err(anyhow::Error::from)
        .with_context(|| {
            format!(
                "{} does not export wasi:http/incoming-handler, which a module with routes must",
                path.display()
            )
        })?;
    let version = loaded.digest[..12].to_string();
    tracing::info!(
        module = %spec.name,
        version = %version,
        component = %path.display(),
        cached = loaded.precompiled,
        load_ms = started.elapsed().as_secs_f64() * 1000.0,
        "module loaded"
    );
    Ok(LoadedModule {
        name: spec.name.clone(),
        source: path,
        version,
        proxy,
        limits: spec.limits,
        permits: Arc::new(Semaphore::new(spec.limits.concurrency as usize)),
    })
}

fn link_hint(path: &Path) -> String {
    format!(
        "linking {}: it imports something the host does not provide \
         (modules get WASI 0.2 and wasi:http; other capabilities must be granted)",
        path.display()
    )
}
