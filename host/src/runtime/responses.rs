//! The answers the host gives itself, on every listener: health, readiness, metrics,
//! and errors in the JSON shape every module uses too:
//! `{"error": {"code": "...", "message": "...", "error_id": "..."}}`.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// The body type of every response the host sends (a module's streamed body, or ours).
pub type Body = HyperOutgoingBody;

/// Header carrying the error id of a failed request, also written to the log.
pub const ERROR_ID_HEADER: &str = "x-modhost-error-id";

/// A JSON response with `value` as its body.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A page of HTML (the admin listener's dashboard), never cached: it is the live
/// view's shell, and a stale one would poll an API it no longer matches.
pub fn html(page: &'static str) -> Response<Body> {
    let mut response = Response::new(full(page));
    for (name, value) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        // The page runs its own inline script and fetches from its own origin only.
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ] {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The metrics page, in the Prometheus text exposition format (version 0.0.4).
pub fn metrics(text: String) -> Response<Body> {
    let mut response = Response::new(full(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// An error answer; with an `error_id` it is also set as the [`ERROR_ID_HEADER`].
pub fn error(
    status: StatusCode,
    code: &str,
    message: &str,
    error_id: Option<&str>,
) -> Response<Body> {
    let mut body = serde_json::json!({ "error": { "code": code, "message": message } });
    if let Some(id) = error_id {
        body["error"]["error_id"] = id.into();
    }
    let mut response = json(status, &body);
    if let Some(value) = error_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        response.headers_mut().insert(ERROR_ID_HEADER, value);
    }
    response
}

/// A fixed body in the gateway's body type.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A new error id: short enough to read out, random enough never to repeat in a log.
pub fn new_error_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_string()
}

/// A plain-text answer with `status` (node-to-node answers).
pub fn plain(status: StatusCode, message: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(full(message));
    *response.status_mut() = status;
    response
}
