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
//!
//! Either way an instance lives no longer than the request it serves: its task ends
//! by the module's backstop, is aborted when the request is abandoned before its head,
//! and a body it did not finish reaches the client as an error, never as a whole one —
//! or, when it failed just after setting its head, as the status that says why.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::future::Future;
use std::pin::Pin;
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
/// Returns once the module has sent its response head and the first frame of its body,
/// or a moment after its head (an instance that fails before then fails the request);
/// the instance keeps running in its own task while it streams the rest, holding its
/// concurrency permit and bounded by its deadline.
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

    let task = spawn_instance(module, permit, async move {
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
    response_head(module, head, task, None).await
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
    let (done, body_done) = oneshot::channel();
    let task = spawn_instance(module, permit, async move {
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
                    // A response the host cannot send as HTTP (a malformed
                    // content-length, say) is the module's answer gone wrong, not a trap.
                    match store.with(|store| response.into_http(store, async { Ok(()) })) {
                        Ok(response) => {
                            if sender.send(Ok(response)).is_ok() {
                                // The guest writes the body from this event loop: keep
                                // it running until the body is done with.
                                let _ = body_done.await;
                            }
                        }
                        Err(error) => {
                            let _ = sender.send(Err(Failure::NoResponse(error.into())));
                        }
                    }
                    Ok(())
                })
                .await?
        }
        .await;
        outcome.map_err(|error| classify(error, store.data()))
    });
    response_head(module, receiver, task, Some(done)).await
}

/// How long a response head is held for its body's first frame ([`InstanceTask::hand_over`]):
/// well past the backstop of an instance that set its head just at its deadline (two
/// epoch ticks after it), short enough that a streaming module's client sees its head
/// without noticing.
const HEAD_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

/// An instance's task, as the request it serves holds it until the response head is
/// out. Dropped before then — the gateway gave up, or the client left — it aborts
/// the task: the instance, its store and its concurrency permit go with it.
struct InstanceTask {
    handle: JoinHandle<()>,
    /// The task's failure, for the request to answer with while it has no head.
    failure: oneshot::Receiver<Failure>,
    /// Whether the task's work ended well, for the body to end by ([`WatchedBody`]).
    outcome: Option<oneshot::Receiver<bool>>,
    /// Set once the head is handed on: the task then finishes on its own.
    detached: bool,
}

impl InstanceTask {
    /// The module's response, handed on once its body has a first frame for the
    /// client, has ended, or has had [`HEAD_GRACE`] to start: the task then runs on
    /// its own, bounded by its deadline, and logs its failure itself.
    ///
    /// While the head is held nothing of the response has left, so an instance that
    /// fails meanwhile — it trapped, or outran its deadline just after setting its
    /// head — fails the request with its status (504, 500), and the client does not
    /// see a connection broken off before any head. The grace is short: a module that
    /// streams (events, a long poll) has its head sent before its first byte, as
    /// hyper would send it.
    async fn hand_over(
        mut self,
        response: ModuleResponse,
        done: Option<oneshot::Sender<()>>,
    ) -> Result<ModuleResponse, Failure> {
        let (head, body) = response.into_parts();
        let mut body = WatchedBody {
            body,
            first: None,
            done,
            outcome: self.outcome.take(),
            ended: false,
        };
        let grace = tokio::time::sleep(HEAD_GRACE);
        tokio::pin!(grace);
        // Whether the task ended without a failure (its channel then closed).
        let mut ended_well = false;
        loop {
            // In this order when several are ready: a frame is sent, a failure
            // answers the request, and only then does the grace run out.
            tokio::select! {
                biased;
                frame = body.frame() => match frame {
                    Some(Ok(frame)) => {
                        body.first = Some(frame);
                        break;
                    }
                    None => break,
                    Some(Err(error)) => {
                        drop(body);
                        let failure = if ended_well {
                            None
                        } else {
                            // It ends by its deadline at the latest.
                            (&mut self.failure).await.ok()
                        };
                        return Err(failure.unwrap_or_else(|| {
                            Failure::NoResponse(anyhow::anyhow!(
                                "the module's response body failed before its first byte: {error}"
                            ))
                        }));
                    }
                },
                failure = &mut self.failure, if !ended_well => match failure {
                    Ok(failure) => return Err(failure),
                    Err(_) => ended_well = true,
                },
                () = &mut grace => break,
            }
        }
        // From here on the task reports its own failures (a failure sent before now,
        // with the head still held, is the request's).
        self.failure.close();
        if !ended_well {
            if let Ok(failure) = self.failure.try_recv() {
                return Err(failure);
            }
        }
        self.detached = true;
        Ok(hyper::Response::from_parts(head, body.boxed_unsync()))
    }
}

impl Drop for InstanceTask {
    fn drop(&mut self) {
        if !self.detached {
            self.handle.abort();
        }
    }
}

/// Runs `module`'s instance's work — `work`, holding `permit` — in a task of its own,
/// in the request's span (its log lines and late failures belong to the request that
/// caused them), for at most the module's backstop: the epoch deadline stops an
/// instance that computes too long, this one that waits too long (on a timer, a body
/// no one reads, an answer it never finishes), before or after its head is out.
fn spawn_instance(
    module: &ModuleVersion,
    permit: OwnedSemaphorePermit,
    work: impl Future<Output = Result<(), Failure>> + Send + 'static,
) -> InstanceTask {
    let backstop = module.backstop();
    let (failure_sender, failure) = oneshot::channel();
    let (outcome_sender, outcome) = oneshot::channel();
    let handle = tokio::spawn(
        async move {
            let _permit = permit;
            let outcome = match tokio::time::timeout(backstop, work).await {
                Ok(outcome) => outcome,
                Err(_) => Err(Failure::DeadlineExceeded),
            };
            let _ = outcome_sender.send(outcome.is_ok());
            if let Err(failure) = outcome {
                // The request takes it as its answer while it has no head; after
                // that, the failure is the body's, cut off, and is logged here.
                if let Err(failure) = failure_sender.send(failure) {
                    log_late(&failure);
                }
            }
        }
        .in_current_span(),
    );
    InstanceTask {
        handle,
        failure,
        outcome: Some(outcome),
        detached: false,
    }
}

/// Logs a failure that came after the response head was out: the client sees a body
/// cut off, never a quiet end, and the log says why.
fn log_late(failure: &Failure) {
    tracing::error!(
        code = failure.code(),
        cause = ?failure,
        "module failed after sending its response head; the body was cut off"
    );
}

/// The response head the instance in `task` sends through `head`, or why there is
/// none: the module's backstop passed first, the guest answered with an error, or it
/// returned (or failed) without answering. `done` is dropped when the body is done
/// with (a WASI 0.3 instance's event loop runs until then).
async fn response_head(
    module: &ModuleVersion,
    head: impl Future<Output = Result<Result<ModuleResponse, Failure>, oneshot::error::RecvError>>,
    mut task: InstanceTask,
    done: Option<oneshot::Sender<()>>,
) -> Result<ModuleResponse, Failure> {
    let answer = tokio::select! {
        answer = head => answer,
        // The task is aborted as it is dropped.
        _ = tokio::time::sleep(module.backstop()) => return Err(Failure::DeadlineExceeded),
    };
    match answer {
        Ok(Ok(response)) => task.hand_over(response, done).await,
        Ok(Err(failure)) => Err(failure),
        // The guest dropped its way to answer without using it: the task's result
        // says why (it ends by its deadline at the latest).
        Err(_) => match (&mut task.failure).await {
            Ok(failure) => Err(failure),
            Err(_) => Err(Failure::NoResponse(anyhow::anyhow!(
                "the module returned without sending a response"
            ))),
        },
    }
}

/// A module's response body on its way to the client. It tells a WASI 0.3 instance's
/// task when it is done with (read to its end, failed, or dropped by a client that
/// left), and it ends only as well as the instance's work did: when the guest's body
/// stops because the instance trapped or ran out of time, the client gets an error
/// (hyper then breaks the connection off) rather than what looks like a whole body.
struct WatchedBody {
    /// The body as wasmtime streams it from the guest.
    body: HyperOutgoingBody,
    /// Its first frame, read before the head was handed on ([`InstanceTask::hand_over`]).
    first: Option<hyper::body::Frame<Bytes>>,
    /// Dropped when the body is done with: a WASI 0.3 instance's task then ends.
    done: Option<oneshot::Sender<()>>,
    /// Whether the instance's work ended well, once it has ended.
    outcome: Option<oneshot::Receiver<bool>>,
    /// The guest's body has ended; what the client sees now depends on `outcome`.
    ended: bool,
}

impl hyper::body::Body for WatchedBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        if let Some(frame) = self.first.take() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if !self.ended {
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(None) => {
                    self.ended = true;
                    self.done = None;
                }
                Poll::Ready(Some(Err(error))) => {
                    self.done = None;
                    self.outcome = None;
                    self.ended = true;
                    return Poll::Ready(Some(Err(error)));
                }
                frame => return frame,
            }
        }
        let Some(outcome) = &mut self.outcome else {
            return Poll::Ready(None);
        };
        let ended_well = std::task::ready!(Pin::new(outcome).poll(cx));
        self.outcome = None;
        match ended_well {
            Ok(true) => Poll::Ready(None),
            // It failed, or it was aborted: the body is not whole.
            Ok(false) | Err(_) => {
                Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpResponseIncomplete)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.first.is_some() {
            false
        } else if self.ended {
            self.outcome.is_none()
        } else {
            self.body.is_end_stream()
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        // What is left of the guest's body, and the first frame, still held here.
        let mut hint = self.body.size_hint();
        let held = self
            .first
            .as_ref()
            .and_then(|frame| frame.data_ref())
            .map_or(0, |data| data.len() as u64);
        // Upper first: `set_lower` insists on a lower bound no greater than the upper.
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper.saturating_add(held));
        }
        hint.set_lower(hint.lower().saturating_add(held));
        hint
    }
}
