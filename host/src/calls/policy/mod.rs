//! Call policies: how a call into another module is made — within a deadline, through
//! a bulkhead, past a circuit breaker, retried when that is safe. Each is a tower
//! [`Layer`](tower::Layer) around one call [`Service`](tower::Service), tested alone
//! beside its code, and composed once ([`PolicyStack`]) around the one attempt that
//! reaches the callee here or on another node — so a policy holds the same whether the
//! callee is co-located or not. The layers are generic over what they wrap
//! ([`PolicyRequest`]): the same stack holds an HTTP request forwarded to the module's
//! node ([`crate::calls::forward`]) to the module's policy.
//!
//! From the outside in:
//! - [`retry`]: failed calls of idempotent functions are made again, after a
//!   full-jitter backoff, while a retry budget allows (retries can never multiply load);
//! - [`breaker`]: a callee that keeps failing is not called for a while; a probe
//!   decides when it is back (typed `unavailable` while open);
//! - [`bulkhead`]: at most so many calls at once, a bounded queue of waiting ones
//!   with a queue timeout, and fast shedding past it (typed `overloaded`);
//! - [`deadline`]: each attempt ends by the policy's timeout and never after the
//!   caller's own deadline, which travels with the call (across nodes too).
//!
//! The policies are the deployment's `[policies]` ([`crate::deployment::policies`]):
//! per callee, or per `caller->callee` edge. A callee's breaker, bulkhead and retry
//! budget are shared by all the calls the policy covers ([`PolicyState`]).

/// What every policy service shares: what it answers (its response, by default a
/// call's results, or a typed failure) and that it is always ready — admission happens
/// in `call`, where a refusal is a typed failure, not back-pressure. Used inside
/// `impl Service<…>`.
macro_rules! call_service {
    ($lifetime:lifetime) => {
        call_service!($lifetime, Vec<wasmtime::component::Val>);
    };
    ($lifetime:lifetime, $response:ty) => {
        type Response = $response;
        type Error = $crate::module::CallFailed;
        type Future = $crate::calls::policy::PolicyFuture<$lifetime, $response>;

        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }
    };
}
pub(crate) use call_service;

/// Implements `tower::Service` for a policy layer's service, `$service<S>`, whatever
/// it wraps: any [`PolicyRequest`], any response, and an inner service `S` that answers
/// it or fails typed. `call` receives the layer (`$this`) and the request.
macro_rules! policy_service {
    ($service:ident, fn call(&mut $this:ident, $($request:tt)+) $body:block) => {
        impl<'a, Req, R, S> tower::Service<Req> for $service<S>
        where
            Req: $crate::calls::policy::PolicyRequest<'a>,
            R: Send + 'a,
            S: tower::Service<
                    Req,
                    Response = R,
                    Error = $crate::module::CallFailed,
                    Future = $crate::calls::policy::PolicyFuture<'a, R>,
                > + Clone
                + Send
                + 'static,
        {
            call_service!('a, R);

            fn call(&mut $this, $($request)+: Req) -> $crate::calls::policy::PolicyFuture<'a, R>
                $body
        }
    };
}

pub mod breaker;
pub mod bulkhead;
pub mod deadline;
pub mod retry;

use std::sync::Arc;
use tokio::time::Instant;
use wasmtime::component::Val;

use crate::capabilities::Hop;
use crate::deployment::policies::CallPolicy;
use crate::module::CallFailed;
use crate::runtime::BoxFuture;
use crate::telemetry::metrics::{metrics, PolicyMetrics};
use breaker::{Breaker, BreakerRules, FailureRate};
use bulkhead::Bulkhead;

/// One call, as the policy layers see it: who calls, at which hop, with what. A retry
/// makes the same call again from a clone.
#[derive(Clone)]
pub struct CallRequest<'a> {
    /// The calling module.
    pub caller: &'a str,
    /// Where the call sits in its request (the caller's deadline among it).
    pub hop: Hop,
    /// The arguments.
    pub params: &'a [Val],
    /// Names the edge for messages: `caller → callee.interface#function`.
    pub route: &'a (dyn Fn() -> String + Sync),
    /// When this attempt must end: the earlier of the caller's deadline and the
    /// policy's timeout ([`deadline`] sets it; `None`: the callee's own timeout).
    pub deadline: Option<Instant>,
}

/// What a policy service answers: its response, or a typed failure.
pub type PolicyFuture<'a, R> = BoxFuture<'a, Result<R, CallFailed>>;

/// What a call service answers: the results, or a typed failure.
pub type CallFuture<'a> = PolicyFuture<'a, Vec<Val>>;

/// What the policy layers need of the work they wrap — a call between modules
/// ([`CallRequest`]) or an HTTP request forwarded to another node
/// ([`crate::calls::forward::ForwardRequest`]): the caller's deadline, a place for the
/// attempt's, and the edge's name for messages. A retry clones it.
pub trait PolicyRequest<'a>: Clone + Send + 'a {
    /// When the caller stops waiting, if it ever does.
    fn caller_deadline(&self) -> Option<Instant>;
    /// Sets when this attempt must end ([`deadline`]).
    fn set_deadline(&mut self, deadline: Instant);
    /// Names the edge for messages.
    fn route(&self) -> &'a (dyn Fn() -> String + Sync);
}

impl<'a> PolicyRequest<'a> for CallRequest<'a> {
    fn caller_deadline(&self) -> Option<Instant> {
        self.hop.deadline
    }

    fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = Some(deadline);
    }

    fn route(&self) -> &'a (dyn Fn() -> String + Sync) {
        self.route
    }
}

/// The state a policy keeps across calls, shared by every call it covers: one per
/// policy (a callee's, or an edge's).
pub struct PolicyState {
    /// The `[policies]` key it came from (`payments`, `orders->payments`), for
    /// metrics and messages.
    pub key: String,
    /// The policy.
    pub policy: CallPolicy,
    /// Its circuit breaker, if it has one.
    pub breaker: Option<Breaker>,
    /// Its bulkhead, if it has one.
    pub bulkhead: Option<Bulkhead>,
    /// Its retry budget, if it retries.
    pub budget: Option<tower::retry::budget::TpsBudget>,
    /// Its metrics.
    pub metrics: PolicyMetrics,
}

impl PolicyState {
    /// The state of policy `key`.
    pub fn new(key: String, policy: CallPolicy) -> PolicyState {
        let breaker = policy.breaker.map(|rules| {
            Breaker::with_rules(BreakerRules {
                failures: rules.failures,
                failure_rate: rules.failure_rate.map(|rate| FailureRate {
                    rate,
                    window: rules.window.duration(),
                    min_calls: rules.min_calls,
                }),
                open_for: rules.open_for.duration(),
                max_open_for: rules.open_for.duration() * 8,
            })
        });
        let bulkhead = policy.bulkhead.map(|rules| {
            Bulkhead::new(
                rules.concurrency as usize,
                rules.queue as usize,
                rules.queue_timeout.duration(),
            )
        });
        let budget = policy.retries.as_ref().map(|retries| {
            tower::retry::budget::TpsBudget::new(
                retry::BUDGET_WINDOW,
                retries.min_per_second,
                retries.budget as f32,
            )
        });
        PolicyState {
            metrics: metrics().policy(&key),
            key,
            policy,
            breaker,
            bulkhead,
            budget,
        }
    }
}

/// The policy layers around `attempt`, for calls of one function along one edge
/// under `state` (none: the attempt alone, within the caller's deadline).
/// `idempotent` says whether this function may be retried.
pub type PolicyStack<S> =
    retry::Retry<breaker::BreakerService<bulkhead::BulkheadService<deadline::Deadline<S>>>>;

/// Builds the [`PolicyStack`] around `attempt`.
pub fn stack<S>(attempt: S, state: Option<Arc<PolicyState>>, idempotent: bool) -> PolicyStack<S> {
    let timeout = state
        .as_ref()
        .and_then(|state| state.policy.timeout)
        .map(|timeout| timeout.duration());
    tower::ServiceBuilder::new()
        .layer(retry::RetryLayer::new(state.clone(), idempotent))
        .layer(breaker::BreakerLayer::new(state.clone()))
        .layer(bulkhead::BulkheadLayer::new(state))
        .layer(deadline::DeadlineLayer::new(timeout))
        .service(attempt)
}

/// A call service: what every layer wraps, and is.
pub trait CallService<'a>:
    tower::Service<
        CallRequest<'a>,
        Response = Vec<Val>,
        Error = CallFailed,
        Future = CallFuture<'a>,
    > + Clone
    + Send
    + 'static
{
}

impl<'a, S> CallService<'a> for S where
    S: tower::Service<
            CallRequest<'a>,
            Response = Vec<Val>,
            Error = CallFailed,
            Future = CallFuture<'a>,
        > + Clone
        + Send
        + 'static
{
}

#[cfg(test)]
pub(crate) mod testing;
