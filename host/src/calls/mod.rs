//! Calls between modules through their WIT contracts.
//!
//! [`contract`] is the type model the host compares contracts with at load: every
//! interface a module imports must be exported, by a module it is granted to call,
//! with identical function signatures. (The dispatcher that links those imports to
//! the callee's exports builds on it.)

pub mod contract;

#[cfg(test)]
mod tests;
