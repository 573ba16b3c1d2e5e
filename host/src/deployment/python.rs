//! Python modules: a directory with a `pyproject.toml` whose `[tool.modhost]` table
//! says how componentize-py builds it into a component (docs/writing-a-module.md).
//!
//! ```toml
//! [project]
//! name = "fraud"
//!
//! [tool.modhost]
//! app = "app"                                   # the Python module componentize-py wraps
//! worlds = ["shop:fraud/fraud@1.0.0", "modhost:http/routes@1.0.0"]   # merged
//! wit = ["../../wit/wasi/http", "../../wit/modhost/sql.wit", …]      # dependencies first
//! python-path = ["../sdk-python"]               # besides the module's own directory
//! import-names = { "shop:users/api@1.0.0" = "users" }   # names in wit_world.imports
//! ```
//!
//! Paths are relative to the `pyproject.toml`. This file only reads and checks the
//! table; building is the module layer's (`module::sources`).

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The file that marks a directory as a Python module.
pub const MANIFEST: &str = "pyproject.toml";

/// A Python module's source, as its `pyproject.toml` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonPackage {
    /// The module's directory (holding `pyproject.toml`).
    pub dir: PathBuf,
    /// `[project] name`: names the built component.
    pub name: String,
    /// The Python module holding the exports (`app.py` → `app`).
    pub app: String,
    /// The WIT worlds it is built against, merged into one.
    pub worlds: Vec<String>,
    /// WIT files or package directories, each after the packages it uses.
    pub wit: Vec<PathBuf>,
    /// Directories searched for Python imports besides `dir`.
    pub python_path: Vec<PathBuf>,
    /// Python names for imported interfaces: `"ns:pkg/iface@1.0.0" → "name"`.
    pub import_names: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Manifest {
    project: Option<Project>,
    tool: Option<Tool>,
}

#[derive(Deserialize)]
struct Project {
    name: Option<String>,
}

#[derive(Deserialize)]
struct Tool {
    modhost: Option<ModhostTable>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ModhostTable {
    #[serde(default = "default_app")]
    app: String,
    worlds: Vec<String>,
    wit: Vec<String>,
    #[serde(default)]
    python_path: Vec<String>,
    #[serde(default)]
    import_names: BTreeMap<String, String>,
}

fn default_app() -> String {
    "app".into()
}

/// Whether `dir` holds a Python module: a `pyproject.toml` with a `[tool.modhost]`
/// table (or one that does not parse but mentions it, so that [`read`] says what is
/// wrong). A crate with a `pyproject.toml` for its tooling is no Python module.
pub fn is_python_module(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join(MANIFEST)) else {
        return false;
    };
    match text.parse::<toml::Table>() {
        Ok(table) => table
            .get("tool")
            .and_then(|tool| tool.get("modhost"))
            .is_some(),
        Err(_) => text.contains("[tool.modhost]"),
    }
}

impl PythonPackage {
    /// Everything the component is built from: a change to any rebuilds it.
    pub fn sources(&self) -> Vec<PathBuf> {
        std::iter::once(&self.dir)
            .chain(&self.wit)
            .chain(&self.python_path)
            .cloned()
            .collect()
    }
}

/// Checks a module package's name (it names the built component's file): letters,
/// digits, '-' or '_'.
pub(super) fn check_package_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!("{name:?} must be letters, digits, '-' or '_'"));
    }
    Ok(())
}

/// Reads and checks the `pyproject.toml` of the Python module in `dir`; the error
/// names the file and the key.
pub fn read(dir: &Path) -> Result<PythonPackage, String> {
    let manifest = dir.join(MANIFEST);
    let file = manifest.display();
    let text = std::fs::read_to_string(&manifest).map_err(|error| format!("{file}: {error}"))?;
    let parsed: Manifest = toml::from_str(&text).map_err(|error| format!("{file}: {error}"))?;
    let name = parsed
        .project
        .and_then(|project| project.name)
        .ok_or_else(|| format!("{file}: [project] name is missing"))?;
    check_package_name(&name).map_err(|problem| format!("{file}: [project] name {problem}"))?;
    let table = parsed
        .tool
        .and_then(|tool| tool.modhost)
        .ok_or_else(|| {
            format!("{file}: no [tool.modhost] table: it says which WIT worlds the module is built against (docs/writing-a-module.md)")
        })?;
    if table.worlds.is_empty() {
        return Err(format!("{file}: tool.modhost.worlds names no world"));
    }
    if !is_python_identifier(&table.app) {
        return Err(format!(
            "{file}: tool.modhost.app {:?} is not a Python module name",
            table.app
        ));
    }
    let app_file = dir.join(format!("{}.py", table.app));
    let app_package = dir.join(&table.app).join("__init__.py");
    if !app_file.is_file() && !app_package.is_file() {
        return Err(format!(
            "{file}: tool.modhost.app: the module has no {} (nor {})",
            app_file.display(),
            app_package.display()
        ));
    }
    for (interface, alias) in &table.import_names {
        if !is_python_identifier(alias) {
            return Err(format!(
                "{file}: tool.modhost.import-names: {alias:?} (for {interface}) is not a Python name"
            ));
        }
    }
    let existing = |key: &str, written: &[String]| {
        existing_paths(dir, written)
            .map_err(|missing| format!("{file}: tool.modhost.{key}: {missing}"))
    };
    Ok(PythonPackage {
        dir: dir.to_path_buf(),
        name,
        app: table.app,
        worlds: table.worlds,
        wit: existing("wit", &table.wit)?,
        python_path: existing("python-path", &table.python_path)?,
        import_names: table.import_names,
    })
}

/// `written` paths, relative to `dir`, made canonical; the error names the first
/// that does not exist. (A module package's WIT and import paths: Python's and
/// JavaScript's.)
pub(super) fn existing_paths(dir: &Path, written: &[String]) -> Result<Vec<PathBuf>, String> {
    written
        .iter()
        .map(|written| {
            let path = dir.join(written);
            std::fs::canonicalize(&path).map_err(|_| format!("{} does not exist", path.display()))
        })
        .collect()
}

fn is_python_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(pyproject: &str) -> (tempfile::TempDir, Result<PythonPackage, String>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("wit")).unwrap();
        std::fs::write(dir.path().join("app.py"), "").unwrap();
        std::fs::write(dir.path().join(MANIFEST), pyproject).unwrap();
        let read = read(dir.path());
        (dir, read)
    }

    #[test]
    fn reads_the_table_with_paths_relative_to_the_file() {
        let (dir, read) = module(
            "[project]\nname = \"fraud\"\n[tool.modhost]\nworlds = [\"a:b/c\"]\nwit = [\"wit\"]\n\
             import-names = { \"a:b/d@1.0.0\" = \"d\" }\n",
        );
        let package = read.unwrap();
        assert_eq!(package.name, "fraud");
        assert_eq!(package.app, "app");
        assert_eq!(package.worlds, ["a:b/c"]);
        assert_eq!(
            package.wit,
            [std::fs::canonicalize(dir.path().join("wit")).unwrap()]
        );
        assert_eq!(package.import_names["a:b/d@1.0.0"], "d");
    }

    #[test]
    fn names_the_file_and_the_key_of_each_problem() {
        let cases = [
            ("[tool.modhost]\nworlds = [\"a:b/c\"]\nwit = []\n", "[project] name is missing"),
            ("[project]\nname = \"x\"\n[tool.other]\n", "no [tool.modhost] table"),
            ("[project]\nname = \"x\"\n[tool.modhost]\nworlds = []\nwit = []\n", "worlds names no world"),
            ("[project]\nname = \"x\"\n[tool.modhost]\nworlds = [\"a:b/c\"]\nwit = [\"nope\"]\n", "tool.modhost.wit: "),
            ("[project]\nname = \"x\"\n[tool.modhost]\nworlds = [\"a:b/c\"]\nwit = []\napp = \"my-app\"\n", "tool.modhost.app"),
            ("[project]\nname = \"x\"\n[tool.modhost]\nworlds = [\"a:b/c\"]\nwit = []\nwrold = 1\n", "unknown field `wrold`"),
            ("[project]\nname = \"x\"\n[tool.modhost]\nworlds = [\"a:b/c\"]\nwit = []\napp = \"main\"\n", "the module has no"),
        ];
        for (text, expected) in cases {
            let (_dir, read) = module(text);
            let error = read.unwrap_err();
            assert!(
                error.contains(MANIFEST) && error.contains(expected),
                "{text}: {error}"
            );
        }
    }
}
