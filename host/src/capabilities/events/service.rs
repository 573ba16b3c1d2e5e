//! The events service of one node: a relay per publishing module, a consumer per
//! subscribing module, all on one bus.
//!
//! It starts in the background: the node serves requests while the bus is being
//! reached (a broker may be down when the node starts — publishing still works, as
//! events wait in the outbox), and retries until it is.

use anyhow::Result;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::bus::Bus;
use super::delivery::Subscriber;
use super::relay::{watch_lag, Relay};
use crate::deployment::events::dead_letter_topic;
use crate::deployment::Deployment;
use crate::registry::slot::ModuleSlot;
use crate::registry::Registry;

/// Waits between attempts to reach the bus at start: from the first, doubling.
const CONNECT_RETRY: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(10));

/// The running relays and consumers of a node.
pub struct EventsService {
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

/// A subscribing module's consumer group on the bus.
pub fn group(app: &str, module: &str) -> String {
    format!("{app}.{module}")
}

/// This node's member name in a consumer group: the same every time the node starts,
/// and different for every node, so that a restarted node takes its own place back in
/// the group (Kafka's static membership). Two processes started as the same node fence
/// each other's consumers: the bus refuses the older one.
pub fn member(group: &str, node: Option<&str>) -> String {
    format!("{group}@{}", node.unwrap_or("single"))
}

/// Every topic the deployment uses (what modules publish, and each subscriber's
/// dead-letter topic), and per topic the consumer groups subscribed to it.
pub fn topology(deployment: &Deployment) -> (Vec<String>, BTreeMap<String, Vec<String>>) {
    let mut topics: Vec<String> = Vec::new();
    let mut subscriptions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for module in deployment.modules.values() {
        topics.extend(module.publishes.iter().cloned());
        if !module.subscribes.is_empty() {
            topics.push(dead_letter_topic(&module.name));
        }
        for topic in &module.subscribes {
            subscriptions
                .entry(topic.clone())
                .or_default()
                .push(group(&deployment.app_name, &module.name));
        }
    }
    topics.sort();
    topics.dedup();
    (topics, subscriptions)
}

impl EventsService {
    /// Starts relaying and delivering for the modules of `registry` that publish or
    /// subscribe (and whose database opened), or returns `None` when none does.
    pub fn start(deployment: &Deployment, registry: &Registry) -> Option<EventsService> {
        let modules: Vec<Arc<ModuleSlot>> = registry
            .slots()
            .filter(|slot| {
                let module = slot.serving();
                module.events.is_some() || module.subscriber.is_some()
            })
            .cloned()
            .collect();
        if modules.is_empty() {
            return None;
        }
        let (shutdown, watching) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let deployment = deployment.clone();
        let supervisor_shutdown = watching.clone();
        tasks.spawn(async move {
            let Some(bus) = connect(&deployment, watching.clone()).await else {
                return;
            };
            tracing::info!(bus = bus.name(), "events: bus ready");
            let mut workers = JoinSet::new();
            for module in modules {
                start_module(&deployment, &bus, &module, &watching, &mut workers).await;
            }
            // The workers stop on the same signal; wait for them here so that
            // stopping the service waits for every one.
            while workers.join_next().await.is_some() {}
            drop(supervisor_shutdown);
        });
        Some(EventsService { shutdown, tasks })
    }

    /// Stops every relay and consumer, letting each finish the batch in hand (at most
    /// `grace`). What is not acknowledged by then is delivered again at the next start.
    pub async fn stop(mut self, grace: Duration) {
        let _ = self.shutdown.send(true);
        let drained = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "events: stopping took longer than the grace period; abandoning the rest"
            );
            self.tasks.abort_all();
        }
    }
}

/// Opens the bus, retrying until it can be reached or shutdown begins.
async fn connect(deployment: &Deployment, mut shutdown: watch::Receiver<bool>) -> Option<Bus> {
    let (topics, subscriptions) = topology(deployment);
    let mut retry = CONNECT_RETRY.0;
    loop {
        match Bus::open(
            &deployment.events,
            &deployment.data_dir,
            &topics,
            &subscriptions,
        )
        .await
        {
            Ok(bus) => return Some(bus),
            Err(error) => tracing::warn!(
                backend = deployment.events.backend.name(),
                error = %format!("{error:#}"),
                retry_in_ms = retry.as_millis() as u64,
                "events: cannot reach the bus yet; events wait in the outboxes"
            ),
        }
        tokio::select! {
            () = tokio::time::sleep(retry) => {}
            _ = shutdown.changed() => return None,
        }
        retry = (retry * 2).min(CONNECT_RETRY.1);
    }
}

/// Starts `module`'s relay and consumer, as it needs.
async fn start_module(
    deployment: &Deployment,
    bus: &Bus,
    slot: &Arc<ModuleSlot>,
    shutdown: &watch::Receiver<bool>,
    workers: &mut JoinSet<()>,
) {
    let module = slot.serving();
    if let Some(reason) = module.broken.get() {
        tracing::warn!(module = %module.name, %reason, "events: module did not start; its events wait");
        return;
    }
    let Some(database) = module.database.get().cloned() else {
        return;
    };
    if let Some(events) = &module.events {
        let relay = Relay {
            module: module.name.clone(),
            database: database.clone(),
            committed: events.committed(),
            bus: bus.clone(),
        };
        workers.spawn(relay.run(shutdown.clone()));
        workers.spawn(watch_lag(
            module.name.clone(),
            database.clone(),
            shutdown.clone(),
        ));
    }
    let Some(spec) = deployment.modules.get(&module.name) else {
        return;
    };
    if module.subscriber.is_some() && !spec.subscribes.is_empty() {
        let group = group(&deployment.app_name, &module.name);
        let member = member(&group, deployment.node.as_deref());
        let consumer = loop {
            match bus.subscribe(&group, &member, &spec.subscribes).await {
                Ok(consumer) => break consumer,
                Err(error) => {
                    tracing::warn!(module = %module.name, error = %format!("{error:#}"), "events: subscribing failed; retrying");
                    tokio::time::sleep(CONNECT_RETRY.1).await;
                    if *shutdown.borrow() {
                        return;
                    }
                }
            }
        };
        tracing::info!(module = %module.name, %group, topics = ?spec.subscribes, "events: subscribed");
        let subscriber = Subscriber {
            slot: slot.clone(),
            database,
            consumer,
            bus: bus.clone(),
            settings: deployment.events.clone(),
        };
        workers.spawn(subscriber.run(shutdown.clone()));
    }
}

/// Opens the bus of `deployment` to read it (the command line's dead-letter listing).
pub async fn open_for_reading(deployment: &Deployment) -> Result<Bus> {
    let (topics, subscriptions) = topology(deployment);
    Bus::open(
        &deployment.events,
        &deployment.data_dir,
        &topics,
        &subscriptions,
    )
    .await
}
