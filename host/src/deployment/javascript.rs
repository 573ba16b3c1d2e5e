//! JavaScript modules: a directory with a `package.json` whose `"modhost"` object says
//! how componentize-js builds it into a component (docs/writing-a-module.md).
//!
//! ```json
//! {
//!   "name": "reviews",
//!   "type": "module",
//!   "modhost": {
//!     "main": "app.js",
//!     "worlds": ["shop:reviews/reviews@1.0.0", "modhost:http/routes@1.0.0"],
//!     "wit": ["../../wit/wasi/http", "../../wit/modhost/sql.wit", "…"]
//!   }
//! }
//! ```
//!
//! Paths are relative to the `package.json`. This file only reads and checks it;
//! building is the module layer's (`module::sources`).

use serde::Deserialize;
use std::path::{Path, PathBuf};

use super::python::{check_package_name, existing_paths};

/// The file that marks a directory as a JavaScript module (with a `"modhost"` key).
pub const MANIFEST: &str = "package.json";

/// A JavaScript module's source, as its `package.json` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JavaScriptPackage {
    /// The module's directory (holding `package.json`).
    pub dir: PathBuf,
    /// `name`: names the built component.
    pub name: String,
    /// The ES module holding the exports (`app.js`), inside `dir`.
    pub main: PathBuf,
    /// The WIT worlds it is built against, merged into one.
    pub worlds: Vec<String>,
    /// WIT files or package directories, each after the packages it uses.
    pub wit: Vec<PathBuf>,
    /// Files and directories outside `dir` its code imports (the SDK): sources too.
    pub imports: Vec<PathBuf>,
}

impl JavaScriptPackage {
    /// Everything the component is built from: a change to any rebuilds it.
    pub fn sources(&self) -> Vec<PathBuf> {
        std::iter::once(&self.dir)
            .chain(&self.wit)
            .chain(&self.imports)
            .cloned()
            .collect()
    }
}

#[derive(Deserialize)]
struct Manifest {
    name: Option<String>,
    modhost: Option<ModhostTable>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModhostTable {
    main: String,
    worlds: Vec<String>,
    wit: Vec<String>,
    #[serde(default)]
    imports: Vec<String>,
}

/// Whether `dir` holds a JavaScript module: a `package.json` with a `"modhost"` key
/// (or one that does not parse but mentions it, so that [`read`] says what is wrong).
pub fn is_javascript_module(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join(MANIFEST)) else {
        return false;
    };
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(value) => value.get("modhost").is_some(),
        Err(_) => text.contains("\"modhost\""),
    }
}

/// Reads and checks the `package.json` of the JavaScript module in `dir`; the error
/// names the file and the key.
pub fn read(dir: &Path) -> Result<JavaScriptPackage, String> {
    let manifest = dir.join(MANIFEST);
    let file = manifest.display();
    let text = std::fs::read_to_string(&manifest).map_err(|error| format!("{file}: {error}"))?;
    let parsed: Manifest =
        serde_json::from_str(&text).map_err(|error| format!("{file}: {error}"))?;
    let name = parsed
        .name
        .ok_or_else(|| format!("{file}: \"name\" is missing"))?;
    check_package_name(&name).map_err(|problem| format!("{file}: \"name\" {problem}"))?;
    let table = parsed
        .modhost
        .ok_or_else(|| format!("{file}: no \"modhost\" object"))?;
    if table.worlds.is_empty() {
        return Err(format!("{file}: modhost.worlds names no world"));
    }
    let main = std::fs::canonicalize(dir.join(&table.main))
        .ok()
        .filter(|main| main.is_file() && main.starts_with(dir))
        .ok_or_else(|| {
            format!(
                "{file}: modhost.main: {} is not a file of the module",
                dir.join(&table.main).display()
            )
        })?;
    let wit = existing_paths(dir, &table.wit)
        .map_err(|missing| format!("{file}: modhost.wit: {missing}"))?;
    let imports = existing_paths(dir, &table.imports)
        .map_err(|missing| format!("{file}: modhost.imports: {missing}"))?;
    Ok(JavaScriptPackage {
        dir: dir.to_path_buf(),
        name,
        main,
        worlds: table.worlds,
        wit,
        imports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(json: &str) -> (tempfile::TempDir, Result<JavaScriptPackage, String>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("wit")).unwrap();
        std::fs::write(dir.path().join("app.js"), "").unwrap();
        std::fs::write(dir.path().join(MANIFEST), json).unwrap();
        let read = read(dir.path());
        (dir, read)
    }

    #[test]
    fn reads_the_modhost_object() {
        let (dir, read) = module(
            r#"{"name": "reviews", "modhost": {"main": "app.js", "worlds": ["a:b/c"], "wit": ["wit"]}}"#,
        );
        let package = read.unwrap();
        assert_eq!(package.name, "reviews");
        assert_eq!(
            package.main,
            std::fs::canonicalize(dir.path().join("app.js")).unwrap()
        );
        assert!(is_javascript_module(dir.path()));
    }

    #[test]
    fn names_the_file_and_the_key_of_each_problem() {
        let cases = [
            (
                r#"{"modhost": {"main": "app.js", "worlds": ["a:b/c"], "wit": []}}"#,
                "\"name\" is missing",
            ),
            (
                r#"{"name": "x", "modhost": {"main": "app.js", "worlds": [], "wit": []}}"#,
                "worlds names no world",
            ),
            (
                r#"{"name": "x", "modhost": {"main": "nope.js", "worlds": ["a:b/c"], "wit": []}}"#,
                "modhost.main",
            ),
            (
                r#"{"name": "x", "modhost": {"main": "app.js", "worlds": ["a:b/c"], "wit": ["gone"]}}"#,
                "modhost.wit: ",
            ),
            (
                r#"{"name": "x", "modhost": {"main": "app.js", "worlds": ["a:b/c"], "wit": [], "wrold": 1}}"#,
                "unknown field `wrold`",
            ),
        ];
        for (json, expected) in cases {
            let (_dir, read) = module(json);
            let error = read.unwrap_err();
            assert!(
                error.contains(MANIFEST) && error.contains(expected),
                "{json}: {error}"
            );
        }
        let plain = tempfile::tempdir().unwrap();
        std::fs::write(plain.path().join(MANIFEST), r#"{"name": "web-app"}"#).unwrap();
        assert!(
            !is_javascript_module(plain.path()),
            "a package.json without modhost is no module"
        );
    }
}
