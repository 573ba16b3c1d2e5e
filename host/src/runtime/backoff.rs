//! Waiting between retries: exponential, capped, with jitter.
//!
//! Each wait doubles the last, from `base` up to `max`; the actual wait is drawn at
//! random below that ceiling, so that many tasks failing together (every relay when the
//! broker goes away) do not retry together. [`Jitter::Equal`] keeps at least half of
//! the ceiling, which suits the host's own retries (never a busy loop);
//! [`Jitter::Full`] draws from the whole range, which spreads load best.

use std::time::Duration;

/// How much of each wait is random.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Anywhere from zero to the ceiling.
    Full,
    /// From half the ceiling to the ceiling.
    Equal,
}

/// The waits of one run of retries; [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    ceiling: Duration,
    jitter: Jitter,
}

impl Backoff {
    /// Waits from `base`, doubling to at most `max`, at least half of each ceiling.
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff::with_jitter(base, max, Jitter::Equal)
    }

    /// Waits from `base`, doubling to at most `max`, drawn as `jitter` says.
    pub fn with_jitter(base: Duration, max: Duration, jitter: Jitter) -> Backoff {
        Backoff {
            base,
            max: max.max(base),
            ceiling: base,
            jitter,
        }
    }

    /// The next wait; the one after may be twice as long.
    pub fn next_wait(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (self.ceiling * 2).min(self.max);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        let drawn = match self.jitter {
            Jitter::Full => fastrand::u64(0..=nanos),
            Jitter::Equal => nanos / 2 + fastrand::u64(0..=nanos - nanos / 2),
        };
        Duration::from_nanos(drawn)
    }

    /// Starts over from `base` (the operation succeeded).
    pub fn reset(&mut self) {
        self.ceiling = self.base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_stay_within_their_jitter() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(100), ms(1000));
        for ceiling in [100, 200, 400, 800, 1000, 1000] {
            let wait = backoff.next_wait();
            assert!(
                wait >= ms(ceiling / 2) && wait <= ms(ceiling),
                "{wait:?} for {ceiling}"
            );
        }
        backoff.reset();
        assert!(backoff.next_wait() <= ms(100));

        let mut full = Backoff::with_jitter(ms(10), ms(10), Jitter::Full);
        let waits: Vec<Duration> = (0..200).map(|_| full.next_wait()).collect();
        assert!(waits.iter().all(|w| *w <= ms(10)));
        assert!(
            waits.iter().any(|w| *w < ms(5)),
            "full jitter reaches below half"
        );
    }
}
