//! `modhost:events`: events between modules (`wit/modhost/events.wit`), with a
//! transactional outbox, so that once a module's transaction commits, its events are
//! never lost.
//!
//! The path of one event:
//! 1. **Publish** ([`publisher`](bindings::modhost::events::publisher)): the module
//!    calls `publish-in(tx, …)`; the host checks the module's `publishes` grant and
//!    writes the event to the module's own `modhost_outbox` table inside `tx`
//!    ([`tables`]). Rollback, and the event never existed. (`publish` does the same in
//!    a transaction of its own.)
//! 2. **Relay** ([`relay`]): once the transaction commits, the module's relay reads the
//!    outbox in order, hands the events to the [`bus`] and deletes them from the outbox
//!    only after the bus confirmed them. A crash in between sends them again.
//! 3. **Bus** ([`bus`]): embedded (a durable SQLite log under the data dir, in this
//!    process) or Kafka. Each subscribing module reads it as its own consumer group.
//! 4. **Delivery** ([`delivery`]): for each event, the host opens a transaction on the
//!    subscriber's database, records the event id in its `modhost_inbox` — skipping the
//!    event if the id is already there — and calls the module's `handle` export with
//!    that transaction. The handler's writes and the inbox record commit together, so
//!    an event redelivered after a crash has its effects once. A failing handler is
//!    retried with backoff; after `max_attempts` the event goes to the module's
//!    dead-letter topic.
//!
//! Lifecycle, like every capability ([`Events`]): `publisher` is **linked once**; a
//! version that imports it without a `publishes` grant, or subscribes without
//! exporting `subscriber`, is **refused** when configured; **opening** a module
//! creates its outbox and inbox in its database and gives a publishing module its
//! **own [`ModuleEvents`]** (its grants, its relay's wake-up); each instance is
//! **prepared** with those grants and its version's subscriber export, nothing more;
//! the relays and consumers **start** as one [`EventsService`] per node.

pub mod bus;
pub mod delivery;
pub mod envelope;
pub mod inspect;
pub mod relay;
pub mod replay;
mod service;
pub mod tables;

use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::sync::Notify;
use wasmtime::component::{HasSelf, Linker, Resource};

use super::sql::{Database, Transaction};
use super::{
    Capability, Components, InstanceState, OpenContext, Service, StartContext, StateMap,
    VersionContext,
};
use crate::runtime::BoxFuture;
use envelope::Envelope;

pub use service::{open_for_reading, EventsService};

/// Host bindings of `modhost:events` (the world `modhost:events/events-host`),
/// generated from its WIT (`wit/modhost/events.wit`, which documents them).
#[allow(missing_docs)]
pub mod bindings {
    wasmtime::component::bindgen!({
        path: ["../wit/modhost/sql.wit", "../wit/modhost/events.wit"],
        world: "modhost:events/events-host",
        imports: { default: async | trappable },
        exports: { default: async },
        with: { "modhost:sql/sql": crate::capabilities::sql::bindings::modhost::sql::sql },
    });
}

use bindings::modhost::events::publisher;
use bindings::modhost::events::types::PublishError;

/// Where a subscribing module's `handle` export is, found once at load.
pub type SubscriberIndices = bindings::EventsHostIndices;

/// The interface publishing modules import.
pub const PUBLISHER: &str = "modhost:events/publisher@1.0.0";
/// The interface subscribing modules export.
pub const SUBSCRIBER: &str = "modhost:events/subscriber@1.0.0";

/// The `modhost:events` capability.
pub struct Events;

/// A version's `modhost:events/subscriber` export, found when it was configured.
struct SubscriberExport(Arc<SubscriberIndices>);

/// What an instance may do with events: publish to its module's topics, and (for the
/// host's delivery) where its version's `handle` export is.
pub struct EventsSlice {
    publishing: Option<Arc<ModuleEvents>>,
    /// The version's subscriber export, when the module subscribes.
    pub subscriber: Option<Arc<SubscriberIndices>>,
}

impl Capability for Events {
    fn name(&self) -> &'static str {
        "modhost:events"
    }

    /// Links `modhost:events/publisher` into `linker`.
    fn link(&self, linker: &mut Linker<InstanceState>, _: &Components<'_>) -> Result<()> {
        publisher::add_to_linker::<InstanceState, HasSelf<InstanceState>>(linker, |state| state)?;
        Ok(())
    }

    fn configure(&self, version: &VersionContext<'_>, state: &mut StateMap) -> Result<()> {
        let (spec, path) = (version.spec, version.path);
        if version.imports("modhost:events/publisher") && spec.publishes.is_empty() {
            anyhow::bail!(
                "{} imports {PUBLISHER} but the module may publish to no topic: list its topics in \
                 `publishes = [...]` under [modules.{}]",
                path.display(),
                spec.name
            );
        }
        if !spec.subscribes.is_empty() {
            let indices = SubscriberIndices::new(version.instance_pre)
                .map_err(anyhow::Error::from)
                .with_context(|| {
                    format!(
                        "{} subscribes to {} but does not export {SUBSCRIBER}",
                        path.display(),
                        spec.subscribes.join(", "),
                    )
                })?;
            state.insert(SubscriberExport(Arc::new(indices)));
        }
        Ok(())
    }

    fn open<'a>(
        &'a self,
        module: OpenContext<'a>,
        state: &'a mut StateMap,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let spec = module.spec;
            if spec.publishes.is_empty() && spec.subscribes.is_empty() {
                return Ok(());
            }
            // A module that publishes or receives events keeps its outbox and inbox in
            // its database, next to its own tables.
            let Some(database) = state.get::<Database>() else {
                anyhow::bail!("it publishes or subscribes to events but has no database");
            };
            tables::create(database, &spec.name)
                .await
                .map_err(|error| {
                    anyhow::anyhow!("creating its event outbox and inbox: {error:?}")
                })?;
            if !spec.publishes.is_empty() {
                state.insert(ModuleEvents::new(&spec.name, &spec.publishes));
            }
            Ok(())
        })
    }

    /// The events waiting in the module's outbox of before, sealed again, and the
    /// inbox of the events it handled ([`tables::carry`]).
    fn carry<'a>(
        &'a self,
        module: OpenContext<'a>,
        state: &'a StateMap,
        from: &'a Database,
        into: &'a mut Transaction,
    ) -> BoxFuture<'a, Result<BTreeMap<String, u64>>> {
        Box::pin(async move {
            let spec = module.spec;
            let Some(to) = state.get::<Database>() else {
                return Ok(BTreeMap::new());
            };
            if spec.publishes.is_empty() && spec.subscribes.is_empty() {
                // No outbox here to carry events into: they stay in the file set aside.
                let waiting = tables::waiting_in(from)
                    .await
                    .map_err(|error| anyhow::anyhow!("reading its old outbox: {error:?}"))?;
                if waiting > 0 {
                    tracing::warn!(module = %spec.name, waiting, "events: the module no longer publishes or subscribes; the events waiting in its SQLite file's outbox are not carried (they stay in the file set aside)");
                }
                return Ok(BTreeMap::new());
            }
            tables::carry(from, to, into, &spec.name)
                .await
                .map_err(|error| anyhow::anyhow!("carrying its event outbox and inbox: {error:?}"))
        })
    }

    fn prepare(&self, instance: &mut InstanceState, module: &StateMap, version: &StateMap) {
        let publishing = module.get_arc::<ModuleEvents>();
        let subscriber = version
            .get::<SubscriberExport>()
            .map(|SubscriberExport(indices)| indices.clone());
        if publishing.is_some() || subscriber.is_some() {
            instance.slices.insert(EventsSlice {
                publishing,
                subscriber,
            });
        }
    }

    fn start(&self, node: &StartContext<'_>) -> Option<Box<dyn Service>> {
        EventsService::start(node.deployment, node.modules)
            .map(|service| Box::new(service) as Box<dyn Service>)
    }
}

/// One publishing module's events: the topics it may publish to, and the signal that
/// wakes its relay when new events have committed.
pub struct ModuleEvents {
    module: String,
    publishes: BTreeSet<String>,
    committed: Arc<Notify>,
}

impl ModuleEvents {
    /// The events of `module`, which may publish to `topics`.
    pub fn new(module: &str, topics: &[String]) -> ModuleEvents {
        ModuleEvents {
            module: module.to_string(),
            publishes: topics.iter().cloned().collect(),
            committed: Arc::new(Notify::new()),
        }
    }

    /// Woken each time events of this module commit to its outbox.
    pub fn committed(&self) -> Arc<Notify> {
        self.committed.clone()
    }
}

impl InstanceState {
    /// The envelope of an event this instance wants to publish, or why it may not.
    fn envelope(
        &self,
        topic: String,
        key: String,
        payload: Vec<u8>,
        headers: Vec<(String, String)>,
    ) -> wasmtime::Result<Result<(Envelope, Arc<Notify>), PublishError>> {
        // A module that may publish nothing is refused at load; one that gets here
        // without grants is a host bug, so a trap, not an error value.
        let events = self
            .slice::<EventsSlice>()
            .and_then(|slice| slice.publishing.as_ref())
            .ok_or_else(|| wasmtime::format_err!("module {} may not publish", self.module()))?;
        if !events.publishes.contains(&topic) {
            return Ok(Err(PublishError::Denied(format!(
                "module {} may not publish to {topic:?}; its grants: {}",
                events.module,
                events
                    .publishes
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ))));
        }
        if let Some(problem) = envelope::check(&key, &payload, &headers) {
            return Ok(Err(PublishError::Invalid(problem)));
        }
        Ok(Ok((
            Envelope {
                id: uuid::Uuid::now_v7().to_string(),
                topic,
                key,
                payload,
                headers,
                source: events.module.clone(),
                published_at_ms: envelope::now_ms(),
                traceparent: Some(self.hop.trace.to_string()),
            },
            events.committed.clone(),
        )))
    }
}

impl publisher::Host for InstanceState {
    async fn publish(
        &mut self,
        topic: String,
        key: String,
        payload: Vec<u8>,
        headers: Vec<(String, String)>,
    ) -> wasmtime::Result<Result<String, PublishError>> {
        let (envelope, committed) = match self.envelope(topic, key, payload, headers)? {
            Ok(ready) => ready,
            Err(refused) => return Ok(Err(refused)),
        };
        let database = self.database()?;
        Ok(match tables::append(&database, &envelope).await {
            Ok(()) => {
                committed.notify_one();
                Ok(envelope.id)
            }
            Err(error) => Err(PublishError::Unavailable(format!("{error:?}"))),
        })
    }

    async fn publish_in(
        &mut self,
        tx: Resource<Transaction>,
        topic: String,
        key: String,
        payload: Vec<u8>,
        headers: Vec<(String, String)>,
    ) -> wasmtime::Result<Result<String, PublishError>> {
        let (envelope, committed) = match self.envelope(topic, key, payload, headers)? {
            Ok(ready) => ready,
            Err(refused) => return Ok(Err(refused)),
        };
        let database = self.database()?;
        let transaction = self.table.get_mut(&tx)?;
        let appended = database
            .bounded(tables::append_in(&database, transaction, &envelope))
            .await;
        Ok(match appended {
            Ok(()) => {
                transaction.notify_on_commit(committed);
                Ok(envelope.id)
            }
            Err(error) => Err(PublishError::Unavailable(format!("{error:?}"))),
        })
    }
}

impl bindings::modhost::events::types::Host for InstanceState {}
