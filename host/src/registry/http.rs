//! Serving one HTTP request with a fresh instance of a module.
//!
//! Each request gets its own store: its own memory, its own resource table, its own
//! deadline. Whatever the guest does — trap, spin, hoard memory — ends with that store,
//! and the failure is classified so the gateway can answer with the right status.

use bytes::Bytes;
use http_body_util::Full;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tracing::Instrument;
use wasmtime::Trap;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

use super::LoadedModule;
use crate::calls::dispatch::{CallFailed, CallFailure};
use crate::capabilities::InstanceState;
use crate::telemetry::trace::TraceContext;

/// A module's response: headers now, body streamed from the instance as it writes it.
pub type ModuleResponse = hyper::Response<HyperOutgoingBody>;

/// Why a module could not answer a request.
#[derive(Debug)]
pub enum Failure {
    /// The module is serving as many requests as its `concurrency` limit allows.
    Overloaded,
    /// The instance ran past its module's `timeout`.
    DeadlineExceeded,
    /// The instance tried to grow its memory past its module's `memory` limit.
    MemoryExhausted,
    /// The instance trapped: a panic, `unreachable`, an out-of-bounds access…
    Trapped(anyhow::Error),
    /// The instance returned without a response, or answered with a `wasi:http` error.
    NoResponse(anyhow::Error),
    /// A call the instance made to another module failed, and with it the instance.
    Call(CallFailed),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Overloaded => write!(f, "at its concurrency limit"),
            Failure::DeadlineExceeded => write!(f, "past its deadline"),
            Failure::MemoryExhausted => write!(f, "out of memory"),
            Failure::Trapped(error) | Failure::NoResponse(error) => write!(f, "{error:#}"),
            Failure::Call(failed) => write!(f, "{failed}"),
        }
    }
}

impl Failure {
    /// A short, stable name for logs and error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Failure::Overloaded => "module_overloaded",
            Failure::DeadlineExceeded => "module_timeout",
            Failure::MemoryExhausted => "module_out_of_memory",
            Failure::Trapped(_) => "module_trapped",
            Failure::NoResponse(_) => "module_no_response",
            Failure::Call(failed) => match failed.kind {
                CallFailure::Unavailable => "call_unavailable",
                CallFailure::Overloaded => "call_overloaded",
                CallFailure::TimedOut => "call_timeout",
                CallFailure::Crashed => "call_failed",
                CallFailure::TooDeep => "call_depth_exceeded",
            },
        }
    }
}

/// Serves `request` with a fresh instance of `module`, as part of `trace`; calls it
/// makes pick their callees' versions by `routing` (the request's sticky key).
///
/// Returns once the module has sent its response head; the instance keeps running in
/// its own task while it streams the body, holding its concurrency permit and bounded
/// by its deadline.
pub async fn handle(
    module: &Arc<LoadedModule>,
    request: hyper::Request<Full<Bytes>>,
    trace: TraceContext,
    routing: Option<u64>,
) -> Result<ModuleResponse, Failure> {
    let Some(proxy) = module.proxy.clone() else {
        return Err(Failure::NoResponse(anyhow::anyhow!(
            "module {} does not serve HTTP",
            module.name
        )));
    };
    let permit = module.try_admit().ok_or(Failure::Overloaded)?;

    let mut store = module.new_store(0, trace, routing);

    let (sender, receiver) = tokio::sync::oneshot::channel();
    let http = store.data_mut();
    let incoming = http
        .http()
        .new_incoming_request(Scheme::Http, request)
        .map_err(|error| Failure::NoResponse(error.into()))?;
    let outparam = http
        .http()
        .new_response_outparam(sender)
        .map_err(|error| Failure::NoResponse(error.into()))?;

    // Once the head is out, a failure can no longer become an error answer (the client
    // sees a cut-off body); the task then logs it itself, so it is never silent.
    let responded = Arc::new(AtomicBool::new(false));
    let task_responded = responded.clone();
    let mut task = tokio::spawn(
        async move {
            let _permit = permit;
            let outcome = async {
                let instance = proxy.instantiate_async(&mut store).await?;
                instance
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, incoming, outparam)
                    .await
            }
            .await;
            let outcome = outcome.map_err(|error| classify(error, store.data()));
            if let Err(failure) = &outcome {
                if task_responded.load(Ordering::SeqCst) {
                    tracing::error!(
                        code = failure.code(),
                        cause = ?failure,
                        "module failed after sending its response head; the body was cut off"
                    );
                }
            }
            outcome
        }
        // Guest log lines and late failures belong to the request that caused them.
        .in_current_span(),
    );

    let response = tokio::select! {
        response = receiver => response,
        _ = tokio::time::sleep(module.backstop()) => {
            task.abort();
            return Err(Failure::DeadlineExceeded);
        }
    };
    match response {
        Ok(Ok(response)) => {
            responded.store(true, Ordering::SeqCst);
            Ok(response)
        }
        Ok(Err(code)) => Err(Failure::NoResponse(anyhow::anyhow!(
            "the module answered with wasi:http error {code:?}"
        ))),
        // The guest dropped the response outparam without setting it: the task's
        // result says why.
        Err(_) => match (&mut task).await {
            Ok(Ok(())) => Err(Failure::NoResponse(anyhow::anyhow!(
                "the module returned without sending a response"
            ))),
            Ok(Err(failure)) => Err(failure),
            Err(join) => Err(Failure::NoResponse(anyhow::anyhow!(
                "the module's task ended abnormally: {join}"
            ))),
        },
    }
}

/// Tells apart the ways an instance can fail (from its error and its store's state).
pub fn classify(error: wasmtime::Error, state: &InstanceState) -> Failure {
    if let Some(failed) = error.downcast_ref::<CallFailed>() {
        return Failure::Call(failed.clone());
    }
    if state.limiter.exceeded() {
        return Failure::MemoryExhausted;
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Failure::DeadlineExceeded,
        _ => Failure::Trapped(error.into()),
    }
}
