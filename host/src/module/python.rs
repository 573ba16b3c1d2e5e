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

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::sources::{is_up_to_date, merged_world, run, tools_dir};
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
    super::crates::target_dir(&package.dir)
        .join("python")
        .join(format!("{}.wasm", package.name))
}

/// The built component of `package`, or an error saying how to build it.
pub fn built_artifact(package: &PythonPackage) -> Result<PathBuf> {
    let path = artifact(package);
    if !path.is_file() {
        bail!(
            "Python module {} is not built (no {}): run `modhost up` or `modhost build`",
            package.dir.display(),
            path.display()
        );
    }
    Ok(path)
}

/// Builds `package` unless its component is newer than every file it is built from.
pub fn build(package: &PythonPackage) -> Result<()> {
    let output = artifact(package);
    let sources = std::iter::once(&package.dir)
        .chain(&package.wit)
        .chain(&package.python_path);
    if is_up_to_date(sources, &output) {
        tracing::debug!(module = %package.name, "Python module up to date");
        return Ok(());
    }
    let tool = componentize_py()?;
    let parent = output
        .parent()
        .context("the build directory has no parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let world_dir = parent.join(format!("{}.world", package.name));
    std::fs::create_dir_all(&world_dir)
        .with_context(|| format!("creating {}", world_dir.display()))?;
    let world_file = world_dir.join("module.wit");
    std::fs::write(&world_file, merged_world(&package.worlds))
        .with_context(|| format!("writing {}", world_file.display()))?;

    let partial = parent.join(format!("{}.wasm.partial", package.name));
    let mut command = Command::new(&tool);
    command.arg("--quiet");
    for wit in &package.wit {
        command.arg("-d").arg(wit);
    }
    command.arg("-d").arg(&world_file);
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
    command.arg(&package.app).arg("-o").arg(&partial);
    tracing::info!(module = %package.name, dir = %package.dir.display(), "building Python module");
    let status = command
        .status()
        .with_context(|| format!("running {}", tool.display()))?;
    if !status.success() {
        bail!(
            "building Python module {} failed ({status}); componentize-py's message is above",
            package.dir.display()
        );
    }
    std::fs::rename(&partial, &output)
        .with_context(|| format!("moving the build to {}", output.display()))?;
    Ok(())
}

/// The componentize-py to build with, installing it into the tool cache when there
/// is none.
fn componentize_py() -> Result<PathBuf> {
    if let Some(tool) = std::env::var_os("MODHOST_COMPONENTIZE_PY") {
        return Ok(PathBuf::from(tool));
    }
    let venv = tools_dir().join("python");
    let cached = venv.join("bin").join("componentize-py");
    if has_version(&cached) {
        return Ok(cached);
    }
    if has_version(Path::new("componentize-py")) {
        return Ok(PathBuf::from("componentize-py"));
    }
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
    )?;
    if !has_version(&cached) {
        bail!(
            "componentize-py {COMPONENTIZE_PY_VERSION} was installed into {} but does not run",
            venv.display()
        );
    }
    Ok(cached)
}

/// Whether `tool --version` runs and is the pinned version.
fn has_version(tool: &Path) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|output| {
            output.status.success()
                && String::from_utf8_lossy(&output.stdout).contains(COMPONENTIZE_PY_VERSION)
        })
}
