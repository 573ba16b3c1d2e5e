//! A `wasi:http` server for WASI 0.3 (P3), written with the `wasip3` bindings as Spin 4
//! and wasmCloud v2 build them by default — no modhost SDK, no modhost WIT. modhost
//! serves it on its concurrent engine (tests/ecosystem.rs). It answers under whatever
//! route it is deployed at (`/next` below): what follows the first path segment says
//! what to do.
//!
//! - `GET /next`: a greeting, written to the body after `handle` returned;
//! - `POST /next/echo`: the request body, streamed back as it is read;
//! - `GET /next/stream?chunks=N&size=S`: N chunks of S bytes, one at a time with a
//!   1 ms pause between them (a streamed body of unknown length);
//! - `GET /next/headers`: the request's `x-` headers, echoed, with status 201;
//! - `GET /next/log`: writes a line to stdout, then answers;
//! - `GET /next/outbound`: tries an outbound request, answers with how it ended;
//! - `GET /next/sleep?ms=N`: waits N ms on the clock before it answers;
//! - `GET /next/stall?after=MS&then=sleep|spin|trap`: waits MS ms, returns its
//!   response, then — before the first byte of its body — waits an hour on the clock,
//!   computes for ever, or panics;
//! - `GET /next/reach?to=ADDR`: tries a TCP connection, the filesystem and the
//!   environment (through the standard library's WASI 0.2) and says what it got;
//! - the hostile ones: `/next/spin` computes forever, `/next/hog` grows its memory
//!   without end, `/next/trap` panics.

use wasip3::http::types::{ErrorCode, Fields, Method, Request, Response, Scheme};
use wasip3::{wit_bindgen, wit_future, wit_stream};

wasip3::http::service::export!(Next);

struct Next;

impl wasip3::exports::http::handler::Guest for Next {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let target = request.get_path_with_query().unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        // "/next/echo" → "echo"; "/next" → "".
        let action = path
            .trim_start_matches('/')
            .split_once('/')
            .map_or("", |(_, rest)| rest);
        match action {
            "" => Ok(written(
                200,
                Fields::new(),
                vec![b"Hello from WASI 0.3\n".to_vec()],
            )),
            "echo" => Ok(echo(request)),
            "stream" => Ok(stream(query)),
            "headers" => {
                let echoed: Vec<_> = request
                    .get_headers()
                    .copy_all()
                    .into_iter()
                    .filter(|(name, _)| name.starts_with("x-"))
                    .collect();
                let headers =
                    Fields::from_list(&echoed).map_err(|_| ErrorCode::InternalError(None))?;
                Ok(written(201, headers, Vec::new()))
            }
            "log" => {
                println!("a line from a WASI 0.3 module");
                Ok(written(200, Fields::new(), vec![b"logged\n".to_vec()]))
            }
            "outbound" => Ok(written(
                200,
                Fields::new(),
                vec![outbound().await.into_bytes()],
            )),
            "sleep" => {
                let ms: u64 = query
                    .strip_prefix("ms=")
                    .and_then(|ms| ms.parse().ok())
                    .unwrap_or(0);
                wasip3::clocks::monotonic_clock::wait_for(ms.saturating_mul(1_000_000)).await;
                Ok(written(200, Fields::new(), vec![b"slept\n".to_vec()]))
            }
            "stall" => {
                let value = |key: &str| {
                    query
                        .split('&')
                        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
                        .unwrap_or_default()
                        .to_string()
                };
                let after: u64 = value("after").parse().unwrap_or(0);
                wasip3::clocks::monotonic_clock::wait_for(after * 1_000_000).await;
                Ok(stall(&value("then")))
            }
            "reach" => {
                let to = query.strip_prefix("to=").unwrap_or_default();
                Ok(written(200, Fields::new(), vec![reach(to).into_bytes()]))
            }
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "hog" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "trap" => panic!("a WASI 0.3 module panicked on purpose"),
            _ => Ok(written(404, Fields::new(), vec![b"not found\n".to_vec()])),
        }
    }
}

/// A response with `status` and `headers` whose body is `chunks`, written one by one
/// from a task of its own after `handle` has returned the response.
fn written(status: u16, headers: Fields, chunks: Vec<Vec<u8>>) -> Response {
    let (mut body_tx, body_rx) = wit_stream::new();
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    let (response, _sent) = Response::new(headers, Some(body_rx), trailers_rx);
    let _ = response.set_status_code(status);
    wit_bindgen::spawn_local(async move {
        for chunk in chunks {
            if !body_tx.write_all(chunk).await.is_empty() {
                return;
            }
        }
        drop(body_tx);
        trailers_tx.write(Ok(None)).await.ok();
    });
    response
}

/// A response whose body never gets its first byte: the task that would write it
/// sleeps an hour (`then = "sleep"`), panics (`"trap"`) or computes for ever (anything
/// else).
fn stall(then: &str) -> Response {
    let (mut body_tx, body_rx) = wit_stream::new();
    let (_trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    let (response, _sent) = Response::new(Fields::new(), Some(body_rx), trailers_rx);
    let then = then.to_string();
    wit_bindgen::spawn_local(async move {
        match then.as_str() {
            "sleep" => wasip3::clocks::monotonic_clock::wait_for(3_600_000_000_000).await,
            "trap" => panic!("p3http: a deliberate trap after the response"),
            _ => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
        }
        body_tx.write_all(b"too late\n".to_vec()).await;
    });
    response
}

/// The request's body, written back as it is read.
fn echo(request: Request) -> Response {
    let (_, request_done) = wit_future::new(|| Ok(()));
    let (mut contents, _trailers) = Request::consume_body(request, request_done);
    let (mut body_tx, body_rx) = wit_stream::new();
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    let (response, _sent) = Response::new(Fields::new(), Some(body_rx), trailers_rx);
    wit_bindgen::spawn_local(async move {
        loop {
            let (_, read) = contents.read(Vec::with_capacity(16 * 1024)).await;
            if read.is_empty() {
                break;
            }
            if !body_tx.write_all(read).await.is_empty() {
                return;
            }
        }
        drop(body_tx);
        trailers_tx.write(Ok(None)).await.ok();
    });
    response
}

/// What reaching past the module's box gets, one line each: a TCP connection to `to`,
/// the root directory, the environment. The host grants none of them.
fn reach(to: &str) -> String {
    let tcp = match std::net::TcpStream::connect(to) {
        Ok(_) => "tcp: connected".to_string(),
        Err(error) => format!("tcp: refused ({error})"),
    };
    let files = match std::fs::read_dir("/") {
        Ok(entries) => format!("files: {} entries", entries.count()),
        Err(error) => format!("files: refused ({error})"),
    };
    let env = format!("env: {} variables", std::env::vars().count());
    format!("{tcp}\n{files}\n{env}\n")
}

/// `chunks` chunks of `size` bytes (`b'a' + i % 26`), each after a 1 ms pause.
fn stream(query: &str) -> Response {
    let param = |name: &str, default: usize| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == name)
            .and_then(|(_, value)| value.parse().ok())
            .unwrap_or(default)
    };
    let (chunks, size) = (param("chunks", 5), param("size", 16));
    let (mut body_tx, body_rx) = wit_stream::new();
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    let (response, _sent) = Response::new(Fields::new(), Some(body_rx), trailers_rx);
    wit_bindgen::spawn_local(async move {
        for i in 0..chunks {
            wasip3::clocks::monotonic_clock::wait_for(1_000_000).await;
            let byte = b'a' + (i % 26) as u8;
            if !body_tx.write_all(vec![byte; size]).await.is_empty() {
                return;
            }
        }
        drop(body_tx);
        trailers_tx.write(Ok(None)).await.ok();
    });
    response
}

/// Tries `GET http://example.com/`: how it ended, in words.
async fn outbound() -> String {
    let (_, trailers) = wit_future::new(|| Ok(None));
    let (request, _sent) = Request::new(Fields::new(), None, trailers, None);
    let _ = request.set_method(&Method::Get);
    let _ = request.set_scheme(Some(&Scheme::Http));
    let _ = request.set_authority(Some("example.com"));
    let _ = request.set_path_with_query(Some("/"));
    match wasip3::http::client::send(request).await {
        Ok(response) => format!("sent: {}\n", response.get_status_code()),
        Err(code) => format!("refused: {code:?}\n"),
    }
}
