//! The relay: moves one publishing module's committed events from its outbox to the
//! bus, in publication order, and removes them from the outbox only once the bus has
//! confirmed them.
//!
//! It wakes when the module commits events (and polls once a second in case a
//! wake-up was missed, or another node wrote the outbox). While the bus refuses, it
//! keeps the events and retries with backoff: the outbox is the buffer, so a broker
//! outage delays events but never loses one. A crash between the bus's confirmation
//! and the removal sends those events again; their ids let subscribers skip them.
//!
//! It sends only rows the host wrote ([`tables::pending`] checks each row's seal); any
//! other row is logged, counted and set aside unsent ([`tables::set_aside`]), so it
//! never holds up the rest.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

use super::bus::Bus;
use super::envelope::Envelope;
use super::tables;
use crate::capabilities::sql::Database;
use crate::faults;
use crate::runtime::backoff::Backoff;
use crate::runtime::shutdown::Shutdown;
use crate::telemetry::metrics::metrics;
use crate::telemetry::trace::TraceContext;

/// Most events read from the outbox and sent in one go.
const BATCH: u32 = 500;
/// How long an idle relay waits before looking at the outbox anyway.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How often a standby relay asks for the lease.
const LEASE_RETRY: Duration = Duration::from_secs(2);
/// Retry waits after a failed send: from the first, doubling, up to the last.
const RETRY: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

fn retry() -> Backoff {
    Backoff::new(RETRY.0, RETRY.1)
}

/// One module's relay.
pub struct Relay {
    /// The publishing module.
    pub module: String,
    /// Its database, which holds its outbox.
    pub database: Arc<Database>,
    /// Woken when the module commits events.
    pub committed: Arc<Notify>,
    /// Where the events go.
    pub bus: Bus,
}

impl Relay {
    /// Relays until `shutdown` (after finishing the batch in hand).
    ///
    /// A module placed on several nodes shares one database (Postgres): one relay at a
    /// time may read its outbox, or two would send the same events in interleaved
    /// order. Each node's relay tries for the module's relay lease and stands by
    /// until it gets it; a node that dies gives it up with its connection.
    pub async fn run(self, shutdown: Shutdown) {
        let _lease = loop {
            match self.database.try_lease("relay").await {
                Ok(Some(lease)) => break lease,
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(module = %self.module, ?error, "taking the relay lease failed; retrying")
                }
            }
            if !shutdown.sleep(LEASE_RETRY).await {
                return;
            }
        };
        let mut retry = retry();
        loop {
            if shutdown.is_triggered() {
                return;
            }
            let tables::Batch {
                ready: pending,
                refused,
            } = match tables::pending(&self.database, &self.module, BATCH).await {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(module = %self.module, ?error, "reading the outbox failed; retrying");
                    shutdown.sleep(retry.next_wait()).await;
                    continue;
                }
            };
            if !refused.is_empty() {
                // Rows the host's `publish` did not write: the module wrote its outbox
                // by hand. Never sent; set aside so they hold nothing up.
                for row in &refused {
                    tracing::error!(
                        module = %self.module,
                        topic = %row.topic,
                        reason = row.reason,
                        "refused a row of the module's outbox: it is not sent"
                    );
                    metrics().refused(&self.module, &row.topic);
                }
                if let Err(error) = tables::set_aside(&self.database, &refused).await {
                    tracing::warn!(module = %self.module, ?error, "setting refused rows aside failed; retrying");
                    shutdown.sleep(retry.next_wait()).await;
                }
                continue;
            }
            if pending.is_empty() {
                tokio::select! {
                    () = self.committed.notified() => {}
                    () = tokio::time::sleep(IDLE_POLL) => {}
                    () = shutdown.triggered() => {}
                }
                continue;
            }
            if faults::active("relay-stall") {
                // Test hook: committed events wait here until the process is killed.
                tracing::warn!(module = %self.module, events = pending.len(), "fault relay-stall: holding events");
                std::future::pending::<()>().await;
            }

            // Each event's relay is a hop of its trace: a child of the publisher's, and
            // the parent of every handler's (the envelope the bus gets names it).
            let (spans, envelopes): (Vec<_>, Vec<_>) = pending
                .iter()
                .map(|row| self.relay_span(&row.envelope))
                .unzip();
            let outcomes = self.bus.send(&envelopes).await;
            if faults::active("relay-crash-after-send") {
                tracing::warn!(module = %self.module, "fault relay-crash-after-send: aborting");
                std::process::abort();
            }
            let mut confirmed = Vec::new();
            let mut refused = None;
            for ((row, outcome), span) in pending.iter().zip(&outcomes).zip(spans) {
                match outcome {
                    Ok(()) => {
                        confirmed.push(row.seq);
                        metrics().published(&self.module, &row.envelope.topic);
                    }
                    Err(error) => {
                        span.record("error", tracing::field::display(error));
                        refused.get_or_insert_with(|| error.clone());
                    }
                }
            }
            // Confirmed events leave the outbox; until that succeeds they stay and may
            // be sent twice, which subscribers' inboxes absorb.
            while let Err(error) = tables::remove(&self.database, &confirmed).await {
                tracing::warn!(module = %self.module, ?error, "removing sent events from the outbox failed; retrying");
                if !shutdown.sleep(retry.next_wait()).await {
                    return;
                }
            }
            match refused {
                None => retry.reset(),
                Some(error) => {
                    tracing::warn!(
                        module = %self.module,
                        bus = self.bus.name(),
                        unsent = pending.len() - confirmed.len(),
                        %error,
                        "the bus did not take every event; they stay in the outbox and are retried"
                    );
                    shutdown.sleep(retry.next_wait()).await;
                }
            }
        }
    }
}

impl Relay {
    /// The span of relaying `envelope` to the bus, and the envelope as the bus gets
    /// it: carrying this span's trace context, so that its handlers are children of
    /// the relay, and the relay the child of the hop that published it. The span
    /// ends when it is dropped, once the bus has answered.
    fn relay_span(&self, envelope: &Envelope) -> (tracing::Span, Envelope) {
        let span = tracing::info_span!(
            "relay",
            module = %self.module,
            topic = %envelope.topic,
            event = %envelope.id,
            bus = self.bus.name(),
            error = tracing::field::Empty,
        );
        let trace = TraceContext::for_span(&span, envelope.trace_parent());
        let sent = Envelope {
            traceparent: Some(trace.to_string()),
            ..envelope.clone()
        };
        (span, sent)
    }
}

/// Samples, once a second until shutdown, how many events wait in `module`'s outbox
/// and how old the oldest is (0 when it is empty). It runs beside the relay, not in
/// it: a relay waiting on an unreachable bus is exactly when the lag matters.
pub async fn watch_lag(module: String, database: Arc<Database>, shutdown: Shutdown) {
    while !shutdown.is_triggered() {
        if let Ok(backlog) = tables::backlog(&database).await {
            let lag = backlog.oldest.map_or(0.0, |ms| {
                (super::envelope::now_ms() - ms).max(0) as f64 / 1000.0
            });
            metrics().outbox_lag(&module, lag);
            metrics().outbox_depth(&module, backlog.depth);
        }
        shutdown.sleep(IDLE_POLL).await;
    }
}
