//! `wasi:http` for modules: the types a module needs to serve its routes through the
//! standard `wasi:http/incoming-handler` export.
//!
//! Outbound HTTP (`wasi:http/outgoing-handler`) is linked, so components that import it
//! still load, but every request is refused with `HTTP-request-denied` until the
//! deployment can grant it: deny by default.

use anyhow::Result;
use wasmtime::component::Linker;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::InstanceState;

/// Links the `wasi:http` interfaces (types and the outgoing handler).
pub fn link(linker: &mut Linker<InstanceState>) -> Result<()> {
    Ok(wasmtime_wasi_http::p2::add_only_http_to_linker_async(
        linker,
    )?)
}

/// Per-instance `wasi:http` state.
#[derive(Default)]
pub struct HttpState {
    ctx: WasiHttpCtx,
    hooks: DenyOutbound,
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http.ctx,
            table: &mut self.table,
            hooks: &mut self.http.hooks,
        }
    }
}

/// Hooks that refuse every outbound request.
#[derive(Default)]
struct DenyOutbound;

type OutboundFuture = Box<
    dyn std::future::Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<wasmtime_wasi_http::WasiBody>,
                Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for DenyOutbound {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> OutboundFuture {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}
