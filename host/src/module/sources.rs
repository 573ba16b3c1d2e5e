//! Modules built from source: Rust crates (`crates`) and Python modules (`python`).
//!
//! `modhost up` builds every module of the deployment that names a source directory;
//! `run`, `check` and swaps only look for the built component and say how to build it
//! when it is missing. This is the one place that knows which builder a source needs.

use anyhow::Result;
use std::path::PathBuf;

use super::{crates, python};
use crate::deployment::ComponentSource;

/// The component file `source` names: the file itself, or the build of a source.
pub fn component_file(source: &ComponentSource) -> Result<PathBuf> {
    match source {
        ComponentSource::Wasm(path) | ComponentSource::Precompiled(path) => Ok(path.clone()),
        ComponentSource::Crate { dir, package } => crates::built_artifact(dir, package),
        ComponentSource::Python(package) => python::built_artifact(package),
    }
}

/// Builds every source among `sources` that needs it: crates with one cargo run per
/// workspace, Python modules one by one (each skipped when up to date).
pub fn build<'a>(sources: impl IntoIterator<Item = &'a ComponentSource>) -> Result<()> {
    let mut crates = Vec::new();
    let mut python = Vec::new();
    for source in sources {
        match source {
            ComponentSource::Crate { dir, package } => crates.push((dir.clone(), package.clone())),
            ComponentSource::Python(package) => python.push(package),
            ComponentSource::Wasm(_) | ComponentSource::Precompiled(_) => {}
        }
    }
    crates::build(&crates)?;
    for package in python {
        python::build(package)?;
    }
    Ok(())
}

/// The files and directories whose changes call for a rebuild of `source` (for
/// `modhost up --watch`); empty for a component file.
pub fn watched(source: &ComponentSource) -> Vec<PathBuf> {
    let names: &[&str] = match source {
        ComponentSource::Wasm(_) | ComponentSource::Precompiled(_) => &[],
        ComponentSource::Crate { .. } => &["src", "migrations", "Cargo.toml"],
        ComponentSource::Python(_) => &["."],
    };
    let Some(dir) = source.source_dir() else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = names.iter().map(|name| dir.join(name)).collect();
    if let ComponentSource::Python(package) = source {
        paths.extend(package.python_path.iter().cloned());
    }
    paths
}
