//! A bulkhead with a queue: at most `concurrency` calls at once; up to `queue` more
//! wait for a place, each at most `queue_timeout`; past that, calls fail at once
//! (`overloaded`). A burst so waits briefly instead of failing, and a flood is shed
//! fast instead of piling up behind a slow callee.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::PolicyState;
use crate::module::{CallFailed, CallFailure};
use prometheus_client::metrics::gauge::Gauge;

/// The places and the queue.
pub struct Bulkhead {
    places: Arc<Semaphore>,
    /// Calls waiting for a place now.
    waiting: AtomicUsize,
    queue: usize,
    queue_timeout: Duration,
}

/// Why the bulkhead refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// Every place was taken and the queue was full.
    QueueFull,
    /// The call waited `queue_timeout` without getting a place.
    WaitedTooLong,
}

impl Bulkhead {
    /// `concurrency` places, and a queue of `queue` waiting at most `queue_timeout`.
    pub fn new(concurrency: usize, queue: usize, queue_timeout: Duration) -> Bulkhead {
        Bulkhead {
            places: Arc::new(Semaphore::new(concurrency.max(1))),
            waiting: AtomicUsize::new(0),
            queue,
            queue_timeout,
        }
    }

    /// A place for one call, at once, or after waiting in the queue; the time waited.
    /// `queued` follows how many wait, `in_use` how many hold a place.
    pub async fn admit(&self, queued: &Gauge, in_use: &Gauge) -> Result<(Place, Duration), Shed> {
        let place = |permit| {
            in_use.inc();
            Place {
                _permit: permit,
                in_use: in_use.clone(),
            }
        };
        if let Ok(permit) = self.places.clone().try_acquire_owned() {
            return Ok((place(permit), Duration::ZERO));
        }
        // Join the queue if it has room: count first, so two calls cannot both take
        // its last place.
        if self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |waiting| {
                (waiting < self.queue).then_some(waiting + 1)
            })
            .is_err()
        {
            return Err(Shed::QueueFull);
        }
        queued.inc();
        let _leave = Leave(&self.waiting, queued);
        let started = Instant::now();
        match tokio::time::timeout(self.queue_timeout, self.places.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok((place(permit), started.elapsed())),
            // The semaphore is never closed; a timeout is the only way to fail.
            _ => Err(Shed::WaitedTooLong),
        }
    }

    /// Calls waiting for a place now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

/// A call's place in the bulkhead, given back (and no longer counted in use) when
/// the call ends.
pub struct Place {
    _permit: OwnedSemaphorePermit,
    in_use: Gauge,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.in_use.dec();
    }
}

/// Leaves the queue when dropped: when the call got its place, gave up, or was
/// cancelled while waiting.
struct Leave<'a>(&'a AtomicUsize, &'a Gauge);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        self.1.dec();
    }
}

/// Wraps a call service in [`BulkheadService`].
#[derive(Clone)]
pub struct BulkheadLayer {
    state: Option<Arc<PolicyState>>,
}

impl BulkheadLayer {
    /// The bulkhead of `state`'s policy, if it has one.
    pub fn new(state: Option<Arc<PolicyState>>) -> BulkheadLayer {
        BulkheadLayer {
            state: state.filter(|state| state.bulkhead.is_some()),
        }
    }
}

impl<S> tower::Layer<S> for BulkheadLayer {
    type Service = BulkheadService<S>;

    fn layer(&self, inner: S) -> BulkheadService<S> {
        BulkheadService {
            inner,
            state: self.state.clone(),
        }
    }
}

/// Admits each call through the policy's bulkhead.
#[derive(Clone)]
pub struct BulkheadService<S> {
    inner: S,
    state: Option<Arc<PolicyState>>,
}

policy_service!(BulkheadService, fn call(&mut self, request) {
    let mut inner = self.inner.clone();
    let Some(state) = self.state.clone() else {
        return inner.call(request);
    };
    Box::pin(async move {
        let Some(bulkhead) = &state.bulkhead else {
            return inner.call(request).await;
        };
        let admitted = bulkhead
            .admit(&state.metrics.queued, &state.metrics.in_use)
            .await;
        let _permit = match admitted {
            Ok((permit, waited)) => {
                if !waited.is_zero() {
                    state.metrics.waited.observe(waited.as_secs_f64());
                }
                permit
            }
            Err(shed) => {
                state.metrics.shed.inc();
                tracing::info!(policy = %state.key, reason = ?shed, "shed by the bulkhead");
                let why = match shed {
                    Shed::QueueFull => "every place is taken and the queue is full".to_string(),
                    Shed::WaitedTooLong => format!(
                        "no place came free within the queue timeout of {:?}",
                        bulkhead.queue_timeout
                    ),
                };
                return Err(CallFailed::new(
                    CallFailure::Overloaded,
                    format!("{}: policy {}: {why}", (request.route())(), state.key),
                ));
            }
        };
        inner.call(request).await
    })
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::policy::testing::{policy_state, request, Scripted};
    use crate::deployment::policies::{BulkheadPolicy, CallPolicy};
    use crate::deployment::units::Timeout;
    use tower::{Layer, ServiceExt};

    fn bulkheaded(concurrency: u32, queue: u32, queue_timeout: Duration) -> Arc<PolicyState> {
        policy_state(CallPolicy {
            bulkhead: Some(BulkheadPolicy {
                concurrency,
                queue,
                queue_timeout: Timeout(queue_timeout),
            }),
            ..CallPolicy::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_waits_in_the_queue_and_is_served() {
        let callee = Scripted::always_ok().taking(Duration::from_millis(10));
        let state = bulkheaded(2, 8, Duration::from_secs(1));
        let service = BulkheadLayer::new(Some(state)).layer(callee.clone());
        // Ten at once: two run, eight wait their turn; all are served.
        let calls: Vec<_> = (0..10)
            .map(|_| tokio::spawn(service.clone().oneshot(request(None))))
            .collect();
        for call in calls {
            call.await.unwrap().unwrap();
        }
        assert_eq!(callee.calls(), 10);
        assert_eq!(callee.most_at_once(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_queue_calls_are_shed_at_once_and_waiters_time_out() {
        let callee = Scripted::always_ok().taking(Duration::from_secs(5));
        let state = bulkheaded(1, 1, Duration::from_millis(100));
        let service = BulkheadLayer::new(Some(state.clone())).layer(callee.clone());
        let running = tokio::spawn(service.clone().oneshot(request(None)));
        tokio::task::yield_now().await;
        let waiting = tokio::spawn(service.clone().oneshot(request(None)));
        tokio::task::yield_now().await;
        assert_eq!(state.bulkhead.as_ref().unwrap().waiting(), 1);

        // The queue is full: refused without waiting.
        let started = Instant::now();
        let shed = service.clone().oneshot(request(None)).await.unwrap_err();
        assert_eq!(shed.kind, CallFailure::Overloaded);
        assert!(shed.message.contains("queue is full"), "{shed}");
        assert_eq!(started.elapsed(), Duration::ZERO);

        // The waiter gives up after the queue timeout, and leaves the queue.
        let waited = waiting.await.unwrap().unwrap_err();
        assert!(
            waited.message.contains("queue timeout of 100ms"),
            "{waited}"
        );
        assert_eq!(state.bulkhead.as_ref().unwrap().waiting(), 0);
        running.await.unwrap().unwrap();
        assert_eq!(callee.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_calls_running_and_waiting_are_counted_while_they_do() {
        let callee = Scripted::always_ok().taking(Duration::from_secs(1));
        // A policy of its own: its gauges are this test's alone.
        let policy = CallPolicy {
            bulkhead: Some(BulkheadPolicy {
                concurrency: 2,
                queue: 4,
                queue_timeout: Timeout(Duration::from_secs(10)),
            }),
            ..CallPolicy::default()
        };
        let state = Arc::new(PolicyState::new("bulkhead-gauges".into(), policy));
        let service = BulkheadLayer::new(Some(state.clone())).layer(callee.clone());
        let calls: Vec<_> = (0..3)
            .map(|_| tokio::spawn(service.clone().oneshot(request(None))))
            .collect();
        tokio::task::yield_now().await;
        let gauges = &state.metrics;
        assert_eq!((gauges.in_use.get(), gauges.queued.get()), (2, 1));
        for call in calls {
            call.await.unwrap().unwrap();
        }
        assert_eq!((gauges.in_use.get(), gauges.queued.get()), (0, 0));
    }
}
