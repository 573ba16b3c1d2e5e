//! `[modules.NAME]`: one module as deployed — its component, routes, grants, limits
//! and how calls get an instance of it.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::database::DatabaseSpec;
use super::errors::Problems;
use super::javascript::{self, JavaScriptPackage};
use super::python::{self, PythonPackage};
use super::settings::Setting;
use super::units::{ByteSize, Timeout};

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
    /// Its settings for capabilities that own keys of its section, as written.
    pub settings: BTreeMap<String, Setting>,
}

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
    /// A Python module built by componentize-py (`pyproject.toml` with a
    /// `[tool.modhost]` table); `modhost up` builds it.
    Python(PythonPackage),
    /// A JavaScript module built by componentize-js (`package.json` with a `"modhost"`
    /// object); `modhost up` builds it.
    JavaScript(JavaScriptPackage),
}

impl ComponentSource {
    /// The directory the component is built from, when it is built from source (a
    /// crate, a Python or a JavaScript module): where its `migrations/` are looked for,
    /// and what `modhost up --watch` watches.
    pub fn source_dir(&self) -> Option<&Path> {
        match self {
            ComponentSource::Wasm(_) | ComponentSource::Precompiled(_) => None,
            ComponentSource::Crate { dir, .. } => Some(dir),
            ComponentSource::Python(package) => Some(&package.dir),
            ComponentSource::JavaScript(package) => Some(&package.dir),
        }
    }
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

/// Every `calls` entry names another deployed module, once.
pub(super) fn check_grants(modules: &BTreeMap<String, ModuleSpec>, problems: &mut Problems) {
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

/// Checks a module's `limits` against their accepted ranges.
pub(super) fn check_limits(module_key: &str, limits: &ModuleLimits, problems: &mut Problems) {
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

pub(super) fn is_valid_module_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Works out what kind of component `written` (relative to `base`) names.
pub(super) fn resolve_component(base: &Path, written: &str) -> Result<ComponentSource, String> {
    if written.trim().is_empty() {
        return Err(
            "must name a .wasm or .cwasm file, or a module crate, Python or JavaScript module directory".into(),
        );
    }
    let joined = base.join(written);
    // Canonical paths make messages unambiguous and let crate lookups walk parents.
    let path = std::fs::canonicalize(&joined).unwrap_or(joined);
    if path.is_dir() {
        if python::is_python_module(&path) {
            return python::read(&path).map(ComponentSource::Python);
        }
        if javascript::is_javascript_module(&path) {
            return javascript::read(&path).map(ComponentSource::JavaScript);
        }
        let manifest = path.join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).map_err(|_| {
            format!(
                "{} is a directory without a Cargo.toml, a {} or a {} with a \"modhost\" \
                 object; name a .wasm/.cwasm file, a module crate, a Python or a JavaScript module",
                path.display(),
                python::MANIFEST,
                javascript::MANIFEST
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
                "{written:?} is neither a .wasm/.cwasm file nor a module crate, Python or JavaScript module directory"
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
