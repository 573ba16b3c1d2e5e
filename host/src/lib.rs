//! modhost runs a business application as a modular monolith of WebAssembly
//! components: each business capability is a module (a component with its own contract
//! and data), isolated in its own store, served from one host process.
//!
//! The crate is laid out by concern:
//! - [`deployment`] — the deployment file, parsed and validated;
//! - [`engine`] — wasmtime configuration, compile cache, per-store limits;
//! - [`calls`] — contracts between modules and the checks made when they load;
//! - [`capabilities`] — what the host gives a module instance (deny by default);
//! - [`registry`] — loaded modules, and serving a request with a fresh instance;
//! - [`gateway`] — the public HTTP listener, its limits and its route table;
//! - [`mesh`] — nodes calling and forwarding to each other over mutual TLS;
//! - [`admin`] — the operators' API: status, swap, canary, promote, rollback;
//! - [`node`] — one running process tying these together;
//! - [`telemetry`] — logging, metrics, trace context;
//! - [`faults`] — fault injection for crash tests.
//!
//! The `modhost` binary (`main.rs`) is only the command line on top of this library.

pub mod admin;
pub mod calls;
pub mod capabilities;
pub mod deployment;
pub mod engine;
pub mod faults;
pub mod gateway;
pub mod mesh;
pub mod node;
pub mod registry;
pub mod telemetry;
