//! The span an instance's work is logged in.
//!
//! A module's own output (its stdout and stderr lines) and everything the host logs for
//! it should nest under the request, call or event delivery that caused it. An instance
//! serves one piece of work at a time but may serve many in its life (a warm instance),
//! and some of its output is written from tasks of its own, outside the span of the
//! work — so the instance keeps a shared handle to "the span of the work it serves now",
//! moved on each time it is given new work.

use std::sync::{Arc, Mutex};

/// The span an instance's current work belongs to.
#[derive(Clone)]
pub struct LogSpan(Arc<Mutex<tracing::Span>>);

impl LogSpan {
    /// A handle starting at the current span.
    pub fn current() -> LogSpan {
        LogSpan(Arc::new(Mutex::new(tracing::Span::current())))
    }

    /// Logs the instance's output in the current span from now on: a warm instance
    /// moves on to the call it serves next.
    pub fn follow_current(&self) {
        if let Ok(mut span) = self.0.lock() {
            *span = tracing::Span::current();
        }
    }

    /// Lets go of the span once the work is done: an idle warm instance must not hold
    /// its last call's span open, or that span would end (in the log, and at the
    /// trace collector) only when the instance serves again.
    pub fn release(&self) {
        if let Ok(mut span) = self.0.lock() {
            *span = tracing::Span::none();
        }
    }

    /// The span, to log in.
    pub fn get(&self) -> tracing::Span {
        self.0
            .lock()
            .map(|span| span.clone())
            .unwrap_or_else(|_| tracing::Span::none())
    }
}
