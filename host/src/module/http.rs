//! Serving one HTTP request with a fresh instance of a module.
//!
//! Each request gets its own store: its own memory, its own resource table, its own
//! deadline. Whatever the guest does — trap, spin, hoard memory — ends with that store,
//! and the failure is classified so the gateway can answer with the right status.
//!
//! A module serves through the `wasi:http` handler of its WASI line ([`HttpHandler`]):
//! `incoming-handler` (0.2), called like any export, or `handler` (0.3), whose
//! response body is a stream the guest may go on writing after it returned: its store
//! runs its concurrent event loop until the client has the whole body.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tokio::task::JoinHandle;
use tracing::Instrument;
use wasmtime::component::InstancePre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::WasiHttpView;

use super::failure::{classify, Failure};
use super::version::ModuleVersion;
use crate::capabilities::{Hop, InstanceState};

/// A module's response: headers now, body streamed from the instance as it writes it.
pub type ModuleResponse = hyper::Response<HyperOutgoingBody>;

/// A version's `wasi:http` handler: the export the gateway calls for each request.
#[derive(Clone)]
pub enum HttpHandler {
    /// `wasi:http/incoming-handler@0.2` (a WASI 0.2 component).
    Wasi02(ProxyPre<InstanceState>),
    /// `wasi:http/handler@0.3` (a WASI 0.3 component, on the concurrent engine).
    Wasi03(ServicePre<InstanceState>),
}

impl HttpHandler {
    /// The handler of the linked component `pre` — on the `concurrent` engine, a WASI
    /// 0.3 one — or why it has none.
    pub fn new(pre: &InstancePre<InstanceState>, concurrent: bool) -> anyhow::Result<HttpHandler> {
        let handler = if concurrent {
            ServicePre::new(pre.clone()).map(HttpHandler::Wasi03)
        } else {
            ProxyPre::new(pre.clone()).map(HttpHandler::Wasi02)
        };
        handler.map_err(anyhow::Error::from)
    }
}

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
    match module.http.clone() {
        Some(HttpHandler::Wasi02(proxy)) => {
            handle_wasi02(module, proxy, request, hop, permit).await
        }
        Some(HttpHandler::Wasi03(service)) => {
            handle_wasi03(module, service, request, hop, permit).await
        }
        None => Err(Failure::NoResponse(anyhow::anyhow!(
            "module {} does not serve HTTP",
            module.name()
        ))),
    }
}

/// [`handle`] for a WASI 0.2 component: the response comes back through the
/// `response-outparam` the guest sets.
async fn handle_wasi02(
    module: &Arc<ModuleVersion>,
    proxy: ProxyPre<InstanceState>,
    request: hyper::Request<Full<Bytes>>,
    hop: Hop,
    permit: OwnedSemaphorePermit,
) -> Result<ModuleResponse, Failure> {
    let mut store = module.new_store(hop);

    let (sender, receiver) = oneshot::channel();
    let http = store.data_mut();
    let incoming = http
        .http()
        .new_incoming_request(Scheme::Http, request)
        .map_err(|error| Failure::NoResponse(error.into()))?;
    let outparam = http
        .http()
        .new_response_outparam(sender)
        .map_err(|error| Failure::NoResponse(error.into()))?;

    let responded = Arc::new(AtomicBool::new(false));
    let task = spawn_instance(permit, responded.clone(), async move {
        let outcome = async {
            let instance = proxy.instantiate_async(&mut store).await?;
            instance
                .wasi_http_incoming_handler()
                .call_handle(&mut store, incoming, outparam)
                .await
        }
        .await;
        outcome.map_err(|error| classify(error, store.data()))
    });
    let head = async {
        receiver.await.map(|answer| {
            answer.map_err(|code| {
                Failure::NoResponse(anyhow::anyhow!(
                    "the module answered with wasi:http error {code:?}"
                ))
            })
        })
    };
    response_head(module, head, task, &responded).await
}

/// [`handle`] for a WASI 0.3 component: `handle` returns the response, whose body the
/// guest may still be writing; the store's event loop runs until the body is done
/// (read to its end, or dropped by a client that left).
async fn handle_wasi03(
    module: &Arc<ModuleVersion>,
    service: ServicePre<InstanceState>,
    request: hyper::Request<Full<Bytes>>,
    hop: Hop,
    permit: OwnedSemaphorePermit,
) -> Result<ModuleResponse, Failure> {
    let mut store = module.new_store(hop);
    // The gateway has read the whole body already: there is no body error to report
    // back to the client, so the future that would report it is not kept.
    let (request, _body_result) =
        wasmtime_wasi_http::p3::Request::from_http(store.data_mut().http().hooks, request);

    let (sender, receiver) = oneshot::channel::<Result<ModuleResponse, Failure>>();
    let responded = Arc::new(AtomicBool::new(false));
    let task = spawn_instance(permit, responded.clone(), async move {
        let outcome = async {
            let service = service.instantiate_async(&mut store).await?;
            store
                .run_concurrent(async move |store| -> wasmtime::Result<()> {
                    let response = match service.handle(store, request).await? {
                        Ok(response) => response,
                        Err(code) => {
                            let _ = sender.send(Err(Failure::NoResponse(anyhow::anyhow!(
                                "the module answered with wasi:http error {code:?}"
                            ))));
                            return Ok(());
                        }
                    };
                    let response =
                        store.with(|store| response.into_http(store, async { Ok(()) }))?;
                    let (done, body_done) = oneshot::channel();
                    let (head, body) = response.into_parts();
                    let body = WatchedBody {
                        body,
                        done: Some(done),
                    };
                    let response = ModuleResponse::from_parts(head, body.boxed_unsync());
                    if sender.send(Ok(response)).is_ok() {
                        // The guest writes the body from this event loop: keep it
                        // running until the body is done with.
                        let _ = body_done.await;
                    }
                    Ok(())
                })
                .await?
        }
        .await;
        outcome.map_err(|error| classify(error, store.data()))
    });
    response_head(module, receiver, task, &responded).await
}

/// Runs an instance's work — `work`, holding `permit` — in a task of its own, in the
/// request's span (its log lines and late failures belong to the request that caused
/// them). Once the head is out (`responded`), a failure can no longer become an error
/// answer (the client sees a cut-off body); the task then logs it itself, so it is
/// never silent.
fn spawn_instance(
    permit: OwnedSemaphorePermit,
    responded: Arc<AtomicBool>,
    work: impl Future<Output = Result<(), Failure>> + Send + 'static,
) -> JoinHandle<Result<(), Failure>> {
    tokio::spawn(
        async move {
            let _permit = permit;
            let outcome = work.await;
            if let Err(failure) = &outcome {
                if responded.load(Ordering::SeqCst) {
                    tracing::error!(
                        code = failure.code(),
                        cause = ?failure,
                        "module failed after sending its response head; the body was cut off"
                    );
                }
            }
            outcome
        }
        .in_current_span(),
    )
}

/// The response head the instance in `task` sends through `head`, or why there is
/// none: the module's backstop passed first, the guest answered with an error, or it
/// returned (or failed) without answering.
async fn response_head(
    module: &ModuleVersion,
    head: impl Future<Output = Result<Result<ModuleResponse, Failure>, oneshot::error::RecvError>>,
    mut task: JoinHandle<Result<(), Failure>>,
    responded: &AtomicBool,
) -> Result<ModuleResponse, Failure> {
    let answer = tokio::select! {
        answer = head => answer,
        _ = tokio::time::sleep(module.backstop()) => {
            task.abort();
            return Err(Failure::DeadlineExceeded);
        }
    };
    match answer {
        Ok(Ok(response)) => {
            responded.store(true, Ordering::SeqCst);
            Ok(response)
        }
        Ok(Err(failure)) => Err(failure),
        // The guest dropped its way to answer without using it: the task's result
        // says why.
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

/// A WASI 0.3 response body on its way to the client: tells the instance's task when
/// it is done with (read to its end, failed, or dropped by a client that left).
struct WatchedBody {
    /// The body as wasmtime streams it from the guest.
    body: HyperOutgoingBody,
    /// Dropped when the body is done with: the instance's task then ends.
    done: Option<oneshot::Sender<()>>,
}

impl hyper::body::Body for WatchedBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = &frame {
            self.done = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.done.is_none() || self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
