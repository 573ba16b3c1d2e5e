//! The request id: one name for one client request, from the access log to the module
//! and back to the client in `x-request-id`.
//!
//! A client (or the proxy in front of the gateway) may bring its own id, so its logs
//! and ours name the request alike; the gateway keeps it when it is sane (short, plain
//! characters) and makes a new one otherwise, so nothing a client sends can break a
//! log line or a header.

use http::{HeaderMap, HeaderValue};

use crate::telemetry::request_id::is_sane;

/// The request and response header that carries the id.
pub const HEADER: &str = "x-request-id";

/// The request's id: the client's own when sane, else a new one. It is set on the
/// request (so the module sees it) and returned for the response and the log.
pub fn for_request(headers: &mut HeaderMap) -> HeaderValue {
    let kept = headers
        .get(HEADER)
        .filter(|value| is_sane(value.as_bytes()))
        .cloned();
    let id = kept.unwrap_or_else(|| {
        let fresh = uuid::Uuid::new_v4().simple().to_string();
        HeaderValue::from_str(&fresh).unwrap_or(HeaderValue::from_static("unknown"))
    });
    headers.insert(HEADER, id.clone());
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sane_client_id_is_kept_and_anything_else_replaced() {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, HeaderValue::from_static("req-42.a:b@c"));
        assert_eq!(for_request(&mut headers), "req-42.a:b@c");

        for bad in ["", "has space", "quote\"", &"x".repeat(129)] {
            let mut headers = HeaderMap::new();
            headers.insert(HEADER, HeaderValue::from_str(bad).unwrap());
            let id = for_request(&mut headers);
            assert_ne!(id, bad);
            assert_eq!(id.len(), 32, "a fresh id is a simple uuid: {id:?}");
            assert_eq!(headers.get(HEADER), Some(&id), "the module sees the id");
        }

        let mut headers = HeaderMap::new();
        let fresh = for_request(&mut headers);
        assert_ne!(fresh, for_request(&mut HeaderMap::new()), "each id is new");
    }
}
