//! The host functions a module's import of another module's interface is linked to.
//!
//! Every function of an exported interface becomes a host function in the shared
//! linker ([`link_interface`]). Calling it runs the callee's export in a **fresh
//! instance in the callee's own store** — its own memory, memory limit, deadline and
//! concurrency bulkhead — so caller and callee never share memory and a callee's
//! failure is contained. (A callee deployed with `instances = "reuse"` serves the call
//! from a warm instance of its own instead, see [`crate::module::warm`].) Every call is
//! a `call` span and a sample of its edge's metrics ([`crate::telemetry::metrics`]).
//! Values cross as wasmtime `Val`s: plain data, typed by the contract both sides
//! agreed on when they loaded.
//!
//! Failures come back to the caller as errors, never hangs: a callee that traps, runs
//! past its deadline, exhausts its memory or is at its concurrency limit fails the call,
//! and so does a chain of calls deeper than [`MAX_CALL_DEPTH`] (runaway recursion
//! across modules). The caller's own request then fails with that error; contracts
//! model expected failures as `result<_, E>` values instead.
//!
//! Every call passes the caller's policy layers for its callee ([`super::policy`]:
//! deadline, bulkhead, breaker, retries) around one attempt, so a policy holds the
//! same whether the callee is here or on another node.
//!
//! Placement decides local or remote, at call time, behind the same host function:
//! a callee running on this node is called here ([`call_local`]); one placed on other
//! nodes through the [`Transport`](super::transport::Transport), which encodes the
//! values by their WIT types, and the callee's node takes this same local path. Either
//! way the caller gets the same results, or the same typed failure.

use anyhow::{Context, Result};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tower::ServiceExt;
use tracing::Instrument;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker, Type, Val};

use super::contract::Interface;
use super::dispatcher::Dispatcher;
use super::local::{call_local, MAX_CALL_DEPTH};
use super::policy::{self, call_service, CallFuture, CallRequest, PolicyStack};
use super::transport::RemoteCall;
use crate::capabilities::{Hop, InstanceState};
use crate::module::directory::Route;
use crate::module::interface::InterfaceName;
use crate::module::{CallFailed, CallFailure};
use crate::telemetry::metrics::{metrics, CallPath, EdgeMetrics};
use crate::telemetry::trace::TraceContext;

/// Links every function of `interface`, exported by module `callee` (whose component
/// is `component`), into `linker` under the interface's name.
pub fn link_interface(
    linker: &mut Linker<InstanceState>,
    dispatcher: &Arc<Dispatcher>,
    callee: &str,
    component: &Component,
    interface: &Interface,
) -> Result<()> {
    let interface_name = interface.name.to_string();
    let engine = linker.engine().clone();
    let mut instance = linker.instance(&interface_name)?;
    for function in interface.functions.keys() {
        let (params, results) = function_types(&engine, component, &interface_name, function)
            .with_context(|| format!("{callee} does not export {interface_name}#{function}"))?;
        let target = Arc::new(Target {
            function: Arc::new(Function {
                callee: callee.to_string(),
                interface: interface_name.clone(),
                name: function.clone(),
                function: format!("{interface_name}#{function}"),
                key: crate::module::interface::key(&interface.name, function),
                params,
                results,
                dispatcher: dispatcher.clone(),
            }),
            edges: RwLock::default(),
        });
        instance.func_new_async(function, move |store, _ty, params, results| {
            let target = target.clone();
            Box::new(async move {
                let caller = store.data();
                target
                    .call(caller.module(), caller.hop.clone(), params, results)
                    .await
                    .map_err(wasmtime::Error::new)
            })
        })?;
    }
    Ok(())
}

/// The parameter and result types of `function` in `interface` as `component` exports
/// it.
fn function_types(
    engine: &wasmtime::Engine,
    component: &Component,
    interface: &str,
    function: &str,
) -> Option<(Vec<Type>, Vec<Type>)> {
    let ty = component.component_type();
    let ComponentItem::ComponentInstance(instance) = ty.get_export(engine, interface)?.ty else {
        return None;
    };
    let ComponentItem::ComponentFunc(func) = instance.get_export(engine, function)?.ty else {
        return None;
    };
    Some((
        func.params().map(|(_, ty)| ty).collect(),
        func.results().collect(),
    ))
}

/// One callee function, resolved at load, with what each caller's calls into it keep.
struct Target {
    function: Arc<Function>,
    /// Each caller's edge into this function.
    edges: RwLock<HashMap<String, Paths>>,
}

/// One callee function, resolved at load: what an attempt to call it needs.
struct Function {
    callee: String,
    /// The interface, with the exporter's version.
    interface: String,
    /// The function's own name.
    name: String,
    /// `interface#name`, for logs and metrics.
    function: String,
    /// `interface-without-version#name`: the export in whichever version serves.
    key: String,
    params: Vec<Type>,
    results: Vec<Type>,
    dispatcher: Arc<Dispatcher>,
}

/// One caller's calls into one function: the edge's metrics, and its policy layers
/// around the attempt, built on the first call.
#[derive(Clone)]
struct Edge {
    metrics: EdgeMetrics,
    policies: PolicyStack<Attempt>,
}

/// One caller's edge into one function, by the path its calls take.
#[derive(Default)]
struct Paths {
    local: Option<Edge>,
    remote: Option<Edge>,
}

impl Paths {
    fn get(&self, path: CallPath) -> Option<&Edge> {
        match path {
            CallPath::Local => self.local.as_ref(),
            CallPath::Remote => self.remote.as_ref(),
        }
    }

    fn set(&mut self, path: CallPath, edge: Edge) {
        match path {
            CallPath::Local => self.local = Some(edge),
            CallPath::Remote => self.remote = Some(edge),
        }
    }

    /// The policy layers of the edge, whichever path made them first.
    fn policies(&self) -> Option<PolicyStack<Attempt>> {
        self.local
            .as_ref()
            .or(self.remote.as_ref())
            .map(|edge| edge.policies.clone())
    }
}

impl Target {
    async fn call(
        &self,
        caller: &str,
        hop: Hop,
        params: &[Val],
        results: &mut [Val],
    ) -> Result<(), CallFailed> {
        let started = Instant::now();
        let function = &self.function;
        let span = tracing::info_span!(
            "call",
            caller,
            callee = %function.callee,
            function = %function.function,
            depth = hop.depth + 1,
            outcome = tracing::field::Empty,
            duration_us = tracing::field::Empty,
        );
        // The callee's hop is this span, a child of the caller's.
        let hop = Hop {
            trace: TraceContext::for_span(&span, Some(hop.trace)),
            ..hop
        };
        let edge = self.edge(caller);
        // Inside the span: the callee's output and its own calls nest under it.
        let outcome = self
            .call_with_policies(&edge, caller, hop, params, results)
            .instrument(span.clone())
            .await;
        let took = started.elapsed();
        edge.metrics.record(outcome.is_ok(), took);
        span.record("outcome", if outcome.is_ok() { "ok" } else { "error" });
        span.record(
            "duration_us",
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        );
        span.in_scope(|| match &outcome {
            Ok(()) => tracing::debug!("call completed"),
            Err(error) => tracing::warn!(%error, "call failed"),
        });
        outcome
    }

    /// The edge from `caller` into this function, as the callee is placed now: local
    /// or remote (a new placement may change it while the node runs). The two share
    /// their policy layers — one breaker, one bulkhead per edge — and each has its own
    /// metrics, labelled with the path.
    fn edge(&self, caller: &str) -> Edge {
        let function = &self.function;
        let path = match function.dispatcher.directory().local(&function.callee) {
            Some(_) => CallPath::Local,
            None => CallPath::Remote,
        };
        // A poisoned lock only means a panic elsewhere while it was held; the map
        // itself is always whole (an insert either happened or did not).
        let edges = self.edges.read().unwrap_or_else(|e| e.into_inner());
        let known = edges.get(caller);
        if let Some(edge) = known.and_then(|paths| paths.get(path)) {
            return edge.clone();
        }
        let shared = known.and_then(Paths::policies);
        drop(edges);
        let policies = shared.unwrap_or_else(|| {
            let state = function.dispatcher.policy(caller, &function.callee);
            let interface = InterfaceName::parse(&function.interface)
                .map(|name| name.unversioned())
                .unwrap_or_default();
            let idempotent = state
                .as_ref()
                .and_then(|state| state.policy.retries.as_ref())
                .is_some_and(|retries| retries.covers(&interface, &function.name));
            policy::stack(Attempt(function.clone()), state, idempotent)
        });
        let edge = Edge {
            metrics: metrics().edge(caller, &function.callee, &function.function, path),
            policies,
        };
        let mut edges = self.edges.write().unwrap_or_else(|e| e.into_inner());
        let paths = edges.entry(caller.to_string()).or_default();
        paths.get(path).cloned().unwrap_or_else(|| {
            paths.set(path, edge.clone());
            edge
        })
    }

    async fn call_with_policies(
        &self,
        edge: &Edge,
        caller: &str,
        hop: Hop,
        params: &[Val],
        results: &mut [Val],
    ) -> Result<(), CallFailed> {
        let function = &self.function;
        let route = || format!("{caller} → {}.{}", function.callee, function.function);
        if hop.depth + 1 > MAX_CALL_DEPTH {
            return Err(CallFailed::new(CallFailure::TooDeep, format!(
                "call depth limit of {MAX_CALL_DEPTH} exceeded at {} (runaway recursion across modules?)",
                route()
            )));
        }
        let request = CallRequest {
            caller,
            hop,
            params,
            route: &route,
            deadline: None,
        };
        let answered = edge.policies.clone().oneshot(request).await?;
        for (result, value) in results.iter_mut().zip(answered) {
            *result = value;
        }
        Ok(())
    }
}

/// One attempt at a call: the callee's export here, or on a node that runs it. The
/// policy layers wrap it ([`policy::stack`]).
#[derive(Clone)]
struct Attempt(Arc<Function>);

impl<'a> tower::Service<CallRequest<'a>> for Attempt {
    call_service!('a);

    fn call(&mut self, request: CallRequest<'a>) -> CallFuture<'a> {
        let function = self.0.clone();
        Box::pin(async move { function.attempt(request).await })
    }
}

impl Function {
    /// One attempt of a call, made where the callee is served now. A node that
    /// answers it does not run the callee any more (it moved while the call was on its
    /// way: the call did not run) sends it where the directory says it is now.
    async fn attempt(&self, request: CallRequest<'_>) -> Result<Vec<Val>, CallFailed> {
        let mut asked = 0;
        loop {
            let (outcome, sent_to) = self.attempt_once(&request).await;
            let failed = match outcome {
                Err(failed) if failed.kind == CallFailure::Misplaced && asked < 3 => failed,
                outcome => return outcome,
            };
            asked += 1;
            match self.dispatcher.directory().route(&self.callee) {
                // Held here while it moves: wait, then look again.
                Some(Route::Local(slot)) if slot.hold.is_held() => {
                    let limit = request
                        .deadline
                        .map_or(slot.serving().limits().timeout.duration(), |d| {
                            d.saturating_duration_since(tokio::time::Instant::now())
                        });
                    slot.hold.released_within(limit).await;
                }
                // Here now (again): it did not run, so it runs here.
                Some(Route::Local(_)) => {}
                Some(Route::Remote(placement)) if Some(&placement.nodes) != sent_to.as_ref() => {}
                // Where it was sent is still where it is said to be: nothing to retry.
                _ => return Err(failed),
            }
        }
    }

    /// The call, once: its outcome, and the nodes it was sent to when it left the node.
    async fn attempt_once(
        &self,
        request: &CallRequest<'_>,
    ) -> (Result<Vec<Val>, CallFailed>, Option<Vec<String>>) {
        let CallRequest {
            caller,
            hop,
            params,
            route,
            deadline,
        } = request;
        let (caller, params, route, deadline) = (*caller, *params, *route, *deadline);
        let now = tokio::time::Instant::now();
        // The callee's calls end by the earlier of this attempt's deadline and the
        // callee's own timeout.
        let by = |timeout: Duration| {
            let own = now + timeout;
            Some(deadline.map_or(own, |deadline| deadline.min(own)))
        };
        let mut results = vec![Val::Bool(false); self.results.len()];
        let not_loaded = || {
            CallFailed::new(
                CallFailure::Unavailable,
                format!("module `{}` is not loaded", self.callee),
            )
        };
        // A callee on hold (moving to another node) is waited for, within the call's
        // deadline, and looked up again: it may be served elsewhere by then.
        let placed = loop {
            match self.dispatcher.directory().route(&self.callee) {
                Some(Route::Local(slot)) if slot.hold.is_held() => {
                    let limit = deadline.map_or(slot.serving().limits().timeout.duration(), |d| {
                        d.saturating_duration_since(now)
                    });
                    if !slot.hold.released_within(limit).await {
                        break Some(Route::Local(slot));
                    }
                }
                other => break other,
            }
        };
        match placed {
            Some(Route::Local(slot)) => {
                let picked = slot.pick(hop.routing);
                let next = Hop {
                    depth: hop.depth + 1,
                    trace: hop.trace,
                    routing: hop.routing,
                    deadline: by(picked.limits().timeout.duration()),
                    request_id: hop.request_id.clone(),
                };
                let outcome =
                    call_local(&picked, &self.key, route, next, params, &mut results).await;
                slot.record(&picked, outcome.is_ok());
                (outcome.map(|()| results), None)
            }
            Some(Route::Remote(placement)) => {
                let Some(transport) = self.dispatcher.transport() else {
                    return (Err(not_loaded()), None);
                };
                // The callee's node gets what is left of the deadline.
                let left = by(placement.timeout)
                    .map_or(placement.timeout, |by| by.saturating_duration_since(now));
                let call = RemoteCall {
                    callee: &self.callee,
                    placement: &placement,
                    interface: &self.interface,
                    function: &self.name,
                    caller,
                    depth: hop.depth + 1,
                    deadline: left,
                    trace: hop.trace,
                    request_id: hop.request_id.as_deref(),
                    route,
                };
                let outcome = transport
                    .call(call, (params, &self.params), (&mut results, &self.results))
                    .await
                    .map(|()| results);
                (outcome, Some(placement.nodes.clone()))
            }
            None => (Err(not_loaded()), None),
        }
    }
}
