//! A `wasi:http/handler` for WASI 0.3 (P3), written with the `wasip3` bindings as Spin 4
//! and wasmCloud v2 build them by default. modhost serves WASI 0.2 only: loading this
//! component must fail, naming its 0.3 imports (tests/ecosystem.rs).

use wasip3::http::types::{ErrorCode, Fields, Request, Response};
use wasip3::{wit_bindgen, wit_future, wit_stream};

wasip3::http::service::export!(Hello);

struct Hello;

impl wasip3::exports::http::handler::Guest for Hello {
    async fn handle(_request: Request) -> Result<Response, ErrorCode> {
        let (mut body_tx, body_rx) = wit_stream::new();
        let (body_result_tx, body_result_rx) = wit_future::new(|| Ok(None));
        let (response, _sent) = Response::new(Fields::new(), Some(body_rx), body_result_rx);
        drop(body_result_tx);
        wit_bindgen::spawn_local(async move {
            body_tx.write_all(b"Hello from WASI 0.3\n".to_vec()).await;
        });
        Ok(response)
    }
}
