//! The mesh: how the nodes of a split deployment reach each other.
//!
//! Between nodes there is one protocol, HTTP/2 over mutual TLS ([`tls`]), and two
//! kinds of request:
//! - **calls** (`POST /v1/call`): a module calling a module placed on another node.
//!   The dispatcher hands the call to the mesh as its [`Transport`], which encodes the
//!   values by their WIT types ([`wire`]), sends them to a node that runs the callee
//!   (the less loaded of two, among those not ejected: [`balance`]), and decodes the
//!   results — or the typed failure — that come back. The callee's node runs the call
//!   on its local path ([`server`]).
//! - **forwarded requests** (`/v1/http/MODULE/…`): an HTTP request that reached the
//!   gateway of a node that does not run the module owning its route, passed on
//!   whole ([`Transport::forward`]), so any node can sit behind a load balancer;
//! - **admin requests** (`/v1/admin/ACTION`): one node's admin API asking another to
//!   stage, commit or adopt a module version ([`Mesh::admin`]).
//!
//! A dead, frozen or partitioned peer never makes a caller hang: connecting is bounded
//! by `mesh.connect_timeout`, a call by the callee's timeout, and after
//! `mesh.breaker.consecutive_failures` failures in a row of a module on a node, that
//! node leaves the module's balance until a ping in the background finds it back
//! (`GET /v1/ping`). Each peer keeps one HTTP/2 connection, which carries any number
//! of calls at once; a broken one is replaced on the next call.

pub mod balance;
pub mod certs;
pub mod server;
pub mod tls;
pub mod wire;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use wasmtime::component::{Type, Val};

use crate::calls::transport::{ForwardFailed, RemoteCall, Transport};
use crate::deployment::{Deployment, NodeAddress};
use crate::module::{CallFailed, CallFailure};
use crate::runtime::BoxFuture;
use balance::{Balance, Endpoint, OnEject, Pick};
use tls::MeshTls;
use wire::CallHeader;

/// Time a remote call may take beyond the callee's own timeout: the network's share.
const NETWORK_MARGIN: Duration = Duration::from_millis(250);
/// How long a node may take over an admin request (compiling and migrating a version).
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest answer to a call read from a peer (a peer is trusted with its identity, not
/// with this node's memory).
const MAX_CALL_ANSWER: usize = 16 * 1024 * 1024;
/// Largest answer to an admin request read from a peer (a component, at most).
const MAX_ADMIN_ANSWER: usize = 256 * 1024 * 1024;
/// Header naming the node a forwarded request came from (it is never forwarded on).
pub const FORWARDED_BY: &str = "x-modhost-forwarded-by";

/// This node's view of the other nodes.
pub struct Mesh {
    tls: Arc<MeshTls>,
    peers: Arc<BTreeMap<String, Arc<Peer>>>,
    balance: Balance,
}

/// Why an admin request to another node got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// No connection to the node could be made.
    #[error("node {node} is unreachable: {why}")]
    Unreachable {
        /// The node.
        node: String,
        /// Why, as the connection attempt said.
        why: String,
    },
    /// The node did not answer in time.
    #[error("node {node} did not answer within {after:?}")]
    TimedOut {
        /// The node.
        node: String,
        /// How long it was given.
        after: Duration,
    },
    /// The node's answer broke off.
    #[error("node {node}: {why}")]
    Broken {
        /// The node.
        node: String,
        /// What happened.
        why: String,
    },
}

impl Mesh {
    /// The mesh of node `deployment.node` of a split deployment, or `None` for a
    /// single node.
    pub fn new(deployment: &Deployment) -> anyhow::Result<Option<Mesh>> {
        let (Some(node), Some(settings)) = (&deployment.node, &deployment.mesh) else {
            return Ok(None);
        };
        let names: Vec<String> = deployment.nodes.keys().cloned().collect();
        let tls = Arc::new(MeshTls::load(settings, node, names)?);
        let peers = deployment
            .nodes
            .values()
            .filter(|peer| &peer.name != node)
            .map(|peer| {
                (
                    peer.name.clone(),
                    Arc::new(Peer {
                        name: peer.name.clone(),
                        addr: peer.mesh.clone(),
                        tls: tls.clone(),
                        connect_timeout: settings.connect_timeout,
                        connection: tokio::sync::Mutex::new(None),
                    }),
                )
            })
            .collect();
        let peers: Arc<BTreeMap<String, Arc<Peer>>> = Arc::new(peers);
        let pinged = peers.clone();
        let on_eject: OnEject = Arc::new(move |endpoint: Arc<Endpoint>| {
            if let Some(peer) = pinged.get(endpoint.node()).cloned() {
                tokio::spawn(ping_until_back(peer, endpoint));
            }
        });
        Ok(Some(Mesh {
            tls,
            peers,
            balance: Balance::new(
                settings.breaker_failures,
                settings.breaker_open_for,
                on_eject,
            ),
        }))
    }

    /// This node's TLS identity and the peers' trust.
    pub fn tls(&self) -> &Arc<MeshTls> {
        &self.tls
    }

    /// Calls a function of `call.callee` on one of its nodes. `params` and `results`
    /// come with their types, which encode and decode them.
    async fn call_remote(
        &self,
        call: RemoteCall<'_>,
        (params, param_types): (&[Val], &[Type]),
        (results, result_types): (&mut [Val], &[Type]),
    ) -> Result<(), CallFailed> {
        let RemoteCall {
            callee,
            placement: remote,
            route,
            ..
        } = call;
        let header = CallHeader {
            interface: call.interface.to_string(),
            function: call.function.to_string(),
            caller: call.caller.to_string(),
            depth: call.depth,
            deadline_ms: u64::try_from(call.deadline.as_millis()).unwrap_or(u64::MAX),
            traceparent: call.trace.to_string(),
            request_id: call.request_id.unwrap_or_default().to_string(),
        };
        let failed = |kind, why: String| CallFailed::new(kind, format!("{}: {why}", route()));
        let mut body = Vec::with_capacity(256);
        header.encode(&mut body);
        wire::encode_values(params, param_types, &mut body).map_err(|error| {
            failed(
                CallFailure::Crashed,
                format!("encoding the call: {error:#}"),
            )
        })?;
        let body = Bytes::from(body);
        let timeout = remote.timeout + NETWORK_MARGIN;

        let to = Destination::Module {
            module: callee,
            nodes: &remote.nodes,
        };
        let answer = self
            .send(to, timeout, |peer| {
                Request::post(format!("https://{}/v1/call", peer.name))
                    .header(http::header::CONTENT_TYPE, "application/x-modhost-call")
                    .body(Full::new(body.clone()))
            })
            .await;
        let (sent, response) = match answer {
            Ok(answer) => answer,
            Err(SendFailed::Unreachable(why)) => {
                return Err(failed(
                    CallFailure::Unavailable,
                    format!(
                        "module `{callee}` (on {}) is unreachable: {why}",
                        remote.nodes.join(", ")
                    ),
                ))
            }
            Err(SendFailed::TimedOut(node)) => {
                return Err(failed(
                    CallFailure::Unavailable,
                    format!(
                        "node {node}, which runs `{callee}`, did not answer within {timeout:?}"
                    ),
                ))
            }
        };
        let answer = read_answer(&sent.node, response, timeout, results, result_types).await;
        // The node did its part unless it broke off or answered that the callee there
        // is overloaded or too slow (see [`balance`] for what does not count).
        let healthy = match &answer {
            Ok(Ok(())) => true,
            Ok(Err(failed)) => {
                !matches!(failed.kind, CallFailure::Overloaded | CallFailure::TimedOut)
            }
            // Answering that it does not run the callee is a node doing its part.
            Err(Broken(kind, _)) => *kind == CallFailure::Misplaced,
        };
        if let Some(pick) = sent.pick {
            pick.record(healthy);
        }
        match answer {
            Ok(answer) => answer,
            Err(Broken(kind, why)) => Err(failed(kind, why)),
        }
    }

    /// Passes an HTTP request for `module` to one of `nodes`, which serves it on its
    /// local path; waits at most `timeout` for the response head.
    async fn forward_request(
        &self,
        module: &str,
        nodes: &[String],
        request: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, ForwardFailed> {
        let (parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string();
        let mut headers = parts.headers;
        // HTTP/2 carries no connection-specific headers; the authority travels in the URI.
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "upgrade",
            "te",
            "host",
        ] {
            headers.remove(name);
        }
        let node = self.tls.node().to_string();
        let to = Destination::Module { module, nodes };
        let answer = self
            .send(to, timeout, |peer| {
                let mut request = Request::builder()
                    .method(parts.method.clone())
                    .uri(format!("https://{}/v1/http/{module}{path}", peer.name))
                    .body(body.clone())?;
                *request.headers_mut() = headers.clone();
                if let Ok(value) = http::HeaderValue::from_str(&node) {
                    request.headers_mut().insert(FORWARDED_BY, value);
                }
                Ok(request)
            })
            .await;
        match answer {
            Ok((sent, response)) => {
                // The node's gateway answers 503 when the module there is at its limit
                // or not running, 504 when it took too long.
                let status = response.status();
                if let Some(pick) = sent.pick {
                    pick.record(
                        status != StatusCode::SERVICE_UNAVAILABLE
                            && status != StatusCode::GATEWAY_TIMEOUT,
                    );
                }
                Ok(response)
            }
            Err(SendFailed::Unreachable(why)) => Err(ForwardFailed::Unavailable(format!(
                "module {module} runs on {}, which cannot be reached: {why}",
                nodes.join(", ")
            ))),
            Err(SendFailed::TimedOut(node)) => Err(ForwardFailed::TimedOut(format!(
                "node {node}, which runs module {module}, did not answer within {timeout:?}"
            ))),
        }
    }

    /// Asks node `node` to do admin `action` (`/v1/admin/ACTION?query`) with `body`;
    /// the node is authenticated by its certificate, as for calls.
    pub async fn admin(
        &self,
        node: &str,
        action: &str,
        query: &[(&str, &str)],
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), PeerError> {
        self.admin_within(node, action, query, body, ADMIN_TIMEOUT)
            .await
    }

    /// [`Self::admin`], waiting at most `limit` for the answer: for the steps whose
    /// time grows with a module's data (checking a copy, a whole move asked of
    /// another node).
    pub async fn admin_within(
        &self,
        node: &str,
        action: &str,
        query: &[(&str, &str)],
        body: Bytes,
        limit: Duration,
    ) -> Result<(StatusCode, Bytes), PeerError> {
        let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let answer = self
            .send(Destination::Node(node), limit, |peer| {
                Request::post(format!(
                    "https://{}/v1/admin/{action}?{}",
                    peer.name,
                    query.join("&")
                ))
                .body(Full::new(body.clone()))
            })
            .await;
        let response = match answer {
            Ok((_, response)) => response,
            Err(SendFailed::Unreachable(why)) => {
                return Err(PeerError::Unreachable {
                    node: node.to_string(),
                    why,
                })
            }
            Err(SendFailed::TimedOut(_)) => {
                return Err(PeerError::TimedOut {
                    node: node.to_string(),
                    after: limit,
                })
            }
        };
        let status = response.status();
        let broken = |why: String| PeerError::Broken {
            node: node.to_string(),
            why,
        };
        let body = tokio::time::timeout(
            limit,
            Limited::new(response.into_body(), MAX_ADMIN_ANSWER).collect(),
        )
        .await
        .map_err(|_| broken("stopped answering".into()))?
        .map_err(|e| broken(e.to_string()))?
        .to_bytes();
        Ok((status, body))
    }

    /// Sends the request `make` builds for a peer to `to`: for a module, to the node
    /// its balance picks, trying another when one cannot even be connected to (nothing
    /// was sent); waits at most `timeout` for the answer. Who answered comes back with
    /// the answer, whose outcome the caller records in the balance.
    async fn send(
        &self,
        to: Destination<'_>,
        timeout: Duration,
        make: impl Fn(&Peer) -> Result<Request<Full<Bytes>>, http::Error>,
    ) -> Result<(Sent, Response<Incoming>), SendFailed> {
        let mut reasons = Vec::new();
        let mut tried: Vec<String> = Vec::new();
        loop {
            let (node, pick) = match to {
                Destination::Node(node) if tried.is_empty() => (node.to_string(), None),
                Destination::Node(_) => break,
                Destination::Module { module, nodes } => {
                    let left: Vec<&str> = nodes
                        .iter()
                        .map(String::as_str)
                        .filter(|node| !tried.iter().any(|tried| tried == node))
                        .collect();
                    if left.is_empty() {
                        break;
                    }
                    let Some(pick) = self.balance.pick(module, &left) else {
                        reasons.push(format!(
                            "{}: ejected after failing; calls fail at once until a ping finds a node back",
                            left.join(", ")
                        ));
                        break;
                    };
                    (pick.node().to_string(), Some(pick))
                }
            };
            tried.push(node.clone());
            let Some(peer) = self.peers.get(&node) else {
                reasons.push(format!("{node}: not a peer of this node"));
                continue;
            };
            let request = make(peer).map_err(|e| SendFailed::Unreachable(e.to_string()))?;
            // On every way out but an answer — no connection, a broken one, no answer
            // in time, the caller giving up in the await — the pick is dropped
            // unrecorded, which counts as a failure of the node.
            let mut sender = match peer.sender().await {
                Ok(sender) => sender,
                Err(why) => {
                    reasons.push(format!("{node}: {why}"));
                    continue;
                }
            };
            return match tokio::time::timeout(timeout, sender.send_request(request)).await {
                Ok(Ok(response)) => Ok((Sent { node, pick }, response)),
                Ok(Err(error)) => {
                    peer.forget_connection().await;
                    // `{:#}` names the causes: hyper's own "connection error" does not
                    // say that the peer refused our certificate.
                    Err(SendFailed::Unreachable(format!(
                        "{node}: {:#}",
                        anyhow::Error::from(error)
                    )))
                }
                Err(_) => Err(SendFailed::TimedOut(node)),
            };
        }
        Err(SendFailed::Unreachable(reasons.join("; ")))
    }
}

impl Transport for Mesh {
    fn call<'a>(
        &'a self,
        call: RemoteCall<'a>,
        params: (&'a [Val], &'a [Type]),
        results: (&'a mut [Val], &'a [Type]),
    ) -> BoxFuture<'a, Result<(), CallFailed>> {
        Box::pin(self.call_remote(call, params, results))
    }

    fn forward<'a>(
        &'a self,
        module: &'a str,
        nodes: &'a [String],
        request: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Response<Incoming>, ForwardFailed>> {
        Box::pin(self.forward_request(module, nodes, request, timeout))
    }
}

/// A node's answer to a call that could not be read: the kind of failure, and why.
struct Broken(CallFailure, String);

/// Reads node `node`'s answer to a call (within `timeout`) into `results`: the callee's
/// outcome — its results, or its typed failure, whose message already names the edge
/// — or [`Broken`] when the answer itself is not one.
async fn read_answer(
    node: &str,
    response: Response<Incoming>,
    timeout: Duration,
    results: &mut [Val],
    result_types: &[Type],
) -> Result<Result<(), CallFailed>, Broken> {
    let status = response.status();
    let bytes = tokio::time::timeout(
        timeout,
        Limited::new(response.into_body(), MAX_CALL_ANSWER).collect(),
    )
    .await
    .map_err(|_| {
        Broken(
            CallFailure::Unavailable,
            format!("node {node} stopped answering"),
        )
    })?
    .map_err(|error| Broken(CallFailure::Unavailable, format!("node {node}: {error}")))?
    .to_bytes();
    if status == StatusCode::MISDIRECTED_REQUEST {
        // The node does not run the callee (it moved): the call did not run there.
        return Err(Broken(
            CallFailure::Misplaced,
            format!(
                "node {node} does not run the callee: {}",
                String::from_utf8_lossy(&bytes)
            ),
        ));
    }
    if status != StatusCode::OK {
        return Err(Broken(
            CallFailure::Unavailable,
            format!(
                "node {node} refused the call ({status}): {}",
                String::from_utf8_lossy(&bytes)
            ),
        ));
    }
    let mut input = &bytes[..];
    let outcome = wire::take(&mut input, 1)
        .map_err(|e| Broken(CallFailure::Crashed, format!("node {node}: {e:#}")))?[0];
    match outcome {
        wire::outcome::OK => {
            let values = wire::decode_values(&mut input, result_types).map_err(|error| {
                Broken(
                    CallFailure::Crashed,
                    format!("decoding node {node}'s answer: {error:#}"),
                )
            })?;
            if values.len() != results.len() {
                return Err(Broken(
                    CallFailure::Crashed,
                    format!(
                        "node {node} sent {} results for {}",
                        values.len(),
                        results.len()
                    ),
                ));
            }
            for (slot, value) in results.iter_mut().zip(values) {
                *slot = value;
            }
            Ok(Ok(()))
        }
        wire::outcome::FAILED => {
            let kind = wire::take(&mut input, 1)
                .map(|code| CallFailure::from_code(code[0]))
                .unwrap_or(CallFailure::Crashed);
            let message = wire::get_string(&mut input).unwrap_or_default();
            Ok(Err(CallFailed::new(kind, message)))
        }
        other => Err(Broken(
            CallFailure::Crashed,
            format!("node {node} answered with outcome {other}"),
        )),
    }
}

/// Pings the node of an ejected endpoint each time its ejection is up, until it
/// answers and so is back in its module's balance.
async fn ping_until_back(peer: Arc<Peer>, endpoint: Arc<Endpoint>) {
    while let Some(due) = endpoint.ejected_until() {
        tokio::time::sleep_until(due).await;
        if let Some(ping) = endpoint.probe() {
            let answered = peer.ping().await;
            ping.record(answered);
            if answered {
                return;
            }
        }
    }
}

/// Where a request may go.
#[derive(Clone, Copy)]
enum Destination<'a> {
    /// Any of `nodes`, which run `module`, as the module's balance picks.
    Module {
        module: &'a str,
        nodes: &'a [String],
    },
    /// This node only (admin requests, which are for one node).
    Node(&'a str),
}

/// Who answered a request: the node, and its pick in the balance (for a module).
struct Sent {
    node: String,
    pick: Option<Pick>,
}

enum SendFailed {
    /// No node could be reached (why, per node).
    Unreachable(String),
    /// The request went to this node, which did not answer in time.
    TimedOut(String),
}

/// Another node, and the connection to it.
struct Peer {
    name: String,
    /// Where its mesh listens; a DNS name is resolved at each connection.
    addr: NodeAddress,
    tls: Arc<MeshTls>,
    connect_timeout: Duration,
    connection: tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl Peer {
    /// A sender on the peer's connection, connecting first if there is none.
    async fn sender(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let mut connection = self.connection.lock().await;
        if let Some(sender) = connection.as_ref() {
            if !sender.is_closed() {
                return Ok(sender.clone());
            }
        }
        let sender = tokio::time::timeout(self.connect_timeout, self.connect())
            .await
            .map_err(|_| format!("no connection within {:?}", self.connect_timeout))??;
        *connection = Some(sender.clone());
        Ok(sender)
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let tcp = match &self.addr {
            NodeAddress::Ip(addr) => TcpStream::connect(addr).await,
            NodeAddress::Name { host, port } => TcpStream::connect((host.as_str(), *port)).await,
        }
        .map_err(|e| format!("connecting to {}: {e}", self.addr))?;
        let _ = tcp.set_nodelay(true);
        let name = rustls::pki_types::ServerName::try_from(self.name.clone())
            .map_err(|e| format!("{} as a TLS name: {e}", self.name))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.client_config())
            .connect(name, tcp)
            .await
            .map_err(|e| {
                tracing::warn!(peer = %self.name, addr = %self.addr, error = %e, "mesh: TLS handshake with a peer failed");
                format!("TLS with {} ({}): {e}", self.name, self.addr)
            })?;
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(tokio::io::BufWriter::new(tls)))
            .await
            .map_err(|e| format!("HTTP/2 with {}: {e}", self.name))?;
        let peer = self.name.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                // In TLS 1.3 the peer checks our certificate after our side of the
                // handshake is done: its refusal (another CA, expired) arrives here.
                let error = format!("{:#}", anyhow::Error::from(error));
                tracing::warn!(%peer, %error, "mesh: the connection to a peer failed");
            }
        });
        tracing::debug!(peer = %self.name, addr = %self.addr, "mesh: connected to a peer");
        Ok(sender)
    }

    /// Whether the peer answers `GET /v1/ping` within the connect timeout (on its
    /// connection, connecting first if needed).
    async fn ping(&self) -> bool {
        let Ok(mut sender) = self.sender().await else {
            return false;
        };
        let Ok(request) =
            Request::get(format!("https://{}/v1/ping", self.name)).body(Full::new(Bytes::new()))
        else {
            return false;
        };
        match tokio::time::timeout(self.connect_timeout, sender.send_request(request)).await {
            Ok(Ok(response)) => response.status().is_success(),
            Ok(Err(_)) => {
                self.forget_connection().await;
                false
            }
            Err(_) => false,
        }
    }

    async fn forget_connection(&self) {
        *self.connection.lock().await = None;
    }
}
