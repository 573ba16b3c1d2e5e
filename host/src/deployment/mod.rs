//! The deployment file: one TOML file that says which modules run, where their
//! components come from, which routes they own and what limits they run under.
//!
//! Loading is two passes. Serde turns the text into typed sections (unknown keys,
//! wrong types, bad sizes and durations fail here, with the line and the key path);
//! then [`Deployment::load`] checks what types cannot (module names, component paths,
//! routes, limits). Every problem is reported, not just the first, as a
//! [`ConfigError`] naming the file, the key and what is wrong.

//!
//! The file's syntax is split by what it configures: [`gateway`], [`modules`],
//! [`database`], [`events`], [`placement`], [`rollout`]; [`settings`] keeps what
//! capabilities own, and [`errors`] how problems are reported.

pub mod access;
mod addresses;
mod amend;
pub mod build;
pub mod database;
pub mod errors;
pub mod events;
mod file;
pub mod gateway;
pub mod javascript;
pub mod kubernetes;
pub mod modules;
pub mod overlay;
pub mod placement;
pub mod policies;
pub mod python;
mod reload;
pub use amend::{can_write_database, write_database, AmendedDatabase};
pub use reload::write_placement;
pub mod rollout;
pub mod routes;
pub mod settings;
pub mod telemetry;
pub mod units;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use database::{DatabaseBackend, DatabaseSpec, PostgresTls, TlsMode};
pub use errors::{ConfigError, ConfigErrors};
pub use events::{
    EventsBackend, EventsSettings, KafkaSasl, KafkaSecurity, KafkaTls, SaslMechanism,
};
pub use gateway::GatewaySettings;
pub use javascript::JavaScriptPackage;
pub use modules::{ComponentSource, Instances, ModuleLimits, ModuleSpec};
pub use overlay::Origins;
pub use placement::{MeshSettings, NodeAddress, NodeSpec};
pub use python::PythonPackage;
pub use rollout::{AdminSettings, RolloutSettings};
pub use settings::{Owned, Setting};
pub use telemetry::TelemetrySettings;
pub use units::{ByteSize, Timeout};

use database::{check_postgres_names, migrations_dir, parse_database};
use errors::Problems;
use file::{DeploymentFile, Unknown};
use gateway::check_gateway;
use modules::{check_grants, check_limits, is_valid_module_name, resolve_component};

/// A validated deployment: what a node needs to know to serve.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The file it was read from.
    pub file: PathBuf,
    /// Which file wrote which section: `file`, and the file it extends, if any.
    pub origins: Origins,
    /// `[app] name`.
    pub app_name: String,
    /// Where the host keeps its state (compile cache; later, module databases).
    pub data_dir: PathBuf,
    /// `[gateway]`: the public HTTP listener and its limits.
    pub gateway: GatewaySettings,
    /// Each route's checked rules (`[gateway.routes]`, with `[gateway.issuers]`
    /// loaded), by normalised route; routes without rules are absent.
    pub access: BTreeMap<String, access::RouteAccess>,
    /// The modules, by name.
    pub modules: BTreeMap<String, ModuleSpec>,
    /// `[events]`: the bus between modules and how delivery retries.
    pub events: EventsSettings,
    /// `[nodes]`: the processes of a split deployment (empty: one node runs everything).
    pub nodes: BTreeMap<String, NodeSpec>,
    /// `[placement]`: module → the nodes that run it (empty for a single node).
    pub placement: BTreeMap<String, Vec<String>>,
    /// `[mesh]`: node identities and peer failure handling, for split deployments.
    pub mesh: Option<MeshSettings>,
    /// The node this process is (`--node`), in a split deployment.
    pub node: Option<String>,
    /// `[rollout]`: how canaries are judged.
    pub rollout: RolloutSettings,
    /// `[admin]`: the operators' listener, when the deployment has one.
    pub admin: Option<AdminSettings>,
    /// `[policies]`: how calls into each module (and along each edge) are made.
    pub policies: policies::Policies,
    /// `[telemetry]`: where the node's spans are exported, if anywhere.
    pub telemetry: TelemetrySettings,
    /// Top-level sections owned by capabilities, as written.
    pub sections: BTreeMap<String, Setting>,
    /// Every top-level section as written (the base's and the overlay's combined): what
    /// [`Deployment::reload_problems`] compares.
    written: Arc<toml::Table>,
}

impl Deployment {
    /// Makes this process node `node` of a split deployment: it then runs only the
    /// modules placed on it, its gateway listens on the node's `listen`. A deployment
    /// without `[nodes]` takes no node name; one with them requires one.
    pub fn select_node(&mut self, node: Option<&str>) -> Result<(), String> {
        match (node, self.nodes.is_empty()) {
            (None, true) => Ok(()),
            (Some(name), true) => Err(format!(
                "--node {name}: {} has no [nodes]; it runs as one node without --node",
                self.file.display()
            )),
            (None, false) => Err(format!(
                "{} places modules on nodes {}: say which this is with --node NAME",
                self.file.display(),
                self.nodes.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
            (Some(name), false) => match self.nodes.get(name) {
                Some(spec) => {
                    self.gateway.listen = spec.listen.bind();
                    if let Some(admin) = &mut self.admin {
                        admin.listen = spec.admin.as_ref().map(NodeAddress::bind);
                    }
                    self.node = Some(name.to_string());
                    Ok(())
                }
                None => Err(format!(
                    "--node {name}: {} has no [nodes.{name}]; its nodes are {}",
                    self.file.display(),
                    self.nodes.keys().cloned().collect::<Vec<_>>().join(", ")
                )),
            },
        }
    }

    /// Whether module `module` runs in this process.
    pub fn is_local(&self, module: &str) -> bool {
        match &self.node {
            None => self.modules.contains_key(module),
            Some(node) => self
                .placement
                .get(module)
                .is_some_and(|nodes| nodes.iter().any(|n| n == node)),
        }
    }

    /// The nodes that run module `module` (none in a single-node deployment).
    pub fn nodes_of(&self, module: &str) -> &[String] {
        self.placement.get(module).map_or(&[], Vec::as_slice)
    }

    /// The modules this process runs.
    pub fn local_modules(&self) -> impl Iterator<Item = &ModuleSpec> {
        self.modules.values().filter(|m| self.is_local(&m.name))
    }

    /// Puts `component` (a `.wasm`/`.cwasm` file or a source directory, relative to
    /// `base`) in place of module `module`'s component, as `modhost check --module`
    /// does to check a new build against the rest of the deployment. Its migrations
    /// stay those the deployment names.
    pub fn replace_component(
        &mut self,
        module: &str,
        base: &Path,
        component: &str,
    ) -> Result<(), String> {
        let spec = self.modules.get_mut(module).ok_or_else(|| {
            format!("--module {module}={component}: the deployment has no module `{module}`")
        })?;
        spec.component = resolve_component(base, component)
            .map_err(|problem| format!("--module {module}={component}: {problem}"))?;
        Ok(())
    }
}

impl Deployment {
    /// Reads and validates the deployment file at `path`, with no capability
    /// settings (see [`Self::load_with`]).
    pub fn load(path: &Path) -> Result<Deployment, ConfigErrors> {
        Deployment::load_with(path, &Owned::default())
    }

    /// Reads and validates the deployment file at `path`; the capabilities own the
    /// keys and sections in `owned`.
    pub fn load_with(path: &Path, owned: &Owned) -> Result<Deployment, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line: None,
                key: String::new(),
                problem: format!("cannot read the deployment file: {err}"),
            }])
        })?;
        Deployment::parse_with(path, &text, owned)
    }

    /// Validates deployment text as if read from `path` (relative paths inside it
    /// resolve against `path`'s directory), with no capability settings.
    pub fn parse(path: &Path, text: &str) -> Result<Deployment, ConfigErrors> {
        Deployment::parse_with(path, text, &Owned::default())
    }

    /// Validates deployment text as if read from `path`; the capabilities own the
    /// keys and sections in `owned` (they validate them themselves).
    pub fn parse_with(path: &Path, text: &str, owned: &Owned) -> Result<Deployment, ConfigErrors> {
        let overlay::Sources { mut file, texts } = overlay::read(path, text, parse_toml)?;
        let origins = texts.origins.clone();
        let written = Arc::new(texts.sections());
        let mut problems = Problems::of(origins.clone());
        let Some(app) = file.app.take() else {
            problems.add("", "missing field `app`");
            return Err(ConfigErrors(problems.into_errors()));
        };
        let sections = claim(
            "",
            std::mem::take(&mut file.unknown),
            file::SECTIONS,
            &owned.sections,
            &texts,
            &mut problems,
        );
        // Modules are always the base's (`overlay`): their paths are relative to it.
        let base = origins.dir_of("modules");

        if app.name.trim().is_empty() {
            problems.add("app.name", "must not be empty");
        }
        let data_dir = origins
            .dir_of("app")
            .join(app.data_dir.unwrap_or_else(|| PathBuf::from(".modhost")));
        check_gateway(&file.gateway, &mut problems);
        let events = file
            .events
            .settings(origins.dir_of("events"), &mut problems);
        let rollout = file.rollout.settings(&mut problems);
        let telemetry = file.telemetry.settings(&mut problems);
        let admin = file.admin.and_then(|admin| admin.settings(&mut problems));

        if file.modules.is_empty() {
            problems.add(
                "modules",
                "a deployment needs at least one [modules.NAME] section",
            );
        }
        let mut modules = BTreeMap::new();
        for (name, section) in file.modules {
            let key = format!("modules.{name}");
            let refused_before = problems.errors.len();
            let settings = claim(
                &format!("{key}."),
                section.unknown,
                file::MODULE_KEYS,
                &owned.module_keys,
                &texts,
                &mut problems,
            );
            let misspelt = problems.errors.len() > refused_before;
            if !is_valid_module_name(&name) {
                problems.add(
                    &key,
                    "a module name is 1-63 lower-case letters, digits, '-' or '_', starting with a letter",
                );
            }
            let component = match &section.component {
                Some(written) => match resolve_component(base, written) {
                    Ok(component) => Some(component),
                    Err(problem) => {
                        problems.add(&format!("{key}.component"), &problem);
                        None
                    }
                },
                // An unknown key in the section is most likely `component` misspelt:
                // that is the one thing to say.
                None if misspelt => None,
                None => {
                    problems.add(&key, "missing field `component`");
                    None
                }
            };
            check_limits(&key, &section.limits, &mut problems);
            let database = section.database.as_ref().and_then(|value| {
                let migrations = migrations_dir(
                    base,
                    &key,
                    section.migrations.as_deref(),
                    &component,
                    &mut problems,
                );
                parse_database(base, &key, &name, value, migrations, &mut problems)
            });
            if section.database.is_none() && section.migrations.is_some() {
                problems.add(
                    &format!("{key}.migrations"),
                    "migrations need a database: add `database = \"sqlite\"` (or postgres)",
                );
            }
            let mut normalised_routes = Vec::new();
            for (i, route) in section.routes.iter().enumerate() {
                match routes::normalise(route) {
                    Ok(route) => normalised_routes.push(route),
                    Err(problem) => problems.add(&format!("{key}.routes[{i}]"), &problem),
                }
            }
            if let Some(component) = component {
                modules.insert(
                    name.clone(),
                    ModuleSpec {
                        name,
                        component,
                        routes: normalised_routes,
                        calls: section.calls,
                        limits: section.limits,
                        instances: section.instances,
                        database,
                        publishes: section.publishes,
                        subscribes: section.subscribes,
                        settings,
                    },
                );
            }
        }
        for (key, problem) in routes::conflicts(modules.values()) {
            problems.add(&key, &problem);
        }
        check_grants(&modules, &mut problems);
        let policies = policies::check_policies(file.policies, &modules, &mut problems);
        let access = access::check_access(
            &file.gateway.issuers,
            &file.gateway.routes,
            origins.dir_of("gateway"),
            &modules,
            &mut problems,
        );
        check_postgres_names(&modules, &mut problems);
        events::check_topics(&modules, &mut problems);
        let topology = placement::topology(
            origins.dir_of("mesh"),
            file.nodes,
            file.placement,
            file.mesh,
            &modules,
            &events.backend,
            &mut problems,
        );
        build::check_built_in(&modules, &events.backend, &topology.nodes, &mut problems);

        let admin_listen = admin.as_ref().and_then(|admin| admin.listen);
        for (key, problem) in addresses::conflicts(
            file.gateway.listen,
            admin_listen,
            &topology.nodes,
            &events.backend,
        ) {
            problems.add(&key, &problem);
        }

        if problems.errors.is_empty() {
            Ok(Deployment {
                file: path.to_path_buf(),
                origins,
                app_name: app.name,
                data_dir,
                gateway: file.gateway,
                access,
                modules,
                events,
                nodes: topology.nodes,
                placement: topology.placement,
                mesh: topology.mesh,
                node: None,
                rollout,
                admin,
                policies,
                telemetry,
                sections,
                written,
            })
        } else {
            Err(ConfigErrors(problems.errors))
        }
    }
}

/// Keeps the keys of one table (`prefix` names it: `""` for the top level,
/// `"modules.NAME."` for a module) that a capability owns; every other unknown key is a
/// problem on its line (of the file that wrote it, among `texts`).
fn claim(
    prefix: &str,
    unknown: Unknown,
    host: &[&str],
    owned: &BTreeSet<&'static str>,
    texts: &overlay::Texts,
    problems: &mut Problems,
) -> BTreeMap<String, Setting> {
    let mut claimed = BTreeMap::new();
    for (key, value) in unknown {
        let text = texts.text_of(&format!("{prefix}{key}"));
        let line = Some(settings::line_of(text, value.span().start));
        if owned.contains(key.as_str()) {
            claimed.insert(
                key,
                Setting {
                    value: value.into_inner(),
                    line,
                },
            );
        } else {
            let expected = settings::expected(host.iter().copied().chain(owned.iter().copied()));
            problems.at(
                &format!("{prefix}{key}"),
                line,
                &format!("unknown field `{key}`, expected one of {expected}"),
            );
        }
    }
    claimed
}

/// Deserialises the TOML, keeping the key path and line of the first error.
fn parse_toml(path: &Path, text: &str) -> Result<DeploymentFile, ConfigError> {
    let located = |line: Option<usize>, key: String, problem: String| ConfigError {
        file: path.to_path_buf(),
        line,
        key,
        problem,
    };
    let line_of = |span: Option<std::ops::Range<usize>>| {
        span.map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1)
    };
    let deserializer = toml::de::Deserializer::parse(text).map_err(|err| {
        located(
            line_of(err.span()),
            String::new(),
            err.message().to_string(),
        )
    })?;
    // The path includes an unknown key itself: `modules.users.compnent`.
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let mut key = err.path().to_string();
        if key == "." {
            key.clear();
        }
        let problem = err.inner().message().to_string();
        located(line_of(err.inner().span()), key, problem)
    })
}

/// The file `written` names, relative to `base`, when it is one; otherwise a problem
/// with `key` (a CA file the deployment names, say).
pub(crate) fn existing_file(
    base: &Path,
    written: &str,
    key: &str,
    problems: &mut Problems,
) -> Option<PathBuf> {
    let path = base.join(written);
    if path.is_file() {
        Some(path)
    } else {
        problems.add(key, &format!("{} is not a file", path.display()));
        None
    }
}

/// `$NAME` (the whole value) reads the environment variable NAME: connection URLs with
/// passwords need not be written into the deployment file. `Ok(None)` while
/// [`declaring_environment`] reads the file: the value is the nodes' to read, and
/// their check of its form.
pub(crate) fn expand_env(written: &str) -> Result<Option<String>, String> {
    let Some(name) = written.strip_prefix('$') else {
        return Ok(Some(written.to_string()));
    };
    let declared = DECLARING.with_borrow_mut(|declaring| {
        declaring
            .as_mut()
            .map(|names| names.insert(name.to_string()))
            .is_some()
    });
    if declared {
        return Ok(None);
    }
    std::env::var(name)
        .map(Some)
        .map_err(|_| format!("environment variable {name} is not set"))
}

thread_local! {
    /// The `$NAME`s read while [`declaring_environment`] runs on this thread.
    static DECLARING: std::cell::RefCell<Option<BTreeSet<String>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `read` (reading a deployment) without this process's environment: every
/// `$NAME` value is recorded rather than read, and taken as written. Returns what
/// `read` returned and the names: the environment the deployment's nodes need. What
/// `modhost manifests` reads a file with, on a machine that does not hold the
/// cluster's secrets.
pub fn declaring_environment<T>(read: impl FnOnce() -> T) -> (T, BTreeSet<String>) {
    DECLARING.set(Some(BTreeSet::new()));
    let result = read();
    let names = DECLARING.take().unwrap_or_default();
    (result, names)
}

#[cfg(test)]
mod tests;
