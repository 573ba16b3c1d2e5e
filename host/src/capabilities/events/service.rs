//! The events service of one node: a relay per publishing module, a consumer per
//! subscribing module, all on one bus.
//!
//! It starts in the background: the node serves requests while the bus is being
//! reached (a broker may be down when the node starts — publishing still works, as
//! events wait in the outbox), and retries until it is.

use anyhow::Result;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;

use super::bus::{hand_over_embedded_log, Bus};
use super::delivery::Subscriber;
use super::relay::{watch_lag, Relay};
use super::ModuleEvents;
use crate::capabilities::sql::Database;
use crate::capabilities::{RunningModule, Service};
use crate::deployment::events::dead_letter_topic;
use crate::deployment::{Deployment, EventsBackend};
use crate::runtime::backoff::Backoff;
use crate::runtime::shutdown::Shutdown;
use crate::runtime::BoxFuture;
use crate::telemetry::metrics::metrics;

/// How often a subscriber's lag on the embedded bus is read.
const LAG_EVERY: Duration = Duration::from_secs(1);

/// Waits between attempts to reach the bus at start: from the first, doubling.
const CONNECT_RETRY: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(10));

/// The running relays and consumers of a node.
pub struct EventsService {
    shutdown: Shutdown,
    /// Reaching the bus, then starting each module's work.
    tasks: JoinSet<()>,
    /// Each module's relay and consumer, stopped alone when the module stops serving on
    /// this node ([`Service::stop_module`]).
    modules: BTreeMap<String, ModuleWork>,
}

/// One module's relay and consumer: stopped with the service, or alone.
#[derive(Clone)]
struct ModuleWork {
    shutdown: Shutdown,
    workers: Arc<Mutex<JoinSet<()>>>,
}

impl ModuleWork {
    /// Runs `work` as one of the module's workers — unless the module's work was
    /// stopped meanwhile (checked under the lock [`Self::stop`] takes the workers
    /// under, so no worker starts unwatched).
    fn spawn(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        if !self.shutdown.is_triggered() {
            workers.spawn(work);
        }
    }

    /// Stops the module's workers, letting each finish the batch in hand for at most
    /// `grace`; what is not acknowledged by then is delivered again later.
    async fn stop(&self, module: &str, grace: Duration) {
        self.shutdown.trigger();
        let mut workers =
            std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()));
        let drained = tokio::time::timeout(grace, async {
            while workers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                module,
                "events: stopping took longer than the grace period; abandoning the rest"
            );
            workers.abort_all();
        }
    }
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
    /// Starts relaying and delivering for the `modules` that publish or subscribe
    /// (after handing a broker what an embedded log in the data dir still owes), or
    /// returns `None` when there is nothing to do.
    pub fn start(deployment: &Deployment, modules: &[RunningModule]) -> Option<EventsService> {
        let modules: Vec<RunningModule> = modules
            .iter()
            .filter(|module| {
                deployment
                    .modules
                    .get(&module.name)
                    .is_some_and(|spec| !spec.publishes.is_empty() || !spec.subscribes.is_empty())
            })
            .cloned()
            .collect();
        // A node on a broker with an embedded log in its data dir hands the log over
        // even when none of its modules publishes or subscribes any more.
        let owes_log = !matches!(deployment.events.backend, EventsBackend::Embedded)
            && super::bus::embedded::log_file(&deployment.data_dir).exists();
        if modules.is_empty() && !owes_log {
            return None;
        }
        let shutdown = Shutdown::new();
        let works: BTreeMap<String, ModuleWork> = modules
            .iter()
            .map(|module| {
                let work = ModuleWork {
                    shutdown: shutdown.child(),
                    workers: Arc::default(),
                };
                (module.name.clone(), work)
            })
            .collect();
        let mut tasks = JoinSet::new();
        let deployment = deployment.clone();
        let watching = shutdown.clone();
        let starting = works.clone();
        tasks.spawn(async move {
            let Some(bus) = connect(&deployment, &watching).await else {
                return;
            };
            tracing::info!(bus = bus.name(), "events: bus ready");
            for module in modules {
                if let Some(work) = starting.get(&module.name) {
                    start_module(&deployment, &bus, &module, work).await;
                }
            }
        });
        Some(EventsService {
            shutdown,
            tasks,
            modules: works,
        })
    }

    /// Stops every relay and consumer, letting each finish the batch in hand (at most
    /// `grace`). What is not acknowledged by then is delivered again at the next start.
    pub async fn stop(mut self, grace: Duration) {
        self.shutdown.trigger();
        let deadline = tokio::time::Instant::now() + grace;
        let connecting = tokio::time::timeout_at(deadline, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if connecting.is_err() {
            self.tasks.abort_all();
        }
        for (module, work) in &self.modules {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            work.stop(module, left).await;
        }
    }
}

/// Opens the bus, retrying until it can be reached or shutdown begins.
async fn connect(deployment: &Deployment, shutdown: &Shutdown) -> Option<Bus> {
    let (topics, subscriptions) = topology(deployment);
    let mut retry = Backoff::new(CONNECT_RETRY.0, CONNECT_RETRY.1);
    loop {
        let wait = retry.next_wait();
        match Bus::open(
            &deployment.events,
            &deployment.data_dir,
            &topics,
            &subscriptions,
        )
        .await
        {
            Ok(bus) => match hand_over_embedded_log(
                &deployment.data_dir,
                &deployment.events,
                &subscriptions,
                &bus,
            )
            .await
            {
                Ok(0) => return Some(bus),
                Ok(events) => {
                    tracing::info!(
                        events,
                        bus = bus.name(),
                        "events: handed the embedded log's undelivered events and dead letters to the broker"
                    );
                    return Some(bus);
                }
                // The relays wait: what they send must come after what the log owes.
                Err(error) => tracing::warn!(
                    error = %format!("{error:#}"),
                    retry_in_ms = wait.as_millis() as u64,
                    "events: cannot hand the embedded log to the broker yet; events wait in the outboxes"
                ),
            },
            Err(error) => tracing::warn!(
                backend = deployment.events.backend.name(),
                error = %format!("{error:#}"),
                retry_in_ms = wait.as_millis() as u64,
                "events: cannot reach the bus yet; events wait in the outboxes"
            ),
        }
        if !shutdown.sleep(wait).await {
            return None;
        }
    }
}

/// Starts `module`'s relay and consumer, as it needs.
async fn start_module(
    deployment: &Deployment,
    bus: &Bus,
    module: &RunningModule,
    work: &ModuleWork,
) {
    let shutdown = &work.shutdown;
    if shutdown.is_triggered() {
        return;
    }
    if let Some(reason) = &module.not_started {
        tracing::warn!(module = %module.name, %reason, "events: module did not start; its events wait");
        return;
    }
    let Some(database) = module.state.get_arc::<Database>() else {
        return;
    };
    if let Some(events) = module.state.get::<ModuleEvents>() {
        let relay = Relay {
            module: module.name.clone(),
            database: database.clone(),
            committed: events.committed(),
            bus: bus.clone(),
        };
        work.spawn(relay.run(shutdown.clone()));
        work.spawn(watch_lag(
            module.name.clone(),
            database.clone(),
            shutdown.clone(),
        ));
    }
    let Some(spec) = deployment.modules.get(&module.name) else {
        return;
    };
    if !spec.subscribes.is_empty() {
        let group = group(&deployment.app_name, &module.name);
        let member = member(&group, deployment.node.as_deref());
        let consumer = loop {
            match bus
                .subscribe(&module.name, &group, &member, &spec.subscribes)
                .await
            {
                Ok(consumer) => break consumer,
                Err(error) => {
                    tracing::warn!(module = %module.name, error = %format!("{error:#}"), "events: subscribing failed; retrying");
                    if !shutdown.sleep(CONNECT_RETRY.1).await {
                        return;
                    }
                }
            }
        };
        tracing::info!(module = %module.name, %group, topics = ?spec.subscribes, "events: subscribed");
        let subscriber = Subscriber {
            runner: module.runner.clone(),
            database,
            consumer,
            bus: bus.clone(),
            settings: deployment.events.clone(),
        };
        work.spawn(subscriber.run(shutdown.clone()));
        work.spawn(watch_consumer_lag(
            module.name.clone(),
            bus.clone(),
            group,
            spec.subscribes.clone(),
            shutdown.clone(),
        ));
    }
}

/// Samples, once a second until shutdown, how many events of each topic `module`
/// subscribes to wait on the bus for it. On Kafka its consumer's client reports that
/// itself, and this returns at once.
async fn watch_consumer_lag(
    module: String,
    bus: Bus,
    group: String,
    topics: Vec<String>,
    shutdown: Shutdown,
) {
    while !shutdown.is_triggered() {
        match bus.lag(&group, &topics).await {
            None => return,
            Some(Ok(lags)) => {
                for (topic, lag) in lags {
                    metrics().consumer_lag(&module, &topic, lag);
                }
            }
            Some(Err(error)) => {
                tracing::debug!(%module, error = %format!("{error:#}"), "events: reading the consumer lag failed")
            }
        }
        shutdown.sleep(LAG_EVERY).await;
    }
}

impl Service for EventsService {
    fn stop(self: Box<Self>, grace: Duration) -> BoxFuture<'static, ()> {
        Box::pin(EventsService::stop(*self, grace))
    }

    fn stop_module(&self, module: &str, grace: Duration) -> BoxFuture<'static, ()> {
        let work = self.modules.get(module).cloned();
        let module = module.to_string();
        Box::pin(async move {
            if let Some(work) = work {
                work.stop(&module, grace).await;
                tracing::info!(%module, "events: the module's relay and consumer stopped on this node");
            }
        })
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
