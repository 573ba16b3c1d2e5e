//! Building JavaScript modules with componentize-js.
//!
//! componentize-js (npm) bundles StarlingMonkey, a SpiderMonkey-based JS engine built
//! for components, with the module's code (an ES module; its relative imports are
//! followed) and the bindings of its WIT world into one component, initialised at build
//! time. modhost finds it — `MODHOST_COMPONENTIZE_JS`, else the tool cache
//! (`$MODHOST_TOOLS/componentize-js`, default `~/.cache/modhost/tools/componentize-js`)
//! — and, when none is there, installs the pinned version into the tool cache with npm.
//!
//! componentize-js reads one WIT package directory: modhost writes one per build, the
//! merged world (as for Python) with every WIT path of the module copied under its
//! `deps/`. Files the module's code imports from outside its directory (the SDK) are
//! named in `"imports"`, so a change to them rebuilds it.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::sources::{self, build_component, merged_world, run, scratch, tools_dir};
use crate::deployment::JavaScriptPackage;

/// The componentize-js release modhost builds with (WASI 0.2.x, as the host serves).
pub const COMPONENTIZE_JS_VERSION: &str = "0.23.0";
/// Its npm package.
const PACKAGE: &str = "@bytecodealliance/componentize-js";

/// Where the built component of `package` goes: `<target>/javascript/<name>.wasm`.
pub fn artifact(package: &JavaScriptPackage) -> PathBuf {
    sources::artifact(&package.dir, "javascript", &package.name)
}

/// The built component of `package`, or an error saying how to build it.
pub fn built_artifact(package: &JavaScriptPackage) -> Result<PathBuf> {
    sources::built(artifact(package), "JavaScript", &package.dir)
}

/// Builds `package` unless its stamp says the component is up to date.
pub fn build(package: &JavaScriptPackage) -> Result<()> {
    let output = artifact(package);
    let sources = package.sources();
    let label = format!("componentize-js {COMPONENTIZE_JS_VERSION}");
    // The tool is looked for (and installed) only when there is something to build:
    // an up-to-date module costs `modhost up` no process.
    let built = build_component(&output, &package.dir, &label, &sources, |partial| {
        let tool = componentize_js()?;
        let wit_dir = scratch(&output, "wit");
        let built = write_wit_package(&wit_dir, &package.worlds, &package.wit).and_then(|()| {
            tracing::info!(module = %package.name, dir = %package.dir.display(), "building JavaScript module");
            // componentize-js lets the module's code import files under its working
            // directory only (when the main file is under it): run it from the deepest
            // directory holding the module, its WIT and its `imports`.
            run(
                Command::new(&tool)
                    .current_dir(application_root(package))
                    .arg("--wit")
                    .arg(&wit_dir)
                    .args(["--world-name", "module"])
                    .arg("-o")
                    .arg(partial)
                    .arg(&package.main),
                &format!(
                    "building JavaScript module {} with componentize-js (its message is above)",
                    package.dir.display()
                ),
            )
        });
        let _ = std::fs::remove_dir_all(&wit_dir);
        built
    })?;
    if !built {
        tracing::debug!(module = %package.name, "JavaScript module up to date");
    }
    Ok(())
}

/// The deepest directory that holds the module's directory and every path it is built
/// from (its WIT and its `imports`).
fn application_root(package: &JavaScriptPackage) -> PathBuf {
    let mut root = package.dir.clone();
    for path in package.wit.iter().chain(&package.imports) {
        while !path.starts_with(&root) {
            match root.parent() {
                Some(parent) => root = parent.to_path_buf(),
                None => break,
            }
        }
    }
    root
}

/// Writes the WIT package componentize-js reads: the merged world in `dir`, and every
/// WIT file or package directory in `wit` (with a package directory's own `deps/`
/// lifted beside it) under `dir/deps/`.
fn write_wit_package(dir: &Path, worlds: &[String], wit: &[PathBuf]) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    let deps = dir.join("deps");
    std::fs::create_dir_all(&deps).with_context(|| format!("creating {}", deps.display()))?;
    std::fs::write(dir.join("world.wit"), merged_world(worlds))
        .with_context(|| format!("writing {}", dir.join("world.wit").display()))?;
    for (index, path) in wit.iter().enumerate() {
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        if path.is_dir() {
            let package = deps.join(format!("{index:02}-{name}"));
            copy_wit_files(path, &package)?;
            let nested = path.join("deps");
            if nested.is_dir() {
                for entry in std::fs::read_dir(&nested)
                    .with_context(|| format!("reading {}", nested.display()))?
                {
                    let entry = entry?;
                    let target = deps.join(format!(
                        "{index:02}-deps-{}",
                        entry.file_name().to_string_lossy()
                    ));
                    if entry.path().is_dir() {
                        copy_wit_files(&entry.path(), &target)?;
                    } else {
                        copy(&entry.path(), &target)?;
                    }
                }
            }
        } else {
            copy(path, &deps.join(format!("{index:02}-{name}")))?;
        }
    }
    Ok(())
}

/// Copies the `.wit` files directly in `from` into the new directory `to`.
fn copy_wit_files(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "wit") {
            if let Some(name) = path.file_name() {
                copy(&path, &to.join(name))?;
            }
        }
    }
    Ok(())
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)
        .map(|_| ())
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
}

/// The componentize-js to build with, installing it into the tool cache with npm when
/// there is none.
fn componentize_js() -> Result<PathBuf> {
    // A prefix of its own: npm installing it beside other packages (the browser
    // tests' playwright-core) has been seen to leave one of its dependencies out.
    let prefix = tools_dir().join("componentize-js");
    let cached = prefix
        .join("node_modules")
        .join(".bin")
        .join("componentize-js");
    sources::tool(
        "MODHOST_COMPONENTIZE_JS",
        cached,
        None,
        COMPONENTIZE_JS_VERSION,
        || {
            tracing::info!(
                prefix = %prefix.display(),
                "installing componentize-js {COMPONENTIZE_JS_VERSION} (JavaScript modules are built with it)"
            );
            std::fs::create_dir_all(&prefix)
                .with_context(|| format!("creating {}", prefix.display()))?;
            run(
                Command::new("npm")
                    .arg("install")
                    .arg("--prefix")
                    .arg(&prefix)
                    .args(["--no-audit", "--no-fund", "--silent"])
                    .arg(format!("{PACKAGE}@{COMPONENTIZE_JS_VERSION}")),
                "installing componentize-js with npm (is Node.js with npm installed? Debian: \
                 apt-get install nodejs npm)",
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_application_root_holds_the_module_and_its_wit() {
        let package = JavaScriptPackage {
            dir: PathBuf::from("/apps/shop/modules/reviews"),
            name: "reviews".into(),
            main: PathBuf::from("/apps/shop/modules/reviews/app.js"),
            worlds: vec![],
            wit: vec![
                PathBuf::from("/apps/shop/wit/modhost/sql.wit"),
                PathBuf::from("/apps/shop/wit/wasi/http"),
            ],
            imports: vec![PathBuf::from("/apps/shop/modules/sdk-js")],
        };
        assert_eq!(application_root(&package), PathBuf::from("/apps/shop"));
        let sdk_only = JavaScriptPackage {
            wit: vec![],
            ..package.clone()
        };
        assert_eq!(
            application_root(&sdk_only),
            PathBuf::from("/apps/shop/modules")
        );
        let alone = JavaScriptPackage {
            wit: vec![],
            imports: vec![],
            ..package
        };
        assert_eq!(
            application_root(&alone),
            PathBuf::from("/apps/shop/modules/reviews")
        );
    }

    #[test]
    fn the_wit_package_holds_the_world_and_every_dependency_flat() {
        let src = tempfile::tempdir().unwrap();
        let http = src.path().join("http");
        std::fs::create_dir_all(http.join("deps")).unwrap();
        std::fs::write(http.join("http.wit"), "package wasi:http@0.2.12;").unwrap();
        std::fs::write(http.join("README.md"), "not WIT").unwrap();
        std::fs::write(http.join("deps/io.wit"), "package wasi:io@0.2.12;").unwrap();
        let sql = src.path().join("sql.wit");
        std::fs::write(&sql, "package modhost:sql@2.0.0;").unwrap();
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("m.wit");
        std::fs::create_dir_all(dir.join("stale")).unwrap();
        write_wit_package(&dir, &["a:b/c".into()], &[http, sql]).unwrap();
        assert!(
            !dir.join("stale").exists(),
            "an earlier build's package is cleared"
        );
        assert!(std::fs::read_to_string(dir.join("world.wit"))
            .unwrap()
            .contains("include a:b/c;"));
        assert!(dir.join("deps/00-http/http.wit").is_file());
        assert!(!dir.join("deps/00-http/README.md").exists());
        assert!(dir.join("deps/00-deps-io.wit").is_file());
        assert!(dir.join("deps/01-sql.wit").is_file());
    }
}
