//! Building Python modules with componentize-py.
//!
//! componentize-py (PyPI) bundles CPython, the module's code and the bindings of its
//! WIT world into one component. modhost finds it — `MODHOST_COMPONENTIZE_PY`, else
//! the tool cache (`$MODHOST_TOOLS`, default `~/.cache/modhost/tools`), else `PATH` —
//! and, when none is there, installs the pinned version into a virtualenv in the tool
//! cache, as `modhost up` installs the Rust guest target: a fresh machine with Python
//! needs nothing else.
//!
//! The module's worlds are merged into one generated world (`include` each), because
//! componentize-py's own merging of several `--world`s fails on some worlds.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::sources::{self, build_component, merged_world, run, scratch, tools_dir};
use crate::deployment::PythonPackage;

/// The componentize-py release modhost builds with (its WASI 0.2 version matches the
/// host's: wasi:http 0.2.12).
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";

/// Python names every module gets for the interfaces the Python SDK uses, so the SDK
/// finds them whatever else the module's world holds.
const SDK_IMPORT_NAMES: &[(&str, &str)] = &[
    ("wasi:http/types@0.2.12", "wasi_http_types"),
    ("wasi:io/streams@0.2.12", "wasi_io_streams"),
];

/// Where the built component of `package` goes: `<target>/python/<name>.wasm`, beside
/// the Rust modules' builds.
pub fn artifact(package: &PythonPackage) -> PathBuf {
    sources::artifact(&package.dir, "python", &package.name)
}

/// The built component of `package`, or an error saying how to build it.
pub fn built_artifact(package: &PythonPackage) -> Result<PathBuf> {
    sources::built(artifact(package), "Python", &package.dir)
}

/// Builds `package` unless its stamp says the component is up to date.
pub fn build(package: &PythonPackage) -> Result<()> {
    let output = artifact(package);
    let sources = package.sources();
    let label = format!("componentize-py {COMPONENTIZE_PY_VERSION}");
    // The tool is looked for (and installed) only when there is something to build:
    // an up-to-date module costs `modhost up` no process.
    let built = build_component(&output, &package.dir, &label, &sources, |partial| {
        let tool = componentize_py()?;
        let world_dir = scratch(&output, "world");
        std::fs::create_dir_all(&world_dir)
            .with_context(|| format!("creating {}", world_dir.display()))?;
        let world_file = world_dir.join("module.wit");
        let built = std::fs::write(&world_file, merged_world(&package.worlds))
            .with_context(|| format!("writing {}", world_file.display()))
            .and_then(|()| {
                tracing::info!(module = %package.name, dir = %package.dir.display(), "building Python module");
                run(
                    &mut componentize(&tool, package, &world_file, partial),
                    &format!(
                        "building Python module {} with componentize-py (its message is above)",
                        package.dir.display()
                    ),
                )
            });
        let _ = std::fs::remove_dir_all(&world_dir);
        built
    })?;
    if !built {
        tracing::debug!(module = %package.name, "Python module up to date");
    }
    Ok(())
}

/// The componentize-py command that builds `package` against `world_file` into `output`.
fn componentize(tool: &Path, package: &PythonPackage, world_file: &Path, output: &Path) -> Command {
    let mut command = Command::new(tool);
    command.arg("--quiet");
    for wit in &package.wit {
        command.arg("-d").arg(wit);
    }
    command.arg("-d").arg(world_file);
    command.args(["-w", "modhost:build/module"]);
    let names = SDK_IMPORT_NAMES
        .iter()
        .map(|(interface, name)| (interface.to_string(), name.to_string()))
        .chain(package.import_names.clone());
    for (interface, name) in names {
        command
            .arg("--import-interface-name")
            .arg(format!("{interface}={name}"));
    }
    command.arg("componentize");
    command.arg("-p").arg(&package.dir);
    for path in &package.python_path {
        command.arg("-p").arg(path);
    }
    command.arg(&package.app).arg("-o").arg(output);
    command
}

/// The componentize-py to build with, installing it into a virtualenv in the tool
/// cache when there is none.
fn componentize_py() -> Result<PathBuf> {
    let venv = tools_dir().join("python");
    let cached = venv.join("bin").join("componentize-py");
    sources::tool(
        "MODHOST_COMPONENTIZE_PY",
        cached,
        Some("componentize-py"),
        COMPONENTIZE_PY_VERSION,
        || {
            tracing::info!(
                venv = %venv.display(),
                "installing componentize-py {COMPONENTIZE_PY_VERSION} (Python modules are built with it)"
            );
            run(
                Command::new("python3").arg("-m").arg("venv").arg(&venv),
                "creating a Python virtualenv for componentize-py (is python3 with venv installed? \
                 Debian: apt-get install python3-venv)",
            )?;
            run(
                Command::new(venv.join("bin").join("pip"))
                    .args(["install", "--quiet", "--disable-pip-version-check"])
                    .arg(format!("componentize-py=={COMPONENTIZE_PY_VERSION}")),
                "installing componentize-py from PyPI",
            )
        },
    )
}
