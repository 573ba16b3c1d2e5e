//! The node's side of moving its modules to other nodes (`admin/extract.rs` says what
//! each step does): the coordinator of a move, for the admin API and for peers.

use bytes::Bytes;
use http::StatusCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::NodeFailed;
use crate::engine::component_extension;
use crate::mesh::Mesh;
use crate::module::extraction::{with_journal, Prepared};
use crate::module::moving::Sent;
use crate::module::Registry;

/// Why an extraction was called off, and at which step.
struct CalledOff {
    step: &'static str,
    why: String,
}

fn off(step: &'static str) -> impl Fn(String) -> CalledOff {
    move |why| CalledOff { step, why }
}

/// How much longer than the longest hold a target waits for the source's next step.
const ARRIVAL_SLACK: Duration = Duration::from_secs(60);

/// The pace at which a target is expected to read back what it received, at worst.
const SLOW_DISK_BYTES_PER_S: u64 = 20 * 1024 * 1024;

/// How many bytes a copy sends between two lines of progress in the log.
const PROGRESS_EVERY: usize = 256 * 1024 * 1024;

/// How long a node may take over a whole move asked of it (`--abort`).
const WHOLE_MOVE: Duration = Duration::from_secs(3600);

/// How long reading `bytes` of data back twice may take, at worst.
fn reading_back(bytes: u64) -> Duration {
    Duration::from_secs(2 * bytes / SLOW_DISK_BYTES_PER_S)
}

/// The pace at which a target is expected to carry a SQLite file into Postgres, at
/// worst (`benches/extract.sh` measures ~12 MiB/s on two shared cores).
const SLOW_CARRY_BYTES_PER_S: u64 = 2 * 1024 * 1024;

/// How long carrying `bytes` of SQLite file into Postgres may take, at worst (none
/// when the module keeps its database).
fn carrying(bytes: u64, onto: &Onto) -> Duration {
    match onto.postgres {
        Some(_) => Duration::from_secs(bytes / SLOW_CARRY_BYTES_PER_S),
        None => Duration::ZERO,
    }
}

/// What a source tells the other nodes of a module's database as it moves (the body
/// of `arrive` and `moved`; the URL may hold a password, so it is never in a query):
/// the Postgres it moves onto, if it does.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Onto {
    /// `--to-postgres`: the URL (or `$NAME`) as the operator wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) postgres: Option<String>,
}

impl Onto {
    /// What `body` says, or why it cannot be read (an empty body: nothing changes).
    pub(super) fn read(body: &[u8]) -> Result<Onto, String> {
        if body.is_empty() {
            return Ok(Onto::default());
        }
        serde_json::from_slice(body)
            .map_err(|error| format!("reading the module's database: {error}"))
    }

    fn body(&self) -> Bytes {
        match self.postgres {
            Some(_) => Bytes::from(serde_json::to_vec(self).unwrap_or_default()),
            None => Bytes::new(),
        }
    }
}

/// Whether `postgres`, as an operator wrote it, holds a password (`scheme://user:password@…`)
/// rather than naming an environment variable (`$NAME`).
fn holds_password(postgres: &str) -> bool {
    let Some((_, rest)) = postgres.split_once("://") else {
        return false;
    };
    rest.split_once('@')
        .is_some_and(|(credentials, _)| credentials.contains(':'))
}

/// What was copied, and how long it took.
#[derive(Default)]
struct Copied {
    bytes: usize,
    took: Duration,
}

/// An error answer: `code` and `message`, as the admin API writes them.
fn refusal(status: StatusCode, code: &str, message: String) -> (StatusCode, serde_json::Value) {
    (
        status,
        serde_json::json!({ "error": { "code": code, "message": message } }),
    )
}

/// Moving the modules of this node to others, and back: what the operator asks
/// through the admin API, and what another node asks when an operator calls a move
/// back (`abort`, asked of the node the module left, is carried out by the node that
/// runs it now).
pub struct Mover {
    registry: Arc<Registry>,
    mesh: Arc<Mesh>,
}

impl Mover {
    /// Moves this node's modules with `registry`, reaching the others over `mesh`.
    pub fn new(registry: Arc<Registry>, mesh: Arc<Mesh>) -> Arc<Mover> {
        Arc::new(Mover { registry, mesh })
    }

    fn here(&self) -> String {
        self.registry.deployment().node.clone().unwrap_or_default()
    }

    /// Moves `module`, which runs here alone, to node `to` — onto `postgres`, with its
    /// SQLite data carried there, if given: the report, or why not.
    pub async fn extract(
        self: &Arc<Self>,
        module: &str,
        to: &str,
        max_pause: Duration,
        postgres: Option<String>,
    ) -> (StatusCode, serde_json::Value) {
        let here = self.here();
        if !self.registry.deployment().nodes.contains_key(to) || to == here {
            return refusal(
                StatusCode::BAD_REQUEST,
                "bad_node",
                format!("`{to}` is not another node of the deployment (this is {here})"),
            );
        }
        let placed = self.registry.directory().nodes_of(module);
        if self.registry.slot(module).is_none() || placed != [here.clone()] {
            return refusal(
                StatusCode::CONFLICT,
                "not_here",
                format!(
                    "module {module} is placed on {}: ask the one node that runs it alone",
                    placed.join(", ")
                ),
            );
        }
        // Read here as every node will read it: refused before anything moves.
        if let Some(postgres) = &postgres {
            let amended = match self
                .registry
                .deployment_now()
                .with_postgres(module, postgres)
            {
                Ok(amended) => amended,
                Err(problems) => {
                    return refusal(
                        StatusCode::BAD_REQUEST,
                        "bad_database",
                        problems.to_string(),
                    )
                }
            };
            if let Err(why) = self.registry.can_write_database(&amended) {
                return refusal(StatusCode::CONFLICT, "bad_database", why);
            }
            if holds_password(postgres) {
                tracing::warn!(module, "extraction: the postgres URL holds a password, which every node's deployment file will hold too; give `$NAME` of an environment variable instead to keep it out");
            }
        }
        // Its own task: an operator who stops waiting for the answer does not stop
        // the extraction half-way (a module half-moved would serve on two nodes).
        let mover = self.clone();
        let (name, target) = (module.to_string(), to.to_string());
        let onto = Onto { postgres };
        let moving = tokio::spawn(async move {
            let _one = mover.registry.one_change_at_a_time().await;
            let outcome = mover.move_module(&name, &target, max_pause, &onto).await;
            if outcome.is_err() {
                mover.ask_quietly(&target, "abandon", &name).await;
            }
            outcome
        });
        let started = Instant::now();
        tracing::info!(module, from = %here, to, "extraction: starting");
        let outcome = moving.await.unwrap_or_else(|error| {
            Err(CalledOff {
                step: "switch",
                why: format!("the extraction did not finish: {error}"),
            })
        });
        match outcome {
            Ok(report) => {
                tracing::info!(
                    module,
                    to,
                    took_ms = started.elapsed().as_millis() as u64,
                    "extraction: done"
                );
                (StatusCode::OK, report)
            }
            Err(off) => {
                tracing::error!(module, to, step = off.step, reason = %off.why, "extraction: called off; the module serves here as before");
                (
                    StatusCode::CONFLICT,
                    serde_json::json!({ "error": {
                        "code": "extraction_failed",
                        "step": off.step,
                        "message": format!(
                            "{}; module {module} serves on {here} as before, nothing moved",
                            off.why
                        ),
                    }}),
                )
            }
        }
    }

    /// The copy of `module`'s data this node kept when the module left: its files,
    /// or why there is none to commit or abort with.
    fn kept_copy(
        &self,
        module: &str,
    ) -> Result<(Vec<std::path::PathBuf>, String), (StatusCode, serde_json::Value)> {
        if self.registry.is_arriving(module) {
            return Err(refusal(
                StatusCode::CONFLICT,
                "arriving",
                format!("module {module} is arriving on this node right now"),
            ));
        }
        if self.registry.slot(module).is_some() {
            return Err(refusal(
                StatusCode::CONFLICT,
                "not_moved",
                format!("module {module} runs on this node: it did not move away"),
            ));
        }
        let placed = self.registry.directory().nodes_of(module);
        let [now] = placed.as_slice() else {
            return Err(refusal(
                StatusCode::CONFLICT,
                "not_moved",
                format!(
                    "module {module} is placed on {}, not on one other node",
                    placed.join(", ")
                ),
            ));
        };
        let files: Vec<_> = self
            .registry
            .kept_files(module)
            .into_iter()
            .filter(|file| file.exists())
            .collect();
        if files.is_empty() {
            return Err(refusal(
                StatusCode::CONFLICT,
                "no_copy",
                format!("no copy of module {module}'s data is kept on this node"),
            ));
        }
        Ok((files, now.clone()))
    }

    /// Removes the copy of `module`'s data kept here since it moved to another node.
    pub fn commit(&self, module: &str) -> (StatusCode, serde_json::Value) {
        let (files, now) = match self.kept_copy(module) {
            Ok(kept) => kept,
            Err(refused) => return refused,
        };
        let mut removed = Vec::new();
        for file in files {
            for path in with_journal(&file) {
                match std::fs::remove_file(&path) {
                    Ok(()) => removed.push(path.display().to_string()),
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => {
                        return refusal(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "not_removed",
                            format!("removing {}: {error}", path.display()),
                        )
                    }
                }
            }
        }
        tracing::info!(module, serves_on = %now, ?removed, "extraction: committed; the copy kept here is removed");
        (
            StatusCode::OK,
            serde_json::json!({ "module": module, "serves_on": now, "removed": removed }),
        )
    }

    /// Brings `module` back to this node, which it left: the node running it now moves
    /// it here, with its data, the same way.
    pub async fn abort(
        &self,
        module: &str,
        max_pause: Duration,
    ) -> (StatusCode, serde_json::Value) {
        let now = match self.kept_copy(module) {
            Ok((_, now)) => now,
            Err(refused) => return refused,
        };
        let here = self.here();
        let max_pause_ms = max_pause.as_millis().to_string();
        let query = [
            ("module", module),
            ("to", here.as_str()),
            ("max_pause_ms", max_pause_ms.as_str()),
        ];
        // That node makes the whole move before it answers.
        match self
            .mesh
            .admin_within(&now, "extract", &query, Bytes::new(), WHOLE_MOVE)
            .await
        {
            Ok((status, body)) => {
                let answer = serde_json::from_slice(&body).unwrap_or_else(|_| {
                    serde_json::json!({ "error": {
                        "code": "extraction_failed",
                        "message": String::from_utf8_lossy(&body),
                    }})
                });
                (status, answer)
            }
            Err(error) => refusal(
                StatusCode::BAD_GATEWAY,
                "unreachable",
                format!(
                    "node {now}, which runs {module}, cannot be asked to bring it back: {error}"
                ),
            ),
        }
    }

    /// [`Self::ask`], waiting at most `limit` for the answer.
    async fn ask_within(
        &self,
        node: &str,
        action: &str,
        query: &[(&str, &str)],
        body: Bytes,
        limit: Duration,
    ) -> Result<Bytes, NodeFailed> {
        super::ask_node_within(&self.mesh, node, action, query, body, limit).await
    }

    /// Asks `node` to do `action`; its answer body, or why not.
    async fn ask(
        &self,
        node: &str,
        action: &str,
        query: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Bytes, NodeFailed> {
        self.ask_within(node, action, query, body, crate::mesh::ADMIN_TIMEOUT)
            .await
    }

    /// Every other node of the deployment.
    fn peers(&self) -> Vec<String> {
        let here = self.here();
        self.registry
            .deployment()
            .nodes
            .keys()
            .filter(|node| **node != here)
            .cloned()
            .collect()
    }

    async fn move_module(
        &self,
        module: &str,
        to: &str,
        max_pause: Duration,
        onto: &Onto,
    ) -> Result<serde_json::Value, CalledOff> {
        let mut departure = self.registry.depart(module).map_err(off("prepare"))?;
        let files = departure.files().to_vec();

        // 1. The target takes the version served here (it may not know it: a node
        // down when it was swapped in), links the module with it and waits for its
        // data.
        let (component, version) = departure.serving();
        let bytes = tokio::fs::read(&component)
            .await
            .map_err(|error| off("prepare")(format!("reading {}: {error}", component.display())))?;
        // A precompiled component is this node's own: the target loads the same file
        // from the deployment, and the version check below says whether it did.
        if component_extension(&bytes) != "cwasm" {
            self.ask(to, "adopt", &[("module", module)], Bytes::from(bytes))
                .await
                .map_err(|failed| off("prepare")(failed.to_string()))?;
        }
        // The target drops the arrival if this node goes quiet longer than a step can
        // take: the longest hold, a minute, time to read the data through twice (its
        // check) at a slow disk's pace, and — between its check and `serve` — telling
        // every other node the module is moving, one admin request each at most.
        let bytes: u64 = files
            .iter()
            .filter_map(|file| std::fs::metadata(file).ok())
            .map(|metadata| metadata.len())
            .sum();
        // Moving onto Postgres, the target carries the file as it opens it.
        let reading = reading_back(bytes) + carrying(bytes, onto);
        let telling = u32::try_from(self.peers().len())
            .ok()
            .and_then(|peers| crate::mesh::ADMIN_TIMEOUT.checked_mul(peers))
            .unwrap_or(crate::module::extraction::MAX_ARRIVAL_IDLE);
        let idle_ms = (max_pause + ARRIVAL_SLACK + reading + telling)
            .as_millis()
            .to_string();
        let answer = self
            .ask(
                to,
                "arrive",
                &[("module", module), ("idle_ms", &idle_ms)],
                onto.body(),
            )
            .await
            .map_err(|failed| off("prepare")(failed.to_string()))?;
        let prepared: Prepared = serde_json::from_slice(&answer).map_err(|error| {
            off("prepare")(format!("node {to} answered `arrive` with no plan: {error}"))
        })?;
        if prepared.files != files.len() {
            return Err(off("prepare")(format!(
                "node {to} keeps {} data files of {module}, this node {}",
                prepared.files,
                files.len()
            )));
        }
        // A node that did not take the new database (one that predates it, say) would
        // serve the module on a file of its own.
        if onto.postgres.is_some() && prepared.database != "postgres" {
            let on = match prepared.database.as_str() {
                "" => "its own file (it predates --to-postgres)",
                other => other,
            };
            return Err(off("prepare")(format!(
                "node {to} would open {module} on {on}, not on the postgres it moves onto"
            )));
        }
        if prepared.version != version {
            return Err(off("prepare")(format!(
                "node {to} would serve version {} of {module}, this node serves {version}",
                prepared.version
            )));
        }
        tracing::info!(
            module,
            to,
            files = files.len(),
            "extraction: prepared on the target"
        );

        // 2. Every file, whole, while the module serves.
        departure.settle_serving().await.map_err(off("copy"))?;
        let mut sent: Vec<Sent> = files.iter().map(|_| Sent::default()).collect();
        let copy = self
            .send_changes(module, to, &files, &mut sent, "copy")
            .await?;
        tracing::info!(
            module,
            to,
            bytes = copy.bytes,
            took_ms = copy.took.as_millis() as u64,
            "extraction: data copied; holding the module's work for the last changes"
        );

        // 3. Held: the last changes, then what the files hold.
        let settled = departure.hold(max_pause).await.map_err(off("hold"))?;
        let delta = self
            .send_changes(module, to, &files, &mut sent, "hold")
            .await?;
        // The target reads what it received through (digests, counts) before it
        // answers: the time that takes grows with the data.
        let body = serde_json::to_vec(&settled).unwrap_or_default();
        let checking = ARRIVAL_SLACK + reading;
        self.ask_within(
            to,
            "arrived",
            &[("module", module)],
            Bytes::from(body),
            checking,
        )
        .await
        .map_err(|failed| off("switch")(failed.to_string()))?;

        // 4. The target serves it. Every node first accepts its calls from there
        // (it still runs here meanwhile, held); then the target serves it, and every
        // node routes it there.
        let others: Vec<String> = self.peers().into_iter().filter(|node| node != to).collect();
        departure.widen(to);
        for node in &others {
            if let Err(failed) = self
                .ask(
                    node,
                    "moving",
                    &[("module", module), ("to", to)],
                    Bytes::new(),
                )
                .await
            {
                tracing::warn!(module, %node, reason = %failed, "extraction: a node did not hear the module is moving; its calls from the new node may be refused until it learns where it went");
            }
        }
        let here = self.here();
        // Called off from here on: the other nodes take calls from it here alone again.
        let narrow = |why: String| async {
            for node in &others {
                self.ask_quietly_with(node, "moved", &[("module", module), ("to", &here)])
                    .await;
            }
            off("switch")(why)
        };
        match self
            .ask(to, "serve", &[("module", module)], Bytes::new())
            .await
        {
            Ok(_) => {}
            // The target refused: nothing serves there.
            Err(refused @ NodeFailed::There(_)) => return Err(narrow(refused.to_string()).await),
            // No answer: it may serve the module already. Asked again; if it does,
            // the move goes on (two nodes must not both serve it); if it does not,
            // it is told to drop it, and a late `serve` finds nothing to start.
            Err(failed) => {
                if !self.serves(to, module).await {
                    return Err(narrow(failed.to_string()).await);
                }
                tracing::warn!(module, to, reason = %failed, "extraction: the target's answer was lost, but it serves the module: going on");
            }
        }
        let mut nodes = serde_json::Map::new();
        for node in others {
            let answer = self
                .ask(
                    &node,
                    "moved",
                    &[("module", module), ("to", to)],
                    onto.body(),
                )
                .await;
            let outcome = match answer {
                Ok(_) => "routes it to the new node".to_string(),
                Err(failed) => {
                    tracing::warn!(module, %node, reason = %failed, "extraction: a node did not learn where the module went; its requests for it are forwarded from here");
                    failed.to_string()
                }
            };
            nodes.insert(node, outcome.into());
        }
        let held = departure.held_for();
        departure.leave(to, onto.postgres.as_deref());
        let rate = copy.bytes as f64 / copy.took.as_secs_f64().max(1e-6) / (1024.0 * 1024.0);
        Ok(serde_json::json!({
            "module": module,
            "from": self.here(),
            "to": to,
            "files": files.len(),
            "database": if onto.postgres.is_some() { "postgres" } else { "as before" },
            "copied_bytes": copy.bytes,
            "copy_ms": copy.took.as_secs_f64() * 1000.0,
            "copy_mib_per_s": rate,
            "last_changes_bytes": delta.bytes,
            "held_ms": held.as_secs_f64() * 1000.0,
            "digests": settled.digests,
            "rows": settled.counts,
            "nodes": nodes,
        }))
    }

    /// Whether `node` says it serves `module` (its status says `serving`).
    async fn serves(&self, node: &str, module: &str) -> bool {
        match self.ask(node, "status", &[], Bytes::new()).await {
            Ok(body) => serde_json::from_slice::<serde_json::Value>(&body)
                .is_ok_and(|status| status[module]["status"] == "serving"),
            Err(_) => false,
        }
    }

    /// Sends what changed in each of `files` since `sent` (all of it, the first time)
    /// to `to`, as the arriving `module`'s.
    async fn send_changes(
        &self,
        module: &str,
        to: &str,
        files: &[std::path::PathBuf],
        sent: &mut [Sent],
        step: &'static str,
    ) -> Result<Copied, CalledOff> {
        let started = Instant::now();
        let mut copied = Copied::default();
        for (index, (file, sent)) in files.iter().zip(sent.iter_mut()).enumerate() {
            let index = index.to_string();
            // Reading and hashing the file is blocking work, a batch at a time: the
            // file is never held in memory whole.
            let (file, record) = (file.clone(), std::mem::take(sent));
            let mut changes = tokio::task::spawn_blocking(move || record.changes(&file))
                .await
                .map_err(|error| off(step)(format!("reading the data: {error}")))?
                .map_err(|error| off(step)(format!("{error:#}")))?;
            loop {
                let (back, batch) = tokio::task::spawn_blocking(move || {
                    let batch = changes.next_batch();
                    (changes, batch)
                })
                .await
                .map_err(|error| off(step)(format!("reading the data: {error}")))?;
                changes = back;
                let Some(batch) = batch.map_err(|error| off(step)(format!("{error:#}")))? else {
                    break;
                };
                let before = copied.bytes;
                copied.bytes += batch.bytes();
                self.ask(
                    to,
                    "chunks",
                    &[("module", module), ("file", &index)],
                    Bytes::from(batch.encode()),
                )
                .await
                .map_err(|failed: NodeFailed| off(step)(failed.to_string()))?;
                // A large module's copy says how far it got, every so often.
                if before / PROGRESS_EVERY != copied.bytes / PROGRESS_EVERY {
                    tracing::info!(
                        module,
                        to,
                        step,
                        copied_mib = copied.bytes / (1024 * 1024),
                        of_mib = batch.len / (1024 * 1024),
                        file = %index,
                        "extraction: copying"
                    );
                }
            }
            *sent = changes.into_sent();
        }
        copied.took = started.elapsed();
        Ok(copied)
    }

    /// Asks `node` to do `action` for `module`, logging rather than returning a failure.
    async fn ask_quietly(&self, node: &str, action: &str, module: &str) {
        self.ask_quietly_with(node, action, &[("module", module)])
            .await;
    }

    /// Asks `node` to do `action` with `query`, logging rather than returning a
    /// failure.
    async fn ask_quietly_with(&self, node: &str, action: &str, query: &[(&str, &str)]) {
        if let Err(failed) = self.ask(node, action, query, Bytes::new()).await {
            tracing::warn!(%node, action, ?query, reason = %failed, "extraction: a node did not answer");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_a_postgres_url_is_seen() {
        assert!(holds_password("postgres://admin:secret@db.internal/app"));
        assert!(!holds_password("postgres://admin@db.internal/app"));
        assert!(!holds_password("postgres://db.internal:5432/app"));
        assert!(!holds_password("$PAYMENTS_DATABASE_URL"));
    }
}
