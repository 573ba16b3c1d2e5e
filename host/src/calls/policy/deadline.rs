//! The deadline of each attempt: the policy's `timeout` from now, but never later than
//! the caller's own deadline ([`Hop::deadline`](crate::capabilities::Hop)), which
//! travels with the call to the callee's node. A call whose caller has no time left
//! fails at once, without reaching the callee; one that runs past its deadline is
//! abandoned there (`timed out`), and the callee's instance with it.

use std::time::Duration;
use tokio::time::Instant;

use crate::module::{CallFailed, CallFailure};

/// Wraps a call service in [`Deadline`].
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    timeout: Option<Duration>,
}

impl DeadlineLayer {
    /// Attempts end after `timeout` (the policy's; `None`: only the caller's deadline,
    /// and the callee's own timeout, bound them).
    pub fn new(timeout: Option<Duration>) -> DeadlineLayer {
        DeadlineLayer { timeout }
    }
}

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline {
            inner,
            timeout: self.timeout,
        }
    }
}

/// Sets each attempt's deadline and holds it to it.
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    timeout: Option<Duration>,
}

policy_service!(Deadline, fn call(&mut self, mut request) {
    let now = Instant::now();
    let by_policy = self.timeout.map(|timeout| now + timeout);
    let deadline = match (request.caller_deadline(), by_policy) {
        (Some(caller), Some(policy)) => Some(caller.min(policy)),
        (caller, policy) => caller.or(policy),
    };
    let mut inner = self.inner.clone();
    let timeout = self.timeout;
    Box::pin(async move {
        let Some(deadline) = deadline else {
            return inner.call(request).await;
        };
        let left = deadline.saturating_duration_since(now);
        if left.is_zero() {
            return Err(CallFailed::new(
                CallFailure::TimedOut,
                format!(
                    "{}: the caller's deadline passed before the call was made",
                    (request.route())()
                ),
            ));
        }
        request.set_deadline(deadline);
        let route = request.route();
        match tokio::time::timeout_at(deadline, inner.call(request)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                let whose = match timeout {
                    Some(timeout) if timeout <= left => {
                        format!("the policy's timeout of {timeout:?}")
                    }
                    _ => format!("the caller's deadline ({left:?} left when it was made)"),
                };
                Err(CallFailed::new(
                    CallFailure::TimedOut,
                    format!("{}: the call did not return within {whose}", route()),
                ))
            }
        }
    })
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::policy::testing::{request, Scripted};
    use tower::{Layer, ServiceExt};

    #[tokio::test(start_paused = true)]
    async fn an_attempt_ends_at_the_policy_timeout_or_the_callers_deadline_whichever_is_first() {
        let slow = Scripted::always_ok().taking(Duration::from_secs(10));
        let service = DeadlineLayer::new(Some(Duration::from_secs(2))).layer(slow.clone());

        let started = Instant::now();
        let failed = service.clone().oneshot(request(None)).await.unwrap_err();
        assert_eq!(failed.kind, CallFailure::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert!(
            failed.message.contains("policy's timeout of 2s"),
            "{failed}"
        );

        // The caller has 1s left: that is the deadline, and the callee sees it.
        let started = Instant::now();
        let failed = service
            .clone()
            .oneshot(request(Some(started + Duration::from_secs(1))))
            .await
            .unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert!(failed.message.contains("caller's deadline"), "{failed}");
        assert_eq!(
            slow.deadlines().last().copied().flatten(),
            Some(started + Duration::from_secs(1))
        );

        // No time left: the callee is not called at all.
        let calls = slow.calls();
        let failed = service
            .oneshot(request(Some(Instant::now())))
            .await
            .unwrap_err();
        assert_eq!(failed.kind, CallFailure::TimedOut);
        assert_eq!(slow.calls(), calls);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_timeout_or_a_caller_deadline_the_call_is_left_alone() {
        let slow = Scripted::always_ok().taking(Duration::from_secs(100));
        let service = DeadlineLayer::new(None).layer(slow.clone());
        service.oneshot(request(None)).await.unwrap();
        assert_eq!(slow.deadlines(), [None]);
    }
}
