//! Delivery: one subscribing module's consumer loop.
//!
//! Events come off the bus in batches. A batch runs in **one transaction** on the
//! module's database:
//!
//! 1. record every event's id in the module's inbox (one statement) — an id already
//!    there was handled before (a redelivery after a crash): that event is skipped;
//! 2. call the module's `handle(event, tx)` for each new event, in an instance of its
//!    own, under the module's limits;
//! 3. all `ok`: commit. An `err`, a trap, a timeout: roll the whole batch back, run
//!    the events before the failed one again as a batch of their own (they succeeded;
//!    it commits them), then retry the failed one on its own.
//!
//! One commit and one inbox statement per batch, rather than per event, is what makes
//! batches cheap; a failure costs re-running the events before it.
//!
//! The bus position moves on only after the commit, so a crash at any point either
//! replays events whose effects were rolled back, or replays events whose inbox record
//! makes them skipped: each handler's effects happen once.
//!
//! A failed event is retried with backoff (doubling up to `max_backoff`), holding back
//! the events behind it, so events of one key stay in order. After `max_attempts`
//! failures it goes to the module's dead-letter topic with the error, is recorded in
//! the inbox as dead-lettered, and delivery moves on. When the host itself cannot do
//! its part (the database is unreachable, a commit fails), nothing counts as an
//! attempt: it waits and tries again, so an outage never dead-letters an event.

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;
use wasmtime::component::{Instance, Resource};
use wasmtime::Store;

use super::bindings::modhost::events::types::Event;
use super::bus::{Bus, Consumer, Delivery};
use super::envelope::{now_ms, Envelope};
use super::tables::{self, Outcome};
use super::EventsSlice;
use crate::capabilities::sql::{Database, Error, Transaction};
use crate::capabilities::{Hop, InstanceState, InstanceWork, ModuleRunner};
use crate::deployment::events::dead_letter_topic;
use crate::deployment::EventsSettings;
use crate::runtime::backoff::Backoff;
use crate::runtime::shutdown::Shutdown;
use crate::runtime::BoxFuture;
use crate::telemetry::metrics::metrics;
use crate::telemetry::trace::TraceContext;

/// How often a subscriber forgets inbox records older than the retention.
const FORGET_EVERY: Duration = Duration::from_secs(3600);
/// The headers a dead letter carries beside the original event's own (all starting
/// with [`dead_letter::PREFIX`]).
pub mod dead_letter {
    /// What every dead-letter header name starts with.
    pub const PREFIX: &str = "modhost-dead-letter-";
    /// The topic the event was delivered on.
    pub const TOPIC: &str = "modhost-dead-letter-topic";
    /// The subscribing module that gave it up.
    pub const MODULE: &str = "modhost-dead-letter-module";
    /// How many attempts failed.
    pub const ATTEMPTS: &str = "modhost-dead-letter-attempts";
    /// The last attempt's error.
    pub const ERROR: &str = "modhost-dead-letter-error";
    /// When it was given up (ms since the epoch).
    pub const AT: &str = "modhost-dead-letter-at";
}

/// Waits after the host's own failures (database, bus): from the first, doubling.
const HOST_RETRY: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

fn host_retry() -> Backoff {
    Backoff::new(HOST_RETRY.0, HOST_RETRY.1)
}

/// One subscribing module, fed by its consumer.
pub struct Subscriber {
    /// Runs the module's handler: each delivery in a version picked as for any work
    /// (a canary gets its share), under the module's bulkhead and limits.
    pub runner: Arc<dyn ModuleRunner>,
    /// Its database: its inbox, and the transaction handlers write in.
    pub database: Arc<Database>,
    /// Its consumer group's reader.
    pub consumer: Consumer,
    /// The bus, for dead letters.
    pub bus: Bus,
    /// Batch size, attempts, backoff, and how long inbox records are kept.
    pub settings: EventsSettings,
}

/// How a run of events through the handler ended.
enum Run {
    /// Every event was handled (or skipped as a duplicate) and committed.
    Done,
    /// The handler failed on event `failed`; nothing was committed.
    Failed { failed: usize, error: String },
    /// The host could not do its part; nothing was committed and no attempt counts.
    HostFailed(String),
}

impl Subscriber {
    fn name(&self) -> &str {
        self.runner.module()
    }

    /// Delivers until `shutdown`. Events not yet acknowledged when it stops are
    /// delivered again at the next start.
    pub async fn run(mut self, shutdown: Shutdown) {
        let mut retry = host_retry();
        let mut forgotten = tokio::time::Instant::now();
        self.forget_old().await;
        loop {
            if shutdown.is_triggered() {
                return;
            }
            if forgotten.elapsed() >= FORGET_EVERY {
                self.forget_old().await;
                forgotten = tokio::time::Instant::now();
            }
            let max = self.settings.batch as usize;
            let batch = tokio::select! {
                batch = self.consumer.next_batch(max) => batch,
                () = shutdown.triggered() => continue,
            };
            match batch {
                Ok(batch) if crate::faults::active("delivery-stall") => {
                    // Test hook: the events stay on the bus, unacknowledged, until
                    // the node stops.
                    tracing::warn!(module = %self.name(), events = batch.len(), "fault delivery-stall: holding events");
                    shutdown.triggered().await;
                }
                Ok(batch) => {
                    retry.reset();
                    self.deliver(batch, &shutdown).await;
                }
                Err(error) => {
                    tracing::warn!(module = %self.name(), error = %format!("{error:#}"), "reading events from the bus failed; retrying");
                    shutdown.sleep(retry.next_wait()).await;
                }
            }
        }
    }

    /// Delivers one batch: returns when every event was handled or dead-lettered and
    /// acknowledged, or when shutdown begins.
    async fn deliver(&mut self, batch: Vec<Delivery>, shutdown: &Shutdown) {
        let mut rest = &batch[..];
        // The first attempt's error of `rest[0]`, once it failed inside a batch.
        let mut first_failed: Option<String> = None;
        let mut retry = host_retry();
        while !rest.is_empty() {
            if shutdown.is_triggered() {
                return;
            }
            if let Some(error) = first_failed.take() {
                if !self.deliver_alone(&rest[0], 2, Some(error), shutdown).await {
                    return;
                }
                rest = &rest[1..];
                continue;
            }
            match self.run_batch(rest, 1).await {
                Run::Done => {
                    self.ack(rest, shutdown).await;
                    return;
                }
                Run::HostFailed(error) => {
                    tracing::warn!(module = %self.name(), %error, "delivering events failed on the host's side; retrying");
                    shutdown.sleep(retry.next_wait()).await;
                }
                Run::Failed { failed: 0, error } => first_failed = Some(error),
                Run::Failed { failed, error } => {
                    // The events before the failed one succeeded: commit them as a
                    // batch of their own, then retry the failed one alone. Should one
                    // of them fail this time, the loop starts over from `rest`.
                    if let Run::Done = self.run_batch(&rest[..failed], 1).await {
                        self.ack(&rest[..failed], shutdown).await;
                        rest = &rest[failed..];
                        first_failed = Some(error);
                    }
                }
            }
        }
    }

    /// Delivers one event on its own from attempt `attempt`, retrying with backoff
    /// and dead-lettering it after the last attempt. `failed` is the error of the
    /// attempt before, if there was one. Returns `false` if shutdown interrupted it.
    async fn deliver_alone(
        &mut self,
        delivery: &Delivery,
        mut attempt: u32,
        mut failed: Option<String>,
        shutdown: &Shutdown,
    ) -> bool {
        let topic = &delivery.envelope.topic;
        let mut retry = host_retry();
        loop {
            if let Some(error) = &failed {
                if attempt > self.settings.max_attempts {
                    return self
                        .dead_letter(delivery, attempt - 1, error, shutdown)
                        .await;
                }
                metrics().retried(self.name(), topic);
                let wait = self.backoff(attempt);
                tracing::warn!(
                    module = %self.name(), event = %delivery.envelope.id, %topic,
                    attempt = attempt - 1, retry_in_ms = wait.as_millis() as u64, %error,
                    "event handler failed; retrying"
                );
                shutdown.sleep(wait).await;
            }
            if shutdown.is_triggered() {
                return false;
            }
            match self
                .run_batch(std::slice::from_ref(delivery), attempt)
                .await
            {
                Run::Done => {
                    self.ack(std::slice::from_ref(delivery), shutdown).await;
                    return true;
                }
                Run::Failed { error, .. } => {
                    failed = Some(error);
                    attempt += 1;
                }
                Run::HostFailed(error) => {
                    tracing::warn!(module = %self.name(), %error, "delivering an event failed on the host's side; retrying");
                    if !shutdown.sleep(retry.next_wait()).await {
                        return false;
                    }
                }
            }
        }
    }

    /// The wait before attempt `attempt` (≥ 2): `backoff`, doubling, at most
    /// `max_backoff`.
    fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(2).min(30);
        self.settings
            .backoff
            .saturating_mul(1 << doublings)
            .min(self.settings.max_backoff)
    }

    /// Runs `deliveries` through the handler in one transaction, all as attempt
    /// `attempt`, and commits it if every one succeeded.
    async fn run_batch(&self, deliveries: &[Delivery], attempt: u32) -> Run {
        let host = |error: Error| Run::HostFailed(format!("{error:?}"));
        let mut tx = match self.database.begin().await {
            Ok(tx) => tx,
            Err(error) => return host(error),
        };
        let envelopes: Vec<&Envelope> = deliveries.iter().map(|d| &d.envelope).collect();
        let fresh = match tables::claim(&mut tx, &envelopes, Outcome::Handled).await {
            Ok(fresh) => fresh,
            Err(error) => return host(error),
        };
        let mut handled = Vec::with_capacity(envelopes.len());
        for (index, (envelope, fresh)) in envelopes.iter().zip(fresh).enumerate() {
            if !fresh {
                metrics().duplicate(self.name(), &envelope.topic);
                continue;
            }
            handled.push(*envelope);
            let (outcome, back) = self.handle(envelope, attempt, tx).await;
            match (outcome, back) {
                (Ok(()), Some(back)) => tx = back,
                // Dropping the transaction (if the failure left one) rolls it back.
                (outcome, _) => {
                    return Run::Failed {
                        failed: index,
                        error: outcome
                            .err()
                            .unwrap_or_else(|| "the handler's transaction was lost".into()),
                    }
                }
            }
        }
        match tx.commit().await {
            Ok(()) => {
                for envelope in handled {
                    metrics().delivered(self.name(), &envelope.topic);
                }
                Run::Done
            }
            Err(error) => host(error),
        }
    }

    /// Calls the module's handler with `envelope` and `tx` in an instance of its own.
    /// Returns the outcome and, unless the failure took it down, the transaction.
    async fn handle(
        &self,
        envelope: &Envelope,
        attempt: u32,
        tx: Transaction,
    ) -> (Result<(), String>, Option<Transaction>) {
        let span = tracing::info_span!(
            "event",
            module = %self.name(),
            topic = %envelope.topic,
            event = %envelope.id,
            source = %envelope.source,
            attempt,
            trace_id = tracing::field::Empty,
        );
        // The handler's hop is this span, a child of the publisher's.
        let trace = TraceContext::for_span(&span, envelope.trace_parent());
        span.record("trace_id", trace.trace_id().as_str());
        let mut work = Handle {
            event: envelope.to_event(attempt),
            tx: Some(tx),
            refused: None,
        };
        // The bulkhead applies: a delivery waits for one of the module's permits.
        let ran = self
            .runner
            .run(Hop::start(trace, None, None), &mut work)
            .instrument(span.clone())
            .await;
        let outcome = match (ran, work.refused) {
            (Ok(()), None) => Ok(()),
            (Ok(()), Some(refused)) => Err(refused),
            (Err(failure), _) => Err(format!("the handler failed ({}): {failure}", failure.code)),
        };
        if let Err(error) = &outcome {
            span.in_scope(|| tracing::debug!(%error, "event handler failed"));
        }
        (outcome, work.tx)
    }

    /// Sends an event that failed `attempts` times to the module's dead-letter topic,
    /// records it in the inbox as given up on, and acknowledges it.
    async fn dead_letter(
        &mut self,
        delivery: &Delivery,
        attempts: u32,
        error: &str,
        shutdown: &Shutdown,
    ) -> bool {
        let original = &delivery.envelope;
        let mut letter = original.clone();
        letter.topic = dead_letter_topic(self.name());
        letter.headers.extend([
            (dead_letter::TOPIC.into(), original.topic.clone()),
            (dead_letter::MODULE.into(), self.name().to_string()),
            (dead_letter::ATTEMPTS.into(), attempts.to_string()),
            (dead_letter::ERROR.into(), error.to_string()),
            (dead_letter::AT.into(), now_ms().to_string()),
        ]);
        let mut retry = host_retry();
        loop {
            let sent = self.bus.send(std::slice::from_ref(&letter)).await;
            let recorded = match sent.first() {
                Some(Ok(())) => self.record_dead_letter(original).await,
                Some(Err(error)) => Err(error.clone()),
                None => Err("the bus returned no outcome".into()),
            };
            match recorded {
                Ok(()) => break,
                Err(problem) => {
                    tracing::warn!(module = %self.name(), event = %original.id, %problem, "dead-lettering an event failed; retrying");
                    if !shutdown.sleep(retry.next_wait()).await {
                        return false;
                    }
                }
            }
        }
        metrics().dead_lettered(self.name(), &original.topic);
        tracing::error!(
            module = %self.name(), event = %original.id, topic = %original.topic,
            attempts, %error, dead_letter_topic = %letter.topic,
            "event handler failed on every attempt; the event went to the dead-letter topic"
        );
        self.ack(std::slice::from_ref(delivery), shutdown).await;
        true
    }

    async fn record_dead_letter(&self, envelope: &Envelope) -> Result<(), String> {
        let mut tx = self.database.begin().await.map_err(|e| format!("{e:?}"))?;
        tables::claim(&mut tx, &[envelope], Outcome::DeadLettered)
            .await
            .map_err(|e| format!("{e:?}"))?;
        tx.commit().await.map_err(|e| format!("{e:?}"))
    }

    /// Acknowledges `deliveries` on the bus, retrying until it works or shutdown.
    async fn ack(&mut self, deliveries: &[Delivery], shutdown: &Shutdown) {
        let mut retry = host_retry();
        while let Err(error) = self.consumer.ack(deliveries).await {
            tracing::warn!(module = %self.name(), error = %format!("{error:#}"), "acknowledging events failed; retrying");
            if !shutdown.sleep(retry.next_wait()).await {
                return;
            }
        }
    }

    /// Forgets inbox records past the retention.
    async fn forget_old(&self) {
        let cutoff =
            now_ms() - i64::try_from(self.settings.retention.as_millis()).unwrap_or(i64::MAX);
        if let Err(error) = tables::forget_before(&self.database, cutoff).await {
            tracing::warn!(module = %self.name(), ?error, "forgetting old inbox records failed");
        }
    }
}

/// One call of a subscriber's `handle` export, lending it the delivery's transaction.
struct Handle {
    event: Event,
    /// The transaction: lent to the instance for the call, given back after it.
    tx: Option<Transaction>,
    /// What the handler refused the event with, if it did.
    refused: Option<String>,
}

impl InstanceWork for Handle {
    fn run<'s>(
        &'s mut self,
        store: &'s mut Store<InstanceState>,
        instance: &'s Instance,
    ) -> BoxFuture<'s, wasmtime::Result<bool>> {
        Box::pin(async move {
            let Some(subscriber) = store
                .data()
                .slice::<EventsSlice>()
                .and_then(|slice| slice.subscriber.clone())
            else {
                wasmtime::bail!("this version of the module exports no subscriber");
            };
            let Some(tx) = self.tx.take() else {
                wasmtime::bail!("no transaction for the handler");
            };
            let owned = store.data_mut().table.push(tx)?;
            let handled = async {
                let bindings = subscriber.load(&mut *store, instance)?;
                bindings
                    .modhost_events_subscriber()
                    .call_handle(&mut *store, &self.event, Resource::new_borrow(owned.rep()))
                    .await
            }
            .await;
            self.tx = store.data_mut().table.delete(owned).ok();
            match handled? {
                Ok(()) => Ok(true),
                Err(refused) => {
                    self.refused = Some(format!("the handler returned an error: {refused}"));
                    Ok(false)
                }
            }
        })
    }
}
