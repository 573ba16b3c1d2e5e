//! `wasi:http` for modules: the types a module needs to serve its routes through the
//! standard `wasi:http/incoming-handler` export.
//!
//! Outbound HTTP (`wasi:http/outgoing-handler`) is linked, so components that import it
//! still load, but every request is refused with `HTTP-request-denied` until the
//! deployment can grant it: deny by default.

use anyhow::Result;
use wasmtime::component::Linker;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::{Capability, Components, InstanceState, StateMap};

/// The `wasi:http` capability.
pub struct Http;

/// An instance's `wasi:http` state.
#[derive(Default)]
pub struct HttpSlice {
    ctx: WasiHttpCtx,
    hooks: DenyOutbound,
}

impl Capability for Http {
    fn name(&self) -> &'static str {
        "wasi:http"
    }

    /// Links the `wasi:http` interfaces (types and the outgoing handler).
    fn link(&self, linker: &mut Linker<InstanceState>, _: &Components<'_>) -> Result<()> {
        Ok(wasmtime_wasi_http::p2::add_only_http_to_linker_async(
            linker,
        )?)
    }

    /// Links `wasi:http@0.3` (types and the client, which refuses every request as the
    /// 0.2 outgoing handler does) and, for components that also import them, the 0.2
    /// interfaces.
    fn link_concurrent(&self, linker: &mut Linker<InstanceState>) -> Result<()> {
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
        Ok(wasmtime_wasi_http::p3::add_to_linker(linker)?)
    }

    fn prepare(&self, instance: &mut InstanceState, _: &StateMap, _: &StateMap) {
        instance.slices.insert(HttpSlice::default());
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        // Every instance is prepared with its state; should one not be, it gets the
        // same deny-outbound state rather than a panic.
        let slice = self.slices.get_or_insert_with(HttpSlice::default);
        WasiHttpCtxView {
            ctx: &mut slice.ctx,
            table: &mut self.table,
            hooks: &mut slice.hooks,
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
