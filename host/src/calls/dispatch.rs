//! The dispatcher: what a module's import of another module's interface is linked to.
//!
//! Every function of an exported interface becomes a host function in the shared
//! linker. Calling it runs the callee's export in a **fresh instance in the callee's
//! own store** — its own memory, memory limit, deadline and concurrency bulkhead — so
//! caller and callee never share memory and a callee's failure is contained. (A
//! callee deployed with `instances = "reuse"` serves the call from a warm instance
//! of its own instead, see [`crate::registry::warm`].) Every call is a `call` span
//! and a sample of its edge's metrics ([`crate::telemetry::metrics`]). Values
//! cross as wasmtime `Val`s: plain data, typed by the contract both sides agreed on
//! when they loaded.
//!
//! Failures come back to the caller as errors, never hangs: a callee that traps, runs
//! past its deadline, exhausts its memory or is at its concurrency limit fails the call,
//! and so does a chain of calls deeper than [`MAX_CALL_DEPTH`] (runaway recursion
//! across modules). The caller's own request then fails with that error; contracts
//! model expected failures as `result<_, E>` values instead.
//!
//! Placement decides local or remote; this is the local path, and the seam where a
//! remote transport will slot in behind the same host function.

use anyhow::{Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;
use tracing::Instrument;
use wasmtime::component::{Component, ComponentExportIndex, Linker, Val};

use super::contract::Interface;
use crate::capabilities::InstanceState;
use crate::registry::http::Failure;
use crate::registry::LoadedModule;
use crate::telemetry::metrics::{metrics, EdgeMetrics};
use crate::telemetry::trace::TraceContext;

/// Calls nested deeper than this fail: A→B→A… must end somewhere.
pub const MAX_CALL_DEPTH: u32 = 32;

/// Why a call between modules failed, as the caller sees it.
///
/// When a callee fails only because a call it made failed in turn, the deeper
/// failure is passed up unchanged: the innermost reason names the edge that broke,
/// and a chain of 32 calls does not build a 32-layer message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFailed {
    /// What kind of failure, for the status the caller's request ends with.
    pub kind: CallFailure,
    /// The whole story: which edge, and what happened.
    pub message: String,
}

/// The kinds of [`CallFailed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallFailure {
    /// The callee is not running anywhere it can be reached.
    Unavailable,
    /// The callee is at its concurrency limit.
    Overloaded,
    /// The callee did not return within its timeout.
    TimedOut,
    /// The callee trapped or ran out of memory.
    Crashed,
    /// The chain of calls went deeper than [`MAX_CALL_DEPTH`].
    TooDeep,
}

impl CallFailed {
    fn new(kind: CallFailure, message: String) -> CallFailed {
        CallFailed { kind, message }
    }
}

impl fmt::Display for CallFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CallFailed {}

/// The loaded modules, filled in once loading completes (calls resolve their callee
/// at call time, so modules may call each other in cycles).
#[derive(Default)]
pub struct Directory {
    modules: OnceLock<BTreeMap<String, Arc<LoadedModule>>>,
}

impl Directory {
    /// Publishes the loaded modules; calls made before this fail.
    pub fn publish(&self, modules: BTreeMap<String, Arc<LoadedModule>>) {
        let _ = self.modules.set(modules);
    }

    fn get(&self, name: &str) -> Result<&Arc<LoadedModule>, CallFailed> {
        self.modules
            .get()
            .and_then(|modules| modules.get(name))
            .ok_or_else(|| {
                CallFailed::new(
                    CallFailure::Unavailable,
                    format!("module `{name}` is not loaded"),
                )
            })
    }
}

/// Links every function of `interface`, exported by module `callee` (whose component
/// is `component`), into `linker` under the interface's name.
pub fn link_interface(
    linker: &mut Linker<InstanceState>,
    directory: &Arc<Directory>,
    callee: &str,
    component: &Component,
    interface: &Interface,
) -> Result<()> {
    let interface_name = interface.name.to_string();
    let interface_index = component
        .get_export_index(None, &interface_name)
        .with_context(|| format!("{callee} does not export {interface_name}"))?;
    let mut instance = linker.instance(&interface_name)?;
    for function in interface.functions.keys() {
        let export = component
            .get_export_index(Some(&interface_index), function)
            .with_context(|| format!("{callee} does not export {interface_name}#{function}"))?;
        let target = Arc::new(Target {
            callee: callee.to_string(),
            function: format!("{interface_name}#{function}"),
            export,
            directory: directory.clone(),
            edges: RwLock::default(),
        });
        instance.func_new_async(function, move |store, _ty, params, results| {
            let target = target.clone();
            Box::new(async move {
                let caller = store.data();
                target
                    .call(
                        caller.module(),
                        caller.call_depth,
                        caller.trace,
                        params,
                        results,
                    )
                    .await
                    .map_err(wasmtime::Error::new)
            })
        })?;
    }
    Ok(())
}

/// One callee function, resolved at load.
struct Target {
    callee: String,
    function: String,
    export: ComponentExportIndex,
    directory: Arc<Directory>,
    /// The metrics of each edge into this function, by caller.
    edges: RwLock<HashMap<String, EdgeMetrics>>,
}

impl Target {
    async fn call(
        &self,
        caller: &str,
        depth: u32,
        trace: TraceContext,
        params: &[Val],
        results: &mut [Val],
    ) -> Result<(), CallFailed> {
        let started = Instant::now();
        let span = tracing::info_span!(
            "call",
            caller,
            callee = %self.callee,
            function = %self.function,
            depth = depth + 1,
            outcome = tracing::field::Empty,
            duration_us = tracing::field::Empty,
        );
        // Inside the span: the callee's output and its own calls nest under it.
        let outcome = self
            .call_inner(caller, depth, trace, params, results)
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
        depth: u32,
        trace: TraceContext,
        params: &[Val],
        results: &mut [Val],
    ) -> Result<(), CallFailed> {
        let route = || format!("{caller} → {}.{}", self.callee, self.function);
        if depth + 1 > MAX_CALL_DEPTH {
            return Err(CallFailed::new(CallFailure::TooDeep, format!(
                "call depth limit of {MAX_CALL_DEPTH} exceeded at {} (runaway recursion across modules?)",
                route()
            )));
        }
        let module = self.directory.get(&self.callee)?;
        if let Some(reason) = module.broken.get() {
            return Err(CallFailed::new(
                CallFailure::Unavailable,
                format!(
                    "{}: module `{}` did not start: {reason}",
                    route(),
                    self.callee
                ),
            ));
        }
        let _permit = module.try_admit().ok_or_else(|| {
            CallFailed::new(
                CallFailure::Overloaded,
                format!(
                    "{}: module `{}` is at its concurrency limit",
                    route(),
                    self.callee
                ),
            )
        })?;
        let trace = trace.child();
        let export = self.export;
        let outcome = module
            .run(depth + 1, trace, async |store, instance| {
                let func = instance
                    .get_func(&mut *store, export)
                    .ok_or_else(|| wasmtime::format_err!("export missing from the instance"))?;
                func.call_async(&mut *store, params, results).await
            })
            .await;
        let (kind, why) = match outcome {
            Ok(()) => return Ok(()),
            Err(Failure::Call(deeper)) => return Err(deeper),
            Err(Failure::MemoryExhausted) => (
                CallFailure::Crashed,
                "exceeded its memory limit".to_string(),
            ),
            Err(Failure::DeadlineExceeded) => (
                CallFailure::TimedOut,
                format!(
                    "did not return within its timeout of {}",
                    module.limits.timeout
                ),
            ),
            Err(other) => (CallFailure::Crashed, format!("failed: {other}")),
        };
        Err(CallFailed::new(
            kind,
            format!("{}: the callee {why}", route()),
        ))
    }
}
