//! What the host gives a module instance, and nothing more.
//!
//! A capability is everything a module can get from the host beyond its own memory:
//! WASI, `wasi:http`, its database, events, calls to other modules, a key-value store,
//! configuration. Each is one self-contained piece, after Spin's factors: one folder
//! here (or, for calls to other modules, in the calls layer above), implementing
//! [`Capability`], registered by one line in [`Capabilities::standard`]. Its lifecycle:
//!
//! 1. **link** once into the shared linker: its WIT binding ([`Capability::link`]);
//! 2. **configure** per module version: check the version's imports and exports
//!    against the module's grants in the deployment — a module that imports the
//!    capability without a grant is a load error — and keep what each instance will
//!    need ([`Capability::check`] for checks across the whole deployment,
//!    [`Capability::configure`] for one version);
//! 3. **open** per module: its database, tables, buckets ([`Capability::open`]), and
//!    bring them up to each new version before it serves ([`Capability::upgrade`]);
//! 4. **prepare** per instance: the slice of store state that instance may use, and
//!    nothing more ([`Capability::prepare`]);
//! 5. **start / stop** its background work with the node ([`Capability::start`]).
//!
//! Deny by default: a capability prepares nothing for a module the deployment did not
//! grant it to, and its host functions then refuse. The registry, the node and the
//! swap code drive this lifecycle for every capability alike and name none of them;
//! a capability's settings in the deployment file are its own ([`Capability::validate`]).

pub mod config;
pub mod events;
pub mod http;
pub mod keyvalue;
pub mod runner;
pub mod sql;
pub mod state;
pub mod wasi;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Component, InstancePre, Linker};

use crate::deployment::{ConfigError, Deployment, ModuleSpec};
use crate::runtime::BoxFuture;
pub use runner::{InstanceWork, ModuleRunner, WorkFailed};
pub use state::{Hop, InstanceState, Slices, StateMap};

/// One host capability and its lifecycle. Every step has a default that does
/// nothing: a capability implements the steps it needs.
pub trait Capability: Send + Sync + 'static {
    /// Its name, for logs and errors (`modhost:sql`).
    fn name(&self) -> &'static str;

    /// The keys of a `[modules.NAME]` section this capability owns, beyond the host's
    /// own (module settings such as `keyvalue = …`).
    fn module_keys(&self) -> &'static [&'static str] {
        &[]
    }

    /// The top-level sections of the deployment file this capability owns.
    fn sections(&self) -> &'static [&'static str] {
        &[]
    }

    /// Validates this capability's settings in `deployment`: every problem, each
    /// naming the file, the key and what is wrong. Run before anything loads.
    fn validate(&self, deployment: &Deployment) -> Vec<ConfigError> {
        let _ = deployment;
        Vec::new()
    }

    /// 1. Links the capability's host functions into `linker`, once. `components`
    ///    are the deployment's components as they serve (a capability that links
    ///    against other modules — calls — needs them).
    fn link(
        &self,
        linker: &mut Linker<InstanceState>,
        components: &Components<'_>,
    ) -> anyhow::Result<()> {
        let _ = (linker, components);
        Ok(())
    }

    /// 1. Links what the capability serves to WASI 0.3 (P3) modules into `linker`, the
    ///    concurrent engine's, once, when the first one loads. WASI 0.3 modules get
    ///    WASI and `wasi:http` only: a capability that does not serve them links nothing.
    fn link_concurrent(&self, linker: &mut Linker<InstanceState>) -> anyhow::Result<()> {
        let _ = linker;
        Ok(())
    }

    /// 2. Checks the deployment's components together (at start, and on a swap with
    ///    the new version in place): problems that concern several modules at once.
    fn check(&self, components: &Components<'_>) -> Vec<ModuleProblem> {
        let _ = components;
        Vec::new()
    }

    /// 2. Configures one version of one module: refuses it (with the module, key and
    ///    problem in the error) when its imports or exports do not match its grants,
    ///    and keeps in `state` what its instances need of this version.
    fn configure(&self, version: &VersionContext<'_>, state: &mut StateMap) -> anyhow::Result<()> {
        let _ = (version, state);
        Ok(())
    }

    /// 3. Opens what this capability keeps for `module` (once, when the node starts),
    ///    into `state`, which holds what the capabilities registered before it opened.
    fn open<'a>(
        &'a self,
        module: OpenContext<'a>,
        state: &'a mut StateMap,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        let _ = (module, state);
        Box::pin(async { Ok(()) })
    }

    /// 3. The files that hold `module`'s data on this node and move with it when it
    ///    moves to another node (a SQLite file), if this capability keeps any there.
    ///    What another node reaches too (a Postgres schema) is no such file.
    fn data_files(&self, module: OpenContext<'_>) -> Vec<std::path::PathBuf> {
        let _ = module;
        Vec::new()
    }

    /// 3. Refuses when what `module` would open outside this node's data files (a
    ///    Postgres schema) exists already: a module moving onto a database there
    ///    ([`Self::discard`] on failure) must start from nothing of anyone's.
    fn check_unused<'a>(&'a self, module: OpenContext<'a>) -> BoxFuture<'a, anyhow::Result<()>> {
        let _ = module;
        Box::pin(async { Ok(()) })
    }

    /// 3. Removes what opening `module` made outside this node's data files (its
    ///    Postgres schemas, with what was carried into them), after a move onto it —
    ///    which found it unused ([`Self::check_unused`]) — was called off.
    fn discard<'a>(&'a self, module: OpenContext<'a>) -> BoxFuture<'a, anyhow::Result<()>> {
        let _ = module;
        Box::pin(async { Ok(()) })
    }

    /// 3. Settles `module`'s data files for a byte copy: with its work `held`,
    ///    nothing may be left in a journal beside them; while it serves, as much as
    ///    goes without waiting for its writers (so that the copy made then is close).
    ///    Called with the module open (`state`).
    fn settle<'a>(
        &'a self,
        module: OpenContext<'a>,
        state: &'a StateMap,
        held: bool,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        let _ = (module, state, held);
        Box::pin(async { Ok(()) })
    }

    /// 3. What `file`, one of [`Self::data_files`] (or a copy of it), holds, counted:
    ///    rows by table, say — compared on both nodes after a copy. Empty when this
    ///    capability counts nothing.
    fn count<'a>(&'a self, file: &'a Path) -> BoxFuture<'a, anyhow::Result<BTreeMap<String, u64>>> {
        let _ = file;
        Box::pin(async { Ok(BTreeMap::new()) })
    }

    /// 3. Carries what this capability keeps of `module` in its SQLite file of before
    ///    (`from`, opened) into its database on Postgres, inside `into` — the one
    ///    transaction that carries the module's rows too ([`sql::carry`]) — and counts
    ///    what it carried, by table. Called when a module whose `database` became
    ///    Postgres opens with its SQLite file still on this node; `state` is what the
    ///    capabilities opened for it on Postgres. An error carries nothing at all.
    fn carry<'a>(
        &'a self,
        module: OpenContext<'a>,
        state: &'a StateMap,
        from: &'a sql::Database,
        into: &'a mut sql::Transaction,
    ) -> BoxFuture<'a, anyhow::Result<BTreeMap<String, u64>>> {
        let _ = (module, state, from, into);
        Box::pin(async { Ok(BTreeMap::new()) })
    }

    /// 3. Brings what [`Self::open`] made up to a new version of the module before it
    ///    serves (its database migrations); an error refuses the version.
    fn upgrade<'a>(
        &'a self,
        version: UpgradeContext<'a>,
        state: &'a StateMap,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        let _ = (version, state);
        Box::pin(async { Ok(()) })
    }

    /// 4. Prepares one instance: puts in `instance` the slice of state it may use,
    ///    from the module's `module` state and its version's `version` state.
    fn prepare(&self, instance: &mut InstanceState, module: &StateMap, version: &StateMap) {
        let _ = (instance, module, version);
    }

    /// 5. Starts this capability's background work for the node's modules, if it has
    ///    any for them — when the node starts, and again for the modules a new
    ///    placement brings to it; [`Service::stop_module`] stops one module's part.
    fn start(&self, node: &StartContext<'_>) -> Option<Box<dyn Service>> {
        let _ = node;
        None
    }
}

/// What [`Capability::link`] and [`Capability::check`] see: the deployment and every
/// module's component.
pub struct Components<'a> {
    /// The engine the components were compiled with.
    pub engine: &'a wasmtime::Engine,
    /// The deployment.
    pub deployment: &'a Deployment,
    /// Every module's component, by module name: as it serves, or, when a swap is
    /// checked, with the new version in place.
    pub components: &'a BTreeMap<String, Component>,
}

/// A problem a capability found with one module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleProblem {
    /// The module.
    pub module: String,
    /// What is wrong, in words.
    pub problem: String,
}

/// What [`Capability::configure`] sees: one version of one module.
pub struct VersionContext<'a> {
    /// The engine.
    pub engine: &'a wasmtime::Engine,
    /// The deployment.
    pub deployment: &'a Deployment,
    /// The module as deployed.
    pub spec: &'a ModuleSpec,
    /// The version's component file.
    pub path: &'a Path,
    /// The version's component.
    pub component: &'a Component,
    /// The version, linked.
    pub instance_pre: &'a InstancePre<InstanceState>,
}

impl VersionContext<'_> {
    /// Whether the version imports an interface whose name starts with `prefix`.
    pub fn imports(&self, prefix: &str) -> bool {
        self.component
            .component_type()
            .imports(self.engine)
            .any(|(name, _)| name.starts_with(prefix))
    }
}

/// What [`Capability::open`] sees: one module of the node.
#[derive(Clone, Copy)]
pub struct OpenContext<'a> {
    /// The deployment.
    pub deployment: &'a Deployment,
    /// The module as deployed.
    pub spec: &'a ModuleSpec,
}

/// What [`Capability::upgrade`] sees: a new version about to serve.
#[derive(Clone, Copy)]
pub struct UpgradeContext<'a> {
    /// The deployment.
    pub deployment: &'a Deployment,
    /// The module as deployed.
    pub spec: &'a ModuleSpec,
    /// The new version's migrations directory, when the operator gave one with it
    /// (otherwise the module's own).
    pub migrations: Option<&'a Path>,
}

/// What [`Capability::start`] sees: the node's modules.
pub struct StartContext<'a> {
    /// The deployment.
    pub deployment: &'a Deployment,
    /// The modules starting: every module this node runs, when the node starts; the
    /// modules a new placement brings, when it changes.
    pub modules: &'a [RunningModule],
}

/// One module of the node, as background work sees it.
#[derive(Clone)]
pub struct RunningModule {
    /// The module's name.
    pub name: String,
    /// What the capabilities opened for it.
    pub state: StateMap,
    /// Runs work in its instances.
    pub runner: Arc<dyn ModuleRunner>,
    /// Why it does not serve, if its start failed.
    pub not_started: Option<String>,
}

/// Background work a capability started: stopped with the node.
pub trait Service: Send {
    /// Stops the work, letting what is in hand finish for at most `grace`.
    fn stop(self: Box<Self>, grace: Duration) -> BoxFuture<'static, ()>;

    /// Stops the work for `module` alone, which no longer runs on this node (a new
    /// placement moved it), letting what is in hand finish for at most `grace`; the
    /// other modules' work goes on. Nothing, for a module the service does not serve.
    fn stop_module(&self, module: &str, grace: Duration) -> BoxFuture<'static, ()> {
        let _ = (module, grace);
        Box::pin(async {})
    }
}

/// The capabilities of a node, in the order their lifecycle steps run.
#[derive(Clone)]
pub struct Capabilities(Arc<[Arc<dyn Capability>]>);

impl Capabilities {
    /// The host's own capabilities. Registering a new one is one line here.
    pub fn standard() -> Vec<Arc<dyn Capability>> {
        vec![
            Arc::new(wasi::Wasi),
            Arc::new(http::Http),
            Arc::new(sql::Sql),
            Arc::new(events::Events),
            Arc::new(keyvalue::KeyValue::default()),
            Arc::new(config::Config),
        ]
    }

    /// A node's capabilities: `list`, in that order.
    pub fn new(list: Vec<Arc<dyn Capability>>) -> Capabilities {
        Capabilities(list.into())
    }

    /// Every capability, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Capability>> {
        self.0.iter()
    }

    /// The module keys and sections the capabilities own in the deployment file.
    pub fn settings(&self) -> crate::deployment::settings::Owned {
        let mut owned = crate::deployment::settings::Owned::default();
        for capability in self.iter() {
            owned.module_keys.extend(capability.module_keys());
            owned.sections.extend(capability.sections());
        }
        owned
    }

    /// Every capability's problems with `deployment`'s settings.
    pub fn validate(&self, deployment: &Deployment) -> Vec<ConfigError> {
        self.iter()
            .flat_map(|capability| capability.validate(deployment))
            .collect()
    }

    /// Links every capability into `linker`.
    pub fn link(
        &self,
        linker: &mut Linker<InstanceState>,
        components: &Components<'_>,
    ) -> anyhow::Result<()> {
        for capability in self.iter() {
            capability.link(linker, components).map_err(|error| {
                error.context(format!("linking the host capability {}", capability.name()))
            })?;
        }
        Ok(())
    }

    /// Links every capability that serves WASI 0.3 modules into `linker`.
    pub fn link_concurrent(&self, linker: &mut Linker<InstanceState>) -> anyhow::Result<()> {
        for capability in self.iter() {
            capability.link_concurrent(linker).map_err(|error| {
                error.context(format!("linking the host capability {}", capability.name()))
            })?;
        }
        Ok(())
    }

    /// Every capability's problems with `components` taken together.
    pub fn check(&self, components: &Components<'_>) -> Vec<ModuleProblem> {
        self.iter()
            .flat_map(|capability| capability.check(components))
            .collect()
    }

    /// Configures one version with every capability; its state, or the first refusal.
    pub fn configure(&self, version: &VersionContext<'_>) -> anyhow::Result<StateMap> {
        let mut state = StateMap::default();
        for capability in self.iter() {
            capability.configure(version, &mut state)?;
        }
        Ok(state)
    }

    /// Opens one module with every capability in turn (and carries its data over, if
    /// its database changed from SQLite to Postgres: [`sql::carry`]).
    pub async fn open(&self, module: OpenContext<'_>) -> anyhow::Result<StateMap> {
        let mut state = StateMap::default();
        for capability in self.iter() {
            capability.open(module, &mut state).await?;
        }
        // Its data, if the module left a SQLite file here for Postgres.
        sql::carry::from_sqlite(self, module, &state).await?;
        Ok(state)
    }

    /// Refuses when any capability's data of `module` outside this node's files is in
    /// use already ([`Capability::check_unused`]).
    pub async fn check_unused(&self, module: OpenContext<'_>) -> anyhow::Result<()> {
        for capability in self.iter() {
            capability.check_unused(module).await?;
        }
        Ok(())
    }

    /// Removes what every capability made of `module` outside this node's files
    /// ([`Capability::discard`]); the first error, once each was asked.
    pub async fn discard(&self, module: OpenContext<'_>) -> anyhow::Result<()> {
        let mut failed = Ok(());
        for capability in self.iter() {
            if let Err(error) = capability.discard(module).await {
                if failed.is_ok() {
                    failed = Err(error);
                }
            }
        }
        failed
    }

    /// Every capability's data files of `module` on this node.
    pub fn data_files(&self, module: OpenContext<'_>) -> Vec<std::path::PathBuf> {
        self.iter()
            .flat_map(|capability| capability.data_files(module))
            .collect()
    }

    /// Settles `module`'s data files with every capability (see
    /// [`Capability::settle`]).
    pub async fn settle(
        &self,
        module: OpenContext<'_>,
        state: &StateMap,
        held: bool,
    ) -> anyhow::Result<()> {
        for capability in self.iter() {
            capability.settle(module, state, held).await?;
        }
        Ok(())
    }

    /// What `file` holds, counted by the capability that keeps it.
    pub async fn count(&self, file: &Path) -> anyhow::Result<BTreeMap<String, u64>> {
        let mut counted = BTreeMap::new();
        for capability in self.iter() {
            counted.extend(capability.count(file).await?);
        }
        Ok(counted)
    }

    /// Brings every capability's state of a module up to a new version.
    pub async fn upgrade(
        &self,
        version: UpgradeContext<'_>,
        state: &StateMap,
    ) -> anyhow::Result<()> {
        for capability in self.iter() {
            capability.upgrade(version, state).await?;
        }
        Ok(())
    }

    /// Prepares one instance with every capability.
    pub fn prepare(&self, instance: &mut InstanceState, module: &StateMap, version: &StateMap) {
        for capability in self.iter() {
            capability.prepare(instance, module, version);
        }
    }

    /// Starts every capability's background work.
    pub fn start(&self, node: &StartContext<'_>) -> Vec<Box<dyn Service>> {
        self.iter()
            .filter_map(|capability| capability.start(node))
            .collect()
    }
}
