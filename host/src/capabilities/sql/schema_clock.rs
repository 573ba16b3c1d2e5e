//! When a module's schema last changed, so that connections that knew it before are
//! not lent again.
//!
//! A connection keeps what it learned of the schema: Postgres connections keep the
//! module's statements prepared (with the columns each returns), and SQLite
//! connections compile against the schema they last read, while sqlx keeps the
//! columns it saw beside each statement. When the shape a statement returns changes
//! under it — a migration adds a column that a `SELECT *` reads — Postgres refuses
//! the kept statement, and sqlx's SQLite worker, meeting more columns than it kept,
//! panics, which leaves the connection dead. The clock makes a pool close every
//! connection older than the last change at its next loan, instead of lending it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The time of a module's last schema change, shared by its pools (read before every
/// loan, so one atomic load).
#[derive(Debug)]
pub struct SchemaClock {
    /// What the clock counts from.
    start: Instant,
    /// Nanoseconds from `start` to the last change, plus one; 0 if none.
    changed: AtomicU64,
}

impl Default for SchemaClock {
    fn default() -> Self {
        SchemaClock::new()
    }
}

impl SchemaClock {
    /// A clock that has seen no change.
    pub fn new() -> SchemaClock {
        SchemaClock {
            start: Instant::now(),
            changed: AtomicU64::new(0),
        }
    }

    /// Records a change of the schema, now.
    pub fn mark(&self) {
        let now = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        self.changed.fetch_max(now + 1, Ordering::Relaxed);
    }

    /// Whether a connection `age` old (sqlx's `PoolConnectionMetadata::age`) was
    /// opened before the last change.
    pub fn predates_change(&self, age: Duration) -> bool {
        match self.changed.load(Ordering::Relaxed) {
            0 => false,
            changed => {
                let opened = self.start.elapsed().saturating_sub(age);
                u64::try_from(opened.as_nanos()).unwrap_or(u64::MAX) < changed - 1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connections_opened_before_the_last_change_are_stale() {
        let clock = SchemaClock::new();
        assert!(
            !clock.predates_change(Duration::from_secs(3600)),
            "no change yet"
        );
        std::thread::sleep(Duration::from_millis(5));
        let old = clock.start.elapsed(); // opened when the clock started
        clock.mark();
        assert!(clock.predates_change(old));
        assert!(!clock.predates_change(Duration::ZERO), "opened just now");
        std::thread::sleep(Duration::from_millis(5));
        // One opened after the change, 1 ms ago.
        assert!(!clock.predates_change(Duration::from_millis(1)));
        clock.mark();
        assert!(clock.predates_change(Duration::from_millis(1)));
    }
}
