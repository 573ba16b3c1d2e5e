//! The mesh listener: where other nodes' calls, forwarded requests and admin requests
//! arrive.
//!
//! Every connection must complete a mutual-TLS handshake with a certificate from the
//! deployment's CA (rustls refuses another CA, an expired certificate, or none), and
//! that certificate must name a node of the deployment; a refused connection is closed
//! and logged with its address and the reason. Accepted connections speak HTTP/2:
//! - `POST /v1/call`: a call frame ([`super::wire`]); the callee runs on this node's
//!   local path ([`Dispatcher::inbound`]), under its own limits, within the caller's
//!   deadline, in the caller's trace; the answer is the results or a typed failure.
//! - `/v1/http/MODULE/PATH`: a request forwarded by another node's gateway, handed to
//!   this node's gateway ([`ForwardedHttp`]) as if it had arrived there;
//! - `GET /v1/ping`: whether this node answers at all (a node that ejected it from a
//!   module's balance asks before putting it back);
//! - `/v1/admin/ACTION`: another node's admin API staging or committing a version
//!   here ([`PeerAdmin`]).
//!
//! The mesh knows nothing of the gateway or the admin API: the node hands it the
//! [`Handlers`] for what arrives.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::Instrument;
use wasmtime::component::Val;

use super::tls::MeshTls;
use super::wire::{self, CallHeader};
use crate::calls::dispatcher::InboundRefused;
use crate::calls::Dispatcher;
use crate::capabilities::Hop;
use crate::module::CallFailure;
use crate::runtime::accept::{self, Accept};
use crate::runtime::responses::{self, plain, Body};
use crate::runtime::shutdown::Shutdown;
use crate::runtime::BoxFuture;
use crate::telemetry::request_id;
use crate::telemetry::trace::TraceContext;

/// Largest call frame accepted.
const MAX_FRAME: usize = 16 * 1024 * 1024;
/// How long a peer has to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves HTTP requests another node forwarded here for a local module.
pub trait ForwardedHttp: Send + Sync {
    /// Answers `request` (its path and query as the client sent them) for `module`,
    /// forwarded by node `peer`.
    fn serve<'a>(
        &'a self,
        peer: &'a str,
        module: &'a str,
        request: Request<Incoming>,
    ) -> BoxFuture<'a, Response<Body>>;
}

/// Serves another node's admin requests (the peer is authenticated by its certificate).
pub trait PeerAdmin: Send + Sync {
    /// Does admin `action` with the request's `query` and `body` for node `peer`.
    fn serve<'a>(
        &'a self,
        peer: &'a str,
        action: &'a str,
        query: &'a str,
        body: Bytes,
    ) -> BoxFuture<'a, Response<Body>>;
}

/// What serves each kind of request that arrives over the mesh.
#[derive(Clone)]
pub struct Handlers {
    /// Calls into local modules.
    pub calls: Arc<Dispatcher>,
    /// Forwarded HTTP requests.
    pub http: Arc<dyn ForwardedHttp>,
    /// Admin requests.
    pub admin: Arc<dyn PeerAdmin>,
}

/// Serves other nodes on `listener` until `shutdown`, then lets requests in flight
/// finish for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<MeshTls>,
    handlers: Handlers,
    shutdown: Shutdown,
    grace: Duration,
) {
    let options = Accept {
        name: "mesh",
        max_connections: None,
        grace,
    };
    accept::serve(listener, options, shutdown, move |tcp, addr, shutdown| {
        let (tls, handlers) = (tls.clone(), handlers.clone());
        async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::warn!(%addr, %error, "mesh: refused a peer: TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%addr, "mesh: refused a peer: no TLS handshake within {HANDSHAKE_TIMEOUT:?}");
                    return;
                }
            };
            let peer = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|cert| tls.peer_node(cert));
            let Some(peer) = peer else {
                tracing::warn!(%addr, "mesh: refused a peer: its certificate names no node of this deployment");
                return;
            };
            tracing::debug!(%addr, %peer, "mesh: peer connected");
            let service = hyper::service::service_fn(move |request| {
                let (handlers, peer) = (handlers.clone(), peer.clone());
                async move {
                    Ok::<_, std::convert::Infallible>(handle(&handlers, &peer, request).await)
                }
            });
            let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_concurrent_streams(1024)
                .keep_alive_interval(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tokio::io::BufWriter::new(stream)), service);
            if let Err(error) = accept::graceful(connection, &shutdown, || grace).await {
                tracing::debug!(%addr, %error, "mesh: peer connection ended");
            }
        }
    })
    .await;
}

async fn handle(handlers: &Handlers, peer: &str, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_string();
    if path == "/v1/ping" {
        return plain(StatusCode::OK, "pong");
    }
    if path == "/v1/call" && request.method() == http::Method::POST {
        return call(&handlers.calls, peer, request).await;
    }
    if let Some(action) = path.strip_prefix("/v1/admin/") {
        let query = request.uri().query().unwrap_or_default().to_string();
        let body = match Limited::new(request.into_body(), MAX_FRAME * 8)
            .collect()
            .await
        {
            Ok(body) => body.to_bytes(),
            Err(error) => return plain(StatusCode::BAD_REQUEST, format!("{error}")),
        };
        tracing::info!(%peer, %action, %query, "mesh: admin request from a peer");
        return handlers.admin.serve(peer, action, &query, body).await;
    }
    if let Some(rest) = path.strip_prefix("/v1/http/") {
        let (module, _) = rest.split_once('/').unwrap_or((rest, ""));
        let module = module.to_string();
        let (mut parts, body) = request.into_parts();
        // Back to the path and query the client sent: strip `/v1/http/MODULE`.
        let original = parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .strip_prefix(&format!("/v1/http/{module}"))
            .unwrap_or("/")
            .to_string();
        parts.uri = match original.parse() {
            Ok(uri) => uri,
            Err(error) => return plain(StatusCode::BAD_REQUEST, format!("{error}")),
        };
        return handlers
            .http
            .serve(peer, &module, Request::from_parts(parts, body))
            .await;
    }
    plain(StatusCode::NOT_FOUND, format!("no mesh endpoint {path}"))
}

/// Runs one call frame on the local path and answers with its outcome.
async fn call(dispatcher: &Dispatcher, peer: &str, request: Request<Incoming>) -> Response<Body> {
    let body = match Limited::new(request.into_body(), MAX_FRAME).collect().await {
        Ok(body) => body.to_bytes(),
        Err(error) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("reading the call: {error}"),
            )
        }
    };
    let mut input = &body[..];
    let header = match CallHeader::decode(&mut input) {
        Ok(header) => header,
        Err(error) => return plain(StatusCode::BAD_REQUEST, format!("{error:#}")),
    };
    dispatcher
        .wait_while_held(&header.interface, Duration::from_millis(header.deadline_ms))
        .await;
    let inbound = match dispatcher.inbound(
        peer,
        &header.caller,
        &header.interface,
        &header.function,
    ) {
        Ok(inbound) => inbound,
        Err(refused @ InboundRefused::NotServed(_)) => {
            return plain(StatusCode::MISDIRECTED_REQUEST, refused.to_string())
        }
        Err(refused) => {
            tracing::warn!(%peer, caller = %header.caller, function = %header.function, reason = %refused, "mesh: refused a call");
            return plain(StatusCode::FORBIDDEN, refused.to_string());
        }
    };
    let params = match wire::decode_values(&mut input, inbound.params()) {
        Ok(params) if input.is_empty() => params,
        Ok(_) => return plain(StatusCode::BAD_REQUEST, "the call frame has trailing bytes"),
        Err(error) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("decoding parameters: {error:#}"),
            )
        }
    };
    let span = tracing::info_span!(
        "remote_call",
        from = %peer,
        caller = %header.caller,
        callee = %inbound.callee(),
        function = %header.function,
        depth = header.depth,
        trace_id = tracing::field::Empty,
        request_id = tracing::field::Empty,
    );
    // The callee's hop is this span, a child of the caller's call span.
    let trace = TraceContext::for_span(&span, TraceContext::parse(&header.traceparent));
    span.record("trace_id", trace.trace_id().as_str());
    // A peer's request id is logged only if it is one the gateway would have kept.
    let request_id = Some(header.request_id.as_str())
        .filter(|id| request_id::is_sane(id.as_bytes()))
        .map(Arc::<str>::from);
    if let Some(id) = &request_id {
        span.record("request_id", &**id);
    }
    let mut results = vec![Val::Bool(false); inbound.results().len()];
    let deadline = Duration::from_millis(header.deadline_ms);
    // The caller's deadline, as it sent it: the callee's own calls end by it too.
    let hop = Hop {
        depth: header.depth,
        trace,
        routing: None,
        deadline: tokio::time::Instant::now().checked_add(deadline),
        request_id,
    };
    let outcome = inbound
        .call(&header.caller, hop, deadline, &params, &mut results)
        .instrument(span)
        .await;
    let mut answer = Vec::with_capacity(128);
    match outcome {
        Ok(()) => {
            answer.push(wire::outcome::OK);
            if let Err(error) = wire::encode_values(&results, inbound.results(), &mut answer) {
                answer.clear();
                answer.push(wire::outcome::FAILED);
                answer.push(CallFailure::Crashed.code());
                wire::put_bytes(
                    &mut answer,
                    format!(
                        "{} → {}#{}: encoding the results: {error:#}",
                        header.caller,
                        inbound.callee(),
                        header.function
                    )
                    .as_bytes(),
                );
            }
        }
        Err(failed) => {
            answer.push(wire::outcome::FAILED);
            answer.push(failed.kind.code());
            wire::put_bytes(&mut answer, failed.message.as_bytes());
        }
    }
    let mut response = Response::new(responses::full(answer));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-modhost-call"),
    );
    response
}
