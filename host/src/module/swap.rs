//! Replacing a module's version while it serves: swap, canary, promote, rollback; and
//! adopting the new version of a module that runs on other nodes.
//!
//! A new version is **prepared** before anything serves it:
//! 1. its component is kept in the node's store and compiled (off the async runtime);
//! 2. the capabilities check the deployment's components again with it in place, as
//!    they serve now (the directory's): it must still export, with the same
//!    signatures, everything its importers use, and its own imports must be granted
//!    and exported by someone (errors name both signatures, as at start);
//! 3. it is linked — with a linker made anew when the set of functions it exports
//!    changed, so importers can later link against its new ones — and configured by
//!    every capability; it shares the module's bulkhead, database and grants;
//! 4. the capabilities bring the module's state up to it (its database migrations:
//!    forward-compatible ones, since the old version keeps serving meanwhile).
//!
//! Any refusal leaves the serving version as it was and says why ([`Refused`]). Only
//! then is it **switched in** ([`super::slot::ModuleSlot`]): atomically, with work in
//! flight finishing on the old version; the directory is republished with the new
//! component, and the new state is remembered ([`super::versions`]).
//!
//! A node also keeps the serving component of every module it does *not* run, for its
//! contract checks: when another node changes one, it sends the new component here
//! ([`Swapper::adopt`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker};

use super::directory::Directory;
use super::interface::Exports;
use super::registry::{
    self, component_path, exporters, link_version, Compiled, ConcurrentLinker, Linkers,
};
use super::slot::{Change, ModuleSlot, SlotError};
use super::version::{Module, ModuleVersion};
use super::versions::VersionStore;
use crate::capabilities::{Capabilities, Components, InstanceState, UpgradeContext};
use crate::deployment::{Deployment, ModuleSpec};
use crate::engine::{Engine, LoadedComponent};

/// Why a new version was not switched in (the serving one is untouched).
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The module is not in the deployment file.
    #[error("module {0} is not in the deployment")]
    NotDeployed(String),
    /// The module does not run on this node.
    #[error("module {0} does not run here")]
    NotHere(String),
    /// The module's start failed; it must be fixed and restarted first.
    #[error("module {module} did not start ({reason}); fix that and restart it first")]
    NotStarted {
        /// The module.
        module: String,
        /// Why it did not start.
        reason: String,
    },
    /// The new component is the version already serving.
    #[error("{file} is version {version}, which module {module} already serves")]
    AlreadyServing {
        /// The component file offered.
        file: String,
        /// Its version.
        version: String,
        /// The module.
        module: String,
    },
    /// A canary's weight is not a percentage.
    #[error("weight {0} is not a percentage (0-100)")]
    Weight(u32),
    /// The new version breaks a contract of the deployment.
    #[error("the new version of {module} breaks the deployment's contracts:\n{problems}")]
    Contracts {
        /// The module.
        module: String,
        /// Every problem, one per line, each naming its module.
        problems: String,
    },
    /// Nothing was staged to commit.
    #[error("no new version of {0} is staged on this node")]
    NothingStaged(String),
    /// The slot refused (nothing to promote or roll back to).
    #[error(transparent)]
    Slot(#[from] SlotError),
    /// The version could not be kept, compiled, linked, configured or migrated.
    #[error("{0}")]
    Unusable(String),
}

/// What a swap did.
#[derive(Debug, Clone)]
pub struct Swapped {
    /// The versions before and after.
    pub change: Change,
    /// Time to prepare the new version (compile, check, link, migrate).
    pub prepared_in: Duration,
}

/// How a staged version is switched in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// It serves everything from now on.
    Swap,
    /// It serves this percentage of the traffic, beside the serving version.
    Canary(u32),
}

/// A prepared version waiting to be switched in.
struct Staged {
    version: Arc<ModuleVersion>,
    component: Component,
    /// The linker made for it, when its exports changed.
    linker: Option<Linker<InstanceState>>,
}

/// Everything needed to bring in new versions of this node's modules.
pub struct Swapper {
    engine: Engine,
    deployment: Deployment,
    capabilities: Capabilities,
    directory: Arc<Directory>,
    versions: VersionStore,
    /// The linker new versions are linked with.
    linker: Mutex<Linker<InstanceState>>,
    /// The linker new WASI 0.3 versions are linked with.
    concurrent: Arc<ConcurrentLinker>,
    /// Versions prepared and waiting to be switched in, by module.
    staged: Mutex<BTreeMap<String, Staged>>,
    /// One change at a time per node.
    busy: tokio::sync::Mutex<()>,
}

impl Swapper {
    pub(super) fn new(
        engine: Engine,
        linker: Linker<InstanceState>,
        concurrent: Arc<ConcurrentLinker>,
        deployment: Deployment,
        capabilities: Capabilities,
        directory: Arc<Directory>,
        versions: VersionStore,
    ) -> Swapper {
        Swapper {
            engine,
            deployment,
            capabilities,
            directory,
            versions,
            linker: Mutex::new(linker),
            concurrent,
            staged: Mutex::new(BTreeMap::new()),
            busy: tokio::sync::Mutex::new(()),
        }
    }

    /// Prepares the component at `source` as a new version of `slot`'s module, and
    /// makes it the serving version. `migrations` overrides the module's migrations
    /// directory.
    pub async fn swap(
        &self,
        slot: &ModuleSlot,
        source: &Path,
        migrations: Option<&Path>,
    ) -> Result<Swapped, Refused> {
        let started = Instant::now();
        self.stage(slot, source, migrations).await?;
        let prepared_in = started.elapsed();
        let change = self.commit(slot, Switch::Swap).await?;
        Ok(Swapped {
            change,
            prepared_in,
        })
    }

    /// Prepares the component at `source` and makes it `slot`'s canary, with `weight`
    /// percent of the traffic. Returns its version.
    pub async fn canary(
        &self,
        slot: &ModuleSlot,
        source: &Path,
        weight: u32,
        migrations: Option<&Path>,
    ) -> Result<String, Refused> {
        if weight > 100 {
            return Err(Refused::Weight(weight));
        }
        let version = self.stage(slot, source, migrations).await?;
        self.commit(slot, Switch::Canary(weight)).await?;
        Ok(version)
    }

    /// Prepares the component at `source` as the next version of `slot`'s module and
    /// holds it, not serving, until [`Self::commit`] (or [`Self::unstage`]): the first
    /// half of a change made on several nodes at once. Returns its version.
    pub async fn stage(
        &self,
        slot: &ModuleSlot,
        source: &Path,
        migrations: Option<&Path>,
    ) -> Result<String, Refused> {
        let _busy = self.busy.lock().await;
        let staged = self.prepare(slot, source, migrations).await?;
        let version = staged.version.version.clone();
        self.lock_staged().insert(slot.name.clone(), staged);
        Ok(version)
    }

    /// Drops a staged version of `slot`'s module (another node refused its own).
    pub fn unstage(&self, slot: &ModuleSlot) {
        self.lock_staged().remove(&slot.name);
    }

    /// Switches the staged version of `slot`'s module in, as `how` says.
    pub async fn commit(&self, slot: &ModuleSlot, how: Switch) -> Result<Change, Refused> {
        let _busy = self.busy.lock().await;
        let Some(staged) = self.lock_staged().remove(&slot.name) else {
            return Err(Refused::NothingStaged(slot.name.clone()));
        };
        let old = slot.serving();
        let module = staged.version.clone();
        match how {
            Switch::Swap => {
                let switching = Instant::now();
                let change = slot.swap(module.clone());
                let switch_ns = switching.elapsed().as_nanos() as u64;
                self.publish(&slot.name, staged.component, &module.digest, staged.linker);
                self.remember(&slot.name, &module.source).await;
                watch_drain(&slot.name, Arc::downgrade(&old));
                tracing::info!(module = %slot.name, from = %old.version, to = %module.version, switch_ns, "module swapped");
                Ok(change)
            }
            Switch::Canary(weight) => {
                slot.start_canary(module.clone(), weight);
                tracing::info!(module = %slot.name, canary = %module.version, weight, serving = %old.version, "canary started");
                Ok(Change {
                    serving: old.version.clone(),
                    replaced: None,
                })
            }
        }
    }

    /// Makes `slot`'s canary its serving version.
    pub async fn promote(&self, slot: &ModuleSlot) -> Result<Change, Refused> {
        let _busy = self.busy.lock().await;
        let change = slot.promote()?;
        self.serve_from_slot(slot).await?;
        tracing::info!(module = %slot.name, serving = %change.serving, "canary promoted");
        Ok(change)
    }

    /// Drops `slot`'s canary, or goes back to the version before the last swap.
    pub async fn rollback(&self, slot: &ModuleSlot) -> Result<Change, Refused> {
        let _busy = self.busy.lock().await;
        let change = slot.rollback()?;
        self.serve_from_slot(slot).await?;
        crate::telemetry::metrics::metrics().rollback(&slot.name, "operator");
        tracing::info!(module = %slot.name, serving = %change.serving, replaced = ?change.replaced, "rolled back");
        Ok(change)
    }

    /// Takes the component at `bytes` (a `.wasm` or `.cwasm`, as `extension` says) as
    /// the version module `module` now serves on another node: later contract checks
    /// here are made against it, importers here may link against its functions, and a
    /// restart remembers it. Returns its version.
    pub async fn adopt(
        &self,
        module: &str,
        bytes: &[u8],
        extension: &str,
    ) -> Result<String, Refused> {
        let _busy = self.busy.lock().await;
        if !self.deployment.modules.contains_key(module) {
            return Err(Refused::NotDeployed(module.to_string()));
        }
        if self.directory.local(module).is_some() {
            return Err(Refused::Unusable(format!(
                "module {module} runs on this node: change it with a swap, not an adoption"
            )));
        }
        let kept = self
            .versions
            .keep_bytes(bytes, extension)
            .map_err(|e| Refused::Unusable(format!("{e:#}")))?;
        let loaded = self.compile(&kept, &kept.display().to_string()).await?;
        let version = loaded.digest[..12].to_string();
        if self.directory.snapshot().digests.get(module) == Some(&loaded.digest) {
            return Ok(version);
        }
        let mut candidate = self.directory.components();
        let old = candidate.insert(module.to_string(), loaded.component.clone());
        let linker = self
            .relink_if_needed(&candidate, old.as_ref(), &loaded.component)
            .map_err(|e| Refused::Unusable(format!("{e:#}")))?;
        self.publish(module, loaded.component, &loaded.digest, linker);
        self.remember(module, &kept).await;
        tracing::info!(module, %version, "adopted the version another node now serves");
        Ok(version)
    }

    /// The node's store of swapped-in components.
    pub fn versions(&self) -> &VersionStore {
        &self.versions
    }

    /// Loads, checks, links and migrates a new version, without serving it.
    async fn prepare(
        &self,
        slot: &ModuleSlot,
        source: &Path,
        migrations: Option<&Path>,
    ) -> Result<Staged, Refused> {
        let name = &slot.name;
        let serving = slot.serving();
        // The spec the module runs with: its database may have changed since the node
        // started (a move to Postgres), and a new version keeps it.
        let spec = &serving.module.spec;
        if let Some(reason) = serving.module.not_started() {
            return Err(Refused::NotStarted {
                module: name.clone(),
                reason: reason.to_string(),
            });
        }
        let kept = self
            .versions
            .keep(source)
            .map_err(|e| Refused::Unusable(format!("{e:#}")))?;
        let started = Instant::now();
        let shown = source.display().to_string();
        let loaded = self.compile(&kept, &shown).await?;
        if loaded.digest == serving.digest {
            return Err(Refused::AlreadyServing {
                file: shown,
                version: serving.version.clone(),
                module: name.clone(),
            });
        }
        let component = loaded.component.clone();

        // Checked against what every module serves now.
        let mut candidate = self.directory.components();
        let old = candidate.insert(name.clone(), component.clone());
        let problems = self.capabilities.check(&Components {
            engine: self.engine.wasmtime(),
            deployment: &self.deployment,
            components: &candidate,
        });
        if !problems.is_empty() {
            let problems: Vec<String> = problems
                .into_iter()
                .map(|p| format!("module `{}`: {}", p.module, p.problem))
                .collect();
            return Err(Refused::Contracts {
                module: name.clone(),
                problems: problems.join("\n"),
            });
        }
        let unusable = |e: anyhow::Error| Refused::Unusable(format!("{e:#}"));
        let relinked = self
            .relink_if_needed(&candidate, old.as_ref(), &component)
            .map_err(unusable)?;
        let compiled = Compiled {
            path: kept,
            loaded,
            started,
        };
        let link = |serving_linker: &Linker<InstanceState>| {
            self.link(serving_linker, serving.module.clone(), &compiled)
        };
        let linked = match &relinked {
            Some(linker) => link(linker),
            None => link(&self.lock_linker()),
        };
        let version = linked.map_err(unusable)?;
        let upgrading = UpgradeContext {
            deployment: &self.deployment,
            spec,
            migrations,
        };
        self.capabilities
            .upgrade(upgrading, serving.module.state())
            .await
            .map_err(unusable)?;
        Ok(Staged {
            version: Arc::new(version),
            component,
            linker: relinked,
        })
    }

    /// Compiles (or takes from the cache) the Wasm component at `path`, off the async
    /// threads; `shown` names it in errors. Precompiled code is refused.
    async fn compile(&self, path: &Path, shown: &str) -> Result<LoadedComponent, Refused> {
        let (engine, path) = (self.engine.clone(), path.to_path_buf());
        match tokio::task::spawn_blocking(move || {
            engine
                .load_wasm(&path)
                .map_err(|error| registry::explain_load_failure(&path, error))
        })
        .await
        {
            Ok(Ok(loaded)) => Ok(loaded),
            Ok(Err(error)) => Err(Refused::Unusable(format!("{shown}: {error:#}"))),
            Err(error) => Err(Refused::Unusable(format!("compiling {shown}: {error}"))),
        }
    }

    /// A new linker for `candidate` (every module's component, one of them replaced
    /// by `new`, which replaces `old`), when the functions the replaced module exports
    /// changed: importers must be able to link against the new set.
    fn relink_if_needed(
        &self,
        candidate: &BTreeMap<String, Component>,
        old: Option<&Component>,
        new: &Component,
    ) -> anyhow::Result<Option<Linker<InstanceState>>> {
        let engine = self.engine.wasmtime();
        let functions = |component: &Component| -> BTreeSet<String> {
            Exports::of(engine, component)
                .keys()
                .map(str::to_string)
                .collect()
        };
        if old.is_some_and(|old| functions(old) == functions(new)) {
            return Ok(None);
        }
        let mut linker = Linker::new(engine);
        self.capabilities.link(
            &mut linker,
            &Components {
                engine,
                deployment: &self.deployment,
                components: candidate,
            },
        )?;
        Ok(Some(linker))
    }

    /// The slot's serving version is the module's now (after a promotion or rollback):
    /// republishes it and remembers it.
    async fn serve_from_slot(&self, slot: &ModuleSlot) -> Result<(), Refused> {
        let serving = slot.serving();
        let component = serving.instance_pre.component().clone();
        let mut candidate = self.directory.components();
        let old = candidate.insert(slot.name.clone(), component.clone());
        let linker = self
            .relink_if_needed(&candidate, old.as_ref(), &component)
            .map_err(|e| Refused::Unusable(format!("{e:#}")))?;
        self.publish(&slot.name, component, &serving.digest, linker);
        self.remember(&slot.name, &serving.source).await;
        Ok(())
    }

    /// Makes `component` module `name`'s in the directory (and `linker`, if one was
    /// made for it, the node's).
    fn publish(
        &self,
        name: &str,
        component: Component,
        digest: &str,
        linker: Option<Linker<InstanceState>>,
    ) {
        if let Some(linker) = linker {
            *self.lock_linker() = linker;
        }
        let engine = self.engine.wasmtime();
        self.directory.republish(|placement| {
            placement
                .components
                .insert(name.to_string(), component.clone());
            placement
                .digests
                .insert(name.to_string(), digest.to_string());
            placement.exporters = exporters(engine, &placement.components);
        });
    }

    /// Remembers `source` as `name`'s serving component across restarts.
    /// The record is written (hash, write, fsync) on a blocking thread: it must not stall
    /// the requests served by this async thread.
    async fn remember(&self, name: &str, source: &Path) {
        let base = match self.deployment.modules.get(name) {
            Some(spec) => component_path(spec),
            None => Err(anyhow::anyhow!("not in the deployment")),
        };
        let (versions, module_name, source) = (
            self.versions.clone(),
            name.to_string(),
            source.to_path_buf(),
        );
        let recorded = match base {
            Ok(base) => {
                tokio::task::spawn_blocking(move || versions.record(&module_name, &source, &base))
                    .await
                    .unwrap_or_else(|e| Err(anyhow::anyhow!("recording the version: {e}")))
            }
            Err(error) => Err(error),
        };
        if let Err(error) = recorded {
            tracing::warn!(module = name, error = %format!("{error:#}"), "cannot remember the serving version; a restart serves the deployment's");
        }
    }

    /// Holds off every other change of this node's modules (swaps, canaries, another
    /// placement) while the caller makes its own.
    pub(super) async fn one_change_at_a_time(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.busy.lock().await
    }

    /// Links module `spec`'s version for this node, which a new placement gives it:
    /// the version the deployment serves now (the directory's component, adopted from
    /// the nodes that ran it), configured by every capability; not yet opened.
    pub(super) fn link_placed(&self, spec: &ModuleSpec) -> anyhow::Result<ModuleVersion> {
        let now = self.directory.snapshot();
        let (Some(component), Some(digest)) =
            (now.components.get(&spec.name), now.digests.get(&spec.name))
        else {
            anyhow::bail!("no component of module {} is known here", spec.name);
        };
        let base = component_path(spec)?;
        let path = self.versions.promoted(&spec.name, &base).unwrap_or(base);
        let compiled = Compiled {
            path,
            loaded: LoadedComponent {
                component: component.clone(),
                digest: digest.clone(),
                precompiled: true,
            },
            started: Instant::now(),
        };
        let module = Arc::new(Module::new(spec.clone(), self.capabilities.clone()));
        let linker = self.lock_linker().clone();
        self.link(&linker, module, &compiled)
    }

    /// Links `compiled` as a version of `module` with `serving` (the node's linker, or
    /// one made for a version whose exports changed), configured by every capability.
    fn link(
        &self,
        serving: &Linker<InstanceState>,
        module: Arc<Module>,
        compiled: &Compiled,
    ) -> anyhow::Result<ModuleVersion> {
        let linkers = Linkers {
            serving,
            concurrent: &self.concurrent,
        };
        link_version(
            &self.engine,
            linkers,
            &self.deployment,
            &self.capabilities,
            module,
            compiled,
        )
    }

    fn lock_staged(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Staged>> {
        self.staged.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_linker(&self) -> std::sync::MutexGuard<'_, Linker<InstanceState>> {
        self.linker.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Logs when the last request or call still running on a replaced version has
/// finished (the slot keeps the version itself for `rollback`).
fn watch_drain(module: &str, old: std::sync::Weak<ModuleVersion>) {
    let module = module.to_string();
    tokio::spawn(async move {
        let started = Instant::now();
        // The slot's `previous` holds one reference; anything beyond is work in flight.
        while old.strong_count() > 1 {
            if started.elapsed() > Duration::from_secs(3600) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::info!(
            module,
            drained_ms = started.elapsed().as_secs_f64() * 1000.0,
            "replaced version drained: no work left on it"
        );
    });
}
