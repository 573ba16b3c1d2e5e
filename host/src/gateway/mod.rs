//! The gateway: the public HTTP listener.
//!
//! It speaks HTTP/1.1 and HTTP/2 (cleartext, prior knowledge) on one port, protects the
//! host with limits — header size (431), body size (413), time to send the request head
//! (slowloris), time to send the whole request (408), connections at once — answers
//! `/healthz`, `/readyz` and `/metrics` itself, and hands every other request to the module owning
//! its path (longest route prefix), in a fresh instance, once the route's rate limits
//! and authentication ([`access`]) admit it. A module's failure becomes a status code
//! with an error id that is also in the log; it never becomes a hang. Every request
//! carries an id ([`request_id`]) from the access log to the module and back.
//!
//! On shutdown it stops accepting, lets in-flight requests finish (up to the grace
//! period), and returns.

pub mod access;
pub mod connections;
pub mod failures;
pub mod request_id;
pub mod routes;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tower::ServiceExt;
use tracing::{field, Instrument};

use crate::calls::forward::{ForwardAttempt, ForwardRequest};
use crate::calls::{policy, Dispatcher};
use crate::capabilities::Hop;
use crate::deployment::GatewaySettings;
use crate::module::directory::Directory;
use crate::module::http as module_http;
use crate::module::{Failure, ModuleSlot, Registry};
use crate::runtime::accept::{self, Accept};
use crate::runtime::responses::{self, Body};
use crate::runtime::shutdown::Shutdown;
use crate::telemetry::metrics::metrics;
use crate::telemetry::overview;
use crate::telemetry::trace::TraceContext;
use access::Guards;
use connections::{Activity, Clients};
use routes::RouteTable;

/// How long a connection closed with nothing in flight may take to close.
const GOODBYE: Duration = Duration::from_secs(1);
/// How often the rate limiters forget clients that are back to a full allowance.
const FORGET_IDLE_CLIENTS: Duration = Duration::from_secs(10);
/// Marks a forwarded request a node passed on to where its module went: not passed
/// on again.
const PASSED_ON_HEADER: &str = "x-modhost-passed-on";
/// Response header naming the module version that answered.
pub const VERSION_HEADER: &str = "x-modhost-version";

/// The gateway's shared state.
pub struct Gateway {
    settings: GatewaySettings,
    routes: RouteTable,
    /// Each route's rate limits and authentication.
    guards: Guards,
    registry: Arc<Registry>,
    directory: Arc<Directory>,
    /// Reaches the nodes that run modules this one does not (split deployments, its
    /// transport), under the modules' call policies.
    calls: Arc<Dispatcher>,
    /// Set once shutdown begins: `/readyz` then answers 503 so load balancers move on.
    draining: AtomicBool,
    /// The request header that pins a client to one version during a canary.
    sticky_header: http::HeaderName,
}

impl Gateway {
    /// A gateway serving `registry`'s modules by `routes` (each admitted by its
    /// `guards`), forwarding requests for modules placed elsewhere over `calls`'
    /// transport, under their policies;
    /// `sticky_header` names the request header that pins a client to one version
    /// during a canary.
    pub fn new(
        settings: GatewaySettings,
        routes: RouteTable,
        guards: Guards,
        registry: Arc<Registry>,
        calls: Arc<Dispatcher>,
        sticky_header: &str,
    ) -> Gateway {
        Gateway {
            settings,
            routes,
            guards,
            directory: registry.directory().clone(),
            registry,
            calls,
            draining: AtomicBool::new(false),
            sticky_header: http::HeaderName::from_bytes(sticky_header.as_bytes())
                .unwrap_or(http::HeaderName::from_static("x-canary-key")),
        }
    }

    /// Serves connections from `listener` until `shutdown`, then drains: no new
    /// connections, in-flight requests finish (up to the grace period).
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: Shutdown) {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.settings.header_read_timeout.duration())
            .max_buf_size(
                usize::try_from(self.settings.max_header_bytes.bytes()).unwrap_or(usize::MAX),
            )
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(
                u32::try_from(self.settings.max_header_bytes.bytes()).unwrap_or(u32::MAX),
            )
            .max_concurrent_streams(256)
            .keep_alive_interval(Duration::from_secs(30));
        let builder = Arc::new(builder);
        let first_byte_timeout = self.settings.header_read_timeout.duration();

        // Readiness turns to "draining" the moment shutdown begins.
        let draining = self.clone();
        let stopping = shutdown.clone();
        tokio::spawn(async move {
            stopping.triggered().await;
            draining.draining.store(true, Ordering::SeqCst);
        });
        // Rate limiters keep a state per client address; addresses gone quiet are
        // dropped, so a stream of new addresses cannot grow it without end.
        let limited = self.clone();
        let stopping = shutdown.clone();
        tokio::spawn(async move {
            while stopping.sleep(FORGET_IDLE_CLIENTS).await {
                limited.guards.forget_idle_clients();
            }
        });

        let options = Accept {
            name: "gateway",
            max_connections: Some(self.settings.max_connections),
            grace: self.settings.shutdown_grace.duration(),
        };
        let gateway = self.clone();
        let clients = Arc::new(Clients::default());
        let (per_client, idle, grace) = (
            self.settings.max_connections_per_client,
            self.settings.idle_timeout.duration(),
            self.settings.shutdown_grace.duration(),
        );
        accept::serve(
            listener,
            options,
            shutdown,
            move |stream, peer, shutdown| {
                let (gateway, builder) = (gateway.clone(), builder.clone());
                let client = clients.open(peer.ip(), per_client);
                async move {
                    // hyper times the request head only once it knows the protocol, and
                    // learning it waits for the first bytes: a client that connects and
                    // sends nothing would hold its slot forever. Give it the same time.
                    let mut first = [0u8; 1];
                    match tokio::time::timeout(first_byte_timeout, stream.peek(&mut first)).await {
                        Ok(Ok(read)) if read > 0 => {}
                        _ => {
                            tracing::debug!(%peer, "connection closed: no request started in time");
                            return;
                        }
                    }
                    // This connection closes when the gateway stops, when it has started no
                    // request in time, or when it has been idle too long.
                    let closing = shutdown.child();
                    let activity = Activity::new();
                    let watched = activity.clone();
                    tokio::spawn(
                        activity
                            .clone()
                            .watch(first_byte_timeout, idle, closing.clone()),
                    );
                    let over_limit = client.over_limit;
                    let refuse = closing.clone();
                    let service = hyper::service::service_fn(move |request| {
                        let (gateway, refuse) = (gateway.clone(), refuse.clone());
                        let in_flight = activity.start();
                        async move {
                            let _in_flight = in_flight;
                            if over_limit {
                                refuse.trigger();
                                return Ok::<_, Infallible>(too_many_connections());
                            }
                            Ok::<_, Infallible>(gateway.handle(request, peer.ip()).await)
                        }
                    });
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    // Work in flight gets the grace period; a connection closed with nothing
                    // in flight (idle, or silent) gets a moment to say goodbye.
                    let within = || {
                        if watched.in_flight() > 0 {
                            grace
                        } else {
                            GOODBYE
                        }
                    };
                    if let Err(err) = accept::graceful(connection, &closing, within).await {
                        tracing::debug!(%peer, error = %err, "connection ended with an error");
                    }
                    closing.trigger();
                    drop(client);
                }
            },
        )
        .await;
    }

    /// Answers one request from `client`. Never fails: every problem is a response.
    pub async fn handle(&self, mut request: Request<Incoming>, client: IpAddr) -> Response<Body> {
        let started = Instant::now();
        // What a module reads in `x-modhost-*` headers, the host wrote: a client's
        // own are dropped before anything else looks at the request.
        access::strip_trusted_headers(request.headers_mut());
        let request_id = request_id::for_request(request.headers_mut());
        let span = tracing::info_span!(
            "request",
            method = %request.method(),
            path = %request.uri().path(),
            request_id = request_id.to_str().unwrap_or_default(),
            module = field::Empty,
            route = field::Empty,
            status = field::Empty,
            duration_us = field::Empty,
            error_id = field::Empty,
            trace_id = field::Empty,
            version = field::Empty,
        );
        // The request joins the caller's trace, or starts one; the module sees its own
        // hop (this span) as `traceparent`, and everything it causes carries the same
        // trace id.
        let incoming = TraceContext::from_headers(request.headers());
        let trace = TraceContext::for_span(&span, incoming);
        let mut matched = None;
        let mut response = self
            .route(request, client, &span, trace, &mut matched)
            .instrument(span.clone())
            .await;
        let status = response.status().as_u16();
        let took = started.elapsed();
        if let Some(route) = matched {
            metrics().record_gateway_request(route, status, took);
            // A failed or slow request is kept for the dashboard, with its trace.
            let id = request_id.to_str().unwrap_or_default();
            overview::history().request(route, status, took, || trace.trace_id(), id);
        }
        response
            .headers_mut()
            .insert(request_id::HEADER, request_id);
        span.record("status", status);
        span.record(
            "duration_us",
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        );
        span.in_scope(|| tracing::info!(target: "modhost::access", status, "request completed"));
        response
    }

    /// Routes `request`, setting `matched` to the route that matched (empty when none
    /// did); probes and `/metrics` leave it `None`, and are not counted.
    async fn route<'s>(
        &'s self,
        mut request: Request<Incoming>,
        client: IpAddr,
        span: &tracing::Span,
        trace: TraceContext,
        matched: &mut Option<&'s str>,
    ) -> Response<Body> {
        span.record("trace_id", trace.trace_id().as_str());
        // Also what a forwarded request carries: the serving node makes its own span,
        // a child of this request's.
        trace.write_to(request.headers_mut());
        let path = request.uri().path();
        if path == "/healthz" {
            return responses::json(StatusCode::OK, &serde_json::json!({ "status": "ok" }));
        }
        if path == "/readyz" {
            return self.readiness();
        }
        if path == "/metrics" {
            return responses::metrics(metrics().encode());
        }
        let Some(found) = self.routes.lookup(path) else {
            *matched = Some("");
            return responses::error(
                StatusCode::NOT_FOUND,
                "no_route",
                &format!("no module serves {path}"),
                None,
            );
        };
        let found_route = found.route;
        *matched = Some(found_route);
        span.record("module", found.module);
        span.record("route", found_route);
        if let Some(guard) = self.guards.get(found_route) {
            if let Err(refusal) = guard.check(client, request.headers_mut()) {
                return self.refused(span, found_route, &refusal);
            }
        }
        let module_name = found.module.to_string();
        self.serve_where_it_runs(span, &module_name, request, trace)
            .await
    }

    /// Serves `request` with `module` here, or forwards it to the node that runs it;
    /// a module moving meanwhile is followed (a few times at most).
    async fn serve_where_it_runs(
        &self,
        span: &tracing::Span,
        module: &str,
        mut request: Request<Incoming>,
        trace: TraceContext,
    ) -> Response<Body> {
        for _ in 0..3 {
            let Some(slot) = self.local_after_hold(module).await else {
                return self.forward(span, module, request).await;
            };
            match self.serve_local(span, &slot, request, trace).await {
                Ok(response) => return response,
                Err(back) => request = back,
            }
        }
        self.fail(
            span,
            StatusCode::SERVICE_UNAVAILABLE,
            "module_unavailable",
            &format!("module {module} kept moving while the request waited"),
            None,
        )
    }

    /// Module `module`'s slot if it serves here; `None` to forward the request. A
    /// module on hold (moving to another node) is waited for, up to the request's
    /// timeout, and looked up again: it may serve elsewhere by then.
    async fn local_after_hold(&self, module: &str) -> Option<Arc<ModuleSlot>> {
        let limit = self.settings.request_timeout.duration();
        loop {
            let slot = self.directory.local(module)?;
            if !slot.hold.is_held() || !slot.hold.released_within(limit).await {
                // Not held, or held past the request's time: it fails there, as a
                // module that cannot take it.
                return Some(slot);
            }
        }
    }

    /// The request's routing key: its sticky header (`[rollout] sticky_header`),
    /// hashed, which pins it to one version of each module during a canary.
    fn routing_key(&self, headers: &http::HeaderMap) -> Option<u64> {
        let value = headers.get(&self.sticky_header)?;
        // FNV-1a: stable across processes and nodes, unlike the std hasher.
        Some(
            value
                .as_bytes()
                .iter()
                .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
                    (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
                }),
        )
    }

    /// Serves `request` with local module `module`: the gateway's path for its own
    /// routes, and the mesh's for requests another node forwarded here.
    ///
    /// The module's bulkhead is taken before the body is read: a module at its limit
    /// refuses at once, and the gateway never buffers bodies for a module with no room.
    ///
    /// `Err` gives the request back, unread, when the module is moving to another
    /// node (held) or has moved: the caller looks again where it serves.
    async fn serve_local(
        &self,
        span: &tracing::Span,
        slot: &ModuleSlot,
        request: Request<Incoming>,
        trace: TraceContext,
    ) -> Result<Response<Body>, Request<Incoming>> {
        let routing = self.routing_key(request.headers());
        let module = slot.pick(routing);
        span.record("version", module.version.as_str());
        let handed_over = Instant::now();
        let permit = match module_http::admit(&module) {
            Ok(permit) => permit,
            Err(_) if module.module.hold.is_held() || module.has_left() => return Err(request),
            Err(failure) => {
                let response = self.module_failed(span, module.name(), failure);
                metrics().record_request(
                    module.name(),
                    response.status().as_u16(),
                    handed_over.elapsed(),
                );
                slot.record(&module, false);
                return Ok(response);
            }
        };
        let request = match self.read_body(request).await {
            Ok(request) => request,
            Err(response) => return Ok(response),
        };
        let request_timeout = self.settings.request_timeout.duration();
        let handed_over = Instant::now();
        let request_id = request
            .headers()
            .get(request_id::HEADER)
            .and_then(|id| id.to_str().ok())
            .map(Arc::from);
        // The module's calls end by the request's own deadline.
        let hop = Hop::start(trace, routing, request_id)
            .until(tokio::time::Instant::now() + request_timeout);
        let response = match tokio::time::timeout(
            request_timeout,
            module_http::handle(&module, request, hop, permit),
        )
        .await
        {
            Ok(Ok(mut response)) => {
                if let Ok(version) = HeaderValue::from_str(&module.version) {
                    response.headers_mut().insert(VERSION_HEADER, version);
                }
                response
            }
            Ok(Err(failure)) => self.module_failed(span, module.name(), failure),
            Err(_) => self.fail(
                span,
                StatusCode::GATEWAY_TIMEOUT,
                "gateway_timeout",
                "the request took longer than the gateway's request_timeout",
                None,
            ),
        };
        metrics().record_request(
            module.name(),
            response.status().as_u16(),
            handed_over.elapsed(),
        );
        slot.record(&module, !response.status().is_server_error());
        Ok(response)
    }

    /// Passes a request for a module placed on other nodes to one of them.
    async fn forward(
        &self,
        span: &tracing::Span,
        module: &str,
        request: Request<Incoming>,
    ) -> Response<Body> {
        let (Some(transport), Some(remote)) =
            (self.calls.transport(), self.directory.remote(module))
        else {
            return self.fail(
                span,
                StatusCode::SERVICE_UNAVAILABLE,
                "module_unavailable",
                &format!("module {module} is not loaded"),
                None,
            );
        };
        let request = match self.read_body(request).await {
            Ok(request) => request,
            Err(response) => return response,
        };
        let by = tokio::time::Instant::now() + self.settings.request_timeout.duration();
        let route = || format!("gateway → {module} (forwarded)");
        let request = ForwardRequest::new(request, by, &route).await;
        // The module's policy, as for its calls: timeout, bulkhead, breaker.
        let attempt = ForwardAttempt::new(transport.clone(), module, remote);
        let policies = policy::stack(attempt, self.calls.callee_policy(module), false);
        match policies.oneshot(request).await {
            Ok(response) => {
                let (parts, body) = response.into_parts();
                let body = body.map_err(wasmtime_wasi_http::Error::from).boxed_unsync();
                Response::from_parts(parts, body)
            }
            Err(failed) => {
                let (answer, code) = failures::forwarded(&failed);
                self.answer(span, answer, code, None)
            }
        }
    }

    /// Reads the whole body within the size and time limits, and returns the request
    /// ready for a module: an exact `content-length`, no `transfer-encoding`, and a
    /// `host` header (wasi:http needs an authority).
    async fn read_body(
        &self,
        request: Request<Incoming>,
    ) -> Result<Request<Full<Bytes>>, Response<Body>> {
        let limit = usize::try_from(self.settings.max_body.bytes()).unwrap_or(usize::MAX);
        let too_large = || {
            responses::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                &format!("the request body is larger than {}", self.settings.max_body),
                None,
            )
        };
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if declared.is_some_and(|length| length > self.settings.max_body.bytes()) {
            return Err(too_large());
        }
        let (mut parts, body) = request.into_parts();
        let collected = tokio::time::timeout(
            self.settings.request_timeout.duration(),
            Limited::new(body, limit).collect(),
        )
        .await;
        let bytes = match collected {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
            Ok(Err(err)) => {
                return Err(responses::error(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    &format!("reading the request body failed: {err}"),
                    None,
                ))
            }
            Err(_) => {
                return Err(responses::error(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "the request body did not arrive within the gateway's request_timeout",
                    None,
                ))
            }
        };
        // The module sees the body as it now is: whole, of a known length.
        parts.headers.remove(header::TRANSFER_ENCODING);
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        if parts.uri.authority().is_none() && !parts.headers.contains_key(header::HOST) {
            parts
                .headers
                .insert(header::HOST, HeaderValue::from_static("localhost"));
        }
        Ok(Request::from_parts(parts, Full::new(bytes)))
    }

    fn module_failed(
        &self,
        span: &tracing::Span,
        module: &str,
        failure: Failure,
    ) -> Response<Body> {
        let answer = failures::answer(module, &failure);
        self.answer(span, answer, failure.code(), Some(&failure))
    }

    /// The error response for `answer` under `code` (logged with `failure`'s cause),
    /// with `Retry-After` when the client may retry shortly.
    fn answer(
        &self,
        span: &tracing::Span,
        answer: failures::Answer,
        code: &str,
        failure: Option<&Failure>,
    ) -> Response<Body> {
        let mut response = self.fail(span, answer.status, code, &answer.message, failure);
        if answer.retry_soon {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }

    /// The answer to a request the route's guard refused: 429 with `Retry-After`, or
    /// 401 with `WWW-Authenticate`.
    fn refused(
        &self,
        span: &tracing::Span,
        route: &str,
        refusal: &access::Refusal,
    ) -> Response<Body> {
        metrics().gateway_refused(route, refusal.code());
        let mut response = match refusal {
            // A client over its limit is routine, not news: the access log has it.
            access::Refusal::RateLimited { .. } => responses::error(
                StatusCode::TOO_MANY_REQUESTS,
                refusal.code(),
                &format!("too many requests for {route}; try again later"),
                None,
            ),
            access::Refusal::Unauthenticated { reason, .. } => {
                self.fail(span, StatusCode::UNAUTHORIZED, refusal.code(), reason, None)
            }
        };
        let (name, value) = refusal.header();
        response.headers_mut().insert(name, value);
        response
    }

    /// Serves a request another node forwarded here for local module `module` (its
    /// path and query as the client sent them), as if it had arrived here: the same
    /// limits, version pick and error answers.
    pub async fn serve_forwarded(
        &self,
        peer: &str,
        module: &str,
        mut request: Request<Incoming>,
    ) -> Response<Body> {
        // A module that moved from here, asked of by a node that has not heard yet, is
        // passed on to where it went — once: a request passed on already is not.
        let passed_on = request.headers().contains_key(PASSED_ON_HEADER);
        if self.directory.local(module).is_none() {
            if passed_on || self.directory.remote(module).is_none() {
                return responses::plain(
                    StatusCode::MISDIRECTED_REQUEST,
                    format!("module {module} does not run on this node"),
                );
            }
            request
                .headers_mut()
                .insert(PASSED_ON_HEADER, HeaderValue::from_static("1"));
            let span = tracing::info_span!("passed_on", from = %peer, module);
            return self.forward(&span, module, request).await;
        }
        // A peer forwards what a client asked its gateway for: a path of one of the
        // module's routes, nothing else of it.
        let path = request.uri().path().to_string();
        if self.routes.lookup(&path).map(|matched| matched.module) != Some(module) {
            tracing::warn!(%peer, module, %path, "mesh: refused a forwarded request for a path that is not one of the module's routes");
            return responses::plain(
                StatusCode::FORBIDDEN,
                format!("{path} is not a route of module {module}"),
            );
        }
        let parent = TraceContext::from_headers(request.headers());
        let span = tracing::info_span!(
            "forwarded",
            from = %peer,
            module,
            path = %request.uri(),
            request_id = request
                .headers()
                .get(request_id::HEADER)
                .and_then(|id| id.to_str().ok())
                .unwrap_or_default(),
            status = tracing::field::Empty,
            error_id = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        // The module's hop is this span, a child of the entry node's request.
        let trace = TraceContext::for_span(&span, parent);
        span.record("trace_id", trace.trace_id().as_str());
        trace.write_to(request.headers_mut());
        // A module moving meanwhile is followed: the request goes on to its new node.
        let response = self
            .serve_where_it_runs(&span, module, request, trace)
            .instrument(span.clone())
            .await;
        span.record("status", response.status().as_u16());
        response
    }

    /// An error answer with a fresh error id, logged with the cause.
    fn fail(
        &self,
        span: &tracing::Span,
        status: StatusCode,
        code: &str,
        message: &str,
        failure: Option<&Failure>,
    ) -> Response<Body> {
        let error_id = responses::new_error_id();
        span.record("error_id", error_id.as_str());
        let cause = match failure {
            Some(Failure::Trapped(error) | Failure::NoResponse(error)) => format!("{error:?}"),
            Some(Failure::Call(failed)) => failed.message.clone(),
            _ => String::new(),
        };
        span.in_scope(|| {
            if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
                tracing::error!(error_id, code, %message, %cause, "request failed");
            } else {
                tracing::warn!(error_id, code, %message, %cause, "request refused");
            }
        });
        responses::error(status, code, message, Some(&error_id))
    }

    fn readiness(&self) -> Response<Body> {
        let modules = self.registry.status();
        if self.draining.load(Ordering::SeqCst) {
            return responses::json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({ "status": "draining", "modules": modules }),
            );
        }
        responses::json(
            StatusCode::OK,
            &serde_json::json!({ "status": "ready", "modules": modules }),
        )
    }
}

/// The answer to a request on a connection its client should not have opened: it
/// already holds as many as it may.
fn too_many_connections() -> Response<Body> {
    let mut response = responses::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "too_many_connections",
        "this client holds as many connections as the gateway allows it (gateway.max_connections_per_client); reuse one",
        None,
    );
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
