//! `database = …` and `migrations = …`: a module's own database, its pool (the
//! module's bulkhead for statements) and its migrations.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::errors::Problems;
use super::modules::{ComponentSource, ModuleSpec};
use super::units::{ByteSize, Timeout};
use super::{existing_file, expand_env};

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
    /// The most one result may weigh (its values, as the module receives them): the
    /// host holds at most `pool` such results for the module at once, and a statement
    /// that returns more fails with `too-large`.
    pub max_result: ByteSize,
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
        /// Whether and how connections are encrypted (`tls`, `ca`).
        tls: PostgresTls,
    },
}

/// `tls = …` and `ca = …` of a Postgres database: how the host's connections to the
/// server (the administrator's and the module's) are encrypted. Managed databases
/// require TLS; `verify-full` is what protects the module's data and the role
/// passwords from a server that is not the one the URL names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostgresTls {
    /// `tls`: the mode, as libpq names them; `None` leaves it to the URL's `sslmode`
    /// (and its default, `prefer`).
    pub mode: Option<TlsMode>,
    /// `ca`: the PEM file of a CA the server's certificate may chain to, for
    /// `verify-full`, beside the public web CAs (the driver always trusts those).
    pub ca: Option<PathBuf>,
}

/// How a connection to Postgres is encrypted, as libpq's `sslmode` names the modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Never.
    Disable,
    /// If the server offers it; in clear otherwise.
    Prefer,
    /// Always, without checking the server's certificate.
    Require,
    /// Always, with a certificate for the host the URL names, from `ca` or a public CA.
    VerifyFull,
}

impl TlsMode {
    /// The mode written as `name`, or why it is not one modhost takes.
    fn parse(name: &str) -> Result<TlsMode, String> {
        Ok(match name {
            "disable" => TlsMode::Disable,
            "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-full" => TlsMode::VerifyFull,
            // libpq's verify-ca checks the chain but not the name; the driver trusts
            // the web's CAs beside `ca`, so any certificate they issued would pass.
            "verify-ca" => {
                return Err(
                    "verify-ca would accept any certificate a public CA issued, for any \
                            host (the driver trusts the web's CAs beside `ca`): use verify-full"
                        .into(),
                )
            }
            other => {
                return Err(format!(
                    "{other:?} is not a TLS mode; expected disable, prefer, require or verify-full"
                ))
            }
        })
    }
}

/// Default `database.pool`.
pub(super) const DEFAULT_POOL: u32 = 8;
/// Accepted range of `database.pool`.
const POOL_RANGE: (u32, u32) = (1, 1000);
/// Default `database.acquire_timeout`.
pub(super) const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// Default `database.max_result`.
pub const DEFAULT_MAX_RESULT: ByteSize = ByteSize::mib(16);
/// Accepted range of `database.max_result`: SQLite refuses a single value over 1 GB.
const MAX_RESULT_RANGE: (ByteSize, ByteSize) = (ByteSize::kib(1), ByteSize::mib(1024));

/// The module's migrations directory: `migrations = "dir"`, or else the `migrations/`
/// of its source directory (crate, Python or JavaScript module) when it has one.
pub(super) fn migrations_dir(
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
        Some(source) => source
            .source_dir()
            .map(|dir| dir.join("migrations"))
            .filter(|dir| dir.is_dir()),
        None => None,
    }
}

/// Reads `database = …`, reporting every problem under `modules.NAME.database`;
/// a relative `ca` is relative to `base`.
pub(super) fn parse_database(
    base: &Path,
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
        max_result: DEFAULT_MAX_RESULT,
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
    let mut tls = PostgresTls::default();
    for (name, value) in table {
        let field = format!("{key}.{name}");
        match (name.as_str(), value) {
            ("sqlite", toml::Value::Boolean(true)) => {}
            ("postgres", toml::Value::String(written)) => match expand_env(written) {
                Ok(Some(expanded))
                    if expanded.starts_with("postgres://")
                        || expanded.starts_with("postgresql://") =>
                {
                    url = Some(expanded)
                }
                Ok(Some(_)) => problems.add(&field, "must be a postgres:// connection URL"),
                Ok(None) => url = Some(written.clone()),
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
            ("tls", toml::Value::String(written)) => match TlsMode::parse(written) {
                Ok(mode) => tls.mode = Some(mode),
                Err(problem) => problems.add(&field, &problem),
            },
            ("ca", toml::Value::String(written)) => {
                tls.ca = existing_file(base, written, &field, problems);
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
            ("max_result", toml::Value::String(written)) => match ByteSize::parse(written) {
                Ok(size) if (MAX_RESULT_RANGE.0..=MAX_RESULT_RANGE.1).contains(&size) => {
                    spec.max_result = size
                }
                Ok(size) => problems.add(
                    &field,
                    &format!(
                        "{size} is outside the accepted range {} to {}",
                        MAX_RESULT_RANGE.0, MAX_RESULT_RANGE.1
                    ),
                ),
                Err(problem) => problems.add(&field, &problem),
            },
            (
                "sqlite" | "postgres" | "schema" | "tls" | "ca" | "pool" | "acquire_timeout"
                | "max_result",
                _,
            ) => problems.add(&field, "has the wrong type (see docs/configuration.md)"),
            _ => problems.add(
                &field,
                "unknown key; expected sqlite, postgres, schema, tls, ca, pool, acquire_timeout \
                 or max_result",
            ),
        }
    }
    if let Some(url) = url {
        if table.contains_key("sqlite") {
            problems.add(&key, "names both sqlite and postgres; choose one");
        }
        if tls.ca.is_some() && tls.mode != Some(TlsMode::VerifyFull) {
            problems.add(
                &format!("{key}.ca"),
                "a CA is used only to verify the server: add tls = \"verify-full\"",
            );
        }
        spec.backend = DatabaseBackend::Postgres {
            url,
            schema: schema.unwrap_or_else(|| module.replace('-', "_")),
            tls,
        };
    } else {
        for only in ["schema", "tls", "ca"] {
            if table.contains_key(only) {
                problems.add(&format!("{key}.{only}"), "applies only to postgres");
            }
        }
    }
    (problems.errors.len() == before).then_some(spec)
}

/// Two modules on Postgres must never share a role or a schema: the role is
/// `modhost_<module>` (`-` as `_`) and must fit Postgres's 63 bytes; schemas are
/// unique per database URL, and none may be Postgres's own or start with `modhost_`
/// (the host's schema for each module is named like its role).
pub(super) fn check_postgres_names(
    modules: &BTreeMap<String, ModuleSpec>,
    problems: &mut Problems,
) {
    let mut roles: BTreeMap<String, &str> = BTreeMap::new();
    let mut schemas: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    for module in modules.values() {
        let Some(DatabaseSpec {
            backend: DatabaseBackend::Postgres { url, schema, .. },
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
        } else if schema.starts_with("modhost_") {
            problems.add(
                &format!("{key}.schema"),
                &format!(
                    "{schema} starts with modhost_, which names the host's schemas (its tables \
                     for each module); choose another name"
                ),
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
