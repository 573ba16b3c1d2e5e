//! How work in a module's instance fails, as the host tells it apart.
//!
//! Whatever a guest does — trap, spin, hoard memory, return nothing — ends as one
//! [`Failure`], read from the error wasmtime returned and what the store recorded
//! ([`classify`]). The gateway turns it into a status code, the dispatcher into a
//! [`CallFailed`] for the calling module, event delivery into a retry.
//!
//! [`CallFailed`] is the failure of a call *between* modules as the caller sees it. It
//! is defined here, with the rest of the failure model, because an instance whose
//! call failed fails with it: the failure travels up through the caller's instance and
//! comes out of [`classify`] unchanged.

use std::fmt;
use wasmtime::Trap;

use crate::capabilities::InstanceState;

/// Why a module could not do the work it was given (answer a request, a call, an event).
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The module is serving as many requests as its `concurrency` limit allows.
    #[error("at its concurrency limit")]
    Overloaded,
    /// The instance ran past its module's `timeout`.
    #[error("past its deadline")]
    DeadlineExceeded,
    /// The instance tried to grow its memory past its module's `memory` limit.
    #[error("out of memory")]
    MemoryExhausted,
    /// The instance trapped: a panic, `unreachable`, an out-of-bounds access…
    #[error("{0:#}")]
    Trapped(anyhow::Error),
    /// The instance returned without a response, or answered with a `wasi:http` error.
    #[error("{0:#}")]
    NoResponse(anyhow::Error),
    /// The module did not start (its database did not open, a migration failed).
    #[error("did not start: {0}")]
    NotStarted(String),
    /// A call the instance made to another module failed, and with it the instance.
    #[error("{0}")]
    Call(CallFailed),
}

impl Failure {
    /// A short, stable name for logs and error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Failure::Overloaded => "module_overloaded",
            Failure::DeadlineExceeded => "module_timeout",
            Failure::MemoryExhausted => "module_out_of_memory",
            Failure::Trapped(_) => "module_trapped",
            Failure::NoResponse(_) => "module_no_response",
            Failure::NotStarted(_) => "module_unavailable",
            Failure::Call(failed) => failed.kind.code_name(),
        }
    }
}

/// Tells apart the ways an instance can fail (from its error and its store's state).
pub fn classify(error: wasmtime::Error, state: &InstanceState) -> Failure {
    if let Some(failed) = error.downcast_ref::<CallFailed>() {
        return Failure::Call(failed.clone());
    }
    if state.limiter.exceeded() {
        return Failure::MemoryExhausted;
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Failure::DeadlineExceeded,
        _ => Failure::Trapped(error.into()),
    }
}

/// Why a call between modules failed, as the caller sees it.
///
/// When a callee fails only because a call it made failed in turn, the deeper
/// failure is passed up unchanged: the innermost reason names the edge that broke,
/// and a chain of 32 calls does not build a 32-layer message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CallFailed {
    /// What kind of failure, for the status the caller's request ends with.
    pub kind: CallFailure,
    /// The whole story: which edge, and what happened.
    pub message: String,
}

impl CallFailed {
    /// A failure of `kind`, told by `message`.
    pub fn new(kind: CallFailure, message: String) -> CallFailed {
        CallFailed { kind, message }
    }
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
    /// The chain of calls went deeper than the host allows.
    TooDeep,
    /// The node asked does not run the callee (any more: it moved while the call was
    /// on its way) and did not run the call; the caller asks where it runs now.
    Misplaced,
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
            CallFailure::Misplaced => 5,
        }
    }

    /// The kind [`Self::code`] names (an unknown code is a crash: the peer is newer).
    pub fn from_code(code: u8) -> CallFailure {
        match code {
            0 => CallFailure::Unavailable,
            1 => CallFailure::Overloaded,
            2 => CallFailure::TimedOut,
            5 => CallFailure::Misplaced,
            4 => CallFailure::TooDeep,
            _ => CallFailure::Crashed,
        }
    }

    /// A short, stable name for logs and error bodies.
    pub fn code_name(self) -> &'static str {
        match self {
            CallFailure::Unavailable => "call_unavailable",
            CallFailure::Overloaded => "call_overloaded",
            CallFailure::TimedOut => "call_timeout",
            CallFailure::Crashed => "call_failed",
            CallFailure::TooDeep => "call_depth_exceeded",
            // To the module that called, a callee no node could be found running.
            CallFailure::Misplaced => "call_unavailable",
        }
    }
}

impl fmt::Display for CallFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_failure_codes_round_trip_and_an_unknown_one_is_a_crash() {
        for kind in [
            CallFailure::Unavailable,
            CallFailure::Overloaded,
            CallFailure::TimedOut,
            CallFailure::Crashed,
            CallFailure::TooDeep,
            CallFailure::Misplaced,
        ] {
            assert_eq!(CallFailure::from_code(kind.code()), kind);
        }
        assert_eq!(CallFailure::from_code(200), CallFailure::Crashed);
    }
}
