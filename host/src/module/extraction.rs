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
//!   opens it and serves it ([`Registry::complete_arrival`]). A module moving onto
//!   Postgres (`--to-postgres`) is linked with that database instead, its schemas
//!   found unused; opened, it carries the files it received into them
//!   (`capabilities::sql::carry`), and a move called off drops them.
//! - Once it serves on the target, **every node** takes a new database as its own
//!   ([`Registry::spec`], [`Registry::deployment_now`]) and writes it in its deployment
//!   file, as it writes the new placement.
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
use crate::deployment::{AmendedDatabase, DatabaseBackend, Deployment, ModuleSpec};
use crate::engine::cache::write_atomically;

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
    /// Which arrival of the module this is (another attempt may replace it).
    id: u64,
    version: Arc<ModuleVersion>,
    files: Vec<PathBuf>,
    /// Once its files are checked, in place and open: the module, ready to serve.
    ready: Option<Arc<ModuleSlot>>,
    /// When its source last moved it on.
    touched: Instant,
    /// Bytes of chunks received so far (the last changes sent again count again).
    received: u64,
    /// The length each of its files is to have, as the last batch said.
    lengths: Vec<u64>,
    /// The database it moves onto (`--to-postgres`), its files carried into it as it
    /// opens; `None`: it keeps the database it had.
    database: Option<AmendedDatabase>,
    /// The files its opening made beside its files — as a carry into Postgres sets
    /// them aside — removed if the arrival is called off.
    carried: Vec<PathBuf>,
}

/// What a node prepared for a module arriving: what the source checks before it
/// sends anything.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Prepared {
    /// How many data files it awaits.
    pub files: usize,
    /// The version it linked.
    pub version: String,
    /// The database it linked the module with: `sqlite`, `postgres` or `none` (empty
    /// from a node that predates `--to-postgres`).
    #[serde(default)]
    pub database: String,
}

/// A module arriving here, as `modhost status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arriving {
    /// The module.
    pub name: String,
    /// `receiving` its data, or `ready` (checked, in place, open) to serve.
    pub stage: &'static str,
    /// Bytes of its data received so far.
    pub received_bytes: u64,
    /// The bytes its files hold at the source, as far as told yet.
    pub file_bytes: u64,
}

/// The longest a source may leave an arrival without a step, whatever it asks: past
/// it, the arrival is dropped as the source's own `abandon` would.
pub const MAX_ARRIVAL_IDLE: Duration = Duration::from_secs(3600);

/// Numbers the arrivals of this process.
static ARRIVALS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What a node remembers of the moves it took part in, across restarts: each a
/// module → node map in a file of its own under `<data_dir>/extraction/`.
#[derive(Debug, Clone, Copy)]
enum Moves {
    /// The node each module that arrived here came from: the one that may call the
    /// move back.
    ArrivedFrom,
    /// The node each module with data files here left for: this node's copy of its
    /// data is out of date, and must not serve again unless the module comes back.
    DepartedTo,
}

impl Moves {
    fn file(self, data_dir: &std::path::Path) -> PathBuf {
        let name = match self {
            Moves::ArrivedFrom => "arrived-from.json",
            Moves::DepartedTo => "departed-to.json",
        };
        data_dir.join("extraction").join(name)
    }
}

/// Where a file being received is written until it is complete.
fn incoming(file: &std::path::Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".incoming");
    PathBuf::from(name)
}

impl Registry {
    /// Module `name`'s spec as it is now: the deployment's, with its database as a
    /// move onto Postgres changed it since the node started.
    pub fn spec(&self, name: &str) -> Option<ModuleSpec> {
        if let Some(amended) = self.lock_databases().get(name) {
            return Some(amended.spec.clone());
        }
        self.deployment().modules.get(name).cloned()
    }

    /// The deployment as it is now: as the node loaded it, with every database a move
    /// changed since (what a reload compares the file with).
    pub fn deployment_now(&self) -> Deployment {
        let mut now = self.deployment().clone();
        for amended in self.lock_databases().values() {
            now.amend_database(amended);
        }
        now
    }

    /// Whether this node's deployment file can take `amended` (its module's `database`
    /// line written over), or why not.
    pub fn can_write_database(&self, amended: &AmendedDatabase) -> Result<(), String> {
        let file = self.deployment().origins.file_of("modules");
        crate::deployment::can_write_database(file, &amended.spec.name, &amended.written).map_err(
            |error| format!("the new database cannot be written in the deployment file: {error}"),
        )
    }

    /// Module `name`'s database from now on is `amended`'s: here, and in the file that
    /// wrote `[modules]`, so that a restart or a reload keeps it.
    fn take_database(&self, amended: &AmendedDatabase) {
        let name = &amended.spec.name;
        self.lock_databases().insert(name.clone(), amended.clone());
        let file = self.deployment().origins.file_of("modules").to_path_buf();
        match crate::deployment::write_database(&file, name, &amended.written) {
            Ok(()) => {
                tracing::info!(module = %name, file = %file.display(), "extraction: the module's new database is written in the deployment file")
            }
            Err(error) => {
                tracing::warn!(module = %name, file = %file.display(), %error, "extraction: cannot write the module's new database; edit the file before the next restart or reload")
            }
        }
    }

    /// The files that hold module `name`'s data on this node (none for a module
    /// without a database of its own here).
    pub fn data_files(&self, name: &str) -> Vec<PathBuf> {
        match self.spec(name) {
            Some(spec) => self.files_of(&spec),
            None => Vec::new(),
        }
    }

    /// The data files of a module with `spec` on this node.
    fn files_of(&self, spec: &ModuleSpec) -> Vec<PathBuf> {
        self.capabilities().data_files(OpenContext {
            deployment: self.deployment(),
            spec,
        })
    }

    /// The files that held module `name`'s data here: its data files, and those of
    /// the database the node started with, if a move to Postgres changed it since.
    pub fn kept_files(&self, name: &str) -> Vec<PathBuf> {
        let mut files = self.data_files(name);
        if let Some(started) = self.deployment().modules.get(name) {
            for file in self.files_of(started) {
                if !files.contains(&file) {
                    files.push(file);
                }
            }
        }
        files
    }

    /// Links module `name` to serve here later, with its data to come: refused when it
    /// runs here already or does not link. Files left by an earlier attempt go. How
    /// many data files it awaits, the version it linked and on which database.
    ///
    /// With `postgres` (a SQLite module moving onto Postgres: the URL, or `$NAME`), it
    /// links with that database instead — checked as a start checks it, its schema
    /// unused — and awaits its SQLite files all the same: opened, it carries them
    /// into the schema (`capabilities::sql::carry`).
    ///
    /// A source that goes quiet for `idle` (at most [`MAX_ARRIVAL_IDLE`]) — it died,
    /// or lost the mesh — leaves nothing behind: the arrival is dropped with what was
    /// received, as if the source had called it off.
    pub async fn prepare_arrival(
        self: &Arc<Self>,
        name: &str,
        idle: Duration,
        postgres: Option<&str>,
    ) -> Result<Prepared, String> {
        // Not beside another change here: a reload starting the module another way
        // waits, or is refused once the arrival is known.
        let _one = self.one_change_at_a_time().await;
        let _step = self.one_arrival_step(name).await;
        if self.directory().local(name).is_some() {
            return Err(format!("module {name} already runs on this node"));
        }
        // An earlier attempt's arrival goes first, with what it made (its schemas too).
        let earlier = self.lock_arrivals().remove(name);
        if let Some(earlier) = earlier {
            self.drop_arrival(earlier).await;
        }
        let spec = self
            .spec(name)
            .ok_or_else(|| format!("no module {name} is deployed"))?;
        let database = match postgres {
            Some(postgres) => {
                let amended = self
                    .deployment_now()
                    .with_postgres(name, postgres)
                    .map_err(|problems| problems.to_string())?;
                // A restart must find the new database in the file: a file that could
                // not say it would start the module on an empty SQLite file.
                self.can_write_database(&amended)?;
                let opening = OpenContext {
                    deployment: self.deployment(),
                    spec: &amended.spec,
                };
                self.capabilities()
                    .check_unused(opening)
                    .await
                    .map_err(|error| format!("{error:#}"))?;
                Some(amended)
            }
            None => None,
        };
        let linked = database.as_ref().map_or(&spec, |amended| &amended.spec);
        let backend = match linked.database.as_ref().map(|database| &database.backend) {
            Some(DatabaseBackend::Postgres { .. }) => "postgres",
            Some(DatabaseBackend::Sqlite) => "sqlite",
            None => "none",
        };
        let version = self
            .swapper()
            .link_placed(linked)
            .map_err(|error| format!("{error:#}"))?;
        // The files it has where it comes from (SQLite's, moving onto Postgres).
        let files = self.files_of(&spec);
        for file in &files {
            let _ = std::fs::remove_file(incoming(file));
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|error| format!("creating {}: {error}", dir.display()))?;
            }
        }
        let count = files.len();
        let linked = version.version.clone();
        tracing::info!(
            module = name,
            files = count,
            version = %linked,
            "extraction: the module is linked here, its data to come"
        );
        let id = ARRIVALS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lock_arrivals().insert(
            name.to_string(),
            Arrival {
                id,
                version: Arc::new(version),
                files,
                ready: None,
                touched: Instant::now(),
                received: 0,
                lengths: Vec::new(),
                database,
                carried: Vec::new(),
            },
        );
        tokio::spawn(drop_when_quiet(
            Arc::downgrade(self),
            name.to_string(),
            id,
            idle.min(MAX_ARRIVAL_IDLE),
        ));
        Ok(Prepared {
            files: count,
            version: linked,
            database: backend.to_string(),
        })
    }

    /// Writes `chunks` of data file `index` of arriving module `name`.
    pub fn receive(&self, name: &str, index: usize, chunks: &Chunks) -> Result<(), String> {
        let file = self
            .lock_arrivals()
            .get_mut(name)
            .and_then(|arrival| {
                arrival.touched = Instant::now();
                arrival.files.get(index).cloned()
            })
            .ok_or_else(|| format!("no data file {index} of module {name} is awaited here"))?;
        moving::apply(&incoming(&file), chunks).map_err(|error| format!("{error:#}"))?;
        if let Some(arrival) = self.lock_arrivals().get_mut(name) {
            arrival.received += chunks.bytes() as u64;
            if arrival.lengths.len() <= index {
                arrival.lengths.resize(index + 1, 0);
            }
            arrival.lengths[index] = chunks.len;
        }
        Ok(())
    }

    /// Checks the files received for `name` against `settled` (the source's digests
    /// and counts), puts them in place and opens the module — ready to serve, not
    /// serving until [`Self::serve_arrival`]. On any mismatch nothing is opened, and
    /// the files received are removed. A module moving onto Postgres carries its
    /// files into its schema as it opens: a carry that fails, or does not take
    /// place, leaves nothing there.
    pub async fn complete_arrival(&self, name: &str, settled: &Settled) -> Result<Settled, String> {
        // One step of the module's arrivals at a time: a new attempt's preparation
        // waits until this one has opened, or removed what it made. (The node's other
        // changes go on: the source holds the module's work meanwhile.)
        let _step = self.one_arrival_step(name).await;
        let (id, version, files, onto) = match self.lock_arrivals().get_mut(name) {
            Some(arrival) if arrival.ready.is_none() => {
                arrival.touched = Instant::now();
                (
                    arrival.id,
                    arrival.version.clone(),
                    arrival.files.clone(),
                    arrival.database.clone(),
                )
            }
            _ => return Err(format!("module {name} is not arriving here")),
        };
        if self.directory().local(name).is_some() {
            return Err(format!("module {name} already runs on this node"));
        }
        let received = match self.check_received(&files, settled).await {
            Ok(received) => received,
            Err(why) => {
                // This arrival's files only: another attempt may have replaced it.
                if self.take_arrival(name, id).is_some() {
                    remove_received(&files);
                }
                return Err(why);
            }
        };
        for file in &files {
            // A journal left beside an older copy would be replayed into this one.
            remove_journal(file);
            std::fs::rename(incoming(file), file)
                .map_err(|error| format!("putting {} in place: {error}", file.display()))?;
        }
        let before = named_after(&files);
        let opened = match self.open_module(&version.module).await {
            // Carried, its files are set aside: none is left in place.
            Ok(()) if onto.is_some() && files.iter().any(|file| file.exists()) => Err(format!(
                "module {name}'s data was not carried into its postgres schema"
            )),
            opened => opened,
        };
        // The files opening made beside the copy (a carry sets it aside under another
        // name): this arrival's too.
        let carried: Vec<PathBuf> = named_after(&files)
            .into_iter()
            .filter(|file| !before.contains(file))
            .collect();
        if let Err(why) = opened {
            self.remove_opened(&files, &carried, onto.as_ref()).await;
            return Err(why);
        }
        let slot = Arc::new(ModuleSlot::new(version, self.deployment().rollout.clone()));
        let kept = match self.lock_arrivals().get_mut(name) {
            Some(arrival) if arrival.id == id => {
                arrival.ready = Some(slot);
                arrival.touched = Instant::now();
                arrival.carried = carried.clone();
                true
            }
            _ => {
                drop(slot);
                false
            }
        };
        // Abandoned meanwhile (or replaced by another attempt): its copy goes with it.
        if !kept {
            self.remove_opened(&files, &carried, onto.as_ref()).await;
            return Err(format!("the arrival of module {name} was called off"));
        }
        tracing::info!(
            module = name,
            "extraction: the module's data is in place and open here"
        );
        Ok(received)
    }

    /// Makes module `name`, arrived and opened from node `from`, serve here; `from`
    /// is remembered (across restarts) as the node that may call the move back.
    pub fn serve_arrival(&self, name: &str, from: &str) -> Result<(), String> {
        // The lock is taken once, in a statement of its own: a guard living on into
        // the match below would deadlock the re-insertion.
        let mut arrivals = self.lock_arrivals();
        let slot = match arrivals.get(name) {
            Some(Arrival {
                ready: Some(slot), ..
            }) => slot.clone(),
            Some(_) => return Err(format!("module {name} has not arrived here yet")),
            None => return Err(format!("module {name} is not arriving here")),
        };
        if self.directory().local(name).is_some() {
            return Err(format!("module {name} already runs on this node"));
        }
        let database = arrivals.remove(name).and_then(|arrival| arrival.database);
        drop(arrivals);
        if let Some(database) = &database {
            self.take_database(database);
        }
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
        if let Err(error) = self.record_move(Moves::ArrivedFrom, name, Some(from)) {
            tracing::warn!(module = name, from, %error, "extraction: cannot record where the module came from; only an operator here can move it back");
        }
        if let Err(error) = self.record_move(Moves::DepartedTo, name, None) {
            tracing::warn!(module = name, %error, "extraction: cannot record that the module is back; a restart would not serve it here");
        }
        tracing::info!(
            module = name,
            "extraction: the module serves on this node now, with its data"
        );
        Ok(())
    }

    /// The node module `name` last arrived here from, if it still runs here as it
    /// arrived: the one node that may ask for it back (`--abort`).
    pub fn arrived_from(&self, name: &str) -> Option<String> {
        self.read_moves(Moves::ArrivedFrom).remove(name)
    }

    /// The node each module with data files here left this node for — if it has not
    /// come back since: this node's copy of its data is out of date.
    pub fn departures(&self) -> BTreeMap<String, String> {
        self.read_moves(Moves::DepartedTo)
    }

    /// What this node recorded of `kind`.
    fn read_moves(&self, kind: Moves) -> BTreeMap<String, String> {
        std::fs::read(kind.file(&self.deployment().data_dir))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// Records (or, with `None`, forgets) the node of module `name`'s move of `kind`.
    fn record_move(&self, kind: Moves, name: &str, node: Option<&str>) -> std::io::Result<()> {
        static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = WRITING.lock().unwrap_or_else(|e| e.into_inner());
        let mut recorded = self.read_moves(kind);
        match node {
            Some(node) => recorded.insert(name.to_string(), node.to_string()),
            None => recorded.remove(name),
        };
        let file = kind.file(&self.deployment().data_dir);
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        write_atomically(&file, &serde_json::to_vec(&recorded).unwrap_or_default())
    }

    /// Removes arrival `id` of module `name`, unless another took its place.
    fn take_arrival(&self, name: &str, id: u64) -> Option<Arrival> {
        let mut arrivals = self.lock_arrivals();
        match arrivals.get(name) {
            Some(arrival) if arrival.id == id => arrivals.remove(name),
            _ => None,
        }
    }

    /// Whether module `name` is arriving here (its files being received or checked).
    pub fn is_arriving(&self, name: &str) -> bool {
        self.lock_arrivals().contains_key(name)
    }

    /// The modules arriving here, each with its stage and how much of its data came.
    pub fn arriving(&self) -> Vec<Arriving> {
        self.lock_arrivals()
            .iter()
            .map(|(name, arrival)| Arriving {
                name: name.clone(),
                stage: if arrival.ready.is_some() {
                    "ready"
                } else {
                    "receiving"
                },
                received_bytes: arrival.received,
                file_bytes: arrival.lengths.iter().sum(),
            })
            .collect()
    }

    /// The digests and counts of what was received for `arrival`, if they are the
    /// source's.
    async fn check_received(
        &self,
        files: &[PathBuf],
        settled: &Settled,
    ) -> Result<Settled, String> {
        let mut received = Settled::default();
        for file in files {
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

    /// Drops module `name`'s arrival: nothing of it serves here, the files received —
    /// or, once put in place, the copy, and what was carried into Postgres — are
    /// removed.
    pub async fn abandon_arrival(&self, name: &str) {
        let _step = self.one_arrival_step(name).await;
        let Some(arrival) = self.lock_arrivals().remove(name) else {
            return;
        };
        self.drop_arrival(arrival).await;
        tracing::info!(
            module = name,
            "extraction: called off; nothing of the module serves here"
        );
    }
}

impl Registry {
    /// Removes what an arrival received, and its copy if it was put in place (with
    /// what was carried into Postgres).
    async fn drop_arrival(&self, arrival: Arrival) {
        remove_received(&arrival.files);
        if let Some(slot) = arrival.ready {
            drop(slot);
            let onto = arrival.database.as_ref();
            self.remove_opened(&arrival.files, &arrival.carried, onto)
                .await;
        }
    }

    /// Removes an arrival's copy put in place (`files`), what opening it made beside
    /// it (`carried`), and — moving onto `onto` — what it made there.
    async fn remove_opened(
        &self,
        files: &[PathBuf],
        carried: &[PathBuf],
        onto: Option<&AmendedDatabase>,
    ) {
        remove_copy(files);
        remove_files(carried);
        if let Some(onto) = onto {
            self.discard(onto).await;
        }
    }

    /// Removes what a module moving onto `onto` made there (its schemas, found
    /// unused when the move began).
    async fn discard(&self, onto: &AmendedDatabase) {
        let opening = OpenContext {
            deployment: self.deployment(),
            spec: &onto.spec,
        };
        match self.capabilities().discard(opening).await {
            Ok(()) => {
                tracing::info!(module = %onto.spec.name, "extraction: what was carried into the module's new database is removed")
            }
            Err(error) => {
                tracing::warn!(module = %onto.spec.name, error = %format!("{error:#}"), "extraction: cannot remove what was carried into the module's new database; drop its schemas before moving it there again")
            }
        }
    }
}

/// Drops arrival `id` of module `name` once its source has not moved it on for
/// `idle`; returns when it is gone otherwise (served, called off, replaced).
async fn drop_when_quiet(
    registry: std::sync::Weak<Registry>,
    name: String,
    id: u64,
    idle: Duration,
) {
    let mut wait = idle;
    loop {
        tokio::time::sleep(wait).await;
        let Some(registry) = registry.upgrade() else {
            return;
        };
        // Not while one of its steps runs (it opens, say): that step moves it on.
        let _step = registry.one_arrival_step(&name).await;
        // The arrival, taken if it has been quiet for `idle`; otherwise how long ago it
        // was last moved on (the lock is not held past this block).
        let taken = {
            let mut arrivals = registry.lock_arrivals();
            match arrivals.get(&name) {
                Some(arrival) if arrival.id == id => {
                    let quiet = arrival.touched.elapsed();
                    if quiet < idle {
                        Err(quiet)
                    } else {
                        Ok(arrivals.remove(&name).map(|arrival| (arrival, quiet)))
                    }
                }
                _ => return,
            }
        };
        let (arrival, quiet) = match taken {
            Err(quiet) => {
                wait = idle - quiet;
                continue;
            }
            Ok(None) => return,
            Ok(Some(taken)) => taken,
        };
        registry.drop_arrival(arrival).await;
        tracing::warn!(
            module = %name,
            quiet_ms = quiet.as_millis() as u64,
            "extraction: the source went quiet; the arrival is dropped and nothing of the module serves here"
        );
        return;
    }
}

impl Registry {
    /// Accepts calls from module `name` on node `to` too, where it is about to serve,
    /// while it still runs where it did: its calls from there into this node's
    /// modules are not refused in between.
    pub fn moving(&self, name: &str, to: &str) -> Result<(), String> {
        self.check_node(to)?;
        self.accept_calls_from(name, to);
        Ok(())
    }

    /// Places module `name` on node `to` too: its calls from there are accepted.
    fn accept_calls_from(&self, name: &str, to: &str) {
        self.directory().republish(|placement| {
            let nodes = placement.placed.entry(name.to_string()).or_default();
            if !nodes.iter().any(|node| node == to) {
                nodes.push(to.to_string());
            }
        });
    }

    /// Routes module `name` to node `to` alone, its calls given `timeout` — no longer
    /// here, if it ran here. (The caller writes the deployment file.)
    fn route_to(&self, name: &str, to: &str, timeout: Duration) {
        let remote = Arc::new(RemoteModule {
            nodes: vec![to.to_string()],
            timeout,
        });
        self.directory().republish(|placement| {
            placement.local.remove(name);
            placement.remote.insert(name.to_string(), remote.clone());
            placement
                .placed
                .insert(name.to_string(), vec![to.to_string()]);
        });
    }

    /// Module `name`'s database is `postgres` from now on, as this node reads it; a
    /// node that cannot read it (an environment variable it lacks) says so and keeps
    /// the one it had.
    fn take_postgres(&self, name: &str, postgres: &str) {
        match self.deployment_now().with_postgres(name, postgres) {
            Ok(amended) => self.take_database(&amended),
            Err(problems) => {
                tracing::warn!(module = name, %problems, "extraction: the module's new database cannot be read here; edit the deployment file before the next restart or reload")
            }
        }
    }

    /// Whether `node` is another node of the deployment.
    fn check_node(&self, node: &str) -> Result<(), String> {
        let here = self.deployment().node.as_deref();
        if !self.deployment().nodes.contains_key(node) || here == Some(node) {
            return Err(format!("`{node}` is not another node of the deployment"));
        }
        Ok(())
    }

    /// Routes module `name` to node `to`, which serves it now (its calls and
    /// requests go there) — on `postgres`, if it moved onto Postgres.
    pub fn moved(&self, name: &str, to: &str, postgres: Option<&str>) -> Result<(), String> {
        self.check_node(to)?;
        if self.directory().local(name).is_some() {
            return Err(format!("module {name} runs on this node"));
        }
        let spec = self
            .spec(name)
            .ok_or_else(|| format!("no module {name} is deployed"))?;
        self.route_to(name, to, spec.limits.timeout.duration());
        self.write_placement(name, to);
        if let Some(postgres) = postgres {
            self.take_postgres(name, postgres);
        }
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
        // The target serves one version: a canary beside it would be dropped unseen.
        if let Some(canary) = slot.canary() {
            return Err(format!(
                "module {name} runs a canary (version {} takes {}% of its traffic): promote or roll it back before moving the module",
                canary.module.version, canary.weight
            ));
        }
        Ok(Departure {
            registry: self.clone(),
            files: self.data_files(name),
            slot,
            held_at: None,
            drained: None,
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

/// Removes the files received for an arrival (and any journal a count left).
fn remove_received(files: &[PathBuf]) {
    for file in files {
        let received = incoming(file);
        remove_journal(&received);
        let _ = std::fs::remove_file(received);
    }
}

/// Each of `files`, and the files beside it named after it (its journals; what a
/// carry into Postgres set it aside as), those that exist.
fn named_after(files: &[PathBuf]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for file in files {
        let (Some(dir), Some(name)) = (file.parent(), file.file_name()) else {
            continue;
        };
        let name = name.to_string_lossy();
        if let Ok(entries) = std::fs::read_dir(dir) {
            found.extend(
                entries
                    .flatten()
                    .filter(|entry| entry.file_name().to_string_lossy().starts_with(&*name))
                    .map(|entry| entry.path()),
            );
        }
    }
    found
}

/// Removes `files`, those that exist.
fn remove_files(files: &[PathBuf]) {
    for file in files {
        let _ = std::fs::remove_file(file);
    }
}

/// Removes a copy put in place for an arrival that was then called off.
fn remove_copy(files: &[PathBuf]) {
    for file in files {
        remove_journal(file);
        let _ = std::fs::remove_file(file);
    }
}

/// Data file `file` and the journal files SQLite keeps beside it (its write-ahead
/// log and shared memory), whether or not they exist.
pub fn with_journal(file: &std::path::Path) -> [PathBuf; 3] {
    ["", "-wal", "-shm"].map(|suffix| {
        let mut path = file.as_os_str().to_owned();
        path.push(suffix);
        PathBuf::from(path)
    })
}

/// Removes the journal files SQLite keeps beside `file`, if any.
fn remove_journal(file: &std::path::Path) {
    for journal in &with_journal(file)[1..] {
        let _ = std::fs::remove_file(journal);
    }
}

/// A module leaving this node, step by step (see the module's docs). Dropped while
/// its work is held — its coordinator gone — it resumes serving here.
pub struct Departure {
    registry: Arc<Registry>,
    slot: Arc<ModuleSlot>,
    files: Vec<PathBuf>,
    held_at: Option<Instant>,
    /// Every permit of the module's bulkhead, while its work is held.
    drained: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Departure {
    /// The component the module serves here, and its version: what the target is to
    /// serve.
    pub fn serving(&self) -> (PathBuf, String) {
        let serving = self.slot.serving();
        (serving.source.clone(), serving.version.clone())
    }

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
        // Every permit of its bulkhead, once the work holding them has finished: no
        // request or call can start here from now on — not even one that looked
        // before the hold was set — until the departure resumes or leaves.
        let all = module.limits().concurrency;
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, module.permits.clone().acquire_many_owned(all)).await {
            Ok(Ok(permits)) => self.drained = Some(permits),
            _ => {
                let running = module.in_flight();
                self.resume();
                return Err(format!(
                    "{running} requests or calls were still running after {limit:?}: held too long"
                ));
            }
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

    /// Accepts the module's calls from node `to` too, where it is about to serve.
    pub fn widen(&self, to: &str) {
        self.registry.accept_calls_from(&self.slot.name, to);
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
        self.drained = None;
        // Calls from it come from here alone again.
        let (name, here) = (
            self.slot.name.clone(),
            self.registry.deployment().node.clone().unwrap_or_default(),
        );
        self.registry.directory().republish(|placement| {
            placement.placed.insert(name.clone(), vec![here.clone()]);
        });
        self.slot.hold.release();
        tracing::warn!(module = %self.slot.name, "extraction: called off; the module serves on this node as before");
    }

    /// The module serves on `to` now (on `postgres`, if it moved onto it): routes it
    /// there and releases the held work, which goes there too. Its data files stay
    /// here, unused.
    pub fn leave(mut self, to: &str, postgres: Option<&str>) {
        let name = self.slot.name.clone();
        let timeout = self.slot.serving().limits().timeout.duration();
        self.registry.route_to(&name, to, timeout);
        self.held_at = None;
        // No work runs here any more: what still finds this module (a request that
        // looked it up before it left) is told it moved, and goes where it is.
        self.slot.serving().module.permits.close();
        self.drained = None;
        self.slot.hold.release();
        self.registry.write_placement(&name, to);
        if let Some(postgres) = postgres {
            self.registry.take_postgres(&name, postgres);
        }
        self.registry.forget_metrics(&name);
        if let Err(error) = self.registry.record_move(Moves::ArrivedFrom, &name, None) {
            tracing::warn!(module = %name, %error, "extraction: cannot forget where the module came from");
        }
        // Its data here is out of date from now on: a restart with a deployment file
        // that still places it here must not serve it.
        if !self.files.is_empty() {
            if let Err(error) = self
                .registry
                .record_move(Moves::DepartedTo, &name, Some(to))
            {
                tracing::warn!(module = %name, %error, "extraction: cannot record that the module left; do not restart this node with a file that places it here");
            }
        }
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
