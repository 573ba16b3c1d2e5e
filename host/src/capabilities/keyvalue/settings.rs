//! The key-value capability's settings: the store of the node (`[keyvalue]`) and the
//! buckets each module may open (`keyvalue = [...]` under `[modules.NAME]`).
//!
//! ```toml
//! [keyvalue]
//! backend = "redis"                 # default "embedded": a SQLite file per module
//! url = "redis://10.0.0.5:6379/0"   # or "$REDIS_URL"
//! max_value = "1MiB"                # the largest value a module may store
//!
//! [modules.catalog]
//! keyvalue = ["lookups"]            # the buckets it may open
//! ```

use std::collections::BTreeSet;

use crate::deployment::errors::Problems;
use crate::deployment::{expand_env, ByteSize, ConfigError, Deployment, ModuleSpec, Setting};

/// Where the node keeps its modules' buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file per module under the data dir: durable, in this process, one node.
    Embedded,
    /// A Redis server shared by the nodes.
    Redis {
        /// `redis://host:port/db` (the password, if any, in the URL).
        url: String,
    },
}

/// `[keyvalue]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// Which store.
    pub backend: Backend,
    /// The largest value one `set` may store.
    pub max_value: ByteSize,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            backend: Backend::Embedded,
            max_value: ByteSize::mib(1),
        }
    }
}

/// The most a bucket's name may be.
const MAX_BUCKET_NAME: usize = 63;

/// The deployment's `[keyvalue]` section, or its problems.
pub fn store(deployment: &Deployment) -> Result<StoreSettings, Vec<ConfigError>> {
    let mut problems = Problems::of(deployment.origins.clone());
    let settings = parse_store(deployment.sections.get("keyvalue"), &mut problems);
    let errors = problems.into_errors();
    if errors.is_empty() {
        Ok(settings)
    } else {
        Err(errors)
    }
}

fn parse_store(section: Option<&Setting>, problems: &mut Problems) -> StoreSettings {
    let mut settings = StoreSettings::default();
    let Some(section) = section else {
        return settings;
    };
    let line = section.line;
    let Some(table) = section.value.as_table() else {
        problems.at("keyvalue", line, "must be a table: [keyvalue] backend = …");
        return settings;
    };
    let mut backend = "embedded".to_string();
    let mut url = None;
    for (name, value) in table {
        let key = format!("keyvalue.{name}");
        match (name.as_str(), value) {
            ("backend", toml::Value::String(written)) => backend = written.clone(),
            ("url", toml::Value::String(written)) => match expand_env(written) {
                Ok(Some(expanded))
                    if expanded.starts_with("redis://") || expanded.starts_with("rediss://") =>
                {
                    url = Some(expanded)
                }
                Ok(Some(_)) => problems.at(&key, line, "must be a redis:// or rediss:// URL"),
                Ok(None) => url = Some(written.clone()),
                Err(problem) => problems.at(&key, line, &problem),
            },
            ("max_value", toml::Value::String(written)) => match ByteSize::parse(written) {
                Ok(size) if size.bytes() > 0 && size <= ByteSize::mib(64) => {
                    settings.max_value = size
                }
                Ok(_) => problems.at(&key, line, "must be more than 0 bytes and at most 64MiB"),
                Err(problem) => problems.at(&key, line, &problem),
            },
            ("backend" | "url" | "max_value", _) => {
                problems.at(&key, line, "has the wrong type (see docs/configuration.md)")
            }
            _ => problems.at(
                &key,
                line,
                &format!("unknown field `{name}`, expected one of `backend`, `url`, `max_value`"),
            ),
        }
    }
    match (backend.as_str(), url) {
        ("embedded", None) => {}
        ("embedded", Some(_)) => {
            problems.at("keyvalue.url", line, "applies only to backend = \"redis\"")
        }
        ("redis", Some(url)) => settings.backend = Backend::Redis { url },
        ("redis", None) => problems.at(
            "keyvalue.url",
            line,
            "backend = \"redis\" needs the server's url",
        ),
        (other, _) => problems.at(
            "keyvalue.backend",
            line,
            &format!("{other:?} is not a key-value store; expected \"embedded\" or \"redis\""),
        ),
    }
    settings
}

/// The buckets `module` may open (none when it has no `keyvalue` key), or problems.
pub fn buckets(
    deployment: &Deployment,
    module: &ModuleSpec,
) -> Result<BTreeSet<String>, Vec<ConfigError>> {
    let mut problems = Problems::of(deployment.origins.clone());
    let mut buckets = BTreeSet::new();
    if let Some(setting) = module.settings.get("keyvalue") {
        let key = format!("modules.{}.keyvalue", module.name);
        match setting.value.as_array() {
            None => problems.at(
                &key,
                setting.line,
                "must be a list of bucket names, e.g. keyvalue = [\"cache\"]",
            ),
            Some(names) => {
                for (i, name) in names.iter().enumerate() {
                    let key = format!("{key}[{i}]");
                    match name.as_str() {
                        Some(name) if !is_bucket_name(name) => problems.at(
                            &key,
                            setting.line,
                            "a bucket name is 1-63 lower-case letters, digits, '-' or '_', starting with a letter",
                        ),
                        Some(name) if !buckets.insert(name.to_string()) => {
                            problems.at(&key, setting.line, &format!("{name:?} is listed twice"))
                        }
                        Some(_) => {}
                        None => problems.at(&key, setting.line, "must be a string"),
                    }
                }
            }
        }
    }
    let errors = problems.into_errors();
    if errors.is_empty() {
        Ok(buckets)
    } else {
        Err(errors)
    }
}

/// Every problem with the deployment's key-value settings: the section, each module's
/// buckets, and an embedded store for a module that runs on several nodes.
pub fn validate(deployment: &Deployment) -> Vec<ConfigError> {
    let (store, mut errors) = match store(deployment) {
        Ok(store) => (Some(store), Vec::new()),
        Err(errors) => (None, errors),
    };
    for module in deployment.modules.values() {
        match buckets(deployment, module) {
            Err(problems) => errors.extend(problems),
            Ok(buckets) if !buckets.is_empty() => {
                let embedded = store
                    .as_ref()
                    .is_some_and(|s| s.backend == Backend::Embedded);
                if embedded
                    && deployment
                        .placement
                        .get(&module.name)
                        .is_some_and(|on| on.len() > 1)
                {
                    let mut problems = Problems::of(deployment.origins.clone());
                    problems.at(
                        &format!("placement.{}", module.name),
                        None,
                        "a module with embedded key-value buckets runs on one node (each node would \
                         keep its own); set [keyvalue] backend = \"redis\" to run it on several",
                    );
                    errors.extend(problems.into_errors());
                }
            }
            Ok(_) => {}
        }
    }
    errors
}

fn is_bucket_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_BUCKET_NAME
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::Owned;

    fn deployment(text: &str) -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.wasm"), b"\0asm").unwrap();
        let owned = Owned {
            module_keys: ["keyvalue"].into(),
            sections: ["keyvalue"].into(),
        };
        Deployment::parse_with(&dir.path().join("d.toml"), text, &owned).unwrap()
    }

    #[test]
    fn buckets_and_the_store_are_read_and_every_problem_named() {
        let ok = deployment(
            "[app]\nname = \"t\"\n[keyvalue]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\"\n\
             [modules.a]\ncomponent = \"app.wasm\"\nkeyvalue = [\"cache\", \"sessions\"]\n",
        );
        assert_eq!(
            store(&ok).unwrap().backend,
            Backend::Redis {
                url: "redis://127.0.0.1:6379/0".into()
            }
        );
        let buckets = buckets(&ok, &ok.modules["a"]).unwrap();
        assert_eq!(
            buckets.into_iter().collect::<Vec<_>>(),
            ["cache", "sessions"]
        );

        let bad = deployment(
            "[app]\nname = \"t\"\n[keyvalue]\nbackend = \"redis\"\nmax_value = \"0B\"\ncolour = 1\n\
             [modules.a]\ncomponent = \"app.wasm\"\nkeyvalue = [\"Cache\", \"x\", \"x\", 3]\n",
        );
        let found: Vec<(String, Option<usize>)> = validate(&bad)
            .into_iter()
            .map(|e| (e.key, e.line))
            .collect();
        let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "keyvalue.colour",
                "keyvalue.max_value",
                "keyvalue.url",
                "modules.a.keyvalue[0]",
                "modules.a.keyvalue[2]",
                "modules.a.keyvalue[3]",
            ]
        );
        assert_eq!(found[0].1, Some(3), "problems name the section's line");
        assert_eq!(found[3].1, Some(9), "and the module key's");
    }

    #[test]
    fn an_embedded_store_keeps_a_module_on_one_node() {
        let split = deployment(
            "[app]\nname = \"t\"\n[modules.a]\ncomponent = \"app.wasm\"\nkeyvalue = [\"cache\"]\n\
             [nodes.x]\nlisten = \"127.0.0.1:1\"\nmesh = \"127.0.0.1:2\"\n\
             [nodes.y]\nlisten = \"127.0.0.1:3\"\nmesh = \"127.0.0.1:4\"\n\
             [placement]\na = [\"x\", \"y\"]\n[mesh]\nca = \"ca\"\ncert = \"{node}.pem\"\nkey = \"{node}.key\"\n",
        );
        let errors = validate(&split);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].key, "placement.a");
    }
}
