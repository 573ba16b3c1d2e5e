//! `modhost up --watch`: rebuild a module (a crate, a Python or a JavaScript module)
//! when its files change, and swap the new build in — checked and migrated like any
//! swap; a build or a swap that fails is reported and the running version keeps
//! serving.

use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::deployment::{ComponentSource, Deployment};
use crate::module::sources;
use crate::module::swap::Refused;
use crate::module::Registry;

/// How long a burst of file changes settles before a rebuild.
const SETTLE: Duration = Duration::from_millis(300);

/// Watches the sources of `deployment`'s local modules and swaps each rebuilt one into
/// `registry`, until the process ends.
pub fn start(deployment: &Deployment, registry: Arc<Registry>) {
    let built: Vec<(String, ComponentSource)> = deployment
        .local_modules()
        .filter(|module| module.component.source_dir().is_some())
        .map(|module| (module.name.clone(), module.component.clone()))
        .collect();
    if built.is_empty() {
        tracing::warn!(
            "--watch: no module of this deployment is built from source; nothing to watch"
        );
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
    for (module, source) in &built {
        for watched in sources::watched(source) {
            if watched.exists() {
                if let Err(error) = watcher.watch(&watched, RecursiveMode::Recursive) {
                    tracing::warn!(module, path = %watched.display(), %error, "--watch: cannot watch");
                }
            }
        }
        let dir = source.source_dir().unwrap_or(Path::new(""));
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
            for (module, source) in &built {
                let changed = paths
                    .iter()
                    .any(|path| sources::is_source_change(source, path));
                if changed {
                    rebuild(&registry, module, source).await;
                }
            }
        }
    });
}

async fn rebuild(registry: &Registry, module: &str, source: &ComponentSource) {
    tracing::info!(module, "--watch: files changed; rebuilding");
    let target = source.clone();
    let built = tokio::task::spawn_blocking(move || sources::build([&target])).await;
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
    let (Some(slot), Ok(artifact)) = (registry.slot(module), sources::component_file(source))
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
