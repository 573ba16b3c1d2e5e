//! Fault injection for the tests of what must survive a crash.
//!
//! `MODHOST_FAULTS` names faults, comma-separated, that the host then provokes at fixed
//! points, so a test can kill a node at exactly the moment it means to:
//!
//! | fault | where | what happens |
//! | --- | --- | --- |
//! | `relay-stall` | the outbox relay, after reading committed events | it holds them and never sends (kill the node to crash "between commit and send") |
//! | `relay-crash-after-send` | the outbox relay, after the bus confirmed a batch | the process aborts before the events leave the outbox (they are sent again after restart) |
//! | `delivery-stall` | a subscriber's delivery, after reading a batch from the bus | it holds the batch unhandled and unacknowledged until the node stops (events left owing on the bus) |
//!
//! Unset — as in production — nothing is ever injected, and checking costs a load.

use std::collections::BTreeSet;
use std::sync::OnceLock;

/// The environment variable naming the faults to inject.
pub const ENV: &str = "MODHOST_FAULTS";

/// Whether fault `name` is to be injected in this process.
pub fn active(name: &str) -> bool {
    static FAULTS: OnceLock<BTreeSet<String>> = OnceLock::new();
    FAULTS
        .get_or_init(|| {
            let faults: BTreeSet<String> = std::env::var(ENV)
                .unwrap_or_default()
                .split(',')
                .map(|fault| fault.trim().to_string())
                .filter(|fault| !fault.is_empty())
                .collect();
            if !faults.is_empty() {
                tracing::warn!(faults = ?faults, "fault injection is on ({ENV}); never in production");
            }
            faults
        })
        .contains(name)
}
