//! What other nodes' admin APIs ask of this one, over the mesh
//! (`/v1/admin/ACTION?module=…`). The peer is already authenticated as a node of the
//! deployment by its certificate. Every answer is 200 with a version (or the bytes
//! asked for), or 409 with the reason.
//!
//! | action | what it does here |
//! | --- | --- |
//! | `status` | this node's modules, as JSON |
//! | `overview` | this node's part of the dashboard ([`super::dashboard::NodePart`]), as JSON |
//! | `stage` (body: the component) | prepares the version, not serving it |
//! | `unstage` | drops the staged version |
//! | `commit` (`weight` for a canary) | switches the staged version in |
//! | `promote`, `rollback` | as the operators' API |
//! | `adopt` (body: the component) | takes it as the version a module of other nodes serves |
//! | `component` | the component the module serves here |
//! | `arrive` (`idle_ms`; body `{"postgres"?: URL}`) | links the module to serve here once its data has come (a module moving here; onto Postgres, if the body names it), dropped if the source leaves it `idle_ms` without a step; answers `{"files", "version", "database"}` |
//! | `chunks` (`file`; body: chunks of it) | writes them into the arriving module's data file |
//! | `arrived` (body: the source's digests and counts) | checks the files received, puts them in place and opens the module, not serving it yet |
//! | `serve` | the arrived module serves here |
//! | `moving` (`to`) | accepts the module's calls from node `to` too, where it is about to serve |
//! | `abandon` | drops an arrival and what was received for it |
//! | `moved` (`to`; body `{"postgres"?: URL}`) | routes the module to node `to`, which serves it now (on that Postgres, if the body names it) |
//! | `extract` (`to`, `max_pause_ms`) | moves the module, which runs here, to node `to` (an operator called a move back on that node) |
//!
//! The peer is a node of the deployment, but a module's data moves only at the word of
//! the node it runs on: `arrive` … `moved` are refused (403) from a node this one does
//! not place the module on, and `extract` is refused unless the module came here from
//! the node that asks, and is to go back to it.

use bytes::Bytes;
use http::{Response, StatusCode};
use std::sync::Arc;
use std::time::Duration;

use super::extract::DEFAULT_MAX_PAUSE;

/// How long an arrival waits for its source's next step when the source did not say.
const DEFAULT_ARRIVAL_IDLE: Duration = Duration::from_secs(600);
use super::mover::Mover;
use super::mover::Onto;
use crate::engine::component_extension;
use crate::mesh::server::PeerAdmin;
use crate::mesh::Mesh;
use crate::module::extraction::Settled;
use crate::module::moving::Chunks;
use crate::module::swap::{Refused, Switch};
use crate::module::Registry;
use crate::runtime::responses::{self, plain, Body};
use crate::runtime::BoxFuture;

/// This node's side of other nodes' admin requests.
pub struct PeerRequests {
    registry: Arc<Registry>,
    mover: Arc<Mover>,
}

impl PeerRequests {
    /// Serves peers' admin requests with `registry`, moving modules away over `mesh`
    /// when one asks (`extract`: an operator called a move back, on the node the
    /// module left).
    pub fn new(registry: Arc<Registry>, mesh: Arc<Mesh>) -> PeerRequests {
        PeerRequests {
            mover: Mover::new(registry.clone(), mesh),
            registry,
        }
    }

    async fn serve_action(
        &self,
        peer: &str,
        action: &str,
        query: &str,
        body: Bytes,
    ) -> Response<Body> {
        let param = |name: &str| {
            query
                .split('&')
                .filter_map(|pair| pair.split_once('='))
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        };
        let registry = &self.registry;
        if action == "status" {
            return responses::json(
                StatusCode::OK,
                &serde_json::Value::Object(registry.status()),
            );
        }
        if action == "overview" {
            let part = super::dashboard::local_part(registry);
            return responses::json(
                StatusCode::OK,
                &serde_json::to_value(part).unwrap_or_default(),
            );
        }
        let Some(module) = param("module") else {
            return plain(StatusCode::BAD_REQUEST, "no module");
        };
        if let Some(answer) = self.extraction(peer, action, &module, &param, &body).await {
            return answer;
        }
        let swapper = registry.swapper();
        // A peer's certificate must not mean native code here: components from other
        // nodes are Wasm, which this node compiles itself.
        if matches!(action, "stage" | "adopt") && component_extension(&body) == "cwasm" {
            tracing::warn!(%module, %action, "mesh: refused precompiled code from a peer");
            return plain(
                StatusCode::CONFLICT,
                "a node sends Wasm components only (each node compiles them itself), not precompiled code",
            );
        }
        if action == "adopt" {
            return answer(
                swapper
                    .adopt(&module, &body, component_extension(&body))
                    .await,
            );
        }
        let Some(slot) = registry.slot(&module) else {
            return plain(StatusCode::CONFLICT, Refused::NotHere(module).to_string());
        };
        let outcome = match action {
            "component" => {
                return match std::fs::read(&slot.serving().source) {
                    Ok(bytes) => plain(StatusCode::OK, bytes),
                    Err(error) => plain(
                        StatusCode::CONFLICT,
                        format!("reading the component: {error}"),
                    ),
                }
            }
            "stage" => match swapper.versions().keep_bytes(&body, "wasm") {
                Ok(path) => swapper.stage(&slot, &path, None).await,
                Err(error) => Err(Refused::Unusable(format!("{error:#}"))),
            },
            "unstage" => {
                swapper.unstage(&slot);
                Ok(String::new())
            }
            "commit" => {
                let switch = match param("weight").and_then(|w| w.parse().ok()) {
                    Some(weight) => Switch::Canary(weight),
                    None => Switch::Swap,
                };
                swapper.commit(&slot, switch).await.map(|_| match switch {
                    Switch::Swap => slot.serving().version.clone(),
                    Switch::Canary(_) => slot
                        .canary()
                        .map(|c| c.module.version.clone())
                        .unwrap_or_default(),
                })
            }
            "promote" => swapper.promote(&slot).await.map(|c| c.serving),
            "rollback" => swapper.rollback(&slot).await.map(|c| c.serving),
            other => return plain(StatusCode::NOT_FOUND, format!("no admin action {other}")),
        };
        answer(outcome)
    }
}

impl PeerRequests {
    /// This node's part of a module moving between nodes ([`crate::admin::extract`]),
    /// or `None` when `action` is none of it.
    ///
    /// Only the node a module runs on moves it: every step but `extract` is refused
    /// (403) from a peer this node does not place the module on, so a peer cannot push
    /// data into a module, make a node serve it, or route it (and its callers' trust)
    /// somewhere else. `extract` moves a module back to the node that asks, and only
    /// when the module came here from it: it is how an operator on the node a module
    /// left calls the move back.
    async fn extraction(
        &self,
        peer: &str,
        action: &str,
        module: &str,
        param: &impl Fn(&str) -> Option<String>,
        body: &Bytes,
    ) -> Option<Response<Body>> {
        let registry = &self.registry;
        let done = |outcome: Result<String, String>| match outcome {
            Ok(text) => plain(StatusCode::OK, text),
            Err(why) => plain(StatusCode::CONFLICT, why),
        };
        let moves_it = matches!(
            action,
            "arrive" | "chunks" | "arrived" | "serve" | "moving" | "abandon" | "moved"
        );
        if moves_it
            && !registry
                .directory()
                .nodes_of(module)
                .iter()
                .any(|node| node == peer)
        {
            tracing::warn!(%peer, module, action, "mesh: refused to move a module for a node that does not run it");
            return Some(plain(
                StatusCode::FORBIDDEN,
                format!(
                    "node {peer} does not run module {module}: only the node it runs on moves it"
                ),
            ));
        }
        Some(match action {
            "arrive" => {
                let idle = param("idle_ms")
                    .and_then(|ms| ms.parse().ok())
                    .map_or(DEFAULT_ARRIVAL_IDLE, Duration::from_millis);
                let onto = match Onto::read(body) {
                    Ok(onto) => onto,
                    Err(why) => return Some(done(Err(why))),
                };
                done(
                    registry
                        .prepare_arrival(module, idle, onto.postgres.as_deref())
                        .await
                        .map(|prepared| serde_json::to_string(&prepared).unwrap_or_default()),
                )
            }
            "chunks" => {
                let index = param("file").and_then(|file| file.parse::<usize>().ok());
                let received = match (index, Chunks::decode(body)) {
                    (Some(index), Ok(chunks)) => registry.receive(module, index, &chunks),
                    (None, _) => Err("no file index".to_string()),
                    (_, Err(error)) => Err(format!("{error:#}")),
                };
                done(received.map(|()| String::new()))
            }
            "arrived" => {
                let received = match serde_json::from_slice::<Settled>(body) {
                    // Its own task: a source that stops waiting (its request dropped)
                    // does not cut the opening — or the carry — short half-way; what
                    // it made is removed if the arrival was called off meanwhile.
                    Ok(settled) => {
                        let (registry, module) = (registry.clone(), module.to_string());
                        tokio::spawn(
                            async move { registry.complete_arrival(&module, &settled).await },
                        )
                        .await
                        .unwrap_or_else(|error| Err(format!("opening the module: {error}")))
                    }
                    Err(error) => Err(format!("reading what the source settled: {error}")),
                };
                done(received.map(|received| serde_json::to_string(&received).unwrap_or_default()))
            }
            "serve" => done(registry.serve_arrival(module, peer).map(|()| String::new())),
            "moving" => match param("to") {
                Some(to) => done(registry.moving(module, &to).map(|()| String::new())),
                None => done(Err("no node the module moves to".to_string())),
            },
            "abandon" => {
                registry.abandon_arrival(module).await;
                done(Ok(String::new()))
            }
            "extract" => {
                let Some(to) = param("to") else {
                    return Some(plain(StatusCode::BAD_REQUEST, "no node to move it to"));
                };
                let came_from = registry.arrived_from(module);
                if to != peer || came_from.as_deref() != Some(peer) {
                    tracing::warn!(%peer, module, %to, came_from = ?came_from, "mesh: refused to move a module for a peer it did not come from");
                    return Some(plain(
                        StatusCode::FORBIDDEN,
                        format!("node {peer} may call back only a move it made, to itself: module {module} did not come here from {peer}, or is not to go to {to}"),
                    ));
                }
                let max_pause = param("max_pause_ms")
                    .and_then(|ms| ms.parse().ok())
                    .map_or(DEFAULT_MAX_PAUSE, Duration::from_millis);
                // Back where it came from, on the database it has now.
                let (status, answer) = self.mover.extract(module, &to, max_pause, None).await;
                responses::json(status, &answer)
            }
            "moved" => match (param("to"), Onto::read(body)) {
                (Some(to), Ok(onto)) => done(
                    registry
                        .moved(module, &to, onto.postgres.as_deref())
                        .map(|()| String::new()),
                ),
                (None, _) => done(Err("no node to route the module to".to_string())),
                (_, Err(why)) => done(Err(why)),
            },
            _ => return None,
        })
    }
}

/// 200 with the version, or 409 with why not.
fn answer(outcome: Result<String, Refused>) -> Response<Body> {
    match outcome {
        Ok(version) => plain(StatusCode::OK, version),
        Err(why) => plain(StatusCode::CONFLICT, why.to_string()),
    }
}

impl PeerAdmin for PeerRequests {
    fn serve<'a>(
        &'a self,
        peer: &'a str,
        action: &'a str,
        query: &'a str,
        body: Bytes,
    ) -> BoxFuture<'a, Response<Body>> {
        Box::pin(self.serve_action(peer, action, query, body))
    }
}
