//! A `wasi:http/incoming-handler` written against the bare `wasip2` bindings, the way a
//! component for `wasmtime serve` is written without any framework — no modhost SDK,
//! no modhost WIT. modhost must serve it as is (tests/ecosystem.rs):
//!
//! - `POST /plain/upper`: the request body upper-cased, read and written chunk by
//!   chunk (a streamed response with no `content-length`);
//! - `GET /plain`: a greeting with an explicit `content-length`;
//! - `GET /plain/stall?then=sleep|spin`: sends its response head, then — before the
//!   first byte of its body — waits an hour on the clock, or computes for ever (a module that
//!   outruns its deadline between its head and its body).

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
        } else if let Some(then) = path.strip_prefix("/plain/stall?then=") {
            stall(then, out);
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

/// Sends a response head and never writes its body: it sleeps an hour (`then = "sleep"`)
/// or computes for ever (anything else).
fn stall(then: &str, out: ResponseOutparam) {
    let response = OutgoingResponse::new(Fields::new());
    let body = response.body().expect("the body, once");
    ResponseOutparam::set(out, Ok(response));
    if then == "sleep" {
        wasip2::clocks::monotonic_clock::subscribe_duration(3_600_000_000_000).block();
    } else {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
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
