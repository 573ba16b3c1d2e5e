//! A server written for `wasmtime serve` with wstd, the async standard library for
//! WASI 0.2 components — no modhost SDK, no modhost WIT. modhost must serve it as is
//! (tests/ecosystem.rs):
//!
//! - `GET /wstd`: a greeting;
//! - `POST /wstd/echo`: the request body, streamed back as it is read;
//! - `GET /wstd/stream?chunks=N&size=S`: N chunks of S bytes, generated one at a time
//!   with an async pause between them (a streamed body of unknown length);
//! - `GET /wstd/headers`: the request's headers, echoed as response headers.

use futures_lite::stream::unfold;
use std::convert::Infallible;
use wstd::http::body::{Body, Bytes};
use wstd::http::{Error, Request, Response, StatusCode};
use wstd::time::Duration;

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    match path.as_str() {
        "/wstd" => Ok(Response::new(
            "Hello from a wstd server\n".to_owned().into(),
        )),
        "/wstd/echo" => Ok(Response::new(request.into_body())),
        "/wstd/stream" => Ok(stream(&query)),
        "/wstd/headers" => {
            let mut response = Response::builder();
            for (name, value) in request.headers() {
                if name.as_str().starts_with("x-") {
                    response = response.header(name, value);
                }
            }
            Ok(response.body(String::new().into())?)
        }
        _ => Ok(Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body("not found\n".to_owned().into())?),
    }
}

/// `chunks` chunks of `size` bytes (`b'a' + i % 26`), each after a 1 ms pause.
fn stream(query: &str) -> Response<Body> {
    let param = |name: &str, default: usize| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == name)
            .and_then(|(_, value)| value.parse().ok())
            .unwrap_or(default)
    };
    let (chunks, size) = (param("chunks", 5), param("size", 16));
    let body = unfold(0usize, move |i| async move {
        if i == chunks {
            return None;
        }
        wstd::task::sleep(Duration::from_millis(1)).await;
        let byte = b'a' + (i % 26) as u8;
        Some((Ok::<_, Infallible>(Bytes::from(vec![byte; size])), i + 1))
    });
    Response::new(Body::from_try_stream(body))
}
