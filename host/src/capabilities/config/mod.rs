//! `wasi:config`: a module's configuration, from the deployment file (the standard
//! WIT, `wit/wasi/config`; the host side is wasmtime's `wasmtime-wasi-config`).
//!
//! ```toml
//! [modules.payments]
//! config = { currencies = "EUR,USD,GBP", charge_limit_cents = 500000,
//!            processor_key = { env = "PAYMENTS_PROCESSOR_KEY" } }
//! ```
//!
//! A value is a string, number or boolean (a module reads every one as a string), or a
//! **secret**, `{ env = "NAME" }`, read from the host's environment when the module
//! opens, with an optional `default` for a development setup. A secret missing from
//! the environment without a default is an error before anything serves. Secrets are
//! never logged and never shown: the host prints their names, not their values.
//!
//! Lifecycle, like every capability ([`Config`]): **linked** once; a version that
//! imports `wasi:config` when its module has no `config` is refused at
//! **configure** (deny by default); **open** resolves the values (the environment is
//! read then); each instance is **prepared** with its own module's values only.

use anyhow::Result;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock};
use wasmtime::component::Linker;
use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};

use super::{Capability, Components, InstanceState, OpenContext, StateMap, VersionContext};
use crate::deployment::errors::Problems;
use crate::deployment::{ConfigError, ConfigErrors, Deployment, ModuleSpec};
use crate::runtime::BoxFuture;

/// The interface, as modules import it.
const INTERFACE: &str = "wasi:config/store@0.2.0-rc.1";

/// The `wasi:config` capability.
pub struct Config;

/// One module's configuration, resolved.
pub struct ModuleConfig {
    /// The values, as the module reads them.
    variables: WasiConfigVariables,
    /// The same, by key (what [`ModuleConfig::get`] answers from).
    values: BTreeMap<String, String>,
    /// The keys whose values are secrets (for the log line; values are never shown).
    secrets: BTreeSet<String>,
}

impl std::fmt::Debug for ModuleConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the values: they may be secrets.
        f.debug_struct("ModuleConfig")
            .field("secrets", &self.secrets)
            .finish_non_exhaustive()
    }
}

impl ModuleConfig {
    /// The value of `key`, if the module has one.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }
}

/// An instance's view of its module's configuration.
struct ConfigSlice(Arc<ModuleConfig>);

/// What a module without configuration sees (it cannot import the interface, so only
/// a host bug would show it).
static NOTHING: LazyLock<WasiConfigVariables> = LazyLock::new(WasiConfigVariables::new);

/// One value of a module's configuration, as written.
enum Value {
    Plain(String),
    Secret {
        env: String,
        default: Option<String>,
    },
}

impl Capability for Config {
    fn name(&self) -> &'static str {
        "wasi:config"
    }

    fn module_keys(&self) -> &'static [&'static str] {
        &["config"]
    }

    fn validate(&self, deployment: &Deployment) -> Vec<ConfigError> {
        deployment
            .modules
            .values()
            .flat_map(|module| match resolve(deployment, module) {
                Ok(_) => Vec::new(),
                Err(errors) => errors,
            })
            .collect()
    }

    fn link(&self, linker: &mut Linker<InstanceState>, _: &Components<'_>) -> Result<()> {
        wasmtime_wasi_config::add_to_linker(linker, |state: &mut InstanceState| {
            WasiConfig::new(
                state
                    .slice::<ConfigSlice>()
                    .map_or(&*NOTHING, |ConfigSlice(config)| &config.variables),
            )
        })?;
        Ok(())
    }

    fn configure(&self, version: &VersionContext<'_>, _: &mut StateMap) -> Result<()> {
        if version.imports("wasi:config/") && !version.spec.settings.contains_key("config") {
            anyhow::bail!(
                "{} imports {INTERFACE} but the module has no configuration: add \
                 `config = {{ … }}` under [modules.{}]",
                version.path.display(),
                version.spec.name
            );
        }
        Ok(())
    }

    fn open<'a>(
        &'a self,
        module: OpenContext<'a>,
        state: &'a mut StateMap,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if !module.spec.settings.contains_key("config") {
                return Ok(());
            }
            let resolved = resolve(module.deployment, module.spec)
                .map_err(|errors| anyhow::Error::new(ConfigErrors(errors)))?;
            tracing::info!(
                module = %module.spec.name,
                secrets = ?resolved.secrets,
                "configuration ready"
            );
            state.insert(resolved);
            Ok(())
        })
    }

    fn prepare(&self, instance: &mut InstanceState, module: &StateMap, _: &StateMap) {
        if let Some(config) = module.get_arc::<ModuleConfig>() {
            instance.slices.insert(ConfigSlice(config));
        }
    }
}

/// `module`'s configuration with its secrets read from the environment, or every
/// problem with it.
fn resolve(deployment: &Deployment, module: &ModuleSpec) -> Result<ModuleConfig, Vec<ConfigError>> {
    let mut problems = Problems::of(deployment.origins.clone());
    let mut values = BTreeMap::new();
    let mut secrets = BTreeSet::new();
    if let Some(setting) = module.settings.get("config") {
        let key = format!("modules.{}.config", module.name);
        match setting.value.as_table() {
            None => problems.at(
                &key,
                setting.line,
                "must be a table of values, e.g. config = { currency = \"EUR\" }",
            ),
            Some(table) => {
                for (name, value) in table {
                    let key = format!("{key}.{name}");
                    match parse(value) {
                        Err(problem) => problems.at(&key, setting.line, &problem),
                        Ok(Value::Plain(text)) => {
                            values.insert(name.clone(), text);
                        }
                        Ok(Value::Secret { env, default }) => match std::env::var(&env) {
                            Ok(secret) => {
                                values.insert(name.clone(), secret);
                                secrets.insert(name.clone());
                            }
                            Err(_) => match default {
                                Some(default) => {
                                    values.insert(name.clone(), default);
                                    secrets.insert(name.clone());
                                }
                                None => problems.at(
                                    &key,
                                    setting.line,
                                    &format!(
                                        "environment variable {env} is not set (the secret is read from it)"
                                    ),
                                ),
                            },
                        },
                    }
                }
            }
        }
    }
    let errors = problems.into_errors();
    if errors.is_empty() {
        Ok(ModuleConfig {
            variables: values
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            values,
            secrets,
        })
    } else {
        Err(errors)
    }
}

/// One value as written: a string, number or boolean, or `{ env = "NAME", default? }`.
fn parse(value: &toml::Value) -> Result<Value, String> {
    match value {
        toml::Value::String(text) => Ok(Value::Plain(text.clone())),
        toml::Value::Integer(n) => Ok(Value::Plain(n.to_string())),
        toml::Value::Float(x) => Ok(Value::Plain(x.to_string())),
        toml::Value::Boolean(b) => Ok(Value::Plain(b.to_string())),
        toml::Value::Table(table) => {
            let mut env = None;
            let mut default = None;
            for (field, value) in table {
                match (field.as_str(), value) {
                    ("env", toml::Value::String(name)) if is_env_name(name) => {
                        env = Some(name.clone())
                    }
                    ("env", _) => {
                        return Err(
                            "env must name an environment variable (letters, digits, '_')".into(),
                        )
                    }
                    ("default", toml::Value::String(text)) => default = Some(text.clone()),
                    ("default", _) => return Err("a secret's default must be a string".into()),
                    (other, _) => {
                        return Err(format!(
                            "unknown field `{other}` of a secret, expected one of `env`, `default`"
                        ))
                    }
                }
            }
            match env {
                Some(env) => Ok(Value::Secret { env, default }),
                None => Err("a secret is { env = \"NAME\" }: the variable it is read from".into()),
            }
        }
        _ => Err("must be a string, a number, a boolean or a secret { env = \"NAME\" }".into()),
    }
}

fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::Owned;

    fn deployment(config: &str) -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.wasm"), b"\0asm").unwrap();
        let owned = Owned {
            module_keys: ["config"].into(),
            ..Owned::default()
        };
        Deployment::parse_with(
            &dir.path().join("d.toml"),
            &format!(
                "[app]\nname = \"t\"\n[modules.a]\ncomponent = \"app.wasm\"\nconfig = {config}\n"
            ),
            &owned,
        )
        .unwrap()
    }

    #[test]
    fn values_are_strings_and_secrets_come_from_the_environment() {
        // The variable is this test's own: no other test reads or writes it.
        // SAFETY: set before any thread of this test reads the environment.
        unsafe { std::env::set_var("MODHOST_TEST_CONFIG_SECRET", "s3cr3t-value") };
        let d = deployment(
            "{ currency = \"EUR\", limit = 500000, live = false, key = { env = \"MODHOST_TEST_CONFIG_SECRET\" }, \
             other = { env = \"MODHOST_TEST_CONFIG_ABSENT\", default = \"sandbox\" } }",
        );
        let config = resolve(&d, &d.modules["a"]).unwrap();
        assert_eq!(config.get("currency"), Some("EUR"));
        assert_eq!(config.get("limit"), Some("500000"));
        assert_eq!(config.get("live"), Some("false"));
        assert_eq!(config.get("key"), Some("s3cr3t-value"));
        assert_eq!(config.get("other"), Some("sandbox"));
        assert_eq!(config.secrets.iter().collect::<Vec<_>>(), ["key", "other"]);
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("s3cr3t-value") && !shown.contains("sandbox"),
            "{shown}"
        );
    }

    #[test]
    fn a_missing_secret_or_a_bad_value_is_named_with_its_key() {
        let d = deployment(
            "{ key = { env = \"MODHOST_TEST_CONFIG_NEVER_SET\" }, list = [1], odd = { env = \"1X\" } }",
        );
        let errors = resolve(&d, &d.modules["a"]).err().unwrap();
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "modules.a.config.key",
                "modules.a.config.list",
                "modules.a.config.odd"
            ]
        );
        assert!(errors[0]
            .problem
            .contains("MODHOST_TEST_CONFIG_NEVER_SET is not set"));
        assert_eq!(errors[0].line, Some(5));
    }
}
