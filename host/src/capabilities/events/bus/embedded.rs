//! The embedded bus: a durable log in a SQLite file of the node's own
//! (`<data_dir>/events/bus.sqlite`), for the single server and the edge — no broker.
//!
//! The log is one table of events in append order; each consumer group keeps its
//! position per topic in a second table, moved on only by [`EmbeddedConsumer::ack`].
//! Appends commit with `synchronous = FULL`: once [`EmbeddedBus::send`] returns, the
//! event survives a crash of the process or of the machine, and only then does the relay
//! delete it from the publisher's outbox. Consumer positions commit with `NORMAL` on
//! connections of their own: a position lost to a power cut only replays events, which
//! the subscribers' inboxes skip, and an fsync per acknowledged batch would cost more
//! than the batch. SQLite has one writer at a time, so log
//! positions are assigned in commit order and a reader never sees a later event
//! before an earlier one has committed.
//!
//! Events every subscribed group has passed are purged once older than the retention;
//! events on topics no one subscribes to (dead letters) are purged by age alone.
//!
//! When the node moves to a broker (a single server becoming a node of a split
//! deployment), what the log still owes is handed over before anything new is sent:
//! [`EmbeddedBus::owed`] reads it, [`EmbeddedBus::handed_over`] records it gone.

use anyhow::{Context, Result};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::watch;

use super::{highest, Delivery, Position};
use crate::capabilities::events::envelope::{now_ms, Envelope};

/// How often delivered events older than the retention are purged.
const PURGE_EVERY: Duration = Duration::from_secs(60);
/// How long an idle consumer sleeps before looking again, should a wake-up be missed.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// The embedded bus of one node.
#[derive(Clone)]
pub struct EmbeddedBus {
    inner: Arc<Inner>,
}

struct Inner {
    /// Appends (durable: `synchronous = FULL`).
    pool: SqlitePool,
    /// Reads and consumer positions (`synchronous = NORMAL`).
    positions: SqlitePool,
    /// The newest log position: consumers wait for it to change.
    appended: watch::Sender<i64>,
    retention: Duration,
    /// Topic → the consumer groups subscribed to it.
    subscriptions: BTreeMap<String, Vec<String>>,
}

const SCHEMA: [&str; 4] = [
    "CREATE TABLE IF NOT EXISTS log (\
     position INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, key TEXT NOT NULL, \
     id TEXT NOT NULL, source TEXT NOT NULL, payload BLOB NOT NULL, headers TEXT NOT NULL, \
     traceparent TEXT, published_at INTEGER NOT NULL, appended_at INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS log_by_topic ON log (topic, position)",
    "CREATE TABLE IF NOT EXISTS cursors (\
     grp TEXT NOT NULL, topic TEXT NOT NULL, position INTEGER NOT NULL, \
     PRIMARY KEY (grp, topic))",
    // The newest log position handed over to a broker (one row, once it happened).
    "CREATE TABLE IF NOT EXISTS handover (\
     one INTEGER PRIMARY KEY CHECK (one = 1), position INTEGER NOT NULL, at INTEGER NOT NULL)",
];

const COLUMNS: &str =
    "position, topic, key, id, source, payload, headers, traceparent, published_at";

/// The embedded log's file under `data_dir`, whether or not it exists.
pub fn log_file(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("events").join("bus.sqlite")
}

/// How many of the log's events are read at a time when they are handed over…
const HANDOVER_PAGE: i64 = 500;
/// … and how many bytes of payload at most (a page is held in memory, and sent).
const HANDOVER_PAGE_BYTES: usize = 8 * 1024 * 1024;

impl EmbeddedBus {
    /// Opens (creating if needed) the log under `data_dir`.
    pub async fn open(
        data_dir: &Path,
        retention: Duration,
        subscriptions: BTreeMap<String, Vec<String>>,
    ) -> Result<EmbeddedBus> {
        let file = log_file(data_dir);
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(&file)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options.clone())
            .await
            .with_context(|| format!("opening the event log {}", file.display()))?;
        let positions = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.synchronous(SqliteSynchronous::Normal))
            .await
            .with_context(|| format!("opening the event log {}", file.display()))?;
        for statement in SCHEMA {
            sqlx::query(statement)
                .execute(&pool)
                .await
                .with_context(|| format!("preparing the event log {}", file.display()))?;
        }
        let newest: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM log")
            .fetch_one(&pool)
            .await?;
        let inner = Arc::new(Inner {
            pool,
            positions,
            appended: watch::Sender::new(newest),
            retention,
            subscriptions,
        });
        tokio::spawn(purge_periodically(Arc::downgrade(&inner)));
        Ok(EmbeddedBus { inner })
    }

    /// Appends `events` to the log in one durable transaction.
    pub async fn send(&self, events: &[Envelope]) -> Vec<Result<(), String>> {
        match self.append(events).await {
            Ok(()) => vec![Ok(()); events.len()],
            Err(error) => {
                let error = format!("{error:#}");
                vec![Err(error); events.len()]
            }
        }
    }

    async fn append(&self, events: &[Envelope]) -> Result<()> {
        let mut tx = self.inner.pool.begin().await?;
        let appended_at = now_ms();
        let mut last = 0;
        // Many rows per statement: each statement is a round trip to the connection's
        // thread, and rows keep their order within one.
        for chunk in events.chunks(200) {
            let rows = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            let statement = format!(
                "INSERT INTO log (topic, key, id, source, payload, headers, traceparent, \
                 published_at, appended_at) VALUES {rows}"
            );
            let mut query = sqlx::query(&statement);
            for event in chunk {
                query = query
                    .bind(&event.topic)
                    .bind(&event.key)
                    .bind(&event.id)
                    .bind(&event.source)
                    .bind(&event.payload)
                    .bind(event.headers_json())
                    .bind(&event.traceparent)
                    .bind(event.published_at_ms)
                    .bind(appended_at);
            }
            last = query.execute(&mut *tx).await?.last_insert_rowid();
        }
        tx.commit().await?;
        self.inner.appended.send_if_modified(|newest| {
            let moved = last > *newest;
            *newest = (*newest).max(last);
            moved
        });
        Ok(())
    }

    /// A consumer for `group`, from its last acknowledged position on each topic.
    pub async fn subscribe(&self, group: &str, topics: &[String]) -> Result<EmbeddedConsumer> {
        let mut cursors = BTreeMap::new();
        for topic in topics {
            let position: Option<i64> =
                sqlx::query_scalar("SELECT position FROM cursors WHERE grp = ? AND topic = ?")
                    .bind(group)
                    .bind(topic)
                    .fetch_optional(&self.inner.positions)
                    .await?;
            cursors.insert(topic.clone(), position.unwrap_or(0));
        }
        let scan_from = cursors.values().copied().min().unwrap_or(0);
        Ok(EmbeddedConsumer {
            bus: self.clone(),
            group: group.to_string(),
            topics: topics.to_vec(),
            cursors,
            scan_from,
            appended: self.inner.appended.subscribe(),
        })
    }

    /// How many events of each of `topics` group `group` has not acknowledged yet.
    pub async fn lag(&self, group: &str, topics: &[String]) -> Result<Vec<(String, u64)>> {
        let mut lags = Vec::with_capacity(topics.len());
        for topic in topics {
            let lag: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM log WHERE topic = ?1 AND position > COALESCE(\
                 (SELECT position FROM cursors WHERE grp = ?2 AND topic = ?1), 0)",
            )
            .bind(topic)
            .bind(group)
            .fetch_one(&self.inner.positions)
            .await?;
            lags.push((topic.clone(), lag.unsigned_abs()));
        }
        Ok(lags)
    }

    /// Every event retained on `topic`, oldest first.
    pub async fn read_all(&self, topic: &str) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM log WHERE topic = ? ORDER BY position"
        ))
        .bind(topic)
        .fetch_all(&self.inner.positions)
        .await?;
        rows.iter().map(delivery).collect()
    }

    /// What the log owes a broker taking over from it, oldest first, at most a page
    /// after position `after` (0 at first): every event not handed over yet that a
    /// subscribed group has not passed, and every event retained on a topic no one
    /// subscribes to (dead letters, kept for their listing and replay). Also the
    /// position the page reached: the next page starts past it.
    pub async fn owed(&self, after: i64) -> Result<(Vec<Envelope>, i64)> {
        let inner = &self.inner;
        let handed: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM handover")
            .fetch_one(&inner.positions)
            .await?;
        // Per subscribed topic, the position every group subscribed to it has passed.
        let mut passed = BTreeMap::new();
        for (topic, groups) in &inner.subscriptions {
            passed.insert(
                topic.as_str(),
                passed_by_all(&inner.positions, topic, groups).await?,
            );
        }
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM log WHERE position > ? ORDER BY position LIMIT ?"
        ))
        .bind(after.max(handed))
        .bind(HANDOVER_PAGE)
        .fetch_all(&inner.positions)
        .await?;
        let mut reached = after.max(handed);
        let (mut owed, mut bytes) = (Vec::new(), 0);
        for row in &rows {
            let delivery = delivery(row)?;
            let topic = delivery.position.topic.as_str();
            if passed
                .get(topic)
                .is_none_or(|passed| delivery.position.offset > *passed)
            {
                bytes += delivery.envelope.payload.len();
                owed.push(delivery.envelope);
            }
            reached = delivery.position.offset;
            if bytes >= HANDOVER_PAGE_BYTES {
                break;
            }
        }
        Ok((owed, reached))
    }

    /// Records that the log's events up to `position` are on a broker now: they are
    /// not handed over again, and the subscribed groups pass them (should the node
    /// ever come back to this log, they are not delivered twice).
    pub async fn handed_over(&self, position: i64) -> Result<()> {
        let inner = &self.inner;
        let mut tx = inner.positions.begin().await?;
        sqlx::query(
            "INSERT INTO handover (one, position, at) VALUES (1, ?1, ?2) \
             ON CONFLICT (one) DO UPDATE SET position = MAX(position, ?1), at = ?2",
        )
        .bind(position)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        for (topic, groups) in &inner.subscriptions {
            for group in groups {
                sqlx::query(
                    "INSERT INTO cursors (grp, topic, position) VALUES (?, ?, ?) \
                     ON CONFLICT (grp, topic) DO UPDATE SET position = MAX(position, excluded.position)",
                )
                .bind(group)
                .bind(topic)
                .bind(position)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deletes what the retention no longer requires: events older than it that
    /// every group subscribed to their topic has passed.
    pub async fn purge(&self) -> Result<u64> {
        let inner = &self.inner;
        let cutoff = now_ms() - i64::try_from(inner.retention.as_millis()).unwrap_or(i64::MAX);
        let mut purged = 0;
        for (topic, groups) in &inner.subscriptions {
            let passed = passed_by_all(&inner.pool, topic, groups).await?;
            purged += sqlx::query(
                "DELETE FROM log WHERE topic = ? AND position <= ? AND appended_at < ?",
            )
            .bind(topic)
            .bind(passed)
            .bind(cutoff)
            .execute(&inner.pool)
            .await?
            .rows_affected();
        }
        let subscribed: Vec<&String> = inner.subscriptions.keys().collect();
        let placeholders = vec!["?"; subscribed.len()].join(", ");
        let statement =
            format!("DELETE FROM log WHERE appended_at < ? AND topic NOT IN ({placeholders})");
        let mut unsubscribed = sqlx::query(&statement).bind(cutoff);
        for topic in subscribed {
            unsubscribed = unsubscribed.bind(topic);
        }
        purged += unsubscribed.execute(&inner.pool).await?.rows_affected();
        Ok(purged)
    }
}

/// The log position every one of `groups` has passed on `topic` (0 when one of them
/// has not acknowledged any event of it yet).
async fn passed_by_all(pool: &SqlitePool, topic: &str, groups: &[String]) -> Result<i64> {
    let mut passed = i64::MAX;
    for group in groups {
        let position: Option<i64> =
            sqlx::query_scalar("SELECT position FROM cursors WHERE grp = ? AND topic = ?")
                .bind(group)
                .bind(topic)
                .fetch_optional(pool)
                .await?;
        passed = passed.min(position.unwrap_or(0));
    }
    Ok(passed)
}

async fn purge_periodically(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(PURGE_EVERY).await;
        let Some(inner) = inner.upgrade() else { return };
        let bus = EmbeddedBus { inner };
        match bus.purge().await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "event log purged"),
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "purging the event log failed")
            }
        }
    }
}

fn delivery(row: &sqlx::sqlite::SqliteRow) -> Result<Delivery> {
    let offset: i64 = row.try_get("position")?;
    let topic: String = row.try_get("topic")?;
    let headers: String = row.try_get("headers")?;
    Ok(Delivery {
        envelope: Envelope {
            id: row.try_get("id")?,
            topic: topic.clone(),
            key: row.try_get("key")?,
            payload: row.try_get("payload")?,
            headers: Envelope::headers_from_json(&headers),
            source: row.try_get("source")?,
            published_at_ms: row.try_get("published_at")?,
            traceparent: row.try_get("traceparent")?,
        },
        position: Position {
            topic,
            partition: 0,
            offset,
        },
    })
}

/// One consumer group's reader of the embedded log.
pub struct EmbeddedConsumer {
    bus: EmbeddedBus,
    group: String,
    topics: Vec<String>,
    /// Per topic, the last acknowledged position.
    cursors: BTreeMap<String, i64>,
    /// Where the next read starts: past everything handed out already.
    scan_from: i64,
    appended: watch::Receiver<i64>,
}

impl EmbeddedConsumer {
    /// The next events after those already handed out, at most `max`; waits for one.
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<Delivery>> {
        let placeholders = vec!["?"; self.topics.len()].join(", ");
        let statement = format!(
            "SELECT {COLUMNS} FROM log WHERE position > ? AND topic IN ({placeholders}) \
             ORDER BY position LIMIT ?"
        );
        loop {
            // Seen before reading: an append after the read wakes the wait below.
            self.appended.borrow_and_update();
            let mut query = sqlx::query(&statement).bind(self.scan_from);
            for topic in &self.topics {
                query = query.bind(topic);
            }
            let rows = query
                .bind(i64::try_from(max).unwrap_or(i64::MAX))
                .fetch_all(&self.bus.inner.positions)
                .await?;
            if let Some(last) = rows.last() {
                self.scan_from = last.try_get("position")?;
                let batch: Vec<Delivery> = rows
                    .iter()
                    .map(delivery)
                    .collect::<Result<Vec<_>>>()?
                    .into_iter()
                    .filter(|d| d.position.offset > self.cursors[&d.position.topic])
                    .collect();
                if !batch.is_empty() {
                    return Ok(batch);
                }
                continue;
            }
            tokio::select! {
                changed = self.appended.changed() => {
                    if changed.is_err() {
                        // The bus is gone; nothing more will arrive.
                        std::future::pending::<()>().await;
                    }
                }
                () = tokio::time::sleep(IDLE_POLL) => {}
            }
        }
    }

    /// Moves the group's position past `deliveries`.
    pub async fn ack(&mut self, deliveries: &[Delivery]) -> Result<()> {
        let mut tx = self.bus.inner.positions.begin().await?;
        for ((topic, _), offset) in highest(deliveries) {
            sqlx::query(
                "INSERT INTO cursors (grp, topic, position) VALUES (?, ?, ?) \
                 ON CONFLICT (grp, topic) DO UPDATE SET position = MAX(position, excluded.position)",
            )
            .bind(&self.group)
            .bind(&topic)
            .bind(offset)
            .execute(&mut *tx)
            .await?;
            if let Some(cursor) = self.cursors.get_mut(&topic) {
                *cursor = (*cursor).max(offset);
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(topic: &str, id: &str) -> Envelope {
        Envelope {
            id: id.to_string(),
            topic: topic.to_string(),
            key: "k".to_string(),
            payload: id.as_bytes().to_vec(),
            headers: Vec::new(),
            source: "source".to_string(),
            published_at_ms: now_ms(),
            traceparent: None,
        }
    }

    fn ids(events: &[Envelope]) -> Vec<&str> {
        events.iter().map(|event| event.id.as_str()).collect()
    }

    /// What the log owes a broker: past the slowest group on a subscribed topic, all
    /// of a topic no one reads; once handed over, nothing — and the groups pass it.
    #[tokio::test]
    async fn the_log_owes_what_a_group_has_not_passed_and_its_dead_letters_once() {
        let dir = tempfile::tempdir().unwrap();
        let subscriptions = BTreeMap::from([(
            "orders".to_string(),
            vec!["fast".to_string(), "slow".to_string()],
        )]);
        let bus = EmbeddedBus::open(dir.path(), Duration::from_secs(3600), subscriptions)
            .await
            .unwrap();
        let sent = bus
            .send(&[
                event("orders", "o1"),
                event("dead.letters", "d1"),
                event("orders", "o2"),
                event("orders", "o3"),
            ])
            .await;
        assert!(sent.iter().all(Result::is_ok), "{sent:?}");
        // `fast` handled everything, `slow` the first order only.
        for (group, upto) in [("fast", 4), ("slow", 1)] {
            let mut consumer = bus.subscribe(group, &["orders".to_string()]).await.unwrap();
            let batch = consumer.next_batch(10).await.unwrap();
            let handled: Vec<_> = batch
                .into_iter()
                .filter(|delivery| delivery.position.offset <= upto)
                .collect();
            consumer.ack(&handled).await.unwrap();
        }

        let (owed, reached) = bus.owed(0).await.unwrap();
        assert_eq!(ids(&owed), ["d1", "o2", "o3"]);
        assert_eq!(reached, 4);
        let (more, at) = bus.owed(reached).await.unwrap();
        assert!(more.is_empty());
        assert_eq!(at, reached, "nothing past the last page");

        bus.handed_over(reached).await.unwrap();
        let (owed, _) = bus.owed(0).await.unwrap();
        assert!(owed.is_empty(), "handed over once: {:?}", ids(&owed));
        assert_eq!(
            bus.lag("slow", &["orders".to_string()]).await.unwrap(),
            [("orders".to_string(), 0)],
            "the groups pass what went to the broker"
        );
        // What the log takes after a handover is owed again.
        bus.send(&[event("orders", "o4")]).await;
        let (owed, _) = bus.owed(0).await.unwrap();
        assert_eq!(ids(&owed), ["o4"]);
    }
}
