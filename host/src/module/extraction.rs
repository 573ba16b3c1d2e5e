//! A module moving to another node with its data: this node's part, whichever it
//! plays. The admin API drives the steps (`admin/extract.rs`); each is here.
//!
//! - The **source** ([`Departure`]) serves the module while its data is copied, then
//!   holds its new work ([`super::hold`]), stops its background work, lets its work in
//!   flight finish and settles its files (nothing left in a journal), so the last
//!   changes can be copied; then it routes the module to the target and releases the
//!   held work there — or, if anything failed, releases it here, as if nothing
//!   happened. Its copy of the data stays where it was.
//! - The **target** ([`Registry::prepare_arrival`]) links the module with the version
//!   the deployment serves (contract-checked as at start), receives its files beside
//!   their places, and only once every file's digest and counts match the source's
//!   opens it and serves it ([`Registry::complete_arrival`]).
//! - **Every other node** routes the module to the target ([`Registry::moved`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::directory::RemoteModule;
use super::moving::{self, Chunks};
use super::slot::ModuleSlot;
use super::version::ModuleVersion;
use super::Registry;
use crate::capabilities::OpenContext;

/// What a module's data files hold once copied: each file's SHA-256, and what the
/// capabilities count in them (rows by table), as the source read them with the
/// module's work held.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Settled {
    /// The SHA-256 of each data file, in [`Registry::data_files`] order.
    pub digests: Vec<String>,
    /// What each capability counted, by name (a table's rows).
    pub counts: BTreeMap<String, u64>,
}

/// A module arriving here: linked, not serving, its files being received.
pub(super) struct Arrival {
    version: Arc<ModuleVersion>,
    files: Vec<PathBuf>,
}

/// Where a file being received is written until it is complete.
fn incoming(file: &std::path::Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".incoming");
    PathBuf::from(name)
}

impl Registry {
    /// The files that hold module `name`'s data on this node (none for a module
    /// without a database of its own here).
    pub fn data_files(&self, name: &str) -> Vec<PathBuf> {
        let Some(spec) = self.deployment().modules.get(name) else {
            return Vec::new();
        };
        self.capabilities().data_files(OpenContext {
            deployment: self.deployment(),
            spec,
        })
    }

    /// Links module `name` to serve here later, with its data to come: refused when it
    /// runs here already or does not link. Files left by an earlier attempt go.
    pub fn prepare_arrival(&self, name: &str) -> Result<usize, String> {
        if self.directory().local(name).is_some() {
            return Err(format!("module {name} already runs on this node"));
        }
        let spec = self
            .deployment()
            .modules
            .get(name)
            .ok_or_else(|| format!("no module {name} is deployed"))?;
        let version = self
            .swapper()
            .link_placed(spec)
            .map_err(|error| format!("{error:#}"))?;
        let files = self.data_files(name);
        for file in &files {
            let _ = std::fs::remove_file(incoming(file));
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|error| format!("creating {}: {error}", dir.display()))?;
            }
        }
        let count = files.len();
        tracing::info!(
            module = name,
            files = count,
            "extraction: the module is linked here, its data to come"
        );
        self.lock_arrivals().insert(
            name.to_string(),
            Arrival {
                version: Arc::new(version),
                files,
            },
        );
        Ok(count)
    }

    /// Writes `chunks` of data file `index` of arriving module `name`.
    pub fn receive(&self, name: &str, index: usize, chunks: &Chunks) -> Result<(), String> {
        let file = self
            .lock_arrivals()
            .get(name)
            .and_then(|arrival| arrival.files.get(index).cloned())
            .ok_or_else(|| format!("no data file {index} of module {name} is awaited here"))?;
        moving::apply(&incoming(&file), chunks).map_err(|error| format!("{error:#}"))
    }

    /// Checks the files received for `name` against `settled` (the source's digests
    /// and counts), puts them in place, opens the module and makes it serve here. On
    /// any mismatch nothing serves, and the files received are removed.
    pub async fn complete_arrival(&self, name: &str, settled: &Settled) -> Result<Settled, String> {
        let Some(arrival) = self.lock_arrivals().remove(name) else {
            return Err(format!("module {name} is not arriving here"));
        };
        let checked = self.check_received(&arrival, settled).await;
        let received = match checked {
            Ok(received) => received,
            Err(why) => {
                remove_received(&arrival.files);
                return Err(why);
            }
        };
        for file in &arrival.files {
            // A journal left beside an older copy would be replayed into this one.
            for suffix in ["-wal", "-shm"] {
                let mut journal = file.as_os_str().to_owned();
                journal.push(suffix);
                let _ = std::fs::remove_file(PathBuf::from(journal));
            }
            std::fs::rename(incoming(file), file)
                .map_err(|error| format!("putting {} in place: {error}", file.display()))?;
        }
        let module = arrival.version.module.clone();
        self.open_module(&module).await?;
        let slot = Arc::new(ModuleSlot::new(
            arrival.version,
            self.deployment().rollout.clone(),
        ));
        let here = self.deployment().node.clone().unwrap_or_default();
        self.directory().republish(|placement| {
            placement.remote.remove(name);
            placement.local.insert(name.to_string(), slot.clone());
            placement
                .placed
                .insert(name.to_string(), vec![here.clone()]);
        });
        self.start_modules(std::slice::from_ref(&slot));
        self.write_placement(name, &here);
        tracing::info!(
            module = name,
            "extraction: the module serves on this node now, with its data"
        );
        Ok(received)
    }

    /// The digests and counts of what was received for `arrival`, if they are the
    /// source's.
    async fn check_received(
        &self,
        arrival: &Arrival,
        settled: &Settled,
    ) -> Result<Settled, String> {
        let mut received = Settled::default();
        for file in &arrival.files {
            let file = incoming(file);
            received
                .digests
                .push(moving::digest(&file).map_err(|error| format!("{error:#}"))?);
            let counted = self
                .capabilities()
                .count(&file)
                .await
                .map_err(|error| format!("{error:#}"))?;
            received.counts.extend(counted);
        }
        if received.digests != settled.digests {
            return Err(format!(
                "the copy does not match the source's files (SHA-256 {:?} here, {:?} there)",
                received.digests, settled.digests
            ));
        }
        if received.counts != settled.counts {
            return Err(format!(
                "the copy's rows do not match the source's ({:?} here, {:?} there)",
                received.counts, settled.counts
            ));
        }
        Ok(received)
    }

    /// Drops module `name`'s arrival: nothing of it serves here, its files received
    /// are removed.
    pub fn abandon_arrival(&self, name: &str) {
        if let Some(arrival) = self.lock_arrivals().remove(name) {
            remove_received(&arrival.files);
            tracing::info!(
                module = name,
                "extraction: called off; nothing of the module serves here"
            );
        }
    }

    /// Routes module `name` to node `to`, which serves it now (its calls and
    /// requests go there).
    pub fn moved(&self, name: &str, to: &str) -> Result<(), String> {
        if self.directory().local(name).is_some() {
            return Err(format!("module {name} runs on this node"));
        }
        let spec = self
            .deployment()
            .modules
            .get(name)
            .ok_or_else(|| format!("no module {name} is deployed"))?;
        let remote = Arc::new(RemoteModule {
            nodes: vec![to.to_string()],
            timeout: spec.limits.timeout.duration(),
        });
        self.directory().republish(|placement| {
            placement.remote.insert(name.to_string(), remote.clone());
            placement
                .placed
                .insert(name.to_string(), vec![to.to_string()]);
        });
        self.write_placement(name, to);
        tracing::info!(
            module = name,
            node = to,
            "extraction: the module is served by another node now"
        );
        Ok(())
    }

    /// Starts module `name`'s departure from this node: it must run here.
    pub fn depart(self: &Arc<Self>, name: &str) -> Result<Departure, String> {
        let slot = self
            .directory()
            .local(name)
            .ok_or_else(|| format!("module {name} does not run on this node"))?;
        if let Some(reason) = slot.serving().module.not_started() {
            return Err(format!("module {name} did not start here: {reason}"));
        }
        Ok(Departure {
            registry: self.clone(),
            files: self.data_files(name),
            slot,
            held_at: None,
        })
    }
}

impl Registry {
    /// Writes `name = [node]` in this node's deployment file, so that a restart or a
    /// reload keeps where the module went.
    fn write_placement(&self, name: &str, node: &str) {
        let file = self.deployment().origins.file_of("placement").to_path_buf();
        match crate::deployment::write_placement(&file, name, &[node.to_string()]) {
            Ok(()) => {
                tracing::info!(module = name, node, file = %file.display(), "extraction: the new placement is written in the deployment file")
            }
            Err(error) => {
                tracing::warn!(module = name, file = %file.display(), %error, "extraction: cannot write the new placement; edit the file before the next restart or reload")
            }
        }
    }
}

/// Removes the files received for an arrival.
fn remove_received(files: &[PathBuf]) {
    for file in files {
        let _ = std::fs::remove_file(incoming(file));
    }
}

/// A module leaving this node, step by step (see the module's docs). Dropped while
/// its work is held — its coordinator gone — it resumes serving here.
pub struct Departure {
    registry: Arc<Registry>,
    slot: Arc<ModuleSlot>,
    files: Vec<PathBuf>,
    held_at: Option<Instant>,
}

impl Departure {
    /// The module's data files here, in the order the target expects them.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Settles the module's files as far as goes while it serves: what is copied
    /// then is close to what will be held.
    pub async fn settle_serving(&self) -> Result<(), String> {
        let module = self.slot.serving().module.clone();
        let opening = OpenContext {
            deployment: self.registry.deployment(),
            spec: &module.spec,
        };
        self.registry
            .capabilities()
            .settle(opening, module.state(), false)
            .await
            .map_err(|error| format!("{error:#}"))
    }

    /// Holds the module's new work, stops its background work and waits, at most
    /// `limit`, for its work in flight to finish; then settles its files. Refused —
    /// with the hold released and the work restarted — when it does not drain in time.
    pub async fn hold(&mut self, limit: Duration) -> Result<Settled, String> {
        let started = Instant::now();
        self.slot.hold.hold();
        self.held_at = Some(started);
        let grace = limit;
        self.registry.stop_module(&self.slot.name, grace).await;
        let module = self.slot.serving().module.clone();
        while module.in_flight() > 0 {
            if started.elapsed() >= limit {
                let left = module.in_flight();
                self.resume();
                return Err(format!(
                    "{left} requests or calls were still running after {limit:?}: held too long"
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let opening = OpenContext {
            deployment: self.registry.deployment(),
            spec: &module.spec,
        };
        if let Err(error) = self
            .registry
            .capabilities()
            .settle(opening, module.state(), true)
            .await
        {
            self.resume();
            return Err(format!("{error:#}"));
        }
        let mut settled = Settled::default();
        for file in &self.files {
            let read = moving::digest(file).map_err(|error| format!("{error:#}"));
            let counted = self.registry.capabilities().count(file).await;
            match (read, counted) {
                (Ok(digest), Ok(counted)) => {
                    settled.digests.push(digest);
                    settled.counts.extend(counted);
                }
                (Err(why), _) => {
                    self.resume();
                    return Err(why);
                }
                (_, Err(error)) => {
                    self.resume();
                    return Err(format!("{error:#}"));
                }
            }
        }
        Ok(settled)
    }

    /// How long the module's work has been held.
    pub fn held_for(&self) -> Duration {
        self.held_at.map_or(Duration::ZERO, |at| at.elapsed())
    }

    /// Calls the departure off: the module serves here as before, its held work goes
    /// on here, its background work starts again.
    pub fn resume(&mut self) {
        if self.held_at.take().is_some() {
            self.registry
                .start_modules(std::slice::from_ref(&self.slot));
        }
        self.slot.hold.release();
        tracing::warn!(module = %self.slot.name, "extraction: called off; the module serves on this node as before");
    }

    /// The module serves on `to` now: routes it there and releases the held work,
    /// which goes there too. Its data files stay here, unused.
    pub fn leave(mut self, to: &str) {
        let name = self.slot.name.clone();
        let timeout = self.slot.serving().limits().timeout.duration();
        let remote = Arc::new(RemoteModule {
            nodes: vec![to.to_string()],
            timeout,
        });
        self.registry.directory().republish(|placement| {
            placement.local.remove(&name);
            placement.remote.insert(name.clone(), remote.clone());
            placement.placed.insert(name.clone(), vec![to.to_string()]);
        });
        self.held_at = None;
        self.slot.hold.release();
        self.registry.write_placement(&name, to);
        tracing::info!(module = %name, node = to, "extraction: the module left this node; its data here is kept, unused");
    }
}

impl Drop for Departure {
    fn drop(&mut self) {
        if self.held_at.is_some() {
            self.resume();
        }
    }
}
