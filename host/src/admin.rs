//! The admin API: where operators see and change which module versions serve.
//!
//! It listens on its own address (`[admin] listen`, or a node's `admin`), never on the
//! public gateway, and every request must carry the deployment's token
//! (`Authorization: Bearer …`, compared in constant time). JSON in, JSON out:
//!
//! | request | what it does |
//! | --- | --- |
//! | `GET /v1/status` | every module of every node: serving version, canary, previous, in flight |
//! | `POST /v1/modules/M/swap` `{"component": PATH, "migrations"?: DIR}` | M's new version serves everything |
//! | `POST /v1/modules/M/canary` `{"component": PATH, "weight": N}` | M's new version gets N% of its traffic |
//! | `POST /v1/modules/M/promote` | M's canary serves everything |
//! | `POST /v1/modules/M/rollback` | M's canary is dropped, or M goes back to the version before |
//!
//! On a split deployment a change applies to every node running the module, driven
//! from whichever node was asked: the component (read here) is sent over the mesh and
//! **staged** on every node — compiled, contract-checked, linked, migrated — and only
//! when every node has staged it is it **committed** on each. A refusal anywhere
//! unstages it everywhere and answers 409 with each node's reason; the old version
//! keeps serving on all of them.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

use crate::deployment::Deployment;
use crate::gateway::responses::{self, Body};
use crate::mesh::Mesh;
use crate::registry::swap::Switch;
use crate::registry::Registry;

/// Largest admin request body (a path and a few fields).
const MAX_BODY: usize = 64 * 1024;

/// What the admin API acts on.
pub struct Admin {
    token: String,
    deployment: Deployment,
    registry: Arc<Registry>,
    mesh: Option<Arc<Mesh>>,
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
    /// The admin API of this node, with the deployment's token.
    pub fn new(
        token: String,
        deployment: Deployment,
        registry: Arc<Registry>,
        mesh: Option<Arc<Mesh>>,
    ) -> Admin {
        Admin {
            token,
            deployment,
            registry,
            mesh,
        }
    }

    /// Serves `listener` until `shutdown` resolves.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "admin: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => return,
            };
            let admin = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let admin = admin.clone();
                    async move { Ok::<_, std::convert::Infallible>(admin.handle(request).await) }
                });
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(error) = served {
                    tracing::debug!(%peer, %error, "admin: connection ended with an error");
                }
            });
        }
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        if !self.authorized(&request) {
            tracing::warn!(path = %request.uri().path(), "admin: refused a request without the right token");
            let mut response = responses::error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the admin API needs `Authorization: Bearer <token>` with the deployment's token",
                None,
            );
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            return response;
        }
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match (&method, segments.as_slice()) {
            (&Method::GET, ["v1", "status"]) => self.status().await,
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

    /// Constant-time comparison of the bearer token.
    fn authorized(&self, request: &Request<Incoming>) -> bool {
        let Some(given) = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        let (given, wanted) = (given.as_bytes(), self.token.as_bytes());
        given.len() == wanted.len()
            && given
                .iter()
                .zip(wanted)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// This node's modules, and every other node's.
    async fn status(&self) -> Response<Body> {
        let node = self.deployment.node.clone().unwrap_or_default();
        let mut nodes = serde_json::Map::new();
        nodes.insert(
            if node.is_empty() {
                "local".into()
            } else {
                node.clone()
            },
            serde_json::Value::Object(self.registry.status()),
        );
        if let Some(mesh) = &self.mesh {
            let peers: Vec<String> = self
                .deployment
                .nodes
                .keys()
                .filter(|peer| **peer != node)
                .cloned()
                .collect();
            for peer in &peers {
                let state = match mesh.admin(peer, "status", &[], Bytes::new()).await {
                    Ok((StatusCode::OK, body)) => serde_json::from_slice(&body)
                        .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() })),
                    Ok((status, body)) => {
                        serde_json::json!({ "error": format!("{status}: {}", String::from_utf8_lossy(&body)) })
                    }
                    Err(why) => serde_json::json!({ "error": why }),
                };
                nodes.insert(peer.clone(), state);
            }
        }
        responses::json(
            StatusCode::OK,
            &serde_json::json!({ "node": node, "nodes": nodes }),
        )
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
            Some(_) => self.deployment.nodes_of(module).to_vec(),
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
                self.roll_out(
                    module.to_string(),
                    on,
                    request.component,
                    request.migrations,
                    switch,
                )
                .await
            }
            "promote" | "rollback" => self.each(module.to_string(), on, action.to_string()).await,
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
            Ok(nodes) => responses::json(
                StatusCode::OK,
                &serde_json::json!({ "module": module, "action": action, "nodes": nodes }),
            ),
            Err(nodes) => responses::json(
                StatusCode::CONFLICT,
                &serde_json::json!({ "error": { "code": "refused", "message": format!("the {action} of {module} was refused; what was serving still serves"), "nodes": nodes } }),
            ),
        }
    }

    /// Stages the component on every node in `on`, then commits it on each; unstages
    /// everywhere if any node refuses.
    async fn roll_out(
        &self,
        module: String,
        on: Vec<String>,
        component: PathBuf,
        migrations: Option<PathBuf>,
        switch: Switch,
    ) -> Result<serde_json::Value, serde_json::Value> {
        let (module, component, migrations) =
            (module.as_str(), component.as_path(), migrations.as_deref());
        let bytes = match std::fs::read(component) {
            Ok(bytes) => Bytes::from(bytes),
            Err(error) => {
                return Err(
                    serde_json::json!({ "here": format!("reading {}: {error}", component.display()) }),
                )
            }
        };
        let extension = component
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("wasm")
            .to_string();
        let mut staged = Vec::new();
        let mut refusals = serde_json::Map::new();
        for node in on {
            // Staging time as seen from here: for a remote node it includes the upload.
            let started = std::time::Instant::now();
            let outcome = if self.is_here(&node) {
                self.stage_here(module, component, migrations).await
            } else {
                let query = [("module", module), ("extension", extension.as_str())];
                self.remote(&node, "stage", &query, bytes.clone()).await
            };
            let staged_ms = started.elapsed().as_secs_f64() * 1000.0;
            match outcome {
                Ok(version) => staged.push((node.clone(), version, staged_ms)),
                Err(why) => {
                    refusals.insert(label(&node), why.into());
                }
            }
        }
        if !refusals.is_empty() {
            for (node, _, _) in staged {
                if self.is_here(&node) {
                    if let Some(slot) = self.registry.slot(module) {
                        self.registry.swapper().unstage(slot);
                    }
                } else {
                    let query = [("module", module)];
                    let _ = self.remote(&node, "unstage", &query, Bytes::new()).await;
                }
            }
            return Err(serde_json::Value::Object(refusals));
        }
        let weight = match switch {
            Switch::Swap => String::new(),
            Switch::Canary(weight) => weight.to_string(),
        };
        let mut done = serde_json::Map::new();
        for (node, version, staged_ms) in staged {
            let started = std::time::Instant::now();
            let outcome = if self.is_here(&node) {
                match self.registry.slot(module) {
                    Some(slot) => self
                        .registry
                        .swapper()
                        .commit(slot, switch)
                        .await
                        .map(|_| version.clone())
                        .map_err(|e| e.0),
                    None => Err(format!("module {module} does not run here")),
                }
            } else {
                let query = [("module", module), ("weight", weight.as_str())];
                self.remote(&node, "commit", &query, Bytes::new()).await
            };
            // The commit as seen from here (the switch, then durably recording the
            // version): for a remote node it includes the round trip.
            let committed_us = started.elapsed().as_secs_f64() * 1e6;
            done.insert(
                label(&node),
                match outcome {
                    Ok(version) => serde_json::json!({
                        "version": version,
                        "staged_ms": staged_ms,
                        "committed_us": committed_us,
                    }),
                    Err(why) => serde_json::json!({ "error": why }),
                },
            );
        }
        Ok(serde_json::Value::Object(done))
    }

    /// Promotes or rolls back `module` on every node in `on`.
    async fn each(
        &self,
        module: String,
        on: Vec<String>,
        action: String,
    ) -> Result<serde_json::Value, serde_json::Value> {
        let (module, action) = (module.as_str(), action.as_str());
        let mut outcomes = serde_json::Map::new();
        let mut refused = false;
        for node in on {
            let node = node.as_str();
            let outcome = if self.is_here(node) {
                match self.registry.slot(module) {
                    Some(slot) => {
                        let swapper = self.registry.swapper();
                        let change = if action == "promote" {
                            swapper.promote(slot).await
                        } else {
                            swapper.rollback(slot).await
                        };
                        change.map(|change| change.serving).map_err(|e| e.0)
                    }
                    None => Err(format!("module {module} does not run here")),
                }
            } else {
                self.remote(node, action, &[("module", module)], Bytes::new())
                    .await
            };
            outcomes.insert(
                label(node),
                match outcome {
                    Ok(serving) => serde_json::json!({ "serving": serving }),
                    Err(why) => {
                        refused = true;
                        serde_json::json!({ "error": why })
                    }
                },
            );
        }
        if refused {
            Err(serde_json::Value::Object(outcomes))
        } else {
            Ok(serde_json::Value::Object(outcomes))
        }
    }

    async fn stage_here(
        &self,
        module: &str,
        component: &Path,
        migrations: Option<&Path>,
    ) -> Result<String, String> {
        let Some(slot) = self.registry.slot(module) else {
            return Err(format!("module {module} does not run here"));
        };
        self.registry
            .swapper()
            .stage(slot, component, migrations)
            .await
            .map_err(|e| e.0)
    }

    fn is_here(&self, node: &str) -> bool {
        node.is_empty() || self.deployment.node.as_deref() == Some(node)
    }

    /// Asks node `node` to do `action` over the mesh; its answer body is the version (or
    /// serving version), its refusal the reason.
    async fn remote(
        &self,
        node: &str,
        action: &str,
        query: &[(&str, &str)],
        body: Bytes,
    ) -> Result<String, String> {
        let Some(mesh) = &self.mesh else {
            return Err(format!(
                "node {node} is not reachable: this node has no mesh"
            ));
        };
        match mesh.admin(node, action, query, body).await {
            Ok((StatusCode::OK, body)) => Ok(String::from_utf8_lossy(&body).into_owned()),
            Ok((_, body)) => Err(String::from_utf8_lossy(&body).into_owned()),
            Err(why) => Err(why),
        }
    }
}

fn label(node: &str) -> String {
    if node.is_empty() {
        "local".into()
    } else {
        node.to_string()
    }
}

/// Serves one node-to-node admin request on the mesh (`/v1/admin/ACTION?module=…`):
/// the peer is already authenticated as a node of the deployment. Answers 200 with a
/// version, or 409 with the reason.
pub async fn serve_peer(
    registry: &Registry,
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
    let plain = |status: StatusCode, text: String| {
        let mut response = Response::new(responses::full(text));
        *response.status_mut() = status;
        response
    };
    if action == "status" {
        return responses::json(
            StatusCode::OK,
            &serde_json::Value::Object(registry.status()),
        );
    }
    let Some(module) = param("module") else {
        return plain(StatusCode::BAD_REQUEST, "no module".into());
    };
    let Some(slot) = registry.slot(&module) else {
        return plain(
            StatusCode::CONFLICT,
            format!("module {module} does not run here"),
        );
    };
    let swapper = registry.swapper();
    let outcome = match action {
        "stage" => {
            let extension = param("extension").unwrap_or_else(|| "wasm".into());
            let extension = if extension == "cwasm" {
                "cwasm"
            } else {
                "wasm"
            };
            match swapper.versions().keep_bytes(&body, extension) {
                Ok(path) => swapper.stage(slot, &path, None).await.map_err(|e| e.0),
                Err(error) => Err(format!("{error:#}")),
            }
        }
        "unstage" => {
            swapper.unstage(slot);
            Ok(String::new())
        }
        "commit" => {
            let switch = match param("weight").and_then(|w| w.parse().ok()) {
                Some(weight) => Switch::Canary(weight),
                None => Switch::Swap,
            };
            let version = swapper.commit(slot, switch).await.map(|_| ());
            version
                .map(|()| match switch {
                    Switch::Swap => slot.serving().version.clone(),
                    Switch::Canary(_) => slot
                        .canary()
                        .map(|c| c.module.version.clone())
                        .unwrap_or_default(),
                })
                .map_err(|e| e.0)
        }
        "promote" => swapper
            .promote(slot)
            .await
            .map(|c| c.serving)
            .map_err(|e| e.0),
        "rollback" => swapper
            .rollback(slot)
            .await
            .map(|c| c.serving)
            .map_err(|e| e.0),
        other => return plain(StatusCode::NOT_FOUND, format!("no admin action {other}")),
    };
    match outcome {
        Ok(version) => plain(StatusCode::OK, version),
        Err(why) => plain(StatusCode::CONFLICT, why),
    }
}

/// A client of the admin API, for the command line.
pub mod client {
    use super::*;

    /// Sends `method path` with `body` (JSON) to the admin API at `base`
    /// (`http://host:port`) with `token`; returns the status and the JSON answer.
    pub async fn request(
        base: &str,
        token: &str,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(StatusCode, serde_json::Value)> {
        let uri: http::Uri = format!("{}{path}", base.trim_end_matches('/')).parse()?;
        let authority = uri
            .authority()
            .ok_or_else(|| anyhow::anyhow!("{base} has no host:port"))?
            .clone();
        let stream = tokio::net::TcpStream::connect(authority.as_str())
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the admin API at {base}: {e}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = Request::builder()
            .method(method)
            .uri(uri.path())
            .header(http::header::HOST, authority.as_str())
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| serde_json::json!({ "text": String::from_utf8_lossy(&bytes) }));
        Ok((status, json))
    }
}
