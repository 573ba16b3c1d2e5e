//! modhost runs a business application as a modular monolith of WebAssembly
//! components: each business capability is a module (a component with its own contract
//! and data), isolated in its own store, served from one host process — or placed on
//! several, by configuration alone.
//!
//! The crate is layered; each layer uses only those below it:
//!
//! | layer | what it is |
//! | --- | --- |
//! | [`node`] | one process: wires everything below, start-up, shutdown |
//! | [`admin`], [`gateway`], [`mesh`] | the three listeners; the mesh implements the call transport |
//! | [`calls`] | contracts, the dispatcher, the transport trait |
//! | [`module`] | loaded versions, instances, limits, failures, slots, the directory, the registry |
//! | [`capabilities`] | what the host gives a module: one piece each, one lifecycle |
//! | [`engine`] | wasmtime configuration, compile cache, per-store limits |
//! | [`deployment`] | the deployment file: types, parsing, validation |
//!
//! Beside them, used by any and using none: [`telemetry`] (logging, metrics, trace
//! context), [`runtime`] (shutdown, the accept loop, backoff, the host's own HTTP
//! answers) and [`faults`] (fault injection for crash tests).
//!
//! The `modhost` binary (`main.rs`) is only the command line on top of this library.

#![deny(missing_docs)]

pub mod admin;
pub mod calls;
pub mod capabilities;
pub mod deployment;
pub mod engine;
pub mod faults;
pub mod gateway;
#[cfg(feature = "mesh")]
pub mod mesh;
pub mod module;
pub mod node;
pub mod runtime;
pub mod telemetry;
