//! A scripted callee for the policy layers' tests: it fails when told to, takes as
//! long as told to, and counts what it saw.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use super::{CallFuture, CallRequest, PolicyState};
use crate::capabilities::Hop;
use crate::deployment::policies::CallPolicy;
use crate::module::{CallFailed, CallFailure};
use crate::telemetry::trace::TraceContext;

/// A callee whose outcomes follow a script.
#[derive(Clone)]
pub struct Scripted {
    fails: Arc<dyn Fn(usize) -> Option<CallFailure> + Send + Sync>,
    takes: Duration,
    seen: Arc<Seen>,
}

#[derive(Default)]
struct Seen {
    calls: AtomicUsize,
    running: AtomicUsize,
    most_at_once: AtomicUsize,
    deadlines: Mutex<Vec<Option<Instant>>>,
}

impl Scripted {
    /// Never fails.
    pub fn always_ok() -> Scripted {
        Scripted::failing(|_| None)
    }

    /// Fails its first `n` calls with `kind`, then succeeds.
    pub fn failing_first(n: usize, kind: CallFailure) -> Scripted {
        Scripted::failing(move |call| (call < n).then_some(kind))
    }

    /// Fails every `n`th call (the first among them) with `kind`.
    pub fn failing_every(n: usize, kind: CallFailure) -> Scripted {
        Scripted::failing(move |call| call.is_multiple_of(n).then_some(kind))
    }

    fn failing(fails: impl Fn(usize) -> Option<CallFailure> + Send + Sync + 'static) -> Scripted {
        Scripted {
            fails: Arc::new(fails),
            takes: Duration::ZERO,
            seen: Arc::default(),
        }
    }

    /// Each call takes `takes`.
    pub fn taking(mut self, takes: Duration) -> Scripted {
        self.takes = takes;
        self
    }

    /// Calls that reached it.
    pub fn calls(&self) -> usize {
        self.seen.calls.load(Ordering::SeqCst)
    }

    /// The most calls it ran at once.
    pub fn most_at_once(&self) -> usize {
        self.seen.most_at_once.load(Ordering::SeqCst)
    }

    /// The deadline each call came with.
    pub fn deadlines(&self) -> Vec<Option<Instant>> {
        self.seen.deadlines.lock().unwrap().clone()
    }
}

impl<'a> tower::Service<CallRequest<'a>> for Scripted {
    call_service!('a);

    fn call(&mut self, request: CallRequest<'a>) -> CallFuture<'a> {
        let this = self.clone();
        Box::pin(async move {
            let call = this.seen.calls.fetch_add(1, Ordering::SeqCst);
            this.seen.deadlines.lock().unwrap().push(request.deadline);
            let running = this.seen.running.fetch_add(1, Ordering::SeqCst) + 1;
            this.seen.most_at_once.fetch_max(running, Ordering::SeqCst);
            tokio::time::sleep(this.takes).await;
            this.seen.running.fetch_sub(1, Ordering::SeqCst);
            match (this.fails)(call) {
                None => Ok(Vec::new()),
                Some(kind) => Err(CallFailed::new(
                    kind,
                    format!("scripted failure of call {call}"),
                )),
            }
        })
    }
}

/// A call from `tester` with `deadline` as the caller's.
pub fn request(deadline: Option<Instant>) -> CallRequest<'static> {
    static ROUTE: fn() -> String = || "tester → callee.f".to_string();
    let mut hop = Hop::start(TraceContext::new_root(), None, None);
    hop.deadline = deadline;
    CallRequest {
        caller: "tester",
        hop,
        params: &[],
        route: &ROUTE,
        deadline: None,
    }
}

/// The state of `policy`, under the key `callee`.
pub fn policy_state(policy: CallPolicy) -> Arc<PolicyState> {
    Arc::new(PolicyState::new("callee".into(), policy))
}
