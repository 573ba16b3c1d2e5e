//! Retries: a failed call of a function the callee's owner declared idempotent is made
//! again, up to `attempts` more times, each after a full-jitter exponential backoff —
//! but only while the policy's retry budget allows it (in the manner of linkerd: a
//! share of the calls made in the last ten seconds, plus a small floor per second), so
//! a failing callee sees at most that much more load, never a multiple of it. A retry
//! that would start after the caller's deadline is not made.
//!
//! Every failure but `too deep` is retried (a call nested too deep will be again). A
//! function not listed as idempotent is never retried: a charge made twice is worse
//! than a charge that failed.

use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tower::retry::budget::Budget;

use super::PolicyState;
use crate::module::CallFailure;
use crate::runtime::backoff::{Backoff, Jitter};

/// How far back the retry budget counts calls.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// Wraps a call service in [`Retry`].
#[derive(Clone)]
pub struct RetryLayer {
    state: Option<Arc<PolicyState>>,
    idempotent: bool,
}

impl RetryLayer {
    /// Retries by `state`'s policy, if the function is `idempotent`.
    pub fn new(state: Option<Arc<PolicyState>>, idempotent: bool) -> RetryLayer {
        RetryLayer { state, idempotent }
    }
}

impl<S> tower::Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            state: self.state.clone().filter(|state| state.budget.is_some()),
            idempotent: self.idempotent,
        }
    }
}

/// Makes failed calls again, within the budget.
#[derive(Clone)]
pub struct Retry<S> {
    inner: S,
    state: Option<Arc<PolicyState>>,
    idempotent: bool,
}

policy_service!(Retry, fn call(&mut self, request) {
    let mut inner = self.inner.clone();
    let Some(state) = self.state.clone() else {
        return inner.call(request);
    };
    let (Some(budget), Some(rules)) = (&state.budget, &state.policy.retries) else {
        return inner.call(request);
    };
    // Every call the policy covers earns the budget, retried or not.
    budget.deposit();
    if !self.idempotent {
        return inner.call(request);
    }
    let (attempts, backoff) = (rules.attempts, rules.backoff.duration());
    let max_backoff = rules.max_backoff.duration();
    Box::pin(async move {
        let mut waits = Backoff::with_jitter(backoff, max_backoff, Jitter::Full);
        let mut made = 0;
        loop {
            let failed = match inner.clone().call(request.clone()).await {
                Ok(results) => return Ok(results),
                Err(failed) => failed,
            };
            if made == attempts || failed.kind == CallFailure::TooDeep {
                return Err(failed);
            }
            let wait = waits.next_wait();
            let too_late = request
                .caller_deadline()
                .is_some_and(|deadline| Instant::now() + wait >= deadline);
            if too_late {
                return Err(failed);
            }
            let Some(budget) = &state.budget else {
                return Err(failed);
            };
            if !budget.withdraw() {
                state.metrics.budget_exhausted.inc();
                // Inside the call's span: an event of it in its trace.
                tracing::info!(policy = %state.key, error = %failed, "not retried: the retry budget is spent");
                return Err(failed);
            }
            made += 1;
            state.metrics.retried.inc();
            tracing::info!(
                policy = %state.key,
                attempt = made,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                error = %failed,
                "retrying a failed call"
            );
            tokio::time::sleep(wait).await;
        }
    })
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::policy::testing::{policy_state, request, Scripted};
    use crate::deployment::policies::{CallPolicy, RetryPolicy};
    use crate::deployment::units::Timeout;
    use tower::{Layer, ServiceExt};

    fn retrying(attempts: u32, budget: f64, min_per_second: u32) -> Arc<PolicyState> {
        policy_state(CallPolicy {
            retries: Some(RetryPolicy {
                attempts,
                idempotent: vec!["f".into()],
                backoff: Timeout(Duration::from_millis(10)),
                max_backoff: Timeout(Duration::from_millis(100)),
                budget,
                min_per_second,
            }),
            ..CallPolicy::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn an_idempotent_call_is_retried_until_it_succeeds() {
        let callee = Scripted::failing_first(2, CallFailure::Crashed);
        let service = RetryLayer::new(Some(retrying(3, 0.2, 10)), true).layer(callee.clone());
        service.oneshot(request(None)).await.unwrap();
        assert_eq!(callee.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn other_functions_and_calls_nested_too_deep_are_never_retried() {
        let callee = Scripted::failing_first(1, CallFailure::Crashed);
        let service = RetryLayer::new(Some(retrying(3, 0.2, 10)), false).layer(callee.clone());
        service.oneshot(request(None)).await.unwrap_err();
        assert_eq!(callee.calls(), 1, "not idempotent: one call");

        let callee = Scripted::failing_first(1, CallFailure::TooDeep);
        let service = RetryLayer::new(Some(retrying(3, 0.2, 10)), true).layer(callee.clone());
        service.oneshot(request(None)).await.unwrap_err();
        assert_eq!(callee.calls(), 1, "too deep: one call");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_the_attempts_and_before_the_callers_deadline() {
        let callee = Scripted::failing_first(100, CallFailure::Unavailable);
        let service = RetryLayer::new(Some(retrying(2, 1.0, 100)), true).layer(callee.clone());
        service.clone().oneshot(request(None)).await.unwrap_err();
        assert_eq!(callee.calls(), 3, "the first call and two retries");

        // No time left for a wait: no retry.
        let callee = Scripted::failing_first(100, CallFailure::Unavailable);
        let service = RetryLayer::new(Some(retrying(2, 1.0, 100)), true).layer(callee.clone());
        let deadline = Instant::now() + Duration::from_micros(1);
        service.oneshot(request(Some(deadline))).await.unwrap_err();
        assert_eq!(callee.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_bounds_the_extra_load_on_a_failing_callee() {
        // Half the calls fail; with unlimited retries the callee would see ~2x the
        // calls. A 10% budget with a floor of 1/s (10 over the window) keeps it near
        // 1.1x.
        let callee = Scripted::failing_every(2, CallFailure::Crashed);
        let service = RetryLayer::new(Some(retrying(3, 0.1, 1)), true).layer(callee.clone());
        let calls = 1000;
        for _ in 0..calls {
            let _ = service.clone().oneshot(request(None)).await;
        }
        let seen = callee.calls();
        assert!(
            seen <= calls + calls / 10 + 10 + 1,
            "{seen} calls for {calls}: the budget did not hold"
        );
        assert!(seen > calls, "some calls were retried");
    }
}
