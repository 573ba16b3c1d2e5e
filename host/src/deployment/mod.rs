//! The deployment file: one TOML file that says which modules run, where their
//! components come from, which routes they own and what limits they run under.
//!
//! Loading is two passes. Serde turns the text into typed sections (unknown keys,
//! wrong types, bad sizes and durations fail here, with the line and the key path);
//! then [`Deployment::load`] checks what types cannot (module names, component paths,
//! routes, limits). Every problem is reported, not just the first, as a
//! [`ConfigError`] naming the file, the key and what is wrong.

pub mod events;
pub mod placement;
pub mod rollout;
pub mod routes;
pub mod units;

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use events::{EventsBackend, EventsSettings};
pub use placement::{MeshSettings, NodeSpec};
pub use rollout::{AdminSettings, RolloutSettings};
pub use units::{ByteSize, Timeout};

/// One problem in a deployment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The deployment file.
    pub file: PathBuf,
    /// The line of the offending text, when the parser knows it.
    pub line: Option<usize>,
    /// The dotted key path, e.g. `modules.users.limits.memory`.
    pub key: String,
    /// What is wrong, in words.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.problem)
        } else {
            write!(f, ": {}: {}", self.key, self.problem)
        }
    }
}

/// Every problem found in a deployment file (at least one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A validated deployment: what a node needs to know to serve.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The file it was read from.
    pub file: PathBuf,
    /// `[app] name`.
    pub app_name: String,
    /// Where the host keeps its state (compile cache; later, module databases).
    pub data_dir: PathBuf,
    /// `[gateway]`: the public HTTP listener and its limits.
    pub gateway: GatewaySettings,
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
                    self.gateway.listen = spec.listen;
                    if let Some(admin) = &mut self.admin {
                        admin.listen = spec.admin;
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
}

/// `[gateway]`: the public HTTP listener and the limits that protect it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySettings {
    /// Address the gateway listens on.
    pub listen: SocketAddr,
    /// Connections served at once; further clients wait in the accept queue.
    pub max_connections: usize,
    /// Largest request head (request line + headers); larger gets 431.
    pub max_header_bytes: ByteSize,
    /// Largest request body; larger gets 413.
    pub max_body: ByteSize,
    /// Time a client has to send a complete request head (stops slowloris).
    pub header_read_timeout: Timeout,
    /// Time from request head to the start of the response, including the body upload.
    pub request_timeout: Timeout,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish.
    pub shutdown_grace: Timeout,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_connections: 10_000,
            max_header_bytes: ByteSize::kib(16),
            max_body: ByteSize::mib(1),
            header_read_timeout: Timeout(Duration::from_secs(10)),
            request_timeout: Timeout(Duration::from_secs(30)),
            shutdown_grace: Timeout(Duration::from_secs(30)),
        }
    }
}

/// One module as deployed.
#[derive(Debug, Clone)]
pub struct ModuleSpec {
    /// The module's name (the key under `[modules]`).
    pub name: String,
    /// Where its component comes from.
    pub component: ComponentSource,
    /// HTTP path prefixes it serves, normalised (no trailing slash).
    pub routes: Vec<String>,
    /// Grants: the modules whose interfaces it may call.
    pub calls: Vec<String>,
    /// Its resource limits.
    pub limits: ModuleLimits,
    /// Whether calls into it get a fresh instance each or reuse warm ones.
    pub instances: Instances,
    /// Its own database, when it has one (`database = …`).
    pub database: Option<DatabaseSpec>,
    /// Grants: the topics it may publish to.
    pub publishes: Vec<String>,
    /// The topics it receives (it exports `modhost:events/subscriber`).
    pub subscribes: Vec<String>,
}

/// `database = "sqlite"` or `database = { postgres = "…", schema, pool, acquire_timeout }`:
/// a module's own database, and the pool that is its bulkhead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseSpec {
    /// Which database, and where.
    pub backend: DatabaseBackend,
    /// Connections the module may hold at once; more statements wait for one.
    pub pool: u32,
    /// How long a statement waits for a free connection before failing with `timeout`.
    pub acquire_timeout: Timeout,
    /// The directory of the module's numbered SQL migrations, if it has one.
    pub migrations: Option<PathBuf>,
}

/// The kinds of database a module may own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseBackend {
    /// Its own SQLite file under the data dir.
    Sqlite,
    /// Its own schema, owned by its own role, in a Postgres database.
    Postgres {
        /// How the host connects as an administrator (to create the role and schema).
        url: String,
        /// The module's schema (default: the module's name, `-` as `_`).
        schema: String,
    },
}

/// Default `database.pool`.
const DEFAULT_POOL: u32 = 8;
/// Accepted range of `database.pool`.
const POOL_RANGE: (u32, u32) = (1, 1000);
/// Default `database.acquire_timeout`.
const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// `instances = "fresh" | "reuse"`: how calls from other modules into a module get an
/// instance of it.
///
/// `fresh` (the default) gives every call a new instance: nothing one call leaves
/// in memory is seen by the next, and a leak ends with its call. `reuse` keeps
/// instances warm between calls, which skips instantiation (the bulk of a call's
/// cost) at the price of isolation between calls: globals, heap and anything cached
/// persist, memory a call leaks stays leaked until the instance reaches its memory
/// limit, and a call may observe what an earlier one left behind. An instance that
/// traps or times out is discarded, never reused. HTTP requests always get a fresh
/// instance.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Instances {
    /// A new instance per call.
    #[default]
    Fresh,
    /// Warm instances, kept between calls.
    Reuse,
}

/// Where a module's component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentSource {
    /// A component binary (`.wasm`), compiled at load (and cached).
    Wasm(PathBuf),
    /// A component precompiled by `modhost compile` (`.cwasm`): no compilation at load.
    Precompiled(PathBuf),
    /// A Rust crate built for `wasm32-wasip2`; `modhost up` builds it.
    Crate {
        /// The crate's directory.
        dir: PathBuf,
        /// The crate's package name.
        package: String,
    },
}

/// `limits = { memory, timeout, concurrency }`: what one module may consume.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ModuleLimits {
    /// Linear memory one instance may grow to.
    pub memory: ByteSize,
    /// Wall-clock deadline for one request or call into the module.
    pub timeout: Timeout,
    /// Requests the module serves at once; more are refused with 503 (a bulkhead).
    pub concurrency: u32,
}

impl Default for ModuleLimits {
    fn default() -> Self {
        ModuleLimits {
            memory: ByteSize::mib(64),
            timeout: Timeout(Duration::from_secs(5)),
            concurrency: 128,
        }
    }
}

/// Accepted range of `limits.memory`: a Rust guest needs about 1 MiB of stack alone;
/// wasm32 addresses at most 4 GiB.
const MEMORY_RANGE: (ByteSize, ByteSize) = (ByteSize::mib(2), ByteSize::mib(4096));
/// Accepted range of `limits.concurrency`.
const CONCURRENCY_RANGE: (u32, u32) = (1, 10_000);
/// Longest `limits.timeout`: a request that needs longer is not a request.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

// ---- the file as written -------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeploymentFile {
    app: AppSection,
    #[serde(default)]
    gateway: GatewaySettings,
    #[serde(default)]
    modules: BTreeMap<String, ModuleSection>,
    #[serde(default)]
    events: events::EventsSection,
    #[serde(default)]
    nodes: BTreeMap<String, placement::NodeSection>,
    #[serde(default)]
    placement: BTreeMap<String, Vec<String>>,
    mesh: Option<placement::MeshSection>,
    #[serde(default)]
    rollout: rollout::RolloutSection,
    admin: Option<rollout::AdminSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppSection {
    name: String,
    data_dir: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModuleSection {
    component: String,
    #[serde(default)]
    routes: Vec<String>,
    #[serde(default)]
    calls: Vec<String>,
    #[serde(default)]
    limits: ModuleLimits,
    #[serde(default)]
    instances: Instances,
    database: Option<toml::Value>,
    migrations: Option<String>,
    #[serde(default)]
    publishes: Vec<String>,
    #[serde(default)]
    subscribes: Vec<String>,
}

impl Deployment {
    /// Reads and validates the deployment file at `path`.
    pub fn load(path: &Path) -> Result<Deployment, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line: None,
                key: String::new(),
                problem: format!("cannot read the deployment file: {err}"),
            }])
        })?;
        Deployment::parse(path, &text)
    }

    /// Validates deployment text as if read from `path` (relative paths inside it
    /// resolve against `path`'s directory).
    pub fn parse(path: &Path, text: &str) -> Result<Deployment, ConfigErrors> {
        let file = parse_toml(path, text).map_err(|error| ConfigErrors(vec![error]))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut problems = Problems {
            file: path.to_path_buf(),
            errors: Vec::new(),
        };

        if file.app.name.trim().is_empty() {
            problems.add("app.name", "must not be empty");
        }
        let data_dir = base.join(
            file.app
                .data_dir
                .unwrap_or_else(|| PathBuf::from(".modhost")),
        );
        check_gateway(&file.gateway, &mut problems);
        let events = file.events.settings(&mut problems);
        let rollout = file.rollout.settings(&mut problems);
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
            if !is_valid_module_name(&name) {
                problems.add(
                    &key,
                    "a module name is 1-63 lower-case letters, digits, '-' or '_', starting with a letter",
                );
            }
            let component = match resolve_component(base, &section.component) {
                Ok(component) => Some(component),
                Err(problem) => {
                    problems.add(&format!("{key}.component"), &problem);
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
                parse_database(&key, &name, value, migrations, &mut problems)
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
                    },
                );
            }
        }
        for (key, problem) in routes::conflicts(modules.values()) {
            problems.add(&key, &problem);
        }
        check_grants(&modules, &mut problems);
        check_postgres_names(&modules, &mut problems);
        events::check_topics(&modules, &mut problems);
        let topology = placement::topology(
            base,
            file.nodes,
            file.placement,
            file.mesh,
            &modules,
            &events.backend,
            &mut problems,
        );

        if problems.errors.is_empty() {
            Ok(Deployment {
                file: path.to_path_buf(),
                app_name: file.app.name,
                data_dir,
                gateway: file.gateway,
                modules,
                events,
                nodes: topology.nodes,
                placement: topology.placement,
                mesh: topology.mesh,
                node: None,
                rollout,
                admin,
            })
        } else {
            Err(ConfigErrors(problems.errors))
        }
    }
}

/// Collects problems for one file.
pub(crate) struct Problems {
    file: PathBuf,
    errors: Vec<ConfigError>,
}

impl Problems {
    pub(crate) fn add(&mut self, key: &str, problem: &str) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line: None,
            key: key.to_string(),
            problem: problem.to_string(),
        });
    }
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

fn check_gateway(gateway: &GatewaySettings, problems: &mut Problems) {
    if gateway.max_connections == 0 {
        problems.add("gateway.max_connections", "must be at least 1");
    }
    // hyper needs at least 8 KiB of read buffer for a request head.
    if gateway.max_header_bytes < ByteSize::kib(8) || gateway.max_header_bytes > ByteSize::mib(1) {
        problems.add("gateway.max_header_bytes", "must be from 8KiB to 1MiB");
    }
    if gateway.max_body.bytes() == 0 {
        problems.add("gateway.max_body", "must be more than 0 bytes");
    }
    for (key, value) in [
        ("gateway.header_read_timeout", gateway.header_read_timeout),
        ("gateway.request_timeout", gateway.request_timeout),
    ] {
        if value.duration().is_zero() {
            problems.add(key, "must be longer than 0s");
        }
    }
}

/// Every `calls` entry names another deployed module, once.
fn check_grants(modules: &BTreeMap<String, ModuleSpec>, problems: &mut Problems) {
    for module in modules.values() {
        for (i, callee) in module.calls.iter().enumerate() {
            let key = format!("modules.{}.calls[{i}]", module.name);
            if callee == &module.name {
                problems.add(&key, "a module does not need a grant to call itself");
            } else if !modules.contains_key(callee) {
                problems.add(&key, &format!("no module `{callee}` is deployed"));
            } else if module.calls[..i].contains(callee) {
                problems.add(&key, &format!("`{callee}` is granted twice"));
            }
        }
    }
}

fn check_limits(module_key: &str, limits: &ModuleLimits, problems: &mut Problems) {
    let (min, max) = MEMORY_RANGE;
    if limits.memory < min || limits.memory > max {
        problems.add(
            &format!("{module_key}.limits.memory"),
            &format!(
                "{} is outside the accepted range {min} to {max}",
                limits.memory
            ),
        );
    }
    let timeout = limits.timeout.duration();
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        problems.add(
            &format!("{module_key}.limits.timeout"),
            &format!("{} is outside the accepted range (0s, 1h]", limits.timeout),
        );
    }
    let (min, max) = CONCURRENCY_RANGE;
    if !(min..=max).contains(&limits.concurrency) {
        problems.add(
            &format!("{module_key}.limits.concurrency"),
            &format!(
                "{} is outside the accepted range {min} to {max}",
                limits.concurrency
            ),
        );
    }
}

/// The module's migrations directory: `migrations = "dir"`, or else a crate's own
/// `migrations/` when it has one.
fn migrations_dir(
    base: &Path,
    module_key: &str,
    written: Option<&str>,
    component: &Option<ComponentSource>,
    problems: &mut Problems,
) -> Option<PathBuf> {
    if let Some(written) = written {
        let path = base.join(written);
        if !path.is_dir() {
            problems.add(
                &format!("{module_key}.migrations"),
                &format!("{} is not a directory", path.display()),
            );
            return None;
        }
        return Some(std::fs::canonicalize(&path).unwrap_or(path));
    }
    match component {
        Some(ComponentSource::Crate { dir, .. }) if dir.join("migrations").is_dir() => {
            Some(dir.join("migrations"))
        }
        _ => None,
    }
}

/// Reads `database = …`, reporting every problem under `modules.NAME.database`.
fn parse_database(
    module_key: &str,
    module: &str,
    value: &toml::Value,
    migrations: Option<PathBuf>,
    problems: &mut Problems,
) -> Option<DatabaseSpec> {
    let key = format!("{module_key}.database");
    let mut spec = DatabaseSpec {
        backend: DatabaseBackend::Sqlite,
        pool: DEFAULT_POOL,
        acquire_timeout: Timeout(DEFAULT_ACQUIRE_TIMEOUT),
        migrations,
    };
    let table = match value {
        toml::Value::String(name) if name == "sqlite" => return Some(spec),
        toml::Value::Table(table) => table,
        _ => {
            problems.add(
                &key,
                "must be \"sqlite\" or a table such as { postgres = \"postgres://…\", pool = 8 }",
            );
            return None;
        }
    };
    let before = problems.errors.len();
    let mut url = None;
    let mut schema = None;
    for (name, value) in table {
        let field = format!("{key}.{name}");
        match (name.as_str(), value) {
            ("sqlite", toml::Value::Boolean(true)) => {}
            ("postgres", toml::Value::String(written)) => match expand_env(written) {
                Ok(expanded)
                    if expanded.starts_with("postgres://")
                        || expanded.starts_with("postgresql://") =>
                {
                    url = Some(expanded)
                }
                Ok(_) => problems.add(&field, "must be a postgres:// connection URL"),
                Err(problem) => problems.add(&field, &problem),
            },
            ("schema", toml::Value::String(written)) => {
                if is_valid_schema_name(written) {
                    schema = Some(written.clone());
                } else {
                    problems.add(
                        &field,
                        "a schema name is 1-63 lower-case letters, digits or '_', starting with a letter",
                    );
                }
            }
            ("pool", toml::Value::Integer(size)) => {
                let (min, max) = POOL_RANGE;
                match u32::try_from(*size) {
                    Ok(size) if (min..=max).contains(&size) => spec.pool = size,
                    _ => problems.add(
                        &field,
                        &format!("{size} is outside the accepted range {min} to {max}"),
                    ),
                }
            }
            ("acquire_timeout", toml::Value::String(written)) => match Timeout::parse(written) {
                Ok(timeout) if !timeout.duration().is_zero() => spec.acquire_timeout = timeout,
                Ok(_) => problems.add(&field, "must be longer than 0s"),
                Err(problem) => problems.add(&field, &problem),
            },
            ("sqlite" | "postgres" | "schema" | "pool" | "acquire_timeout", _) => {
                problems.add(&field, "has the wrong type (see docs/configuration.md)")
            }
            _ => problems.add(
                &field,
                "unknown key; expected sqlite, postgres, schema, pool or acquire_timeout",
            ),
        }
    }
    if let Some(url) = url {
        if table.contains_key("sqlite") {
            problems.add(&key, "names both sqlite and postgres; choose one");
        }
        spec.backend = DatabaseBackend::Postgres {
            url,
            schema: schema.unwrap_or_else(|| module.replace('-', "_")),
        };
    } else if schema.is_some() {
        problems.add(&format!("{key}.schema"), "applies only to postgres");
    }
    (problems.errors.len() == before).then_some(spec)
}

/// `$NAME` (the whole value) reads the environment variable NAME: connection URLs with
/// passwords need not be written into the deployment file.
pub(crate) fn expand_env(written: &str) -> Result<String, String> {
    match written.strip_prefix('$') {
        Some(name) => {
            std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))
        }
        None => Ok(written.to_string()),
    }
}

/// Two modules on Postgres must never share a role or a schema: the role is
/// `modhost_<module>` (`-` as `_`) and must fit Postgres's 63 bytes; schemas are
/// unique per database URL and none may be Postgres's own.
fn check_postgres_names(modules: &BTreeMap<String, ModuleSpec>, problems: &mut Problems) {
    let mut roles: BTreeMap<String, &str> = BTreeMap::new();
    let mut schemas: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    for module in modules.values() {
        let Some(DatabaseSpec {
            backend: DatabaseBackend::Postgres { url, schema },
            ..
        }) = &module.database
        else {
            continue;
        };
        let key = format!("modules.{}.database", module.name);
        let role = format!("modhost_{}", module.name.replace('-', "_"));
        if role.len() > 63 {
            problems.add(
                &key,
                &format!("the module's Postgres role {role} is longer than 63 bytes; use a shorter module name"),
            );
        } else if let Some(other) = roles.insert(role.clone(), &module.name) {
            problems.add(
                &key,
                &format!(
                    "modules `{other}` and `{}` would share the Postgres role {role}; rename one",
                    module.name
                ),
            );
        }
        if schema == "public" || schema == "information_schema" || schema.starts_with("pg_") {
            problems.add(
                &format!("{key}.schema"),
                &format!("{schema} is Postgres's own schema; a module needs its own"),
            );
        } else if let Some(other) = schemas.insert((url.as_str(), schema.as_str()), &module.name) {
            problems.add(
                &format!("{key}.schema"),
                &format!("modules `{other}` and `{}` would share the schema {schema}; each module needs its own", module.name),
            );
        }
    }
}

fn is_valid_schema_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(first) if first.is_ascii_lowercase())
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn is_valid_module_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Works out what kind of component `written` (relative to `base`) names.
fn resolve_component(base: &Path, written: &str) -> Result<ComponentSource, String> {
    if written.trim().is_empty() {
        return Err("must name a .wasm or .cwasm file or a module crate directory".into());
    }
    let joined = base.join(written);
    // Canonical paths make messages unambiguous and let crate lookups walk parents.
    let path = std::fs::canonicalize(&joined).unwrap_or(joined);
    if path.is_dir() {
        let manifest = path.join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).map_err(|_| {
            format!(
                "{} is a directory without a Cargo.toml; name a .wasm/.cwasm file or a module crate",
                path.display()
            )
        })?;
        let package = crate_package_name(&text)
            .ok_or_else(|| format!("{} has no [package] name", manifest.display()))?;
        return Ok(ComponentSource::Crate { dir: path, package });
    }
    let kind = match path.extension().and_then(|ext| ext.to_str()) {
        Some("wasm") => ComponentSource::Wasm(path.clone()),
        Some("cwasm") => ComponentSource::Precompiled(path.clone()),
        _ => {
            return Err(format!(
                "{written:?} is neither a .wasm/.cwasm file nor a module crate directory"
            ))
        }
    };
    if !path.is_file() {
        return Err(format!("{} does not exist", path.display()));
    }
    Ok(kind)
}

fn crate_package_name(manifest: &str) -> Option<String> {
    let value: toml::Table = toml::from_str(manifest).ok()?;
    value
        .get("package")?
        .get("name")?
        .as_str()
        .map(str::to_string)
}

#[cfg(test)]
mod tests;
