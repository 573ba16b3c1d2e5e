//! The transport for calls and requests that must reach another node.
//!
//! The calls layer decides *where* a callee runs (the directory); when that is another
//! node, it hands the call to a [`Transport`], which the mesh implements and the node
//! connects. The dispatcher and the gateway know only this trait: they work the same
//! whether the mesh exists, and the mesh never has to reach up into them.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use std::time::Duration;
use wasmtime::component::{Type, Val};

use crate::module::directory::RemoteModule;
use crate::module::CallFailed;
use crate::runtime::BoxFuture;
use crate::telemetry::trace::TraceContext;

/// A call into a module placed on other nodes.
pub struct RemoteCall<'a> {
    /// The callee module.
    pub callee: &'a str,
    /// Where it runs.
    pub placement: &'a RemoteModule,
    /// The interface, as the exporter names it (with its version).
    pub interface: &'a str,
    /// The function.
    pub function: &'a str,
    /// The calling module.
    pub caller: &'a str,
    /// How many calls deep the callee runs.
    pub depth: u32,
    /// How long the callee may take.
    pub deadline: Duration,
    /// The callee's trace context.
    pub trace: TraceContext,
    /// The id of the request the call serves, if it serves one.
    pub request_id: Option<&'a str>,
    /// Names the edge for messages: `caller → callee.interface#function`.
    pub route: &'a (dyn Fn() -> String + Sync),
}

/// Why a forwarded request got no answer from any node running its module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardFailed {
    /// No node running the module could be reached (or its breaker is open).
    #[error("{0}")]
    Unavailable(String),
    /// The node took longer than the module's timeout.
    #[error("{0}")]
    TimedOut(String),
}

/// Reaches other nodes: calls into modules placed there, and HTTP requests for routes
/// they own.
pub trait Transport: Send + Sync {
    /// Calls `call.function` of `call.callee` on one of its nodes, with `params` (and
    /// their types); fills `results` (typed by the given types) or fails typed.
    fn call<'a>(
        &'a self,
        call: RemoteCall<'a>,
        params: (&'a [Val], &'a [Type]),
        results: (&'a mut [Val], &'a [Type]),
    ) -> BoxFuture<'a, Result<(), CallFailed>>;

    /// Passes an HTTP request for `module` to one of `nodes`, which serves it on its
    /// local path; waits at most `timeout` for the response head.
    fn forward<'a>(
        &'a self,
        module: &'a str,
        nodes: &'a [String],
        request: hyper::Request<Full<Bytes>>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<hyper::Response<Incoming>, ForwardFailed>>;
}
