//! Plumbing every long-running part of the host shares, written once:
//!
//! - [`shutdown`]: the one signal that tells a listener, a relay or a consumer to stop;
//! - [`accept`]: the one accept loop, which also drains a listener's connections;
//! - [`backoff`]: the one way to wait between retries (exponential, with jitter);
//! - [`responses`]: the HTTP answers the host gives itself (health, errors, JSON).
//!
//! Like [`crate::telemetry`], it sits beside the layers: any of them may use it, and it
//! uses none of them.

pub mod accept;
pub mod backoff;
pub mod responses;
pub mod shutdown;

/// A boxed, `Send` future borrowing for `'a`: what trait methods that do async work
/// return, so the traits stay object-safe.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
