//! HTTP requests forwarded to a node that runs their module, as the policy layers see
//! them. A request for a module placed elsewhere goes through the module's policy
//! (`[policies.MODULE]`) as its calls do: the policy's timeout (never past the
//! request's own), its bulkhead and its circuit breaker, around the one attempt
//! ([`ForwardAttempt`]) that hands it to the [`Transport`]. It is never retried: what a
//! request did is the module's to know, and the mesh already tries another node when
//! nothing was sent.

use bytes::Bytes;
use http::{HeaderMap, Method, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use std::sync::Arc;
use tokio::time::Instant;

use super::policy::{call_service, PolicyFuture, PolicyRequest};
use super::transport::{ForwardFailed, Transport};
use crate::module::directory::RemoteModule;
use crate::module::{CallFailed, CallFailure};

/// A forwarded HTTP request, whole (its body read), as the policy layers pass it on.
#[derive(Clone)]
pub struct ForwardRequest<'a> {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
    /// When the gateway stops waiting for it: the request's own timeout.
    by: Instant,
    /// When this attempt must end (the policy's timeout, if shorter), which the
    /// deadline layer holds it to.
    deadline: Option<Instant>,
    route: &'a (dyn Fn() -> String + Sync),
}

impl<'a> ForwardRequest<'a> {
    /// `request`, to be answered by `by`; `route` names it in messages.
    pub async fn new(
        request: http::Request<Full<Bytes>>,
        by: Instant,
        route: &'a (dyn Fn() -> String + Sync),
    ) -> ForwardRequest<'a> {
        let (parts, body) = request.into_parts();
        // A whole body in memory: collecting it only takes it out.
        let body = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(never) => match never {},
        };
        ForwardRequest {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
            body,
            by,
            deadline: None,
            route,
        }
    }

    /// The request again, as the transport sends it.
    fn into_request(self) -> http::Request<Full<Bytes>> {
        let mut request = http::Request::new(Full::new(self.body));
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers;
        request
    }
}

impl<'a> PolicyRequest<'a> for ForwardRequest<'a> {
    fn caller_deadline(&self) -> Option<Instant> {
        Some(self.by)
    }

    fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = Some(deadline);
    }

    fn route(&self) -> &'a (dyn Fn() -> String + Sync) {
        self.route
    }
}

/// The one attempt of a forwarded request: to one of the module's nodes, over the
/// transport, waiting until the attempt's deadline for the response head.
#[derive(Clone)]
pub struct ForwardAttempt {
    transport: Arc<dyn Transport>,
    module: Arc<str>,
    placement: Arc<RemoteModule>,
}

impl ForwardAttempt {
    /// Forwards requests for `module`, placed as `placement` says, over `transport`.
    pub fn new(
        transport: Arc<dyn Transport>,
        module: &str,
        placement: Arc<RemoteModule>,
    ) -> ForwardAttempt {
        ForwardAttempt {
            transport,
            module: Arc::from(module),
            placement,
        }
    }
}

impl<'a> tower::Service<ForwardRequest<'a>> for ForwardAttempt {
    call_service!('a, hyper::Response<Incoming>);

    fn call(&mut self, request: ForwardRequest<'a>) -> PolicyFuture<'a, hyper::Response<Incoming>> {
        let this = self.clone();
        Box::pin(async move {
            let now = Instant::now();
            if request.deadline.unwrap_or(request.by) <= now {
                return Err(CallFailed::new(
                    CallFailure::TimedOut,
                    format!("{}: no time was left to forward it", (request.route)()),
                ));
            }
            // The deadline layer around this attempt ends it at the attempt's deadline
            // (and says whose it was); the transport waits until the request's own.
            let timeout = request.by.saturating_duration_since(now);
            let answer = this
                .transport
                .forward(
                    &this.module,
                    &this.placement.nodes,
                    request.into_request(),
                    timeout,
                )
                .await;
            answer.map_err(|failed| match failed {
                ForwardFailed::Unavailable(why) => CallFailed::new(CallFailure::Unavailable, why),
                ForwardFailed::TimedOut(why) => CallFailed::new(CallFailure::TimedOut, why),
            })
        })
    }
}
