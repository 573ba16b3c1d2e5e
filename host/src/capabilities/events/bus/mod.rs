//! The bus: where committed events wait between the publishers' relays and the
//! subscribers' consumers.
//!
//! Two backends with one contract:
//! - [`send`](Bus::send) confirms an event only once the bus holds it durably; the
//!   relay deletes it from the outbox only then;
//! - a [`Consumer`] reads the topics of one consumer group (one subscribing module)
//!   from its last acknowledged position, in order per key, and
//!   [`ack`](Consumer::ack) moves that position on only after the handler's
//!   transaction committed. A crash in between delivers the event again; the
//!   subscriber's inbox makes that harmless.

pub mod embedded;
#[cfg(feature = "kafka")]
pub mod kafka;

use anyhow::Result;
use std::collections::BTreeMap;
use std::path::Path;

use super::envelope::Envelope;
use crate::deployment::{EventsBackend, EventsSettings};

/// The bus a node's relays send to and its consumers read from.
#[derive(Clone)]
pub enum Bus {
    /// The embedded, in-process log.
    Embedded(embedded::EmbeddedBus),
    /// A Kafka-protocol broker.
    #[cfg(feature = "kafka")]
    Kafka(kafka::KafkaBus),
}

/// Where one delivered event sits on the bus, to acknowledge it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The event's topic.
    pub topic: String,
    /// The partition (always 0 on the embedded bus).
    pub partition: i32,
    /// The event's offset within its partition (its log position, embedded).
    pub offset: i64,
}

/// One event read from the bus.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The event.
    pub envelope: Envelope,
    /// Where it was read, to acknowledge it.
    pub position: Position,
}

impl Bus {
    /// Opens the bus `settings` name. `subscriptions` (topic → consumer groups) tells
    /// the embedded bus what it may purge; `topics` are created on Kafka if missing.
    #[cfg_attr(not(feature = "kafka"), allow(unused_variables))]
    pub async fn open(
        settings: &EventsSettings,
        data_dir: &Path,
        topics: &[String],
        subscriptions: &BTreeMap<String, Vec<String>>,
    ) -> Result<Bus> {
        Ok(match &settings.backend {
            EventsBackend::Embedded => Bus::Embedded(
                embedded::EmbeddedBus::open(data_dir, settings.retention, subscriptions.clone())
                    .await?,
            ),
            #[cfg(not(feature = "kafka"))]
            EventsBackend::Kafka { .. } => {
                anyhow::bail!("{}", crate::deployment::build::Part::Kafka.missing())
            }
            #[cfg(feature = "kafka")]
            EventsBackend::Kafka {
                brokers,
                partitions,
                replication,
                security,
            } => Bus::Kafka(
                kafka::KafkaBus::open(
                    kafka::Brokers {
                        addresses: brokers.clone(),
                        security: security.clone(),
                    },
                    topics,
                    *partitions,
                    *replication,
                )
                .await?,
            ),
        })
    }

    /// Sends `events`, in order. Each outcome says whether the bus confirmed that
    /// event (it then holds it durably) or why not.
    pub async fn send(&self, events: &[Envelope]) -> Vec<Result<(), String>> {
        match self {
            Bus::Embedded(bus) => bus.send(events).await,
            #[cfg(feature = "kafka")]
            Bus::Kafka(bus) => bus.send(events).await,
        }
    }

    /// `module`'s consumer of `topics` for consumer group `group`, from its last
    /// acknowledged position (from the oldest retained event for a new group).
    /// `member` names this node's place in the group, the same across its restarts
    /// (see [`crate::capabilities::events::service::member`]).
    #[cfg_attr(not(feature = "kafka"), allow(unused_variables))]
    pub async fn subscribe(
        &self,
        module: &str,
        group: &str,
        member: &str,
        topics: &[String],
    ) -> Result<Consumer> {
        Ok(match self {
            Bus::Embedded(bus) => Consumer::Embedded(bus.subscribe(group, topics).await?),
            #[cfg(feature = "kafka")]
            Bus::Kafka(bus) => Consumer::Kafka(bus.subscribe(module, group, member, topics)?),
        })
    }

    /// How many events of each of `topics` group `group` has not acknowledged yet, on
    /// a bus that answers when asked (embedded). `None` on Kafka, whose client
    /// reports the lag by itself, once a second, for the partitions this node reads.
    pub async fn lag(&self, group: &str, topics: &[String]) -> Option<Result<Vec<(String, u64)>>> {
        match self {
            Bus::Embedded(bus) => Some(bus.lag(group, topics).await),
            #[cfg(feature = "kafka")]
            Bus::Kafka(_) => None,
        }
    }

    /// Every event retained on `topic`, oldest first (for the dead-letter listing).
    pub async fn read_all(&self, topic: &str) -> Result<Vec<Delivery>> {
        match self {
            Bus::Embedded(bus) => bus.read_all(topic).await,
            #[cfg(feature = "kafka")]
            Bus::Kafka(bus) => bus.read_all(topic).await,
        }
    }

    /// `embedded` or `kafka`.
    pub fn name(&self) -> &'static str {
        match self {
            Bus::Embedded(_) => "embedded",
            #[cfg(feature = "kafka")]
            Bus::Kafka(_) => "kafka",
        }
    }
}

/// Hands what the embedded log under `data_dir` still owes to `broker`, the bus the
/// node uses now: a single server that becomes a node of a split deployment (on a
/// Kafka-protocol broker) loses no event its subscribers had not handled yet, nor its
/// dead letters. Sent oldest first, before this node's relays send anything newer, so
/// the order per key of this node's events holds; each event keeps its id, so a
/// subscriber that handled one already skips it. Recorded page by page: a page the
/// broker took is not sent again; one sent when the node stopped before recording it
/// is (the same ids: skipped). An event the broker refuses stops the handover (and
/// the node's relays) until it takes it: the error names it. How many events were
/// handed over; none when there is no log, when `broker` is the embedded log itself,
/// or when it was handed over before.
pub async fn hand_over_embedded_log(
    data_dir: &Path,
    settings: &EventsSettings,
    subscriptions: &BTreeMap<String, Vec<String>>,
    broker: &Bus,
) -> Result<usize> {
    if matches!(broker, Bus::Embedded(_)) || !embedded::log_file(data_dir).exists() {
        return Ok(0);
    }
    let log =
        embedded::EmbeddedBus::open(data_dir, settings.retention, subscriptions.clone()).await?;
    let (mut after, mut handed) = (0, 0);
    loop {
        let (owed, reached) = log.owed(after).await?;
        if reached == after {
            break;
        }
        for (event, outcome) in owed.iter().zip(broker.send(&owed).await) {
            outcome.map_err(|why| {
                anyhow::anyhow!(
                    "handing the embedded log to the broker: event {} on {} refused: {why}",
                    event.id,
                    event.topic
                )
            })?;
        }
        // Page by page: what the broker holds is not sent again after a failure.
        if !owed.is_empty() {
            log.handed_over(reached).await?;
        }
        handed += owed.len();
        after = reached;
    }
    Ok(handed)
}

/// One consumer group's reader.
pub enum Consumer {
    /// On the embedded bus.
    Embedded(embedded::EmbeddedConsumer),
    /// On Kafka.
    #[cfg(feature = "kafka")]
    Kafka(kafka::KafkaConsumer),
}

impl Consumer {
    /// The next events, at most `max`: waits until there is at least one.
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<Delivery>> {
        match self {
            Consumer::Embedded(consumer) => consumer.next_batch(max).await,
            #[cfg(feature = "kafka")]
            Consumer::Kafka(consumer) => consumer.next_batch(max).await,
        }
    }

    /// Records that every event up to and including these has been handled.
    pub async fn ack(&mut self, deliveries: &[Delivery]) -> Result<()> {
        if deliveries.is_empty() {
            return Ok(());
        }
        match self {
            Consumer::Embedded(consumer) => consumer.ack(deliveries).await,
            #[cfg(feature = "kafka")]
            Consumer::Kafka(consumer) => consumer.ack(deliveries),
        }
    }
}

/// The highest offset per (topic, partition) among `deliveries`.
fn highest(deliveries: &[Delivery]) -> BTreeMap<(String, i32), i64> {
    let mut highest = BTreeMap::new();
    for delivery in deliveries {
        let entry = highest
            .entry((delivery.position.topic.clone(), delivery.position.partition))
            .or_insert(delivery.position.offset);
        *entry = (*entry).max(delivery.position.offset);
    }
    highest
}
