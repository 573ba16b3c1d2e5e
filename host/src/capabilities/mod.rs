//! What the host gives a module instance, and nothing more.
//!
//! Each capability is one piece with a clear lifecycle, after Spin's factors: it is
//! **linked once** into the shared linker ([`link`]), and it contributes **per-instance
//! state** to [`InstanceState`], built fresh for every store. Deny by default: a module
//! gets only what the deployment grants it.
//!
//! Today an instance gets:
//! - [`wasi`]: WASI 0.2 with no files, no environment, no sockets; stdout/stderr go to
//!   the host's log, tagged with the module name;
//! - [`http`]: `wasi:http` types for serving requests; outbound requests are refused;
//! - [`sql`]: `modhost:sql`, the module's own database, when the deployment gives it one;
//! - [`events`]: `modhost:events`, publishing to the topics the deployment grants (through
//!   the module's outbox) and receiving the topics it subscribes to.

pub mod events;
pub mod http;
pub mod sql;
pub mod wasi;

use anyhow::Result;
use std::sync::Arc;
use wasmtime::component::{Linker, ResourceTable};

use crate::engine::limits::MemoryLimiter;
use crate::telemetry::trace::TraceContext;

/// Everything one instance's store holds: the state of every capability.
pub struct InstanceState {
    module: Arc<str>,
    /// How many module-to-module calls deep this instance runs (0: serving a request).
    pub call_depth: u32,
    table: ResourceTable,
    wasi: wasmtime_wasi::WasiCtx,
    http: http::HttpState,
    /// Memory accounting for this store.
    pub limiter: MemoryLimiter,
    /// The span the instance's output is logged in.
    pub log_span: wasi::LogSpan,
    /// The module's own database, if it has one.
    pub database: Option<Arc<sql::Database>>,
    /// What the module may publish, if it publishes.
    pub events: Option<Arc<events::ModuleEvents>>,
    /// The trace the instance's current work belongs to.
    pub trace: TraceContext,
    /// The request's routing key (its sticky header, hashed): calls it makes pick the
    /// callee's version by it during a canary.
    pub routing: Option<u64>,
}

impl InstanceState {
    /// Fresh state for one instance of module `module`, with `memory_limit` bytes of
    /// linear memory, working in `trace`.
    pub fn new(module: &str, memory_limit: u64, trace: TraceContext) -> InstanceState {
        let (wasi, log_span) = wasi::context(module);
        InstanceState {
            module: module.into(),
            call_depth: 0,
            table: ResourceTable::new(),
            wasi,
            log_span,
            http: http::HttpState::default(),
            limiter: MemoryLimiter::new(memory_limit),
            database: None,
            events: None,
            trace,
            routing: None,
        }
    }
}

impl InstanceState {
    /// The module this instance belongs to.
    pub fn module(&self) -> &str {
        &self.module
    }
}

/// Links every capability into `linker`. Called once per engine.
pub fn link(linker: &mut Linker<InstanceState>) -> Result<()> {
    wasi::link(linker)?;
    http::link(linker)?;
    sql::link(linker)?;
    events::link(linker)?;
    Ok(())
}
