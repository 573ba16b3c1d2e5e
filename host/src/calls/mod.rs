//! Calls between modules through their WIT contracts.
//!
//! - [`contract`]: the type model contracts are compared with;
//! - [`check`]: at load and on each swap, every interface a module imports must be
//!   exported by a deployed module it is granted to call, with identical signatures;
//! - [`dispatcher`]: calls as a capability of the host, routed by the directory, and
//!   the inbound side of calls from other nodes;
//! - [`forward`]: HTTP requests for modules on other nodes, through the same policies;
//! - [`link`]: the host functions imports are linked to;
//! - [`local`]: a call's last hop, in the callee's own instance;
//! - [`policy`]: timeouts, retries, circuit breakers and bulkheads around every call,
//!   local or remote, as tower layers;
//! - [`transport`]: the trait the mesh implements to reach other nodes.

pub mod check;
pub mod contract;
pub mod dispatcher;
pub mod forward;
pub mod link;
pub mod local;
pub mod policy;
pub mod transport;

pub use check::{check, ContractError, Exports};
pub use dispatcher::{Calls, Dispatcher, Inbound};
pub use local::{call_local, MAX_CALL_DEPTH};
pub use transport::{ForwardFailed, RemoteCall, Transport};

#[cfg(test)]
mod tests;
