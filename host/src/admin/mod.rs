//! The admin API: where operators see and change which module versions serve.
//!
//! It listens on its own address (`[admin] listen`, or a node's `admin`), never on the
//! public gateway, and every request must carry the deployment's token
//! (`Authorization: Bearer …`, or as the password of HTTP Basic authentication, which
//! a browser asks for when it opens the dashboard; compared in constant time). JSON
//! in, JSON out:
//!
//! | request | what it does |
//! | --- | --- |
//! | `GET /v1/status` | every module of every node: serving version, canary, previous, in flight |
//! | `GET /v1/overview` | the dashboard's numbers: every node's modules, routes, edges, outboxes, slow or failed requests ([`dashboard`]) |
//! | `GET /dashboard` | the dashboard: a page drawing `/v1/overview`, live |
//! | `POST /v1/modules/M/swap` `{"component": PATH, "migrations"?: DIR}` | M's new version serves everything |
//! | `POST /v1/modules/M/canary` `{"component": PATH, "weight": N}` | M's new version gets N% of its traffic |
//! | `POST /v1/modules/M/promote` | M's canary serves everything |
//! | `POST /v1/modules/M/rollback` | M's canary is dropped, or M goes back to the version before |
//! | `POST /v1/modules/M/extract` `{"to": NODE, "max_pause_ms"?: N, "to_postgres"?: URL}` | M moves from this node to NODE with its data (onto Postgres, with `to_postgres`), while the application serves ([`extract`]) |
//! | `POST /v1/reload` | this node reads its deployment file again and applies its `[placement]` ([`crate::module::placing`]) |
//!
//! On a split deployment a change applies to every node running the module, driven
//! from whichever node was asked ([`rollout`]): the component (read here) is sent over
//! the mesh and staged on every node, and committed on each only when all have staged
//! it. Once a module serves a new version, the nodes that do not run it are sent its
//! component too (they *adopt* it), so that their own contract checks are made against
//! the version that actually serves. What other nodes ask of this one arrives through
//! [`peer`]; [`client`] is the command line's side.

pub mod client;
pub mod dashboard;
pub mod extract;
#[cfg(feature = "mesh")]
pub mod mover;
#[cfg(feature = "mesh")]
pub mod peer;
pub mod rollout;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

use crate::deployment::Deployment;
use crate::engine::component_extension;
#[cfg(feature = "mesh")]
use crate::mesh::{Mesh, PeerError};
use crate::module::placing::{PlaceRefused, Placed};
use crate::module::swap::{Refused, Switch};
use crate::module::{ModuleSlot, Registry};
use crate::runtime::accept::{self, Accept};
use crate::runtime::responses::{self, Body};
use crate::runtime::shutdown::Shutdown;
use crate::runtime::BoxFuture;
use rollout::{NodeOutcome, Nodes};

/// Largest admin request body (a path and a few fields).
const MAX_BODY: usize = 64 * 1024;
/// How long the admin listener's connections may take to finish at shutdown.
const GRACE: Duration = Duration::from_secs(5);

/// Why one node did not do what the admin API asked of it.
#[derive(Debug, thiserror::Error)]
pub enum NodeFailed {
    /// This node refused.
    #[error(transparent)]
    Here(#[from] Refused),
    /// Another node refused, for this reason.
    #[error("{0}")]
    There(String),
    /// Another node could not be asked.
    #[cfg(feature = "mesh")]
    #[error(transparent)]
    Unreachable(#[from] PeerError),
    /// This node has no mesh to ask another with.
    #[error("node {0} is not reachable: this node has no mesh")]
    NoMesh(String),
}

/// How this node reads its deployment file again and applies the new placement: the
/// node hands it to the admin API, which reads no file and starts no module itself.
pub trait Reload: Send + Sync {
    /// Reads the deployment file again and applies its `[placement]` on this node.
    fn reload(&self) -> BoxFuture<'_, Result<Placed, PlaceRefused>>;
}

/// What the admin API acts on.
pub struct Admin {
    token: String,
    deployment: Deployment,
    registry: Arc<Registry>,
    reload: Option<Arc<dyn Reload>>,
    #[cfg(feature = "mesh")]
    mesh: Option<Arc<Mesh>>,
    /// Moves this node's modules to other nodes (a split deployment's).
    #[cfg(feature = "mesh")]
    mover: Option<Arc<mover::Mover>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewVersion {
    component: PathBuf,
    #[serde(default)]
    weight: Option<u32>,
    #[serde(default)]
    migrations: Option<PathBuf>,
}

impl Admin {
    /// The admin API of this node, with the deployment's token; it reaches the
    /// other nodes of a split deployment once given the mesh ([`Self::reaching`]).
    pub fn new(token: String, deployment: Deployment, registry: Arc<Registry>) -> Admin {
        Admin {
            token,
            deployment,
            registry,
            reload: None,
            #[cfg(feature = "mesh")]
            mesh: None,
            #[cfg(feature = "mesh")]
            mover: None,
        }
    }

    /// This admin API, reloading the node's deployment file with `reload` when asked
    /// (`POST /v1/reload`).
    pub fn reloading(self, reload: Arc<dyn Reload>) -> Admin {
        Admin {
            reload: Some(reload),
            ..self
        }
    }

    /// This admin API, asking the other nodes over `mesh` (a split deployment's).
    #[cfg(feature = "mesh")]
    pub fn reaching(self, mesh: Option<Arc<Mesh>>) -> Admin {
        let mover = mesh
            .clone()
            .map(|mesh| mover::Mover::new(self.registry.clone(), mesh));
        Admin {
            mesh,
            mover,
            ..self
        }
    }

    /// Whether this node can ask others (it is a node of a split deployment).
    fn has_mesh(&self) -> bool {
        #[cfg(feature = "mesh")]
        return self.mesh.is_some();
        #[cfg(not(feature = "mesh"))]
        false
    }

    /// Serves `listener` until `shutdown`.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: Shutdown) {
        let options = Accept {
            name: "admin",
            max_connections: None,
            grace: GRACE,
        };
        accept::serve(listener, options, shutdown, move |stream, peer, shutdown| {
            let admin = self.clone();
            async move {
                let service = hyper::service::service_fn(move |request| {
                    let admin = admin.clone();
                    async move { Ok::<_, std::convert::Infallible>(admin.handle(request).await) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(error) = accept::graceful(connection, &shutdown, || GRACE).await {
                    tracing::debug!(%peer, %error, "admin: connection ended with an error");
                }
            }
        })
        .await;
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        if !self.authorized(&request) {
            tracing::warn!(path = %request.uri().path(), "admin: refused a request without the right token");
            let mut response = responses::error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the admin API needs `Authorization: Bearer <token>` with the deployment's token \
                 (a browser: the token as the password)",
                None,
            );
            // A browser asks for a password on `Basic`; other clients use the bearer.
            for challenge in ["Bearer", "Basic realm=\"modhost admin\", charset=\"UTF-8\""] {
                response.headers_mut().append(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static(challenge),
                );
            }
            return response;
        }
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match (&method, segments.as_slice()) {
            (&Method::GET, ["v1", "status"]) => self.status().await,
            (&Method::GET, ["v1", "overview"]) => self.overview().await,
            (&Method::GET, ["dashboard"]) => responses::html(dashboard::PAGE),
            (&Method::POST, ["v1", "reload"]) => self.reload().await,
            (&Method::POST, ["v1", "modules", module, action]) => {
                let (module, action) = (module.to_string(), action.to_string());
                let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
                    Ok(body) => body.to_bytes(),
                    Err(error) => {
                        return responses::error(
                            StatusCode::BAD_REQUEST,
                            "bad_body",
                            &format!("{error}"),
                            None,
                        )
                    }
                };
                tracing::info!(%module, %action, "admin: request");
                if action == "extract" {
                    return self.extract(&module, &body).await;
                }
                self.change(&module, &action, &body).await
            }
            _ => responses::error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no admin endpoint {method} {path}"),
                None,
            ),
        }
    }

    /// Whether the request carries the deployment's token: as a bearer token, or, to
    /// read (`GET`), as the password of Basic authentication (any user name).
    /// Compared in constant time.
    fn authorized(&self, request: &Request<Incoming>) -> bool {
        let Some(value) = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let given = if let Some(token) = value.strip_prefix("Bearer ") {
            token.as_bytes().to_vec()
        } else if let Some(encoded) = value
            .strip_prefix("Basic ")
            .filter(|_| request.method() == Method::GET)
        {
            // Only to look: a browser sends Basic credentials it keeps with any request
            // to this address, a form posted from another site's page too. A change
            // takes the bearer token, which no other page can make a browser send.
            use base64::Engine;
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim())
            else {
                return false;
            };
            match decoded.iter().position(|byte| *byte == b':') {
                Some(colon) => decoded[colon + 1..].to_vec(),
                None => return false,
            }
        } else {
            return false;
        };
        let wanted = self.token.as_bytes();
        given.len() == wanted.len()
            && given
                .iter()
                .zip(wanted)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// The dashboard's numbers: this node's part and every other node's, merged.
    async fn overview(&self) -> Response<Body> {
        let node = self.deployment.node.clone().unwrap_or_default();
        let mut parts = vec![(label(&node), Ok(dashboard::local_part(&self.registry)))];
        // Every node at once, each within a moment: one that does not answer shows as
        // such, and never holds up the page.
        let asked = self.peers().into_iter().map(|peer| async move {
            let answer = tokio::time::timeout(
                dashboard::PEER_TIMEOUT,
                self.ask(&peer, "overview", &[], Bytes::new()),
            )
            .await;
            let part = match answer {
                Ok(Ok(body)) => serde_json::from_slice(&body).map_err(|e| e.to_string()),
                Ok(Err(why)) => Err(why.to_string()),
                Err(_) => Err(format!(
                    "did not answer within {:?}",
                    dashboard::PEER_TIMEOUT
                )),
            };
            (peer, part)
        });
        parts.extend(futures_util::future::join_all(asked).await);
        responses::json(
            StatusCode::OK,
            &dashboard::merge(
                &self.deployment,
                &self.registry.directory().snapshot().placed,
                &label(&node),
                parts,
            ),
        )
    }

    /// This node's modules, and every other node's.
    async fn status(&self) -> Response<Body> {
        let node = self.deployment.node.clone().unwrap_or_default();
        let mut nodes = serde_json::Map::new();
        nodes.insert(
            label(&node),
            serde_json::Value::Object(self.registry.status()),
        );
        for peer in self.peers() {
            let state = match self.ask(&peer, "status", &[], Bytes::new()).await {
                Ok(body) => serde_json::from_slice(&body)
                    .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() })),
                Err(why) => serde_json::json!({ "error": why.to_string() }),
            };
            nodes.insert(peer, state);
        }
        responses::json(
            StatusCode::OK,
            &serde_json::json!({ "node": node, "nodes": nodes }),
        )
    }

    /// Reads the deployment file again and applies its placement on this node: what
    /// started and stopped here, or why nothing changed.
    async fn reload(&self) -> Response<Body> {
        let Some(reload) = &self.reload else {
            return responses::error(
                StatusCode::NOT_FOUND,
                "no_reload",
                "this node was not started from a deployment file it can read again",
                None,
            );
        };
        match reload.reload().await {
            Ok(placed) => responses::json(
                StatusCode::OK,
                &serde_json::json!({ "started": placed.started, "stopped": placed.stopped }),
            ),
            Err(PlaceRefused::Invalid(errors)) => {
                let problems: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
                responses::json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({ "error": {
                        "code": "invalid_deployment",
                        "message": "the deployment file was not applied; the node serves as it did",
                        "problems": problems,
                    }}),
                )
            }
            Err(refused) => {
                let code = match refused {
                    PlaceRefused::Arriving(_) => "arriving",
                    _ => "cannot_start",
                };
                responses::error(
                    StatusCode::CONFLICT,
                    code,
                    &format!("{refused}; the node serves as it did"),
                    None,
                )
            }
        }
    }

    /// A swap, canary, promotion or rollback of `module`, on every node running it.
    async fn change(&self, module: &str, action: &str, body: &[u8]) -> Response<Body> {
        if !self.deployment.modules.contains_key(module) {
            return responses::error(
                StatusCode::NOT_FOUND,
                "unknown_module",
                &format!("no module `{module}` is deployed"),
                None,
            );
        }
        let on: Vec<String> = match &self.deployment.node {
            None => vec![String::new()],
            Some(_) => self.registry.directory().nodes_of(module),
        };
        let results = match action {
            "swap" | "canary" => {
                let request: NewVersion = match serde_json::from_slice(body) {
                    Ok(request) => request,
                    Err(error) => {
                        return responses::error(StatusCode::BAD_REQUEST, "bad_request", &format!("{error}: expected {{\"component\": PATH, \"weight\"?: N, \"migrations\"?: DIR}}"), None)
                    }
                };
                let switch = match (action, request.weight) {
                    ("swap", None) => Switch::Swap,
                    ("canary", Some(weight)) if weight <= 100 => Switch::Canary(weight),
                    ("canary", _) => {
                        return responses::error(
                            StatusCode::BAD_REQUEST,
                            "bad_request",
                            "a canary needs \"weight\": 0-100",
                            None,
                        )
                    }
                    _ => {
                        return responses::error(
                            StatusCode::BAD_REQUEST,
                            "bad_request",
                            "a swap takes no weight (that is a canary)",
                            None,
                        )
                    }
                };
                self.new_version(module, &on, &request, switch).await
            }
            "promote" | "rollback" => self.each(module, &on, action).await,
            other => {
                return responses::error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    &format!("no action `{other}`; expected swap, canary, promote or rollback"),
                    None,
                )
            }
        };
        match results {
            Ok(Done { nodes, adopted }) => {
                let mut answer =
                    serde_json::json!({ "module": module, "action": action, "nodes": nodes });
                if let Some(adopted) = adopted {
                    answer["adopted"] = adopted;
                }
                responses::json(StatusCode::OK, &answer)
            }
            Err(nodes) => responses::json(
                StatusCode::CONFLICT,
                &serde_json::json!({ "error": { "code": "refused", "message": format!("the {action} of {module} was refused; what was serving still serves"), "nodes": nodes } }),
            ),
        }
    }

    /// Rolls a new version of `module` out on every node in `on` ([`rollout`]), then
    /// has the other nodes adopt it if it now serves.
    async fn new_version(
        &self,
        module: &str,
        on: &[String],
        request: &NewVersion,
        switch: Switch,
    ) -> Result<Done, serde_json::Value> {
        let component = request.component.as_path();
        let bytes = match std::fs::read(component) {
            Ok(bytes) => Bytes::from(bytes),
            Err(error) => {
                return Err(
                    serde_json::json!({ "here": format!("reading {}: {error}", component.display()) }),
                )
            }
        };
        let nodes = RolloutNodes {
            admin: self,
            module,
            component,
            bytes: bytes.clone(),
            migrations: request.migrations.as_deref(),
            switch,
        };
        let done = match rollout::roll_out(&nodes, on).await {
            Ok(done) => done,
            Err(refusals) => {
                return Err(serde_json::Value::Object(
                    refusals
                        .into_iter()
                        .map(|(node, why)| (label(&node), why.to_string().into()))
                        .collect(),
                ))
            }
        };
        let answer: serde_json::Map<String, serde_json::Value> = done
            .into_iter()
            .map(|(node, outcome)| {
                let value = match outcome {
                    NodeOutcome::Committed {
                        version,
                        staged_ms,
                        committed_us,
                    } => serde_json::json!({
                        "version": version,
                        "staged_ms": staged_ms,
                        "committed_us": committed_us,
                    }),
                    NodeOutcome::Failed(why) => serde_json::json!({ "error": why.to_string() }),
                };
                (label(&node), value)
            })
            .collect();
        let adopted = match switch {
            Switch::Swap => self.announce(module, bytes).await,
            Switch::Canary(_) => None,
        };
        Ok(Done {
            nodes: serde_json::Value::Object(answer),
            adopted,
        })
    }

    /// Promotes or rolls back `module` on every node in `on`.
    async fn each(
        &self,
        module: &str,
        on: &[String],
        action: &str,
    ) -> Result<Done, serde_json::Value> {
        let mut outcomes = serde_json::Map::new();
        let mut refused = false;
        for node in on {
            let outcome = if self.is_here(node) {
                self.promote_or_roll_back(module, action).await
            } else {
                self.ask_text(node, action, &[("module", module)], Bytes::new())
                    .await
            };
            outcomes.insert(
                label(node),
                match outcome {
                    Ok(serving) => serde_json::json!({ "serving": serving }),
                    Err(why) => {
                        refused = true;
                        serde_json::json!({ "error": why.to_string() })
                    }
                },
            );
        }
        if refused {
            return Err(serde_json::Value::Object(outcomes));
        }
        let adopted = match self.serving_component(module, on).await {
            Some(bytes) => self.announce(module, bytes).await,
            None => None,
        };
        Ok(Done {
            nodes: serde_json::Value::Object(outcomes),
            adopted,
        })
    }

    /// The component `module` serves now, from this node or one of `on` (the nodes
    /// running it).
    async fn serving_component(&self, module: &str, on: &[String]) -> Option<Bytes> {
        if let Some(slot) = self.registry.slot(module) {
            return std::fs::read(&slot.serving().source).ok().map(Bytes::from);
        }
        for node in on {
            if let Ok(bytes) = self
                .ask(node, "component", &[("module", module)], Bytes::new())
                .await
            {
                return Some(bytes);
            }
        }
        None
    }

    /// Sends `component`, which `module` now serves, to every node that does not run
    /// the module, to adopt; what each answered, or `None` when no node is concerned.
    async fn announce(&self, module: &str, component: Bytes) -> Option<serde_json::Value> {
        let runs = self.registry.directory().nodes_of(module);
        let others: Vec<String> = self
            .deployment
            .nodes
            .keys()
            .filter(|node| !runs.contains(node))
            .cloned()
            .collect();
        if others.is_empty() {
            return None;
        }
        let mut adopted = serde_json::Map::new();
        for node in others {
            let outcome = if self.is_here(&node) {
                self.registry
                    .swapper()
                    .adopt(module, &component, component_extension(&component))
                    .await
                    .map_err(NodeFailed::from)
            } else {
                self.ask_text(&node, "adopt", &[("module", module)], component.clone())
                    .await
            };
            let value = match outcome {
                Ok(version) => serde_json::json!({ "version": version }),
                Err(why) => {
                    tracing::warn!(module, %node, error = %why, "a node did not adopt the new version; its contract checks use the one it knew");
                    serde_json::json!({ "error": why.to_string() })
                }
            };
            adopted.insert(node, value);
        }
        Some(serde_json::Value::Object(adopted))
    }

    /// Promotes or rolls back module `module` on this node; the version serving now.
    async fn promote_or_roll_back(&self, module: &str, action: &str) -> Result<String, NodeFailed> {
        let slot = self.local_slot(module)?;
        let swapper = self.registry.swapper();
        let change = if action == "promote" {
            swapper.promote(&slot).await?
        } else {
            swapper.rollback(&slot).await?
        };
        Ok(change.serving)
    }

    /// Module `module`'s slot, which a change on this node needs.
    fn local_slot(&self, module: &str) -> Result<Arc<ModuleSlot>, NodeFailed> {
        self.registry
            .slot(module)
            .ok_or_else(|| NodeFailed::Here(Refused::NotHere(module.to_string())))
    }

    fn is_here(&self, node: &str) -> bool {
        node.is_empty() || self.deployment.node.as_deref() == Some(node)
    }

    /// The other nodes of the deployment.
    fn peers(&self) -> Vec<String> {
        let here = self.deployment.node.clone().unwrap_or_default();
        if !self.has_mesh() {
            return Vec::new();
        }
        self.deployment
            .nodes
            .keys()
            .filter(|peer| **peer != here)
            .cloned()
            .collect()
    }

    /// [`Self::ask`], for an answer that is text (a version).
    async fn ask_text(
        &self,
        node: &str,
        action: &str,
        query: &[(&str, &str)],
        body: Bytes,
    ) -> Result<String, NodeFailed> {
        let answer = self.ask(node, action, query, body).await?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    }

    /// Asks node `node` to do `action` over the mesh; its answer body, or why not.
    async fn ask(
        &self,
        node: &str,
        action: &str,
        query: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Bytes, NodeFailed> {
        #[cfg(feature = "mesh")]
        if let Some(mesh) = &self.mesh {
            return ask_node(mesh, node, action, query, body).await;
        }
        let _ = (action, query, body);
        Err(NodeFailed::NoMesh(node.to_string()))
    }
}

/// Asks node `node` to do `action` over `mesh`: its answer body (200), or its
/// refusal, or why it could not be asked.
#[cfg(feature = "mesh")]
async fn ask_node(
    mesh: &Mesh,
    node: &str,
    action: &str,
    query: &[(&str, &str)],
    body: Bytes,
) -> Result<Bytes, NodeFailed> {
    ask_node_within(mesh, node, action, query, body, crate::mesh::ADMIN_TIMEOUT).await
}

/// [`ask_node`], waiting at most `limit` for the answer.
#[cfg(feature = "mesh")]
async fn ask_node_within(
    mesh: &Mesh,
    node: &str,
    action: &str,
    query: &[(&str, &str)],
    body: Bytes,
    limit: std::time::Duration,
) -> Result<Bytes, NodeFailed> {
    match mesh.admin_within(node, action, query, body, limit).await? {
        (StatusCode::OK, body) => Ok(body),
        (_, body) => Err(NodeFailed::There(
            String::from_utf8_lossy(&body).into_owned(),
        )),
    }
}

/// What a change did: the outcome on each node running the module, and what the
/// nodes not running it answered when sent its new version.
struct Done {
    nodes: serde_json::Value,
    adopted: Option<serde_json::Value>,
}

/// How a node is named in answers: a single node is `local`.
fn label(node: &str) -> String {
    if node.is_empty() {
        "local".into()
    } else {
        node.to_string()
    }
}

/// The nodes of one rollout, as the coordinator sees them: this one through its
/// swapper, the others through the mesh.
struct RolloutNodes<'a> {
    admin: &'a Admin,
    module: &'a str,
    component: &'a Path,
    bytes: Bytes,
    migrations: Option<&'a Path>,
    switch: Switch,
}

impl Nodes for RolloutNodes<'_> {
    fn stage<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<String, NodeFailed>> {
        Box::pin(async move {
            let admin = self.admin;
            if admin.is_here(node) {
                let slot = admin.local_slot(self.module)?;
                Ok(admin
                    .registry
                    .swapper()
                    .stage(&slot, self.component, self.migrations)
                    .await?)
            } else {
                let query = [("module", self.module)];
                admin
                    .ask_text(node, "stage", &query, self.bytes.clone())
                    .await
            }
        })
    }

    fn unstage<'a>(&'a self, node: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let admin = self.admin;
            if admin.is_here(node) {
                if let Some(slot) = admin.registry.slot(self.module) {
                    admin.registry.swapper().unstage(&slot);
                }
            } else {
                let query = [("module", self.module)];
                let _ = admin.ask(node, "unstage", &query, Bytes::new()).await;
            }
        })
    }

    fn commit<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<String, NodeFailed>> {
        Box::pin(async move {
            let admin = self.admin;
            if admin.is_here(node) {
                let slot = admin.local_slot(self.module)?;
                let change = admin.registry.swapper().commit(&slot, self.switch).await?;
                Ok(change.serving)
            } else {
                let weight = match self.switch {
                    Switch::Swap => String::new(),
                    Switch::Canary(weight) => weight.to_string(),
                };
                let query = [("module", self.module), ("weight", weight.as_str())];
                admin.ask_text(node, "commit", &query, Bytes::new()).await
            }
        })
    }
}
