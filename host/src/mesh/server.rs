//! The mesh listener: where other nodes' calls and forwarded requests arrive.
//!
//! Every connection must complete a mutual-TLS handshake with a certificate from the
//! deployment's CA (rustls refuses another CA, an expired certificate, or none), and
//! that certificate must name a node of the deployment; a refused connection is closed
//! and logged with its address and the reason. Accepted connections speak HTTP/2:
//! - `POST /v1/call`: a call frame ([`super::wire`]); the callee runs on this node's
//!   local path, under its own limits, within the caller's deadline, in the caller's
//!   trace; the answer is the results or a typed failure.
//! - `/v1/http/MODULE/PATH`: a request forwarded by another node's gateway, served by
//!   MODULE here as if it had arrived at this node's gateway.

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::Instrument;
use wasmtime::component::Val;

use super::tls::MeshTls;
use super::wire::{self, CallHeader};
use crate::calls::dispatch::{call_local, CallFailed, CallFailure, Directory, Hop};
use crate::gateway::responses::{self, Body};
use crate::gateway::Gateway;
use crate::telemetry::trace::TraceContext;

/// Largest call frame accepted.
const MAX_FRAME: usize = 16 * 1024 * 1024;
/// How long a peer has to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves other nodes on `listener` until `shutdown` resolves: calls through
/// `directory`, forwarded requests through `gateway` (its limits and error answers).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<MeshTls>,
    directory: Arc<Directory>,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "mesh: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let _ = tcp.set_nodelay(true);
        let (tls, directory, gateway) = (tls.clone(), directory.clone(), gateway.clone());
        tokio::spawn(async move {
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
                let (directory, gateway, peer) = (directory.clone(), gateway.clone(), peer.clone());
                async move {
                    Ok::<_, std::convert::Infallible>(
                        handle(&directory, &gateway, &peer, request).await,
                    )
                }
            });
            let served = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_concurrent_streams(1024)
                .keep_alive_interval(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tokio::io::BufWriter::new(stream)), service)
                .await;
            if let Err(error) = served {
                tracing::debug!(%addr, %error, "mesh: peer connection ended");
            }
        });
    }
}

async fn handle(
    directory: &Directory,
    gateway: &Gateway,
    peer: &str,
    request: Request<Incoming>,
) -> Response<Body> {
    let path = request.uri().path().to_string();
    if path == "/v1/call" && request.method() == http::Method::POST {
        return call(directory, peer, request).await;
    }
    if let Some(action) = path.strip_prefix("/v1/admin/") {
        let action = action.to_string();
        let query = request.uri().query().unwrap_or_default().to_string();
        let body = match Limited::new(request.into_body(), MAX_FRAME * 8)
            .collect()
            .await
        {
            Ok(body) => body.to_bytes(),
            Err(error) => return plain(StatusCode::BAD_REQUEST, format!("{error}")),
        };
        tracing::info!(%peer, %action, %query, "mesh: admin request from a peer");
        return crate::admin::serve_peer(gateway.registry(), &action, &query, body).await;
    }
    if let Some(rest) = path.strip_prefix("/v1/http/") {
        let (module, _) = rest.split_once('/').unwrap_or((rest, ""));
        let module = module.to_string();
        return forwarded(directory, gateway, peer, &module, request).await;
    }
    plain(StatusCode::NOT_FOUND, format!("no mesh endpoint {path}"))
}

/// Runs one call frame on the local path and answers with its outcome.
async fn call(directory: &Directory, peer: &str, request: Request<Incoming>) -> Response<Body> {
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
    let Some(served) = directory.served(&header.interface, &header.function) else {
        return plain(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this node runs no module exporting {}#{}",
                header.interface, header.function
            ),
        );
    };
    let params = match wire::decode_values(&mut input, &served.params) {
        Ok(params) if input.is_empty() => params,
        Ok(_) => {
            return plain(
                StatusCode::BAD_REQUEST,
                "the call frame has trailing bytes".into(),
            )
        }
        Err(error) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("decoding parameters: {error:#}"),
            )
        }
    };
    let trace = TraceContext::parse(&header.traceparent).unwrap_or_else(TraceContext::new_root);
    let route = || {
        format!(
            "{} → {}.{}#{}",
            header.caller, served.slot.name, served.interface, header.function
        )
    };
    let span = tracing::info_span!(
        "remote_call",
        from = %peer,
        caller = %header.caller,
        callee = %served.slot.name,
        function = %header.function,
        depth = header.depth,
        trace_id = %trace.trace_id(),
    );
    let mut results = vec![Val::Bool(false); served.results.len()];
    let deadline = Duration::from_millis(header.deadline_ms);
    let module = served.slot.pick(None);
    let outcome = tokio::time::timeout(
        deadline,
        call_local(
            &module,
            &served.key,
            &route,
            Hop {
                depth: header.depth,
                trace,
                routing: None,
            },
            &params,
            &mut results,
        ),
    )
    .instrument(span)
    .await
    .unwrap_or_else(|_| {
        Err(CallFailed::new(
            CallFailure::TimedOut,
            format!(
                "{}: the callee did not return within the caller's deadline of {deadline:?}",
                route()
            ),
        ))
    });
    served.slot.record(&module, outcome.is_ok());
    let mut answer = Vec::with_capacity(128);
    match outcome {
        Ok(()) => {
            answer.push(wire::outcome::OK);
            if let Err(error) = wire::encode_values(&results, &served.results, &mut answer) {
                answer.clear();
                answer.push(wire::outcome::FAILED);
                answer.push(CallFailure::Crashed.code());
                wire::put_bytes(
                    &mut answer,
                    format!("{}: encoding the results: {error:#}", route()).as_bytes(),
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

/// Serves a request another node's gateway forwarded, with a local module, as this
/// node's gateway would have.
async fn forwarded(
    directory: &Directory,
    gateway: &Gateway,
    peer: &str,
    module: &str,
    request: Request<Incoming>,
) -> Response<Body> {
    let Some(slot) = directory.local(module).cloned() else {
        return plain(
            StatusCode::MISDIRECTED_REQUEST,
            format!("module {module} does not run on this node"),
        );
    };
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
    let trace = parts
        .headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::parse)
        .unwrap_or_else(TraceContext::new_root);
    let span = tracing::info_span!(
        "forwarded",
        from = %peer,
        module,
        path = %original,
        status = tracing::field::Empty,
        error_id = tracing::field::Empty,
        trace_id = %trace.trace_id(),
    );
    let request = match gateway.read_body(Request::from_parts(parts, body)).await {
        Ok(request) => request,
        Err(response) => return response,
    };
    let response = gateway
        .serve_local(&span, &slot, request, trace)
        .instrument(span.clone())
        .await;
    span.record("status", response.status().as_u16());
    response
}

fn plain(status: StatusCode, message: String) -> Response<Body> {
    let mut response = Response::new(responses::full(message));
    *response.status_mut() = status;
    response
}
