//! What every modhost guest module shares: a small, synchronous HTTP API on top of the
//! standard `wasi:http/incoming-handler` export.
//!
//! A module is a plain function from [`Request`] to [`Response`]; the [`http_module!`]
//! macro exports it as the component's `wasi:http/incoming-handler`. The host gives
//! every request a fresh instance, so a module keeps nothing in memory between requests.
//!
//! ```ignore
//! fn handle(req: modhost_guest::Request) -> modhost_guest::Response {
//!     modhost_guest::Response::json(200, &serde_json::json!({ "hello": req.path }))
//! }
//! modhost_guest::http_module!(handle);
//! ```

use serde::Serialize;
use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

#[doc(hidden)]
pub use wasip2 as __wasip2;

/// Largest request body a module reads. The gateway enforces its own (smaller,
/// configurable) limit first; this one only stops a runaway stream.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// An HTTP request as a module sees it: the whole body already read.
#[derive(Debug, Clone)]
pub struct Request {
    /// Upper-case method name, e.g. `GET`.
    pub method: String,
    /// The path without the query string, e.g. `/users/42`.
    pub path: String,
    /// The raw query string without the leading `?`, if any.
    pub query: Option<String>,
    /// Header names (lower-case) and values, in arrival order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The request body.
    pub body: Vec<u8>,
}

impl Request {
    /// The path split into its non-empty segments: `/users/42` → `["users", "42"]`.
    pub fn segments(&self) -> Vec<&str> {
        self.path.split('/').filter(|s| !s.is_empty()).collect()
    }

    /// The first value of query parameter `name`, percent-decoding left to the caller.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.as_deref()?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then_some(value)
        })
    }

    /// The first value of header `name` (case-insensitive) as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .and_then(|(_, value)| std::str::from_utf8(value).ok())
    }

    /// The body parsed as JSON, or a ready-made `400` answer saying why it is not.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Response> {
        serde_json::from_slice(&self.body)
            .map_err(|err| Response::error(400, "invalid_json", &format!("request body: {err}")))
    }
}

/// An HTTP response built by a module.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names and values.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The response body.
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON response with `value` serialised as its body.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => Response {
                status,
                headers: vec![("content-type".into(), b"application/json".to_vec())],
                body,
            },
            Err(err) => Response::error(500, "serialization", &err.to_string()),
        }
    }

    /// The JSON error shape every module answers with:
    /// `{"error": {"code": "...", "message": "..."}}`.
    pub fn error(status: u16, code: &str, message: &str) -> Response {
        Response::error_with(status, code, message, serde_json::Map::new())
    }

    /// An error answer with more to say than a message: `details` are added to the
    /// `error` object, e.g. `{"error": {"code", "message", "shortages": [...]}}`.
    pub fn error_with(
        status: u16,
        code: &str,
        message: &str,
        details: serde_json::Map<String, serde_json::Value>,
    ) -> Response {
        let mut error = details;
        error.insert("code".into(), code.into());
        error.insert("message".into(), message.into());
        Response::json(status, &serde_json::json!({ "error": error }))
    }

    /// `400` for a request whose fields are wrong, naming each field and its problem:
    /// `{"error": {"code": "validation", "message": "...", "fields": {"name": "is required"}}}`.
    pub fn validation(
        message: &str,
        fields: serde_json::Map<String, serde_json::Value>,
    ) -> Response {
        let mut details = serde_json::Map::new();
        details.insert("fields".into(), fields.into());
        Response::error_with(400, "validation", message, details)
    }

    /// A plain-text response.
    pub fn text(status: u16, text: &str) -> Response {
        Response {
            status,
            headers: vec![("content-type".into(), b"text/plain".to_vec())],
            body: text.as_bytes().to_vec(),
        }
    }

    /// `404` with the standard error shape.
    pub fn not_found(what: &str) -> Response {
        Response::error(404, "not_found", what)
    }

    /// `405` with the standard error shape.
    pub fn method_not_allowed(method: &str) -> Response {
        Response::error(
            405,
            "method_not_allowed",
            &format!("{method} is not allowed here"),
        )
    }
}

/// Serves one `wasi:http` request with `handler`. Called by [`http_module!`].
#[doc(hidden)]
pub fn serve(request: IncomingRequest, out: ResponseOutparam, handler: fn(Request) -> Response) {
    let response = match read_request(request) {
        Ok(request) => handler(request),
        Err(problem) => Response::error(400, "bad_request", &problem),
    };
    write_response(out, response);
}

fn read_request(request: IncomingRequest) -> Result<Request, String> {
    let method = match request.method() {
        Method::Get => "GET".to_string(),
        Method::Head => "HEAD".to_string(),
        Method::Post => "POST".to_string(),
        Method::Put => "PUT".to_string(),
        Method::Delete => "DELETE".to_string(),
        Method::Connect => "CONNECT".to_string(),
        Method::Options => "OPTIONS".to_string(),
        Method::Trace => "TRACE".to_string(),
        Method::Patch => "PATCH".to_string(),
        Method::Other(other) => other.to_ascii_uppercase(),
    };
    let path_with_query = request.path_with_query().unwrap_or_else(|| "/".to_string());
    let (path, query) = match path_with_query.split_once('?') {
        Some((path, query)) => (path.to_string(), Some(query.to_string())),
        None => (path_with_query, None),
    };
    let headers = request.headers().entries();
    // modhost hands modules whole bodies with an exact content-length; without one
    // (or with 0) there is no body, and not opening the stream saves the host work.
    let has_body = headers.iter().any(|(name, value)| {
        (name.eq_ignore_ascii_case("content-length") && value.as_slice() != b"0")
            || name.eq_ignore_ascii_case("transfer-encoding")
    });
    let body = match request.consume() {
        Ok(body) if has_body => read_body(body)?,
        _ => Vec::new(),
    };
    Ok(Request {
        method,
        path,
        query,
        headers,
        body,
    })
}

fn read_body(body: IncomingBody) -> Result<Vec<u8>, String> {
    let stream = body
        .stream()
        .map_err(|()| "request body stream unavailable".to_string())?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => {
                if bytes.len() + chunk.len() > MAX_BODY {
                    return Err("request body too large".to_string());
                }
                bytes.extend_from_slice(&chunk);
            }
            Err(wasip2::io::streams::StreamError::Closed) => break,
            Err(err) => return Err(format!("reading request body: {err:?}")),
        }
    }
    drop(stream);
    IncomingBody::finish(body);
    Ok(bytes)
}

fn write_response(out: ResponseOutparam, response: Response) {
    let headers = Fields::new();
    for (name, value) in &response.headers {
        // A module bug (a forbidden or malformed header) must not lose the response.
        let _ = headers.append(name, value);
    }
    let outgoing = OutgoingResponse::new(headers);
    let _ = outgoing.set_status_code(response.status);
    let Ok(body) = outgoing.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(outgoing));
    if let Ok(stream) = body.write() {
        // `blocking_write_and_flush` takes at most 4096 bytes per call.
        for chunk in response.body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                return;
            }
        }
        drop(stream);
    }
    let _ = OutgoingBody::finish(body, None);
}

/// A new random identifier, `prefix` then 24 hex digits (96 bits from the host's
/// `wasi:random`): unique without coordination, e.g. `new_id("ord")` →
/// `ord_5f0c1e2a9b3d4c7e8f901a2b`.
pub fn new_id(prefix: &str) -> String {
    let high = wasip2::random::random::get_random_u64();
    let low = wasip2::random::random::get_random_u64() as u32;
    format!("{prefix}_{high:016x}{low:08x}")
}

/// The current time as seconds since the Unix epoch (the host's wall clock).
pub fn unix_time() -> u64 {
    wasip2::clocks::wall_clock::now().seconds
}

/// Exports `handler: fn(Request) -> Response` as this component's
/// `wasi:http/incoming-handler`.
#[macro_export]
macro_rules! http_module {
    ($handler:path) => {
        struct __ModhostHttpModule;

        impl $crate::__wasip2::exports::http::incoming_handler::Guest for __ModhostHttpModule {
            fn handle(
                request: $crate::__wasip2::http::types::IncomingRequest,
                out: $crate::__wasip2::http::types::ResponseOutparam,
            ) {
                $crate::serve(request, out, $handler)
            }
        }

        $crate::__wasip2::http::proxy::export!(__ModhostHttpModule with_types_in $crate::__wasip2);
    };
}
