//! A `wasi:http/incoming-handler` written against the bare `wasip2` bindings, the way a
//! component for `wasmtime serve` is written without any framework — no modhost SDK,
//! no modhost WIT. modhost must serve it as is (tests/ecosystem.rs):
//!
//! - `POST /plain/upper`: the request body upper-cased, read and written chunk by
//!   chunk (a streamed response with no `content-length`);
//! - `GET /plain`: a greeting with an explicit `content-length`.

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
