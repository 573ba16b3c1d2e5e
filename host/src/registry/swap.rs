//! Replacing a module's version while it serves: swap, canary, promote, rollback.
//!
//! A new version is **prepared** before anything serves it:
//! 1. its component is kept in the node's store and compiled (off the async runtime);
//! 2. the whole deployment's contracts are checked again with it in place: it must
//!    still export, with the same signatures, everything its importers use, and its
//!    own imports must be granted and exported by someone (errors name both
//!    signatures, as at start);
//! 3. it is linked with the node's linker (its imports must be what the host and the
//!    other modules provide) and shares the module's bulkhead, database and grants;
//! 4. its database migrations are applied — forward-compatible ones, since the old
//!    version keeps serving meanwhile (expand now, contract in a later version).
//!
//! Any refusal leaves the serving version as it was and says why. Only then is it
//! **switched in** ([`super::slot::ModuleSlot`]): atomically, with work in flight
//! finishing on the old version. The new state is remembered ([`super::versions`]).

use anyhow::Context;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker};

use super::slot::{Change, ModuleSlot};
use super::versions::VersionStore;
use super::{component_path, link_module, Compiled, LoadedModule};
use crate::calls;
use crate::capabilities::sql::migrations;
use crate::capabilities::InstanceState;
use crate::deployment::Deployment;
use crate::engine::Engine;

/// Why a new version was not switched in (the serving one is untouched).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

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

/// A prepared version waiting to be switched in, and its component.
type Staged = (Arc<LoadedModule>, Component);

/// Everything needed to bring in new versions of this node's modules.
pub struct Swapper {
    engine: Engine,
    linker: Linker<InstanceState>,
    deployment: Deployment,
    /// Every module's current component, for the contract check.
    components: Mutex<BTreeMap<String, Component>>,
    versions: VersionStore,
    /// Versions prepared and waiting to be switched in, by module.
    staged: Mutex<BTreeMap<String, Staged>>,
    /// One change at a time per node.
    busy: tokio::sync::Mutex<()>,
}

impl Swapper {
    pub(super) fn new(
        engine: Engine,
        linker: Linker<InstanceState>,
        deployment: Deployment,
        components: BTreeMap<String, Component>,
        versions: VersionStore,
    ) -> Swapper {
        Swapper {
            engine,
            linker,
            deployment,
            components: Mutex::new(components),
            versions,
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
            return Err(Refused(format!(
                "weight {weight} is not a percentage (0-100)"
            )));
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
        let (module, component) = self.prepare(slot, source, migrations).await?;
        let version = module.version.clone();
        self.lock_staged()
            .insert(slot.name.clone(), (module, component));
        Ok(version)
    }

    /// Drops a staged version of `slot`'s module (another node refused its own).
    pub fn unstage(&self, slot: &ModuleSlot) {
        self.lock_staged().remove(&slot.name);
    }

    /// Switches the staged version of `slot`'s module in, as `how` says.
    pub async fn commit(&self, slot: &ModuleSlot, how: Switch) -> Result<Change, Refused> {
        let _busy = self.busy.lock().await;
        let Some((module, component)) = self.lock_staged().remove(&slot.name) else {
            return Err(Refused(format!(
                "no new version of {} is staged on this node",
                slot.name
            )));
        };
        let old = slot.serving();
        match how {
            Switch::Swap => {
                let switching = std::time::Instant::now();
                let change = slot.swap(module.clone());
                let switch_ns = switching.elapsed().as_nanos() as u64;
                self.adopt(&slot.name, component);
                self.remember(&slot.name, &module).await;
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
        let change = slot.promote().map_err(Refused)?;
        let serving = slot.serving();
        self.adopt(&slot.name, serving.instance_pre.component().clone());
        self.remember(&slot.name, &serving).await;
        tracing::info!(module = %slot.name, serving = %change.serving, "canary promoted");
        Ok(change)
    }

    /// Drops `slot`'s canary, or goes back to the version before the last swap.
    pub async fn rollback(&self, slot: &ModuleSlot) -> Result<Change, Refused> {
        let _busy = self.busy.lock().await;
        let change = slot.rollback().map_err(Refused)?;
        let serving = slot.serving();
        self.adopt(&slot.name, serving.instance_pre.component().clone());
        self.remember(&slot.name, &serving).await;
        crate::telemetry::metrics::metrics().rollback(&slot.name, "operator");
        tracing::info!(module = %slot.name, serving = %change.serving, replaced = ?change.replaced, "rolled back");
        Ok(change)
    }

    /// Loads, checks, links and migrates a new version, without serving it.
    async fn prepare(
        &self,
        slot: &ModuleSlot,
        source: &Path,
        migrations: Option<&Path>,
    ) -> Result<(Arc<LoadedModule>, Component), Refused> {
        let name = &slot.name;
        let spec = self
            .deployment
            .modules
            .get(name)
            .ok_or_else(|| Refused(format!("module {name} is not in the deployment")))?;
        let serving = slot.serving();
        if let Some(reason) = serving.broken.get() {
            return Err(Refused(format!(
                "module {name} did not start ({reason}); fix that and restart it first"
            )));
        }
        let kept = self
            .versions
            .keep(source)
            .map_err(|e| Refused(format!("{e:#}")))?;
        let engine = self.engine.clone();
        let path = kept.clone();
        let started = Instant::now();
        let shown = source.display().to_string();
        let loaded = match tokio::task::spawn_blocking(move || engine.load(&path)).await {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(error)) => return Err(Refused(format!("{shown}: {error:#}"))),
            Err(error) => return Err(Refused(format!("compiling {shown}: {error}"))),
        };
        if loaded.digest == serving.digest {
            return Err(Refused(format!(
                "{} is version {}, which module {name} already serves",
                source.display(),
                serving.version
            )));
        }
        let component = loaded.component.clone();

        let mut components = self.lock_components().clone();
        components.insert(name.clone(), component.clone());
        if let Err(errors) = calls::check(self.engine.wasmtime(), &self.deployment, &components) {
            let problems: Vec<String> = errors
                .into_iter()
                .map(|e| format!("module `{}`: {}", e.module, e.problem))
                .collect();
            return Err(Refused(format!(
                "the new version of {name} breaks the deployment's contracts:\n{}",
                problems.join("\n")
            )));
        }
        let compiled = Compiled {
            path: kept,
            loaded,
            started,
        };
        let module = link_module(&self.linker, spec, &compiled, Some(&serving))
            .map_err(|e| Refused(format!("{e:#}")))?;

        if let Some(database) = serving.database.get() {
            let dir: Option<PathBuf> = migrations
                .map(Path::to_path_buf)
                .or_else(|| spec.database.as_ref().and_then(|db| db.migrations.clone()));
            if let Some(dir) = dir {
                let applied = match migrations::apply(database, &dir).await {
                    Ok(applied) => applied,
                    Err(error) => {
                        return Err(Refused(format!("migrating {name}'s database: {error:#}")))
                    }
                };
                if applied > 0 {
                    tracing::info!(module = %name, applied, dir = %dir.display(), "migrations applied for the new version");
                }
            }
        }
        Ok((Arc::new(module), component))
    }

    /// Makes `component` module `name`'s in the contract check from now on.
    fn adopt(&self, name: &str, component: Component) {
        self.lock_components().insert(name.to_string(), component);
    }

    /// Remembers `module` as `name`'s serving version across restarts.
    /// The record is written (hash, write, fsync) on a blocking thread: it must not stall
    /// the requests served by this async thread.
    async fn remember(&self, name: &str, module: &LoadedModule) {
        let base = self
            .deployment
            .modules
            .get(name)
            .context("not in the deployment")
            .and_then(component_path);
        let (versions, module_name, source) = (
            self.versions.clone(),
            name.to_string(),
            module.source.clone(),
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

    /// The node's store of swapped-in components.
    pub fn versions(&self) -> &VersionStore {
        &self.versions
    }

    fn lock_staged(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Staged>> {
        self.staged.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_components(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Component>> {
        self.components.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Logs when the last request or call still running on a replaced version has
/// finished (the slot keeps the version itself for `rollback`).
fn watch_drain(module: &str, old: std::sync::Weak<LoadedModule>) {
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
