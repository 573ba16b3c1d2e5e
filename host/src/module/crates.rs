//! Module crates: finding a crate's built component, and building crates with cargo.
//!
//! A deployment may name a module by its crate directory. `modhost up` builds such
//! crates for `wasm32-wasip2` (cargo is incremental: an unchanged crate costs a fraction
//! of a second); `run` and `check` only look for the built component and say how to
//! build it when it is missing.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The target module crates are built for.
pub const GUEST_TARGET: &str = "wasm32-wasip2";
/// The cargo profile module crates are built with (the workspace defines it; a
/// standalone crate without it falls back to cargo's error message).
pub const GUEST_PROFILE: &str = "guest";

/// Where cargo puts the release component of `package` in crate `dir`.
pub fn artifact(dir: &Path, package: &str) -> PathBuf {
    target_dir(dir)
        .join(GUEST_TARGET)
        .join(GUEST_PROFILE)
        .join(format!("{}.wasm", package.replace('-', "_")))
}

/// The component of crate `dir`, or an error saying how to build it.
pub fn built_artifact(dir: &Path, package: &str) -> Result<PathBuf> {
    let path = artifact(dir, package);
    if !path.is_file() {
        bail!(
            "module crate {} is not built (no {}): run `modhost up`, or \
             `cargo build --profile {GUEST_PROFILE} --target {GUEST_TARGET} -p {package}`",
            dir.display(),
            path.display()
        );
    }
    Ok(path)
}

/// Builds the given crates (directory, package) with the guest profile for the guest
/// target, one cargo invocation per workspace.
pub fn build(crates: &[(PathBuf, String)]) -> Result<()> {
    if crates.is_empty() {
        return Ok(());
    }
    ensure_guest_target()?;
    let mut by_workspace: BTreeMap<PathBuf, Vec<&str>> = BTreeMap::new();
    for (dir, package) in crates {
        by_workspace
            .entry(workspace_root(dir))
            .or_default()
            .push(package);
    }
    for (root, packages) in by_workspace {
        let mut command = Command::new(cargo());
        command
            .arg("build")
            .arg("--profile")
            .arg(GUEST_PROFILE)
            .arg("--target")
            .arg(GUEST_TARGET)
            .arg("--manifest-path")
            .arg(root.join("Cargo.toml"));
        for package in &packages {
            command.arg("-p").arg(package);
        }
        tracing::info!(workspace = %root.display(), ?packages, "building module crates");
        let status = command
            .status()
            .with_context(|| "running cargo to build module crates (is cargo installed?)")?;
        if !status.success() {
            bail!("building module crates {packages:?} failed ({status})");
        }
    }
    Ok(())
}

/// Installs the guest target with rustup when the toolchain lacks it.
fn ensure_guest_target() -> Result<()> {
    let libdir = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args(["--print", "target-libdir", "--target", GUEST_TARGET])
        .output();
    if let Ok(output) = libdir {
        let dir = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if output.status.success() && Path::new(&dir).is_dir() {
            return Ok(());
        }
    }
    tracing::info!("installing the {GUEST_TARGET} target with rustup");
    let status = Command::new("rustup")
        .args(["target", "add", GUEST_TARGET])
        .status()
        .context("the wasm32-wasip2 target is missing and rustup is not available to add it")?;
    if !status.success() {
        bail!("`rustup target add {GUEST_TARGET}` failed ({status})");
    }
    Ok(())
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// The outermost directory above `dir` (inclusive) whose Cargo.toml has a
/// `[workspace]` table, or `dir` itself for a standalone crate.
fn workspace_root(dir: &Path) -> PathBuf {
    let mut root = dir.to_path_buf();
    for ancestor in dir.ancestors() {
        let is_workspace = std::fs::read_to_string(ancestor.join("Cargo.toml"))
            .ok()
            .and_then(|text| text.parse::<toml::Table>().ok())
            .is_some_and(|table| table.contains_key("workspace"));
        if is_workspace {
            root = ancestor.to_path_buf();
        }
    }
    root
}

/// Where builds of sources in `dir` go: `$CARGO_TARGET_DIR`, or the `target/` of the
/// workspace `dir` belongs to (the Python and JavaScript builders put their builds
/// there too).
pub(super) fn target_dir(dir: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        // Relative to where modhost runs, as cargo takes it; made absolute, since the
        // builders run their tools from other directories.
        Some(target) => std::path::absolute(&target).unwrap_or_else(|_| PathBuf::from(target)),
        None => workspace_root(dir).join("target"),
    }
}
