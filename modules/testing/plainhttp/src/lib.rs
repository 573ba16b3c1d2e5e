//! A `wasi:http/incoming-handler` written against the bare `wasip2` bindings, the way a
//! component for `wasmtime serve` is written without any framework — no modhost SDK,
//! no modhost WIT. modhost must serve it as is (tests/ecosystem.rs):
//!
//! - `POST /plain/upper`: the request body upper-cased, read and written chunk by
//!   chunk (a streamed response with no `content-length`);
//! - `GET /plain`: a greeting with an explicit `content-length`;
//! - `GET /plain/stall?after=MS&then=sleep|spin|trap`: waits MS ms, sends its response
//!   head, then — before the first byte of its body — waits an hour on the clock,
//!   computes for ever, or panics (a module that fails between its head and its body).

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasip2::io::streams::StreamError;

struct Plain;

impl Guest for Plain {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        if path == "/plain/upper" {
            upper(request, out);
        } else if let Some(query) = path.strip_prefix("/plain/stall?") {
            stall(query, out);
        } else {
            let text = b"Hello from a plain wasi:http component\n";
            let headers = Fields::from_list(&[(
                "content-length".to_string(),
                text.len().to_string().into_bytes(),
            )])
            .expect("valid header");
            let response = OutgoingResponse::new(headers);
            let body = response.body().expect("the body, once");
            ResponseOutparam::set(out, Ok(response));
            let stream = body.write().expect("the body's stream, once");
            stream.blocking_write_and_flush(text).expect("written");
            drop(stream);
            OutgoingBody::finish(body, None).expect("finished");
        }
    }
}

/// After `after=MS` ms, sends a response head and never writes its body: it sleeps an
/// hour (`then=sleep`), panics (`then=trap`) or computes for ever (anything else).
fn stall(query: &str, out: ResponseOutparam) {
    let value = |key: &str| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_default()
    };
    let after: u64 = value("after").parse().unwrap_or(0);
    wasip2::clocks::monotonic_clock::subscribe_duration(after * 1_000_000).block();
    let response = OutgoingResponse::new(Fields::new());
    let body = response.body().expect("the body, once");
    ResponseOutparam::set(out, Ok(response));
    match value("then") {
        "sleep" => wasip2::clocks::monotonic_clock::subscribe_duration(3_600_000_000_000).block(),
        "trap" => panic!("plainhttp: a deliberate trap after the response head"),
        _ => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
    }
    OutgoingBody::finish(body, None).expect("finished");
}

/// Streams the request body back upper-cased, one chunk at a time.
fn upper(request: IncomingRequest, out: ResponseOutparam) {
    let incoming = request.consume().expect("the body, once");
    let input = incoming.stream().expect("the body's stream, once");
    let response = OutgoingResponse::new(Fields::new());
    let body = response.body().expect("the body, once");
    ResponseOutparam::set(out, Ok(response));
    let output = body.write().expect("the body's stream, once");
    loop {
        match input.blocking_read(4096) {
            Ok(chunk) => {
                let upper = chunk.to_ascii_uppercase();
                output.blocking_write_and_flush(&upper).expect("written");
            }
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(error)) => {
                panic!("reading the request body: {}", error.to_debug_string())
            }
        }
    }
    drop(input);
    drop(output);
    OutgoingBody::finish(body, None).expect("finished");
}

wasip2::http::proxy::export!(Plain with_types_in wasip2);
