//! The Kafka bus: a Kafka-protocol broker (Apache Kafka, Redpanda), through rdkafka.
//!
//! - **Producer**: idempotent (`enable.idempotence`, which implies `acks=all`): a
//!   retried send is written once, and events of one partition stay in send order. An
//!   event's key is its Kafka key, so every event of one key lands in one partition
//!   and keeps its order. The event id, source module, publication time and trace
//!   context travel as Kafka headers (`modhost-id`, `modhost-source`,
//!   `modhost-published-at`, `traceparent`), beside the publisher's own.
//! - **Consumers**: one consumer group per subscribing module, in which each node is a
//!   static member (`group.instance.id`, named for the node): a node that restarts,
//!   cleanly or after a crash, takes its own place back at once instead of the group
//!   waiting out the old member's session and rebalancing twice. Offsets are stored only
//!   after the handler's transaction committed (`enable.auto.offset.store = false`,
//!   stored by [`KafkaConsumer::ack`], committed by the client in the background), so a
//!   crash replays at most what was handled but not yet committed — which the
//!   subscriber's inbox then skips.
//! - **Topics** are created at start (partitions and replication from the deployment
//!   file) when missing: some brokers do not create topics on first use.
//!
//! While the broker is unreachable, sends wait in the producer's queue and are retried
//! (up to `message.timeout.ms`); the relay keeps the events in the outbox until they
//! are confirmed, so nothing is lost either way.

use anyhow::{Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::Duration;

use super::{highest, Delivery, Position};
use crate::capabilities::events::envelope::Envelope;
use crate::deployment::KafkaSecurity;
use crate::telemetry::metrics::metrics;
use crate::telemetry::trace::TRACEPARENT;

const ID: &str = "modhost-id";
const SOURCE: &str = "modhost-source";
const PUBLISHED_AT: &str = "modhost-published-at";

/// How long an event may wait in the producer for the broker before its send fails
/// (and the relay tries it again later).
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a consumer waits for more events to fill a batch once it has one.
const BATCH_LINGER: Duration = Duration::from_millis(2);

/// A connection to the brokers, for producing and for making consumers.
#[derive(Clone)]
pub struct KafkaBus {
    brokers: Brokers,
    producer: Arc<FutureProducer>,
}

/// The brokers, and how every client of the host's reaches them.
#[derive(Debug, Clone)]
pub struct Brokers {
    /// `host:port[,host:port…]` to bootstrap from.
    pub addresses: String,
    /// TLS and SASL, as `[events]` says.
    pub security: KafkaSecurity,
}

impl Brokers {
    /// A client configuration for these brokers: the producer's, the admin client's
    /// and every consumer's start here, so all are encrypted and logged in alike.
    fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.addresses)
            // librdkafka's own log goes to the host's log through rdkafka's `log`
            // support only at warnings and above.
            .set("log_level", "4");
        let KafkaSecurity { tls, sasl } = &self.security;
        let protocol = match (tls.is_some(), sasl.is_some()) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        };
        config.set("security.protocol", protocol);
        if let Some(tls) = tls {
            // The broker's certificate must be for the name it is reached by.
            config.set("ssl.endpoint.identification.algorithm", "https");
            match &tls.ca {
                Some(ca) => config.set("ssl.ca.location", ca.display().to_string()),
                // The system's CAs, wherever this machine keeps them.
                None => config.set("ssl.ca.location", "probe"),
            };
        }
        if let Some(sasl) = sasl {
            config
                .set("sasl.mechanism", sasl.mechanism.name())
                .set("sasl.username", &sasl.username)
                .set("sasl.password", &sasl.password);
        }
        config
    }
}

impl KafkaBus {
    /// Connects to `brokers` and creates any of `topics` that do not exist yet.
    pub async fn open(
        brokers: Brokers,
        topics: &[String],
        partitions: i32,
        replication: i32,
    ) -> Result<KafkaBus> {
        let producer: FutureProducer = brokers
            .config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set(
                "message.timeout.ms",
                MESSAGE_TIMEOUT.as_millis().to_string(),
            )
            .create()
            .context("creating the Kafka producer")?;
        let bus = KafkaBus {
            brokers,
            producer: Arc::new(producer),
        };
        bus.create_topics(topics, partitions, replication).await?;
        Ok(bus)
    }

    async fn create_topics(
        &self,
        topics: &[String],
        partitions: i32,
        replication: i32,
    ) -> Result<()> {
        if topics.is_empty() {
            return Ok(());
        }
        let admin: AdminClient<DefaultClientContext> = self
            .brokers
            .config()
            .create()
            .context("creating the Kafka admin client")?;
        let new: Vec<NewTopic> = topics
            .iter()
            .map(|topic| NewTopic::new(topic, partitions, TopicReplication::Fixed(replication)))
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin
            .create_topics(&new, &options)
            .await
            .with_context(|| format!("creating Kafka topics on {}", self.brokers.addresses))?;
        for result in results {
            match result {
                Ok(topic) => tracing::info!(%topic, partitions, "Kafka topic created"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    anyhow::bail!(
                        "creating Kafka topic {topic} on {}: {code}",
                        self.brokers.addresses
                    )
                }
            }
        }
        Ok(())
    }

    /// Sends `events` in order and waits for the broker's confirmation of each.
    pub async fn send(&self, events: &[Envelope]) -> Vec<Result<(), String>> {
        let mut pending = Vec::with_capacity(events.len());
        for event in events {
            let published_at = event.published_at_ms.to_string();
            let mut headers = OwnedHeaders::new_with_capacity(event.headers.len() + 4)
                .insert(Header {
                    key: ID,
                    value: Some(event.id.as_bytes()),
                })
                .insert(Header {
                    key: SOURCE,
                    value: Some(event.source.as_bytes()),
                })
                .insert(Header {
                    key: PUBLISHED_AT,
                    value: Some(published_at.as_bytes()),
                });
            if let Some(traceparent) = &event.traceparent {
                headers = headers.insert(Header {
                    key: TRACEPARENT,
                    value: Some(traceparent.as_bytes()),
                });
            }
            for (name, value) in &event.headers {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(value.as_bytes()),
                });
            }
            let mut record = FutureRecord::to(&event.topic)
                .key(&event.key)
                .payload(&event.payload)
                .headers(headers);
            // A full local queue means the broker is behind or away: wait for room.
            let future = loop {
                match self.producer.send_result(record) {
                    Ok(future) => break Ok(future),
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err((error, _)) => break Err(error.to_string()),
                }
            };
            pending.push(future);
        }
        let mut outcomes = Vec::with_capacity(pending.len());
        for future in pending {
            outcomes.push(match future {
                Ok(future) => match future.await {
                    Ok(Ok(_delivery)) => Ok(()),
                    Ok(Err((error, _))) => Err(error.to_string()),
                    Err(_) => Err("the producer was dropped".to_string()),
                },
                Err(error) => Err(error),
            });
        }
        outcomes
    }

    /// `module`'s consumer in group `group` of `topics`, as static member `member`,
    /// starting at the oldest retained event when the group is new. Its client reports
    /// the module's lag once a second ([`GroupMember`]'s statistics).
    pub fn subscribe(
        &self,
        module: &str,
        group: &str,
        member: &str,
        topics: &[String],
    ) -> Result<KafkaConsumer> {
        let context = GroupMember {
            module: module.to_string(),
            group: group.to_string(),
            member: member.to_string(),
        };
        let consumer: StreamConsumer<GroupMember> = self
            .brokers
            .config()
            .set("group.id", group)
            .set("group.instance.id", member)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "500")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("statistics.interval.ms", LAG_EVERY_MS)
            .create_with_context(context)
            .with_context(|| format!("creating the Kafka consumer of group {group}"))?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .with_context(|| format!("subscribing group {group} to {}", names.join(", ")))?;
        Ok(KafkaConsumer { consumer })
    }

    /// Every event retained on `topic`, oldest first, read without a consumer group.
    pub async fn read_all(&self, topic: &str) -> Result<Vec<Delivery>> {
        let brokers = self.brokers.clone();
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || read_all_blocking(&brokers, &topic)).await?
    }
}

fn read_all_blocking(brokers: &Brokers, topic: &str) -> Result<Vec<Delivery>> {
    let consumer: BaseConsumer = brokers
        .config()
        .set(
            "group.id",
            format!("modhost-reader-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .create()
        .context("creating a Kafka reader")?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("reading the metadata of {topic}"))?;
    let mut assignment = TopicPartitionList::new();
    let mut remaining = 0i64;
    let mut ends = std::collections::BTreeMap::new();
    for partition in metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions())
    {
        let (low, high) = consumer.fetch_watermarks(topic, partition.id(), timeout)?;
        if high > low {
            assignment.add_partition_offset(topic, partition.id(), Offset::Beginning)?;
            remaining += high - low;
            ends.insert(partition.id(), high);
        }
    }
    let mut deliveries = Vec::new();
    if remaining == 0 {
        return Ok(deliveries);
    }
    consumer.assign(&assignment)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message?;
        let done = ends
            .get(&message.partition())
            .is_some_and(|end| message.offset() + 1 >= *end);
        if let Some(delivery) = delivery(&message) {
            deliveries.push(delivery);
        }
        if done {
            ends.remove(&message.partition());
            if ends.is_empty() {
                break;
            }
        }
    }
    deliveries.sort_by_key(|d| d.envelope.published_at_ms);
    Ok(deliveries)
}

/// An event read from Kafka; a message without the host's id header is not one.
fn delivery(message: &BorrowedMessage<'_>) -> Option<Delivery> {
    let mut id = None;
    let mut source = None;
    let mut published_at_ms = 0;
    let mut traceparent = None;
    let mut headers = Vec::new();
    if let Some(all) = message.headers() {
        for header in all.iter() {
            let value = String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned();
            // The host's headers come first; a later header of the same name (which
            // the host never writes, but another producer on the topic might) does
            // not override them.
            match header.key {
                ID => _ = id.get_or_insert(value),
                SOURCE => _ = source.get_or_insert(value),
                PUBLISHED_AT => {
                    if published_at_ms == 0 {
                        published_at_ms = value.parse().unwrap_or(0);
                    }
                }
                TRACEPARENT => _ = traceparent.get_or_insert(value),
                _ => headers.push((header.key.to_string(), value)),
            }
        }
    }
    Some(Delivery {
        envelope: Envelope {
            id: id?,
            topic: message.topic().to_string(),
            key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
            payload: message.payload().unwrap_or_default().to_vec(),
            headers,
            source: source.unwrap_or_default(),
            published_at_ms,
            traceparent,
        },
        position: Position {
            topic: message.topic().to_string(),
            partition: message.partition(),
            offset: message.offset(),
        },
    })
}

/// How often a consumer's client reports its statistics, the module's lag among them.
const LAG_EVERY_MS: &str = "1000";

/// What a consumer says when the group hands it partitions or takes them away: which
/// node reads which partitions is the first question when events stall. Its client's
/// statistics give the module's lag.
struct GroupMember {
    module: String,
    group: String,
    member: String,
}

impl ClientContext for GroupMember {
    /// Sets the module's consumer lag per topic: in each partition this node reads,
    /// the events past the offset it stored last (what it handled, committed or about
    /// to be), or before its first, past the group's committed offset. Partitions
    /// other nodes read report no lag here (-1): each node counts its own, and their
    /// sum is the group's.
    fn stats(&self, statistics: Statistics) {
        for (topic, state) in &statistics.topics {
            let lag = state
                .partitions
                .values()
                .filter(|p| p.partition >= 0)
                .filter_map(|p| {
                    [p.consumer_lag_stored, p.consumer_lag]
                        .into_iter()
                        .find(|lag| *lag >= 0)
                })
                .map(i64::unsigned_abs)
                .sum();
            metrics().consumer_lag(&self.module, topic, lag);
        }
    }
}

impl ConsumerContext for GroupMember {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let partitions = |list: &TopicPartitionList| {
            list.elements()
                .iter()
                .map(|p| format!("{}/{}", p.topic(), p.partition()))
                .collect::<Vec<_>>()
                .join(" ")
        };
        match rebalance {
            Rebalance::Assign(list) => tracing::info!(
                group = %self.group,
                member = %self.member,
                partitions = %partitions(list),
                "events: partitions assigned"
            ),
            Rebalance::Revoke(list) => tracing::info!(
                group = %self.group,
                member = %self.member,
                partitions = %partitions(list),
                "events: partitions revoked"
            ),
            Rebalance::Error(error) => tracing::warn!(
                group = %self.group,
                member = %self.member,
                %error,
                "events: the consumer group could not rebalance"
            ),
        }
    }
}

/// One consumer group's reader of Kafka.
pub struct KafkaConsumer {
    consumer: StreamConsumer<GroupMember>,
}

impl KafkaConsumer {
    /// The next events, at most `max`: waits for one, then takes what has already
    /// arrived.
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<Delivery>> {
        let mut batch = Vec::new();
        while batch.is_empty() {
            let message = self.consumer.recv().await.context("reading from Kafka")?;
            match delivery(&message) {
                Some(delivery) => batch.push(delivery),
                None => self.skip(&message),
            }
        }
        while batch.len() < max {
            match tokio::time::timeout(BATCH_LINGER, self.consumer.recv()).await {
                Ok(Ok(message)) => match delivery(&message) {
                    Some(delivery) => batch.push(delivery),
                    None => self.skip(&message),
                },
                Ok(Err(error)) => {
                    tracing::warn!(%error, "reading from Kafka");
                    break;
                }
                Err(_) => break,
            }
        }
        Ok(batch)
    }

    /// A message that is not a modhost event (no id header) is passed over.
    fn skip(&self, message: &BorrowedMessage<'_>) {
        tracing::warn!(
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            "skipping a Kafka message that is not a modhost event (no {ID} header)"
        );
        let _ = self
            .consumer
            .store_offset(message.topic(), message.partition(), message.offset());
    }

    /// Stores the group's offsets past `deliveries`; the client commits them shortly.
    pub fn ack(&mut self, deliveries: &[Delivery]) -> Result<()> {
        for ((topic, partition), offset) in highest(deliveries) {
            match self.consumer.store_offset(&topic, partition, offset) {
                Ok(()) => {}
                // The partition moved to another consumer of the group meanwhile: its
                // new owner starts from the last committed offset, and the inbox skips
                // what this one already handled.
                Err(KafkaError::StoreOffset(RDKafkaErrorCode::State)) => {}
                Err(error) => return Err(error).context("storing Kafka offsets"),
            }
        }
        Ok(())
    }
}
