//! A circuit breaker: for one callee (a call policy's), or for one module on one
//! node (the mesh's, which ejects the node from the module's balance).
//!
//! Closed, it lets every call through and counts failures. After `failures` in a row —
//! or, when a rate is set, once that share of the calls in the recent window failed —
//! it opens: calls fail at once, without touching the callee, for `open_for`. Then it
//! lets exactly one call through as a probe (half-open): success closes it, failure
//! opens it again, each time for twice as long, up to `max_open_for`. A dead callee so
//! costs its callers one timeout per open period, not one per call, and traffic
//! resumes by itself when it returns.
//!
//! An admitted call holds an [`Attempt`], which records its outcome; an attempt that is
//! dropped before it records (the caller gave up, its task was cancelled) counts as a
//! failure. Without that, a probe cut short would leave the breaker half-open — and
//! every later call refused — for good.

use std::borrow::Borrow;
use std::sync::{Arc, Mutex};
use std::time::Duration;
// tokio's clock: the same as std's, but tests can pause it.
use tokio::time::Instant;

use crate::module::{CallFailed, CallFailure};

/// When a breaker opens, and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerRules {
    /// Opens after this many failures in a row.
    pub failures: u32,
    /// Also opens when this share of the calls in the window failed, once the window
    /// holds `min_calls`.
    pub failure_rate: Option<FailureRate>,
    /// The first open period.
    pub open_for: Duration,
    /// The longest open period (each failed probe doubles it).
    pub max_open_for: Duration,
}

/// `failure_rate`: a share of failures over a sliding window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailureRate {
    /// The share (0–1] of failed calls that opens the breaker.
    pub rate: f64,
    /// The window the share is counted over.
    pub window: Duration,
    /// Fewer calls than this in the window never open it.
    pub min_calls: u32,
}

/// A breaker.
pub struct Breaker {
    rules: BreakerRules,
    state: Mutex<Inner>,
}

/// The breaker's state and its window of outcomes, under one lock.
struct Inner {
    state: State,
    /// The open period the next opening lasts.
    period: Duration,
    window: Window,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Calls go through; this many have failed in a row.
    Closed { failed: u32 },
    /// Calls fail at once until this instant.
    Open { until: Instant },
    /// One probe is out; other calls fail at once until it ends.
    Probing,
}

/// Outcomes over a sliding window, in ten buckets.
struct Window {
    buckets: [(u32, u32); Window::BUCKETS],
    /// The bucket being filled, and when it began.
    current: usize,
    began: Option<Instant>,
}

impl Window {
    const BUCKETS: usize = 10;

    fn new() -> Window {
        Window {
            buckets: [(0, 0); Window::BUCKETS],
            current: 0,
            began: None,
        }
    }

    /// Counts one outcome at `now`; the calls and failures in the window after it.
    fn record(&mut self, window: Duration, failed: bool, now: Instant) -> (u32, u32) {
        let width = window / Window::BUCKETS as u32;
        let began = *self.began.get_or_insert(now);
        let elapsed = now.saturating_duration_since(began);
        if elapsed >= width {
            // Move on one bucket per width passed, emptying the ones passed over.
            let steps = (elapsed.as_nanos() / width.as_nanos().max(1)) as usize;
            for _ in 0..steps.min(Window::BUCKETS) {
                self.current = (self.current + 1) % Window::BUCKETS;
                self.buckets[self.current] = (0, 0);
            }
            self.began = Some(now);
        }
        let bucket = &mut self.buckets[self.current];
        bucket.0 += 1;
        bucket.1 += u32::from(failed);
        self.buckets
            .iter()
            .fold((0, 0), |(calls, failures), (c, f)| {
                (calls + c, failures + f)
            })
    }
}

/// What the breaker says about a call about to be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead.
    Call,
    /// Go ahead: this call is the probe that decides whether the breaker closes.
    Probe,
    /// Do not call: the peer failed recently.
    Refused,
}

/// A call the breaker let through: say how it ended with [`Attempt::record`]; dropped
/// unrecorded, it counts as a failure.
///
/// It holds its breaker by reference ([`Breaker::admit`]) or shared
/// ([`Breaker::admit_shared`], for an attempt that outlives the borrow: the mesh's
/// background probes).
#[must_use = "an attempt dropped without recording counts as a failure"]
pub struct Attempt<B: Borrow<Breaker>> {
    breaker: B,
    kind: Admission,
    recorded: bool,
}

impl<B: Borrow<Breaker>> Attempt<B> {
    /// An attempt on `breaker`, if it lets one through now.
    fn admitted(breaker: B) -> Option<Attempt<B>> {
        match breaker.borrow().admit_at(Instant::now()) {
            Admission::Refused => None,
            kind => Some(Attempt {
                breaker,
                kind,
                recorded: false,
            }),
        }
    }

    /// Whether this is the probe of a half-open breaker.
    pub fn is_probe(&self) -> bool {
        self.kind == Admission::Probe
    }

    /// Records how the call ended; whether that opened or closed the breaker.
    pub fn record(mut self, succeeded: bool) -> bool {
        self.recorded = true;
        self.breaker.borrow().record_at(succeeded, Instant::now())
    }
}

impl<B: Borrow<Breaker>> Drop for Attempt<B> {
    fn drop(&mut self) {
        if !self.recorded {
            self.breaker.borrow().record_at(false, Instant::now());
        }
    }
}

impl Breaker {
    /// A closed breaker that opens after `failures` consecutive failures, always for
    /// `open_for` (the simplest rules, for tests).
    #[cfg(test)]
    pub fn new(failures: u32, open_for: Duration) -> Breaker {
        Breaker::with_rules(BreakerRules {
            failures,
            failure_rate: None,
            open_for,
            max_open_for: open_for,
        })
    }

    /// A closed breaker following `rules`.
    pub fn with_rules(rules: BreakerRules) -> Breaker {
        let rules = BreakerRules {
            failures: rules.failures.max(1),
            max_open_for: rules.max_open_for.max(rules.open_for),
            ..rules
        };
        Breaker {
            state: Mutex::new(Inner {
                state: State::Closed { failed: 0 },
                period: rules.open_for,
                window: Window::new(),
            }),
            rules,
        }
    }

    /// A call to the peer now, if the breaker lets one through.
    pub fn admit(&self) -> Option<Attempt<&Breaker>> {
        Attempt::admitted(self)
    }

    /// [`Breaker::admit`], for an attempt that holds on to the breaker itself.
    pub fn admit_shared(breaker: &Arc<Breaker>) -> Option<Attempt<Arc<Breaker>>> {
        Attempt::admitted(breaker.clone())
    }

    /// Whether calls are being refused (open, or a probe is out).
    pub fn is_open(&self) -> bool {
        !matches!(self.lock().state, State::Closed { .. })
    }

    /// When the breaker next lets a probe through, while it refuses calls: the end of
    /// its open period, or (a probe being out) one `open_for` from now, by when that
    /// probe has decided; `None` while closed.
    pub fn reopens_at(&self) -> Option<Instant> {
        match self.lock().state {
            State::Closed { .. } => None,
            State::Open { until } => Some(until),
            State::Probing => Some(Instant::now() + self.rules.open_for),
        }
    }

    fn admit_at(&self, now: Instant) -> Admission {
        let mut inner = self.lock();
        match inner.state {
            State::Closed { .. } => Admission::Call,
            State::Open { until } if now >= until => {
                inner.state = State::Probing;
                Admission::Probe
            }
            State::Open { .. } | State::Probing => Admission::Refused,
        }
    }

    /// Records an outcome at `now`; whether the breaker turned from closed to open
    /// or back (a probe going out changes nothing callers see).
    fn record_at(&self, succeeded: bool, now: Instant) -> bool {
        let mut inner = self.lock();
        let was_closed = matches!(inner.state, State::Closed { .. });
        let rules = self.rules;
        let in_window = rules
            .failure_rate
            .map(|rate| (rate, inner.window.record(rate.window, !succeeded, now)));
        let too_many = |failed: u32| {
            failed >= rules.failures
                || in_window.is_some_and(|(rate, (calls, failures))| {
                    calls >= rate.min_calls && f64::from(failures) >= rate.rate * f64::from(calls)
                })
        };
        let next = match (inner.state, succeeded) {
            (State::Closed { .. }, true) => State::Closed { failed: 0 },
            (State::Closed { failed }, false) if !too_many(failed + 1) => {
                State::Closed { failed: failed + 1 }
            }
            // A probe's success closes it; so does a call that was out before it opened.
            (State::Probing | State::Open { .. }, true) => {
                inner.period = rules.open_for;
                inner.window = Window::new();
                State::Closed { failed: 0 }
            }
            (State::Closed { .. }, false) => State::Open {
                until: now + inner.period,
            },
            // A failed probe: open again, for twice as long (up to the longest).
            (State::Probing, false) => {
                inner.period = (inner.period * 2).min(rules.max_open_for);
                State::Open {
                    until: now + inner.period,
                }
            }
            // A call that was out before it opened: it says nothing new.
            (open @ State::Open { .. }, false) => open,
        };
        inner.state = next;
        was_closed != matches!(next, State::Closed { .. })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The state is plain values replaced whole; a panic elsewhere cannot tear it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Wraps a call service in [`BreakerService`].
#[derive(Clone)]
pub struct BreakerLayer {
    state: Option<std::sync::Arc<super::PolicyState>>,
}

impl BreakerLayer {
    /// The breaker of `state`'s policy, if it has one.
    pub fn new(state: Option<std::sync::Arc<super::PolicyState>>) -> BreakerLayer {
        BreakerLayer {
            state: state.filter(|state| state.breaker.is_some()),
        }
    }
}

impl<S> tower::Layer<S> for BreakerLayer {
    type Service = BreakerService<S>;

    fn layer(&self, inner: S) -> BreakerService<S> {
        BreakerService {
            inner,
            state: self.state.clone(),
        }
    }
}

/// Lets calls through while the policy's breaker is closed; records how each ended.
#[derive(Clone)]
pub struct BreakerService<S> {
    inner: S,
    state: Option<std::sync::Arc<super::PolicyState>>,
}

/// Whether a failure says the callee is unwell: it could not be reached, timed out or
/// crashed. A callee at its limit (`overloaded`) is well, only busy, and a chain nested
/// too deep is the callers' doing.
fn counts_against_the_callee(kind: CallFailure) -> bool {
    matches!(
        kind,
        CallFailure::Unavailable | CallFailure::TimedOut | CallFailure::Crashed
    )
}

policy_service!(BreakerService, fn call(&mut self, request) {
    let mut inner = self.inner.clone();
    let Some(state) = self.state.clone() else {
        return inner.call(request);
    };
    Box::pin(async move {
        let Some(breaker) = &state.breaker else {
            return inner.call(request).await;
        };
        // The decisions below are events of the call's span (the policies run inside
        // it), so a trace shows why a call failed at once, or went through as a probe.
        let Some(attempt) = breaker.admit() else {
            // Refused: open, whatever opened it (a call abandoned unrecorded too).
            state.metrics.breaker_open.set(1);
            tracing::info!(policy = %state.key, "refused: the circuit is open");
            return Err(CallFailed::new(
                CallFailure::Unavailable,
                format!(
                    "{}: policy {}: the circuit is open (the callee failed recently); \
                     calls fail at once until a probe succeeds",
                    (request.route())(),
                    state.key
                ),
            ));
        };
        if attempt.is_probe() {
            tracing::info!(policy = %state.key, "probing the callee: one call through the half-open circuit");
        }
        let outcome = inner.call(request).await;
        let healthy = match &outcome {
            Ok(_) => true,
            Err(failed) => !counts_against_the_callee(failed.kind),
        };
        if attempt.record(healthy) {
            let open = breaker.is_open();
            state.metrics.breaker_open.set(i64::from(open));
            if open {
                tracing::warn!(policy = %state.key, "circuit opened: the callee keeps failing");
            } else {
                tracing::info!(policy = %state.key, "circuit closed: the probe succeeded");
            }
        }
        outcome
    })
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_opens_after_consecutive_failures_only() {
        let breaker = Breaker::new(3, Duration::from_secs(10));
        let now = Instant::now();
        breaker.record_at(false, now);
        breaker.record_at(false, now);
        breaker.record_at(true, now); // a success resets the count
        breaker.record_at(false, now);
        breaker.record_at(false, now);
        assert_eq!(breaker.admit_at(now), Admission::Call);
        breaker.record_at(false, now);
        assert_eq!(breaker.admit_at(now), Admission::Refused);
        assert!(breaker.is_open());
    }

    #[test]
    fn after_open_for_one_probe_decides() {
        let breaker = Breaker::new(1, Duration::from_secs(10));
        let start = Instant::now();
        breaker.record_at(false, start);
        assert_eq!(
            breaker.admit_at(start + Duration::from_secs(9)),
            Admission::Refused
        );
        let later = start + Duration::from_secs(10);
        assert_eq!(breaker.admit_at(later), Admission::Probe);
        // Only one probe at a time.
        assert_eq!(breaker.admit_at(later), Admission::Refused);
        // A failed probe opens it again, for a full period.
        breaker.record_at(false, later);
        assert_eq!(
            breaker.admit_at(later + Duration::from_secs(5)),
            Admission::Refused
        );
        let again = later + Duration::from_secs(10);
        assert_eq!(breaker.admit_at(again), Admission::Probe);
        // A successful probe closes it.
        breaker.record_at(true, again);
        assert_eq!(breaker.admit_at(again), Admission::Call);
        assert!(!breaker.is_open());
    }

    #[test]
    fn a_probe_dropped_before_it_records_counts_as_a_failure() {
        let breaker = Breaker::new(1, Duration::from_millis(1));
        breaker.admit().expect("closed").record(false);
        std::thread::sleep(Duration::from_millis(2));
        let probe = breaker.admit().expect("the probe");
        assert!(probe.is_probe());
        assert!(breaker.admit().is_none(), "one probe at a time");
        // The caller gives up: the probe is dropped unrecorded.
        drop(probe);
        assert!(breaker.is_open(), "a dropped probe opens the breaker again");
        std::thread::sleep(Duration::from_millis(2));
        // …and is not stuck half-open: a new probe is let through, and closes it.
        let again = breaker.admit().expect("a new probe after open_for");
        again.record(true);
        assert!(!breaker.is_open());
        let call = breaker.admit().expect("closed");
        assert!(!call.is_probe());
        call.record(true);
    }

    #[test]
    fn each_failed_probe_doubles_the_open_period_up_to_the_longest() {
        let breaker = Breaker::with_rules(BreakerRules {
            failures: 1,
            failure_rate: None,
            open_for: Duration::from_secs(1),
            max_open_for: Duration::from_secs(4),
        });
        let mut now = Instant::now();
        breaker.record_at(false, now);
        for expected in [2, 4, 4] {
            now += Duration::from_secs(5);
            assert_eq!(breaker.admit_at(now), Admission::Probe);
            breaker.record_at(false, now);
            let before = now + Duration::from_secs(expected) - Duration::from_millis(1);
            assert_eq!(breaker.admit_at(before), Admission::Refused, "{expected}s");
            now += Duration::from_secs(expected);
        }
        assert_eq!(breaker.admit_at(now), Admission::Probe);
        breaker.record_at(true, now);
        // Closed again, and the next opening is back to the first period.
        breaker.record_at(false, now);
        assert_eq!(
            breaker.admit_at(now + Duration::from_secs(1)),
            Admission::Probe
        );
    }

    #[test]
    fn a_failure_rate_opens_it_without_failures_in_a_row() {
        let breaker = Breaker::with_rules(BreakerRules {
            failures: 100,
            failure_rate: Some(FailureRate {
                rate: 0.5,
                window: Duration::from_secs(10),
                min_calls: 10,
            }),
            open_for: Duration::from_secs(1),
            max_open_for: Duration::from_secs(1),
        });
        let now = Instant::now();
        // Alternating outcomes: never two failures in a row, half of them failures.
        for i in 0..9 {
            breaker.record_at(i % 2 == 1, now);
        }
        assert_eq!(breaker.admit_at(now), Admission::Call, "too few calls yet");
        breaker.record_at(false, now);
        assert_eq!(breaker.admit_at(now), Admission::Refused, "6 of 10 failed");

        // Failures that have left the window no longer count.
        let breaker = Breaker::with_rules(breaker.rules);
        for _ in 0..9 {
            breaker.record_at(false, now);
        }
        let later = now + Duration::from_secs(11);
        for _ in 0..10 {
            breaker.record_at(true, later);
        }
        breaker.record_at(false, later);
        assert_eq!(breaker.admit_at(later), Admission::Call, "1 of 11 failed");
    }

    #[tokio::test(start_paused = true)]
    async fn the_layer_opens_on_a_failing_callee_and_a_probe_closes_it() {
        use crate::calls::policy::testing::{policy_state, request, Scripted};
        use crate::deployment::policies::{BreakerPolicy, CallPolicy};
        use crate::deployment::units::Timeout;
        use tower::{Layer, ServiceExt};

        let state = policy_state(CallPolicy {
            breaker: Some(BreakerPolicy {
                failures: 3,
                failure_rate: None,
                window: Timeout(Duration::from_secs(10)),
                min_calls: 20,
                open_for: Timeout(Duration::from_secs(1)),
            }),
            ..CallPolicy::default()
        });
        // Fails its first 4 calls, then recovers.
        let callee = Scripted::failing_first(4, CallFailure::Crashed);
        let service = BreakerLayer::new(Some(state.clone())).layer(callee.clone());
        for _ in 0..3 {
            service.clone().oneshot(request(None)).await.unwrap_err();
        }
        assert!(state.breaker.as_ref().unwrap().is_open());
        let refused = service.clone().oneshot(request(None)).await.unwrap_err();
        assert_eq!(refused.kind, CallFailure::Unavailable);
        assert!(refused.message.contains("circuit is open"), "{refused}");
        assert_eq!(
            callee.calls(),
            3,
            "an open circuit does not reach the callee"
        );

        // After open_for, one probe; it fails (the 4th failure), and the circuit
        // stays open twice as long.
        tokio::time::sleep(Duration::from_secs(1)).await;
        service.clone().oneshot(request(None)).await.unwrap_err();
        assert_eq!(callee.calls(), 4);
        tokio::time::sleep(Duration::from_secs(1)).await;
        service.clone().oneshot(request(None)).await.unwrap_err();
        assert_eq!(callee.calls(), 4, "still open: the period doubled");
        tokio::time::sleep(Duration::from_secs(1)).await;
        // The probe succeeds: closed, and every call goes through again.
        service.clone().oneshot(request(None)).await.unwrap();
        service.clone().oneshot(request(None)).await.unwrap();
        assert_eq!(callee.calls(), 6);
        assert!(!state.breaker.as_ref().unwrap().is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_callee_does_not_open_the_circuit() {
        use crate::calls::policy::testing::{policy_state, request, Scripted};
        use crate::deployment::policies::{BreakerPolicy, CallPolicy};
        use crate::deployment::units::Timeout;
        use tower::{Layer, ServiceExt};

        let state = policy_state(CallPolicy {
            breaker: Some(BreakerPolicy {
                failures: 1,
                failure_rate: None,
                window: Timeout(Duration::from_secs(10)),
                min_calls: 20,
                open_for: Timeout(Duration::from_secs(1)),
            }),
            ..CallPolicy::default()
        });
        let callee = Scripted::failing_first(5, CallFailure::Overloaded);
        let service = BreakerLayer::new(Some(state.clone())).layer(callee.clone());
        for _ in 0..5 {
            service.clone().oneshot(request(None)).await.unwrap_err();
        }
        assert!(!state.breaker.as_ref().unwrap().is_open());
        assert_eq!(callee.calls(), 5);
    }
}
