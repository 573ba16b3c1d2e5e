//! `modhost up --watch`: rebuild a module crate when its files change, and swap the
//! new build in — checked and migrated like any swap; a build or a swap that fails is
//! reported and the running version keeps serving.

use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::deployment::{ComponentSource, Deployment};
use crate::module::crates;
use crate::module::swap::Refused;
use crate::module::Registry;

/// How long a burst of file changes settles before a rebuild.
const SETTLE: Duration = Duration::from_millis(300);

/// Watches the crates of `deployment`'s local modules and swaps each rebuilt one into
/// `registry`, until the process ends.
pub fn start(deployment: &Deployment, registry: Arc<Registry>) {
    let crates: Vec<(String, PathBuf, String)> = deployment
        .local_modules()
        .filter_map(|module| match &module.component {
            ComponentSource::Crate { dir, package } => {
                Some((module.name.clone(), dir.clone(), package.clone()))
            }
            _ => None,
        })
        .collect();
    if crates.is_empty() {
        tracing::warn!("--watch: no module of this deployment is a crate; nothing to watch");
        return;
    }
    let (changed, mut changes) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            for path in event.paths {
                let _ = changed.send(path);
            }
        }
    });
    let mut watcher = match watcher {
        Ok(watcher) => watcher,
        Err(error) => {
            tracing::error!(%error, "--watch: cannot watch files");
            return;
        }
    };
    for (module, dir, _) in &crates {
        for watched in ["src", "migrations", "Cargo.toml"].map(|p| dir.join(p)) {
            if watched.exists() {
                if let Err(error) = watcher.watch(&watched, RecursiveMode::Recursive) {
                    tracing::warn!(module, path = %watched.display(), %error, "--watch: cannot watch");
                }
            }
        }
        tracing::info!(module, dir = %dir.display(), "--watch: watching");
    }
    tokio::spawn(async move {
        let _watcher = watcher;
        while let Some(first) = changes.recv().await {
            let mut paths = vec![first];
            loop {
                match tokio::time::timeout(SETTLE, changes.recv()).await {
                    Ok(Some(path)) => paths.push(path),
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            for (module, dir, package) in &crates {
                if paths.iter().any(|path| path.starts_with(dir)) {
                    rebuild(&registry, module, dir, package).await;
                }
            }
        }
    });
}

async fn rebuild(registry: &Registry, module: &str, dir: &Path, package: &str) {
    tracing::info!(module, "--watch: files changed; rebuilding");
    let target = (dir.to_path_buf(), package.to_string());
    let built =
        tokio::task::spawn_blocking(move || crates::build(std::slice::from_ref(&target))).await;
    match built {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::error!(module, error = %format!("{error:#}"), "--watch: the build failed; the running version keeps serving");
            return;
        }
        Err(error) => {
            tracing::error!(module, %error, "--watch: the build did not finish");
            return;
        }
    }
    let (Some(slot), Ok(artifact)) = (registry.slot(module), crates::built_artifact(dir, package))
    else {
        return;
    };
    match registry.swapper().swap(&slot, &artifact, None).await {
        Ok(swapped) => {
            tracing::info!(module, serving = %swapped.change.serving, "--watch: swapped in the new build")
        }
        Err(Refused::AlreadyServing { .. }) => {
            tracing::info!(module, "--watch: the build did not change the component");
        }
        Err(refused) => {
            tracing::error!(module, reason = %refused, "--watch: the new build was refused; the running version keeps serving")
        }
    }
}
