//! Serving one HTTP request with a fresh instance of a module.
//!
//! Each request gets its own store: its own memory, its own resource table, its own
//! deadline. Whatever the guest does — trap, spin, hoard memory — ends with that store,
//! and the failure is classified so the gateway can answer with the right status.

use bytes::Bytes;
use http_body_util::Full;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

use super::failure::{classify, Failure};
use super::version::ModuleVersion;
use crate::capabilities::Hop;

/// A module's response: headers now, body streamed from the instance as it writes it.
pub type ModuleResponse = hyper::Response<HyperOutgoingBody>;

/// One of `module`'s concurrency permits for a request, or why it cannot take one
/// now: it did not start, or it is at its limit. Taken before the request's body is
/// read, and handed to [`handle`].
pub fn admit(module: &ModuleVersion) -> Result<OwnedSemaphorePermit, Failure> {
    if let Some(reason) = module.module.not_started() {
        return Err(Failure::NotStarted(reason.to_string()));
    }
    module.try_admit().ok_or(Failure::Overloaded)
}

/// Serves `request` with a fresh instance of `module`, holding `permit` (from
/// [`admit`]), as the first hop of its work
/// (its trace; the routing key calls it makes pick their callees' versions by).
///
/// Returns once the module has sent its response head; the instance keeps running in
/// its own task while it streams the body, holding its concurrency permit and bounded
/// by its deadline.
pub async fn handle(
    module: &Arc<ModuleVersion>,
    request: hyper::Request<Full<Bytes>>,
    hop: Hop,
    permit: OwnedSemaphorePermit,
) -> Result<ModuleResponse, Failure> {
    let Some(proxy) = module.proxy.clone() else {
        return Err(Failure::NoResponse(anyhow::anyhow!(
            "module {} does not serve HTTP",
            module.name()
        )));
    };

    let mut store = module.new_store(hop);

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
