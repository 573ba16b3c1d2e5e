//! `POST /v1/modules/M/extract {"to": NODE}` (`modhost extract M --to NODE`): module M
//! moves from this node, with its data, to node NODE, while the application serves.
//!
//! This node coordinates; the steps (each logged, each node's part in
//! [`crate::module::extraction`]):
//! 1. **prepare** — NODE links M with the version the deployment serves, contract-checked
//!    as at start, and waits for its data;
//! 2. **copy** — M's data files are sent whole while M goes on serving here;
//! 3. **hold** — M's new requests and calls wait (up to `max_pause`), its event relay
//!    and consumer stop, its work in flight finishes, its files settle; the chunks
//!    that changed since the copy are sent, then each file's SHA-256 and row counts;
//! 4. **switch** — NODE checks them, opens M and serves it; every other node routes M
//!    to NODE; this node does too, and releases the held work, which goes there. Each
//!    node writes M's new line in its deployment file's `[placement]`, so a restart
//!    keeps it. M's files stay here, unused.
//!
//! A failure at any step before the switch — NODE unreachable or dying mid-copy, a
//! digest or a count that does not match, work that does not drain in time — calls it
//! off: NODE drops what it received, and M goes on serving here with its held work,
//! nothing lost. The answer says which step failed and why.
//!
//! Afterwards, asked of the node M left: `{"commit": true}` (`--commit`) removes the
//! copy of M's data kept there; `{"abort": true}` (`--abort`) brings M back there, the
//! same way, coordinated by the node that runs it now ([`Mover`] serves both sides).

use bytes::Bytes;
use http::StatusCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Admin, NodeFailed};
#[cfg(feature = "mesh")]
use crate::mesh::Mesh;
use crate::module::moving::{Chunks, Sent};
use crate::module::Registry;
use crate::runtime::responses::{self, Body};

/// How long M's work may be held by default while its last changes are copied.
pub const DEFAULT_MAX_PAUSE: Duration = Duration::from_secs(5);

/// What the operator asks for: one of `to`, `commit` and `abort`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Extract {
    /// The node the module moves to.
    #[serde(default)]
    to: Option<String>,
    /// Remove the copy of the module's data kept on this node, which it left.
    #[serde(default)]
    commit: bool,
    /// Bring the module back to this node, which it left.
    #[serde(default)]
    abort: bool,
    /// The longest the module's work may be held, in milliseconds.
    #[serde(default)]
    max_pause_ms: Option<u64>,
}

/// Why an extraction was called off, and at which step.
struct CalledOff {
    step: &'static str,
    why: String,
}

fn off(step: &'static str) -> impl Fn(String) -> CalledOff {
    move |why| CalledOff { step, why }
}

/// What was copied, and how long it took.
#[derive(Default)]
struct Copied {
    bytes: usize,
    took: Duration,
}

impl Admin {
    /// Moves `module` from this node to the node `body` names, or commits or aborts a
    /// move it made (see the module docs).
    pub(super) async fn extract(&self, module: &str, body: &[u8]) -> http::Response<Body> {
        let request: Extract = match serde_json::from_slice(body) {
            Ok(request) => request,
            Err(error) => return bad_request(&error.to_string()),
        };
        let max_pause = request
            .max_pause_ms
            .map_or(DEFAULT_MAX_PAUSE, Duration::from_millis);
        #[cfg(feature = "mesh")]
        if let Some(mover) = &self.mover {
            let (status, answer) = match (request.to, request.commit, request.abort) {
                (Some(to), false, false) => mover.extract(module, &to, max_pause).await,
                (None, true, false) => mover.commit(module),
                (None, false, true) => mover.abort(module, max_pause).await,
                _ => return bad_request("give one of them"),
            };
            return responses::json(status, &answer);
        }
        let _ = (module, max_pause);
        responses::error(
            StatusCode::CONFLICT,
            "not_split",
            "a single node has no other node to move a module to: give the deployment \
             [nodes] and [mesh], and run it as one of them",
            None,
        )
    }
}

fn bad_request(why: &str) -> http::Response<Body> {
    responses::error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        &format!(
            "{why}: expected {{\"to\": NODE, \"max_pause_ms\"?: N}}, {{\"commit\": true}} \
             or {{\"abort\": true}}"
        ),
        None,
    )
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
#[cfg(feature = "mesh")]
pub struct Mover {
    registry: Arc<Registry>,
    mesh: Arc<Mesh>,
}

#[cfg(feature = "mesh")]
impl Mover {
    /// Moves this node's modules with `registry`, reaching the others over `mesh`.
    pub fn new(registry: Arc<Registry>, mesh: Arc<Mesh>) -> Arc<Mover> {
        Arc::new(Mover { registry, mesh })
    }

    fn here(&self) -> String {
        self.registry.deployment().node.clone().unwrap_or_default()
    }

    /// Moves `module`, which runs here alone, to node `to`: the report, or why not.
    pub async fn extract(
        self: &Arc<Self>,
        module: &str,
        to: &str,
        max_pause: Duration,
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
        // Its own task: an operator who stops waiting for the answer does not stop
        // the extraction half-way (a module half-moved would serve on two nodes).
        let mover = self.clone();
        let (name, target) = (module.to_string(), to.to_string());
        let moving = tokio::spawn(async move {
            let _one = mover.registry.one_change_at_a_time().await;
            mover.move_module(&name, &target, max_pause).await
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
                self.ask_quietly(to, "abandon", module).await;
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
            .data_files(module)
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
            for suffix in ["", "-wal", "-shm"] {
                let mut path = file.as_os_str().to_owned();
                path.push(suffix);
                let path = std::path::PathBuf::from(path);
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
        match self.mesh.admin(&now, "extract", &query, Bytes::new()).await {
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

    /// Asks `node` to do `action`; its answer body, or why not.
    async fn ask(
        &self,
        node: &str,
        action: &str,
        query: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Bytes, NodeFailed> {
        match self.mesh.admin(node, action, query, body).await? {
            (StatusCode::OK, body) => Ok(body),
            (_, body) => Err(NodeFailed::There(
                String::from_utf8_lossy(&body).into_owned(),
            )),
        }
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
    ) -> Result<serde_json::Value, CalledOff> {
        let mut departure = self.registry.depart(module).map_err(off("prepare"))?;
        let files = departure.files().to_vec();

        // 1. The target links the module and waits for its data.
        let expected = self
            .ask(to, "arrive", &[("module", module)], Bytes::new())
            .await
            .map(|body| String::from_utf8_lossy(&body).into_owned())
            .map_err(|failed| off("prepare")(failed.to_string()))?;
        if expected.trim() != files.len().to_string() {
            return Err(off("prepare")(format!(
                "node {to} keeps {expected} data files of {module}, this node {}",
                files.len()
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
        let body = serde_json::to_vec(&settled).unwrap_or_default();
        let answer = self
            .ask(to, "arrived", &[("module", module)], Bytes::from(body))
            .await;
        match answer {
            Ok(_) => {}
            // The target checked and refused: nothing serves there.
            Err(refused @ NodeFailed::There(_)) => return Err(off("switch")(refused.to_string())),
            // No answer: it may serve the module already. Asked again; if it does,
            // the move goes on (two nodes must not both serve it).
            Err(failed) => {
                if !self.serves(to, module).await {
                    return Err(off("switch")(failed.to_string()));
                }
                tracing::warn!(module, to, reason = %failed, "extraction: the target's answer was lost, but it serves the module: going on");
            }
        }

        // 4. Every node routes the module to the target; then this one does, and the
        // held work goes there.
        let mut nodes = serde_json::Map::new();
        for node in self.peers() {
            if node == to {
                continue;
            }
            let answer = self
                .ask(
                    &node,
                    "moved",
                    &[("module", module), ("to", to)],
                    Bytes::new(),
                )
                .await;
            let outcome = match answer {
                Ok(_) => "routes it to the new node".to_string(),
                Err(failed) => {
                    tracing::warn!(module, %node, reason = %failed, "extraction: a node did not learn where the module went; a reload there will tell it");
                    failed.to_string()
                }
            };
            nodes.insert(node, outcome.into());
        }
        let held = departure.held_for();
        departure.leave(to);
        let rate = copy.bytes as f64 / copy.took.as_secs_f64().max(1e-6) / (1024.0 * 1024.0);
        Ok(serde_json::json!({
            "module": module,
            "from": self.here(),
            "to": to,
            "files": files.len(),
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

    /// Whether `node` says it serves `module` (its status lists it).
    async fn serves(&self, node: &str, module: &str) -> bool {
        match self.ask(node, "status", &[], Bytes::new()).await {
            Ok(body) => serde_json::from_slice::<serde_json::Value>(&body)
                .is_ok_and(|status| status.get(module).is_some()),
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
            let (file, mut record) = (file.clone(), std::mem::take(sent));
            // Reading and hashing the file is blocking work.
            let read = tokio::task::spawn_blocking(move || {
                let changes = record.changes(&file);
                (record, changes)
            })
            .await
            .map_err(|error| off(step)(format!("reading the data: {error}")))?;
            *sent = read.0;
            let changes: Chunks = read.1.map_err(|error| off(step)(format!("{error:#}")))?;
            copied.bytes += changes.bytes();
            let index = index.to_string();
            for batch in changes.batches() {
                self.ask(
                    to,
                    "chunks",
                    &[("module", module), ("file", &index)],
                    Bytes::from(batch.encode()),
                )
                .await
                .map_err(|failed: NodeFailed| off(step)(failed.to_string()))?;
            }
        }
        copied.took = started.elapsed();
        Ok(copied)
    }

    /// Asks `node` to do `action` for `module`, logging rather than returning a failure.
    async fn ask_quietly(&self, node: &str, action: &str, module: &str) {
        if let Err(failed) = self
            .ask(node, action, &[("module", module)], Bytes::new())
            .await
        {
            tracing::warn!(module, %node, action, reason = %failed, "extraction: a node did not answer");
        }
    }
}
