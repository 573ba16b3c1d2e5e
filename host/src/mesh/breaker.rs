//! A circuit breaker for one peer node.
//!
//! Closed, it lets every call through and counts consecutive failures. After
//! `failures` in a row it opens: calls fail at once, without touching the network, for
//! `open_for`. Then it lets exactly one call through as a probe (half-open): success
//! closes it, failure opens it for another `open_for`. A dead node so costs its callers
//! one timeout per `open_for`, not one per call, and traffic resumes by itself when the
//! node returns.
//!
//! An admitted call holds an [`Attempt`], which records its outcome; an attempt that is
//! dropped before it records (the caller gave up, its task was cancelled) counts as a
//! failure. Without that, a probe cut short would leave the breaker half-open — and
//! every later call refused — for good.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One peer's breaker.
pub struct Breaker {
    failures: u32,
    open_for: Duration,
    state: Mutex<State>,
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
#[must_use = "an attempt dropped without recording counts as a failure"]
pub struct Attempt<'a> {
    breaker: &'a Breaker,
    kind: Admission,
    recorded: bool,
}

impl Attempt<'_> {
    /// Whether this is the probe of a half-open breaker.
    pub fn is_probe(&self) -> bool {
        self.kind == Admission::Probe
    }

    /// Records how the call ended.
    pub fn record(mut self, succeeded: bool) {
        self.recorded = true;
        self.breaker.record_at(succeeded, Instant::now());
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            self.breaker.record_at(false, Instant::now());
        }
    }
}

impl Breaker {
    /// A closed breaker that opens after `failures` consecutive failures, for `open_for`.
    pub fn new(failures: u32, open_for: Duration) -> Breaker {
        Breaker {
            failures: failures.max(1),
            open_for,
            state: Mutex::new(State::Closed { failed: 0 }),
        }
    }

    /// A call to the peer now, if the breaker lets one through.
    pub fn admit(&self) -> Option<Attempt<'_>> {
        match self.admit_at(Instant::now()) {
            Admission::Refused => None,
            kind => Some(Attempt {
                breaker: self,
                kind,
                recorded: false,
            }),
        }
    }

    /// Whether calls are being refused (open, or a probe is out).
    pub fn is_open(&self) -> bool {
        !matches!(*self.lock(), State::Closed { .. })
    }

    fn admit_at(&self, now: Instant) -> Admission {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Admission::Call,
            State::Open { until } if now >= until => {
                *state = State::Probing;
                Admission::Probe
            }
            State::Open { .. } | State::Probing => Admission::Refused,
        }
    }

    fn record_at(&self, succeeded: bool, now: Instant) {
        let mut state = self.lock();
        *state = match (*state, succeeded) {
            (_, true) => State::Closed { failed: 0 },
            (State::Closed { failed }, false) if failed + 1 < self.failures => {
                State::Closed { failed: failed + 1 }
            }
            (_, false) => State::Open {
                until: now + self.open_for,
            },
        };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a plain value replaced whole; a panic elsewhere cannot tear it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

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
}
