//! A deployment file that extends another: splitting an application is a placement
//! change, not a second copy of it.
//!
//! `config/single-node.toml` describes the shop's modules; `config/three-node.toml`
//! says `extends = "single-node.toml"` and adds only what a split needs — `[nodes]`,
//! `[placement]`, `[mesh]`, a Kafka `[events]`. The two are read and validated as one
//! deployment:
//!
//! - a section the overlay writes replaces the base's section of that name, whole
//!   (its keys are not merged one by one: what the overlay says is what holds);
//! - the modules are described once, in the base: an overlay that writes `[modules]`
//!   is refused, as is a base that extends a third file;
//! - every problem names the file that wrote the key, with that file's line, and a
//!   relative path resolves against the directory of the file that wrote it.
//!
//! [`Origins`] is the one record of which file wrote which section: the deployment
//! keeps it, and every [`Problems`](super::errors::Problems) reports through it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::errors::{ConfigError, ConfigErrors};
use super::file::DeploymentFile;

/// Which file wrote each top-level section of a deployment: the file it was read
/// from, or — when that file extends another — the base, for every section the
/// overlay leaves to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origins {
    /// The file the deployment was read from (the overlay, when it extends another).
    file: PathBuf,
    /// The file it extends, if it does.
    base: Option<PathBuf>,
    /// The top-level keys the overlay writes (every other one is the base's).
    written: BTreeSet<String>,
}

impl Origins {
    /// A deployment read from `file` alone.
    pub fn single(file: PathBuf) -> Origins {
        Origins {
            file,
            base: None,
            written: BTreeSet::new(),
        }
    }

    /// The file the deployment extends, if it extends one.
    pub fn base(&self) -> Option<&Path> {
        self.base.as_deref()
    }

    /// The file that wrote `key`, a dotted key path (`modules.users.routes`): its first
    /// segment is the top-level section.
    pub fn file_of(&self, key: &str) -> &Path {
        let section = key.split(['.', '[']).next().unwrap_or_default();
        match &self.base {
            Some(base) if !self.written.contains(section) => base,
            _ => &self.file,
        }
    }

    /// The directory relative paths in section `section` resolve against: that of
    /// the file that wrote it.
    pub fn dir_of(&self, section: &str) -> &Path {
        self.file_of(section).parent().unwrap_or(Path::new("."))
    }
}

/// A deployment's files as read: the sections, combined, and where each came from.
pub(super) struct Sources {
    /// The sections, the overlay's in place of the base's.
    pub(super) file: DeploymentFile,
    /// Which file wrote which, and their texts.
    pub(super) texts: Texts,
}

/// Each file's text, and which file wrote which section: for the lines of the keys
/// kept as written.
pub(super) struct Texts {
    /// Which file wrote which section.
    pub(super) origins: Origins,
    /// The text of the file read.
    text: String,
    /// The text of the file it extends.
    base_text: Option<String>,
}

impl Texts {
    /// The deployment's top-level sections as written, the overlay's in place of the
    /// base's (`extends` left out): what a reload compares, section by section, with
    /// what the node started with.
    pub(super) fn sections(&self) -> toml::Table {
        let table = |text: &str| text.parse::<toml::Table>().unwrap_or_default();
        let mut sections = match &self.base_text {
            Some(base) => table(base),
            None => toml::Table::new(),
        };
        for (key, value) in table(&self.text) {
            sections.insert(key, value);
        }
        sections.remove("extends");
        sections
    }

    /// The text of the file that wrote `key`.
    pub(super) fn text_of(&self, key: &str) -> &str {
        match (
            &self.base_text,
            self.origins.file_of(key) == self.origins.file,
        ) {
            (Some(base), false) => base,
            _ => &self.text,
        }
    }
}

/// Reads the deployment whose file `path` holds `text`: that file alone, or, when it
/// says `extends = "BASE"`, the base read from disk with this file's sections in
/// place of its own. `parse` turns one file's text into its sections.
pub(super) fn read(
    path: &Path,
    text: &str,
    parse: impl Fn(&Path, &str) -> Result<DeploymentFile, ConfigError>,
) -> Result<Sources, ConfigErrors> {
    let one = |error: ConfigError| ConfigErrors(vec![error]);
    let problem = |file: &Path, key: &str, line: Option<usize>, problem: String| ConfigError {
        file: file.to_path_buf(),
        line,
        key: key.to_string(),
        problem,
    };
    let overlay = parse(path, text).map_err(one)?;
    let Some(extends) = &overlay.extends else {
        return Ok(Sources {
            file: overlay,
            texts: Texts {
                origins: Origins::single(path.to_path_buf()),
                text: text.to_string(),
                base_text: None,
            },
        });
    };
    let line = Some(super::settings::line_of(text, extends.span().start));
    let dir = path.parent().unwrap_or(Path::new("."));
    let base_path = dir.join(extends.get_ref());
    let base_text = std::fs::read_to_string(&base_path).map_err(|error| {
        one(problem(
            path,
            "extends",
            line,
            format!("cannot read {}: {error}", base_path.display()),
        ))
    })?;
    let mut base = parse(&base_path, &base_text).map_err(one)?;

    let mut refused = Vec::new();
    if base.extends.is_some() {
        refused.push(problem(
            path,
            "extends",
            line,
            format!(
                "{} extends another file itself: the file an overlay extends describes \
                 the modules, and extends none",
                base_path.display()
            ),
        ));
    }
    if overlay.written.contains("modules") {
        refused.push(problem(
            path,
            "modules",
            None,
            format!(
                "the modules are described once, in {}: a file that extends it places them \
                 ([nodes], [placement]) and may replace its other sections",
                base_path.display()
            ),
        ));
    }
    if !refused.is_empty() {
        return Err(ConfigErrors(refused));
    }

    // Each section the overlay writes replaces the base's, whole.
    let written = overlay.written.clone();
    let DeploymentFile {
        extends: _,
        app,
        gateway,
        modules: _,
        events,
        nodes,
        placement,
        mesh,
        rollout,
        admin,
        policies,
        telemetry,
        unknown,
        written: _,
    } = overlay;
    // `[name]` written in the overlay replaces the base's `[name]`.
    macro_rules! replace_written {
        ($($section:ident),*) => {$(
            if written.contains(stringify!($section)) {
                base.$section = $section;
            }
        )*};
    }
    replace_written!(
        app, gateway, events, nodes, placement, mesh, rollout, admin, policies, telemetry
    );
    base.unknown.extend(unknown);
    base.written.extend(written.iter().cloned());
    Ok(Sources {
        file: base,
        texts: Texts {
            origins: Origins {
                file: path.to_path_buf(),
                base: Some(base_path),
                written,
            },
            text: text.to_string(),
            base_text: Some(base_text),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::super::{ConfigError, Deployment, EventsBackend};
    use std::path::Path;

    /// Two modules, on the embedded bus, with an admin listener: one node.
    const BASE: &str = r#"[app]
name = "shop"

[modules.users]
component = "users.wasm"
routes = ["/users"]

[modules.orders]
component = "orders.wasm"
routes = ["/orders"]
calls = ["users"]
limits = { timeout = "2s" }

[admin]
listen = "127.0.0.1:9090"
token = "a-token-for-the-tests"

[events]
backend = "embedded"
"#;

    /// The same modules on two nodes, over Kafka.
    const SPLIT: &str = r#"extends = "base.toml"

[events]
backend = "kafka"
brokers = "127.0.0.1:9092"

[nodes.a]
listen = "127.0.0.1:8080"
mesh = "127.0.0.1:7001"

[nodes.b]
listen = "127.0.0.1:8081"
mesh = "127.0.0.1:7002"

[placement]
users = ["a"]
orders = ["b"]

[mesh]
ca = "certs/ca.pem"
cert = "certs/{node}.pem"
key = "certs/{node}.key"
"#;

    /// `base` as `dir/base.toml` beside the modules' components; `overlay` read as
    /// `dir/split.toml`.
    fn load(dir: &Path, base: &str, overlay: &str) -> Result<Deployment, Vec<ConfigError>> {
        for component in ["users.wasm", "orders.wasm"] {
            std::fs::write(dir.join(component), b"\0asm").unwrap();
        }
        std::fs::write(dir.join("base.toml"), base).unwrap();
        Deployment::parse(&dir.join("split.toml"), overlay).map_err(|errors| errors.0)
    }

    fn refused(base: &str, overlay: &str) -> (tempfile::TempDir, Vec<ConfigError>) {
        let dir = tempfile::tempdir().unwrap();
        let errors = load(dir.path(), base, overlay).expect_err("expected a refusal");
        (dir, errors)
    }

    #[test]
    fn an_overlay_places_the_base_modules_and_replaces_the_sections_it_writes() {
        let dir = tempfile::tempdir().unwrap();
        let deployment = load(dir.path(), BASE, SPLIT).unwrap();
        assert_eq!(deployment.file, dir.path().join("split.toml"));
        assert_eq!(
            deployment.origins.base(),
            Some(dir.path().join("base.toml").as_path())
        );
        // The modules are the base's, as it wrote them.
        assert_eq!(
            deployment.modules.keys().collect::<Vec<_>>(),
            ["orders", "users"]
        );
        assert_eq!(deployment.modules["orders"].calls, ["users"]);
        assert_eq!(
            deployment.modules["orders"].limits.timeout.duration(),
            std::time::Duration::from_secs(2)
        );
        // Placed by the overlay; its [events] replaced the base's whole.
        assert_eq!(deployment.nodes_of("users"), ["a"]);
        assert_eq!(deployment.nodes_of("orders"), ["b"]);
        assert!(matches!(
            deployment.events.backend,
            EventsBackend::Kafka { .. }
        ));
        // What the overlay does not write is the base's: the admin token, and the
        // app (data next to the base file).
        let admin = deployment.admin.as_ref().expect("the base's [admin]");
        assert_eq!(
            admin.listen,
            Some("127.0.0.1:9090".parse().unwrap()),
            "{admin:?}"
        );
        assert_eq!(deployment.app_name, "shop");
        assert_eq!(deployment.data_dir, dir.path().join(".modhost"));
    }

    #[test]
    fn paths_resolve_against_the_file_that_wrote_them() {
        let dir = tempfile::tempdir().unwrap();
        let split = dir.path().join("split");
        std::fs::create_dir(&split).unwrap();
        for component in ["users.wasm", "orders.wasm"] {
            std::fs::write(dir.path().join(component), b"\0asm").unwrap();
        }
        std::fs::write(dir.path().join("base.toml"), BASE).unwrap();
        let overlay = SPLIT.replace("\"base.toml\"", "\"../base.toml\"")
            + "\n[app]\nname = \"shop\"\ndata_dir = \"data\"\n";
        let deployment = Deployment::parse(&split.join("three.toml"), &overlay).unwrap();
        let mesh = deployment.mesh.as_ref().expect("[mesh]");
        assert_eq!(mesh.ca, split.join("certs/ca.pem"));
        assert_eq!(deployment.data_dir, split.join("data"));
        assert_eq!(
            deployment.modules["users"].component,
            super::super::ComponentSource::Wasm(dir.path().join("users.wasm"))
        );
    }

    #[test]
    fn each_problem_names_the_file_and_line_that_wrote_it() {
        // One problem in each file, found together.
        let base = BASE.replace(
            "limits = { timeout = \"2s\" }",
            "limits = { timeout = \"0s\" }",
        );
        let overlay = SPLIT.replace("orders = [\"b\"]", "orders = [\"b\"]\nbilling = [\"a\"]")
            + "\n[plaecment]\nusers = [\"b\"]\n";
        let (dir, errors) = refused(&base, &overlay);
        let at = |key: &str| {
            errors
                .iter()
                .find(|error| error.key == key)
                .unwrap_or_else(|| panic!("no problem with {key}: {errors:?}"))
        };
        assert_eq!(
            at("modules.orders.limits.timeout").file,
            dir.path().join("base.toml")
        );
        assert_eq!(at("placement.billing").file, dir.path().join("split.toml"));
        let unknown = at("plaecment");
        assert_eq!(unknown.file, dir.path().join("split.toml"));
        assert_eq!(unknown.line, Some(SPLIT.lines().count() + 3));

        // A syntax problem in the base is the base's, on its line.
        let (dir, errors) = refused(&BASE.replace("routes = [\"/users\"]", "routes = 7"), SPLIT);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].file, dir.path().join("base.toml"));
        assert_eq!(errors[0].line, Some(6));
        assert_eq!(errors[0].key, "modules.users.routes");
    }

    #[test]
    fn an_overlay_describes_no_modules_and_extends_a_file_that_extends_none() {
        let overlay = format!("{SPLIT}\n[modules.billing]\ncomponent = \"users.wasm\"\n");
        let (dir, errors) = refused(BASE, &overlay);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].key, "modules");
        assert_eq!(errors[0].file, dir.path().join("split.toml"));
        assert!(
            errors[0].problem.contains("described once, in"),
            "{}",
            errors[0].problem
        );

        let (_, errors) = refused(&format!("extends = \"other.toml\"\n{BASE}"), SPLIT);
        assert_eq!(errors[0].key, "extends");
        assert_eq!(errors[0].line, Some(1));
        assert!(
            errors[0].problem.contains("extends another file itself"),
            "{}",
            errors[0].problem
        );

        let (_, errors) = refused(BASE, &SPLIT.replace("base.toml", "missing.toml"));
        assert_eq!(errors[0].key, "extends");
        assert!(
            errors[0].problem.contains("cannot read") && errors[0].problem.contains("missing.toml"),
            "{}",
            errors[0].problem
        );
    }

    #[test]
    fn a_deployment_needs_an_app_in_one_of_its_files() {
        let base = BASE.replace("[app]\nname = \"shop\"\n", "");
        let (dir, errors) = refused(&base, SPLIT);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].problem, "missing field `app`");
        assert_eq!(errors[0].file, dir.path().join("base.toml"));
    }
}
