//! The smallest useful module: answers every request with `ok`.
//!
//! It is the component the gateway benchmarks run, in modhost and in `wasmtime serve`,
//! so the two are compared on the same guest code.

fn handle(_request: modhost_guest::Request) -> modhost_guest::Response {
    modhost_guest::Response::text(200, "ok")
}

modhost_guest::http_module!(handle);
