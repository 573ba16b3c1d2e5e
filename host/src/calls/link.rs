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
//! Placement decides local or remote, at call time, behind the same host function:
//! a callee running on this node is called here ([`call_local`]); one placed on other
//! nodes through the [`Transport`](super::transport::Transport), which encodes the
//! values by their WIT types, and the callee's node takes this same local path. Either
//! way the caller gets the same results, or the same typed failure.

use anyhow::{Context, Result};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;
use tracing::Instrument;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker, Type, Val};

use super::contract::Interface;
use super::dispatcher::Dispatcher;
use super::local::{call_local, MAX_CALL_DEPTH};
use super::transport::RemoteCall;
use crate::capabilities::{Hop, InstanceState};
use crate::module::directory::Route;
use crate::module::{CallFailed, CallFailure};
use crate::telemetry::metrics::{metrics, EdgeMetrics};

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
            callee: callee.to_string(),
            interface: interface_name.clone(),
            name: function.clone(),
            function: format!("{interface_name}#{function}"),
            key: crate::module::interface::key(&interface.name, function),
            params,
            results,
            dispatcher: dispatcher.clone(),
            edges: RwLock::default(),
        });
        instance.func_new_async(function, move |store, _ty, params, results| {
            let target = target.clone();
            Box::new(async move {
                let caller = store.data();
                target
                    .call(caller.module(), caller.hop, params, results)
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

/// One callee function, resolved at load.
struct Target {
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
    /// The metrics of each edge into this function, by caller.
    edges: RwLock<HashMap<String, EdgeMetrics>>,
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
        let span = tracing::info_span!(
            "call",
            caller,
            callee = %self.callee,
            function = %self.function,
            depth = hop.depth + 1,
            outcome = tracing::field::Empty,
            duration_us = tracing::field::Empty,
        );
        // Inside the span: the callee's output and its own calls nest under it.
        let outcome = self
            .call_inner(caller, hop, params, results)
            .instrument(span.clone())
            .await;
        let took = started.elapsed();
        self.edge(caller).record(outcome.is_ok(), took);
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

    /// The metrics of the edge from `caller` into this function.
    fn edge(&self, caller: &str) -> EdgeMetrics {
        // A poisoned lock only means a panic elsewhere while it was held; the map
        // itself is always whole (an insert either happened or did not).
        let edges = self.edges.read().unwrap_or_else(|e| e.into_inner());
        if let Some(edge) = edges.get(caller) {
            return edge.clone();
        }
        drop(edges);
        let edge = metrics().edge(caller, &self.callee, &self.function);
        self.edges
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(caller.to_string(), edge.clone());
        edge
    }

    async fn call_inner(
        &self,
        caller: &str,
        hop: Hop,
        params: &[Val],
        results: &mut [Val],
    ) -> Result<(), CallFailed> {
        let route = || format!("{caller} → {}.{}", self.callee, self.function);
        if hop.depth + 1 > MAX_CALL_DEPTH {
            return Err(CallFailed::new(CallFailure::TooDeep, format!(
                "call depth limit of {MAX_CALL_DEPTH} exceeded at {} (runaway recursion across modules?)",
                route()
            )));
        }
        let next = Hop {
            depth: hop.depth + 1,
            trace: hop.trace.child(),
            routing: hop.routing,
        };
        let not_loaded = || {
            CallFailed::new(
                CallFailure::Unavailable,
                format!("module `{}` is not loaded", self.callee),
            )
        };
        match self.dispatcher.directory().route(&self.callee) {
            Some(Route::Local(slot)) => {
                let picked = slot.pick(hop.routing);
                let outcome = call_local(&picked, &self.key, &route, next, params, results).await;
                slot.record(&picked, outcome.is_ok());
                outcome
            }
            Some(Route::Remote(placement)) => {
                let Some(transport) = self.dispatcher.transport() else {
                    return Err(not_loaded());
                };
                let call = RemoteCall {
                    callee: &self.callee,
                    placement: &placement,
                    interface: &self.interface,
                    function: &self.name,
                    caller,
                    depth: next.depth,
                    deadline: placement.timeout,
                    trace: next.trace,
                    route: &route,
                };
                transport
                    .call(call, (params, &self.params), (results, &self.results))
                    .await
            }
            None => Err(not_loaded()),
        }
    }
}
