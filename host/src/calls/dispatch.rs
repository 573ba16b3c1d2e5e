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
//! Placement decides local or remote, at call time, behind the same host function:
//! a callee running on this node is called here ([`call_local`]); one placed on other
//! nodes is called over the mesh ([`crate::mesh`]), which encodes the values by their
//! WIT types, and the callee's node takes this same local path. Either way the caller
//! gets the same results, or the same typed failure.

use anyhow::{Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};
use tracing::Instrument;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker, Type, Val};
use wasmtime::Engine;

use super::contract::{Interface, InterfaceName};
use crate::capabilities::InstanceState;
use crate::mesh::wire::CallHeader;
use crate::mesh::Mesh;
use crate::registry::http::Failure;
use crate::registry::slot::ModuleSlot;
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
    /// A failure of `kind`, told by `message`.
    pub fn new(kind: CallFailure, message: String) -> CallFailed {
        CallFailed { kind, message }
    }
}

impl CallFailure {
    /// The kind as one byte, for the mesh.
    pub fn code(self) -> u8 {
        match self {
            CallFailure::Unavailable => 0,
            CallFailure::Overloaded => 1,
            CallFailure::TimedOut => 2,
            CallFailure::Crashed => 3,
            CallFailure::TooDeep => 4,
        }
    }

    /// The kind [`Self::code`] names (an unknown code is a crash: the peer is newer).
    pub fn from_code(code: u8) -> CallFailure {
        match code {
            0 => CallFailure::Unavailable,
            1 => CallFailure::Overloaded,
            2 => CallFailure::TimedOut,
            4 => CallFailure::TooDeep,
            _ => CallFailure::Crashed,
        }
    }
}

impl fmt::Display for CallFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CallFailed {}

/// Where each module runs, filled in once loading completes (calls resolve their
/// callee at call time, so modules may call each other in cycles).
#[derive(Default)]
pub struct Directory {
    /// The modules running on this node.
    modules: OnceLock<BTreeMap<String, Arc<ModuleSlot>>>,
    /// The exports of local modules that other nodes may call, by
    /// `interface-without-version#function`.
    served: OnceLock<BTreeMap<String, Served>>,
    /// The modules on other nodes, and the mesh that reaches them.
    remote: OnceLock<Remote>,
}

/// Modules placed on other nodes.
pub struct Remote {
    /// The mesh to reach them.
    pub mesh: Arc<Mesh>,
    /// Each remote module's nodes and timeout.
    pub modules: BTreeMap<String, RemoteModule>,
}

/// A module placed on other nodes.
pub struct RemoteModule {
    /// The nodes that run it.
    pub nodes: Vec<String>,
    /// Its `limits.timeout`: how long a call into it may take.
    pub timeout: Duration,
}

/// An export of a local module, callable from other nodes.
pub struct Served {
    /// The exporting module.
    pub slot: Arc<ModuleSlot>,
    /// The function, as `interface-without-version#function`.
    pub key: String,
    /// The interface as the module exports it (with its version).
    pub interface: InterfaceName,
    /// Its parameter types, in order.
    pub params: Vec<Type>,
    /// Its result types, in order.
    pub results: Vec<Type>,
}

/// Where a callee runs.
enum Route<'a> {
    Local(&'a Arc<ModuleSlot>),
    Remote(&'a Arc<Mesh>, &'a RemoteModule),
}

impl Directory {
    /// Publishes the local modules and the exports other nodes may call; calls made
    /// before this fail.
    pub fn publish(
        &self,
        modules: BTreeMap<String, Arc<ModuleSlot>>,
        served: BTreeMap<String, Served>,
    ) {
        let _ = self.modules.set(modules);
        let _ = self.served.set(served);
    }

    /// Publishes where the modules of other nodes run.
    pub fn connect(&self, remote: Remote) {
        let _ = self.remote.set(remote);
    }

    /// The local module `name`, if it runs on this node.
    pub fn local(&self, name: &str) -> Option<&Arc<ModuleSlot>> {
        self.modules.get()?.get(name)
    }

    /// The mesh and placement of module `name`, if it runs on other nodes only.
    pub fn remote_module(&self, name: &str) -> Option<(&Arc<Mesh>, &RemoteModule)> {
        if self.local(name).is_some() {
            return None;
        }
        let remote = self.remote.get()?;
        Some((&remote.mesh, remote.modules.get(name)?))
    }

    /// The local export serving `function` of `interface` (as an importer names it,
    /// with its version), if this node has one that is semver-compatible.
    pub fn served(&self, interface: &str, function: &str) -> Option<&Served> {
        let wanted = InterfaceName::parse(interface)?;
        let served = self
            .served
            .get()?
            .get(&format!("{}#{function}", wanted.unversioned()))?;
        served.interface.serves(&wanted).then_some(served)
    }

    fn route(&self, name: &str) -> Result<Route<'_>, CallFailed> {
        if let Some(module) = self.modules.get().and_then(|modules| modules.get(name)) {
            return Ok(Route::Local(module));
        }
        if let Some(remote) = self.remote.get() {
            if let Some(module) = remote.modules.get(name) {
                return Ok(Route::Remote(&remote.mesh, module));
            }
        }
        Err(CallFailed::new(
            CallFailure::Unavailable,
            format!("module `{name}` is not loaded"),
        ))
    }
}

/// The parameter and result types of `function` in `interface` as `component` exports
/// it.
pub fn function_types(
    engine: &Engine,
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
    let engine = linker.engine().clone();
    let mut instance = linker.instance(&interface_name)?;
    for function in interface.functions.keys() {
        component
            .get_export_index(Some(&interface_index), function)
            .with_context(|| format!("{callee} does not export {interface_name}#{function}"))?;
        let (params, results) = function_types(&engine, component, &interface_name, function)
            .with_context(|| format!("{callee} does not export {interface_name}#{function}"))?;
        let target = Arc::new(Target {
            callee: callee.to_string(),
            interface: interface_name.clone(),
            name: function.clone(),
            function: format!("{interface_name}#{function}"),
            key: format!("{}#{function}", interface.name.unversioned()),
            params,
            results,
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
                        caller.routing,
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
        routing: Option<u64>,
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
            .call_inner(caller, depth, trace, routing, params, results)
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
        routing: Option<u64>,
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
        match self.directory.route(&self.callee)? {
            Route::Local(slot) => {
                let picked = slot.pick(routing);
                let hop = Hop {
                    depth: depth + 1,
                    trace: trace.child(),
                    routing,
                };
                let outcome = call_local(&picked, &self.key, &route, hop, params, results).await;
                slot.record(&picked, outcome.is_ok());
                outcome
            }
            Route::Remote(mesh, remote) => {
                let header = CallHeader {
                    interface: self.interface.clone(),
                    function: self.name.clone(),
                    caller: caller.to_string(),
                    depth: depth + 1,
                    deadline_ms: u64::try_from(remote.timeout.as_millis()).unwrap_or(u64::MAX),
                    traceparent: trace.child().to_string(),
                };
                mesh.call(
                    &self.callee,
                    remote,
                    &header,
                    (params, &self.params),
                    (results, &self.results),
                    &route,
                )
                .await
            }
        }
    }
}

/// Where a call sits in the work that caused it.
#[derive(Debug, Clone, Copy)]
pub struct Hop {
    /// How many calls deep the callee runs.
    pub depth: u32,
    /// The callee's trace context.
    pub trace: TraceContext,
    /// The originating request's routing key, for picking versions during a canary.
    pub routing: Option<u64>,
}

/// Calls the export `key` (`interface-without-version#function`) of version `module`
/// with `params`, at `hop`: the module's bulkhead, an instance of its own, its
/// deadline. `route` names the edge for messages. This is every call's last hop,
/// whether the caller runs on this node or another.
pub async fn call_local(
    module: &LoadedModule,
    key: &str,
    route: &(dyn Fn() -> String + Sync),
    hop: Hop,
    params: &[Val],
    results: &mut [Val],
) -> Result<(), CallFailed> {
    let Hop {
        depth,
        trace,
        routing,
    } = hop;
    let Some(&export) = module.exports.get(key) else {
        return Err(CallFailed::new(
            CallFailure::Unavailable,
            format!(
                "{}: version {} of module `{}` does not export {key}",
                route(),
                module.version,
                module.name
            ),
        ));
    };
    if let Some(reason) = module.broken.get() {
        return Err(CallFailed::new(
            CallFailure::Unavailable,
            format!(
                "{}: module `{}` did not start: {reason}",
                route(),
                module.name
            ),
        ));
    }
    let _permit = module.try_admit().ok_or_else(|| {
        CallFailed::new(
            CallFailure::Overloaded,
            format!(
                "{}: module `{}` is at its concurrency limit",
                route(),
                module.name
            ),
        )
    })?;
    let outcome = module
        .run(depth, trace, routing, async |store, instance| {
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
