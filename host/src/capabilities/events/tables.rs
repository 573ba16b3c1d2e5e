//! The host's two event tables in a module's own database.
//!
//! - `modhost_outbox`: events the module published and the relay has not yet handed to
//!   the bus. A row is written in the publisher's transaction and deleted once the bus
//!   has confirmed the event: the table holds exactly the committed events still in
//!   flight.
//! - `modhost_inbox`: ids of events the module has handled (or given up on). A row is
//!   written in the same transaction as the handler's own writes, so a redelivered
//!   event finds its id there and is skipped: its effects happen once.
//!
//! Both live beside the module's tables, in its file or schema, under its role, and are
//! created when the node starts. Like `modhost_migrations`, names starting with
//! `modhost_` are the host's.

use super::envelope::Envelope;
use crate::capabilities::sql::{Database, Error, Transaction, Value};

/// The statements that create both tables, for the database's dialect.
fn create_statements(backend: &str) -> [&'static str; 2] {
    match backend {
        "postgres" => [
            "CREATE TABLE IF NOT EXISTS modhost_outbox (\
             seq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL UNIQUE, topic TEXT NOT NULL, \
             key TEXT NOT NULL, payload BYTEA NOT NULL, headers TEXT NOT NULL, \
             traceparent TEXT, published_at BIGINT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS modhost_inbox (\
             id TEXT PRIMARY KEY, topic TEXT NOT NULL, source TEXT NOT NULL, \
             outcome TEXT NOT NULL, handled_at BIGINT NOT NULL)",
        ],
        _ => [
            "CREATE TABLE IF NOT EXISTS modhost_outbox (\
             seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, \
             topic TEXT NOT NULL, key TEXT NOT NULL, payload BLOB NOT NULL, \
             headers TEXT NOT NULL, traceparent TEXT, published_at INTEGER NOT NULL)",
            "CREATE TABLE IF NOT EXISTS modhost_inbox (\
             id TEXT PRIMARY KEY, topic TEXT NOT NULL, source TEXT NOT NULL, \
             outcome TEXT NOT NULL, handled_at INTEGER NOT NULL)",
        ],
    }
}

/// Creates the outbox and inbox in `database` if they are missing.
pub async fn create(database: &Database) -> Result<(), Error> {
    for statement in create_statements(database.backend()) {
        database.execute(statement, Vec::new()).await?;
    }
    Ok(())
}

const INSERT_OUTBOX: &str = "INSERT INTO modhost_outbox \
     (id, topic, key, payload, headers, traceparent, published_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

fn outbox_row(envelope: &Envelope) -> Vec<Value> {
    vec![
        Value::Text(envelope.id.clone()),
        Value::Text(envelope.topic.clone()),
        Value::Text(envelope.key.clone()),
        Value::Blob(envelope.payload.clone()),
        Value::Text(envelope.headers_json()),
        envelope
            .traceparent
            .clone()
            .map_or(Value::Null, Value::Text),
        Value::Integer(envelope.published_at_ms),
    ]
}

/// Writes `envelope` to the outbox inside `tx`.
pub async fn append_in(tx: &mut Transaction, envelope: &Envelope) -> Result<(), Error> {
    tx.execute(INSERT_OUTBOX, outbox_row(envelope))
        .await
        .map(drop)
}

/// Writes `envelope` to the outbox in a transaction of its own.
pub async fn append(database: &Database, envelope: &Envelope) -> Result<(), Error> {
    database
        .execute(INSERT_OUTBOX, outbox_row(envelope))
        .await
        .map(drop)
}

/// A committed outbox row: its position and its event.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The row's position: events leave the outbox in this order.
    pub seq: i64,
    /// The event.
    pub envelope: Envelope,
}

/// The oldest `limit` committed events of `source`'s outbox, in publication order.
pub async fn pending(database: &Database, source: &str, limit: u32) -> Result<Vec<Pending>, Error> {
    let rows = database
        .query(
            "SELECT seq, id, topic, key, payload, headers, traceparent, published_at \
             FROM modhost_outbox ORDER BY seq LIMIT $1",
            vec![Value::Integer(i64::from(limit))],
        )
        .await?;
    Ok(rows
        .rows
        .into_iter()
        .filter_map(|row| match <[Value; 8]>::try_from(row).ok()? {
            [Value::Integer(seq), Value::Text(id), Value::Text(topic), Value::Text(key), Value::Blob(payload), Value::Text(headers), traceparent, Value::Integer(published_at_ms)] => {
                Some(Pending {
                    seq,
                    envelope: Envelope {
                        id,
                        topic,
                        key,
                        payload,
                        headers: Envelope::headers_from_json(&headers),
                        source: source.to_string(),
                        published_at_ms,
                        traceparent: match traceparent {
                            Value::Text(text) => Some(text),
                            _ => None,
                        },
                    },
                })
            }
            _ => None,
        })
        .collect())
}

/// Removes events the bus has confirmed from the outbox.
pub async fn remove(database: &Database, seqs: &[i64]) -> Result<(), Error> {
    for chunk in seqs.chunks(500) {
        let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        database
            .execute(
                &format!(
                    "DELETE FROM modhost_outbox WHERE seq IN ({})",
                    placeholders.join(", ")
                ),
                chunk.iter().copied().map(Value::Integer).collect(),
            )
            .await?;
    }
    Ok(())
}

/// The publication time of the oldest event still in the outbox, if any.
pub async fn oldest(database: &Database) -> Result<Option<i64>, Error> {
    let rows = database
        .query("SELECT MIN(published_at) FROM modhost_outbox", Vec::new())
        .await?;
    Ok(match rows.rows.first().and_then(|row| row.first()) {
        Some(Value::Integer(ms)) => Some(*ms),
        _ => None,
    })
}

/// How an event left a subscriber's inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The handler succeeded; its writes committed with this record.
    Handled,
    /// The handler kept failing; the event went to the dead-letter topic.
    DeadLettered,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Handled => "handled",
            Outcome::DeadLettered => "dead-lettered",
        }
    }
}

impl std::str::FromStr for Outcome {
    type Err = String;

    fn from_str(text: &str) -> Result<Outcome, String> {
        match text {
            "handled" => Ok(Outcome::Handled),
            "dead-lettered" => Ok(Outcome::DeadLettered),
            other => Err(format!("unknown inbox outcome {other:?}")),
        }
    }
}

/// What the inbox remembers of event `id`: how it left, or nothing (never seen, or
/// forgotten after `events.retention`).
pub async fn inbox_outcome(database: &Database, id: &str) -> Result<Option<Outcome>, Error> {
    let rows = database
        .query(
            "SELECT outcome FROM modhost_inbox WHERE id = $1",
            vec![Value::Text(id.to_string())],
        )
        .await?;
    Ok(rows
        .rows
        .into_iter()
        .next()
        .and_then(|row| match row.into_iter().next() {
            Some(Value::Text(outcome)) => outcome.parse().ok(),
            _ => None,
        }))
}

/// Forgets that the module gave event `id` up, so that it is handled when it arrives
/// again. A record of the event having been handled stays.
pub async fn forget_dead_letter(database: &Database, id: &str) -> Result<(), Error> {
    database
        .execute(
            "DELETE FROM modhost_inbox WHERE id = $1 AND outcome = $2",
            vec![
                Value::Text(id.to_string()),
                Value::Text(Outcome::DeadLettered.as_str().to_string()),
            ],
        )
        .await
        .map(drop)
}

/// Records `envelopes` in the inbox inside `tx`, in one statement per 200. Returns,
/// for each, whether it is new: `false` means the event was handled before (its id was
/// already there, or earlier in `envelopes`) and must not be again.
pub async fn claim(
    tx: &mut Transaction,
    envelopes: &[&Envelope],
    outcome: Outcome,
) -> Result<Vec<bool>, Error> {
    let mut claimed = std::collections::HashSet::new();
    let now = super::envelope::now_ms();
    for chunk in envelopes.chunks(200) {
        let mut rows = Vec::with_capacity(chunk.len());
        let mut params = Vec::with_capacity(chunk.len() * 5);
        for (i, envelope) in chunk.iter().enumerate() {
            let at = i * 5;
            rows.push(format!(
                "(${}, ${}, ${}, ${}, ${})",
                at + 1,
                at + 2,
                at + 3,
                at + 4,
                at + 5
            ));
            params.extend([
                Value::Text(envelope.id.clone()),
                Value::Text(envelope.topic.clone()),
                Value::Text(envelope.source.clone()),
                Value::Text(outcome.as_str().into()),
                Value::Integer(now),
            ]);
        }
        let inserted = tx
            .query(
                &format!(
                    "INSERT INTO modhost_inbox (id, topic, source, outcome, handled_at) VALUES {} \
                     ON CONFLICT (id) DO NOTHING RETURNING id",
                    rows.join(", ")
                ),
                params,
            )
            .await?;
        claimed.extend(
            inserted
                .rows
                .into_iter()
                .filter_map(|row| match row.into_iter().next() {
                    Some(Value::Text(id)) => Some(id),
                    _ => None,
                }),
        );
    }
    // An id twice in one batch (a resent copy next to the original) is new once: its
    // first occurrence.
    Ok(envelopes.iter().map(|e| claimed.remove(&e.id)).collect())
}

/// Forgets inbox records older than `before_ms`: events that old are past redelivery.
pub async fn forget_before(database: &Database, before_ms: i64) -> Result<u64, Error> {
    database
        .execute(
            "DELETE FROM modhost_inbox WHERE handled_at < $1",
            vec![Value::Integer(before_ms)],
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::{DatabaseBackend, DatabaseSpec, Timeout};
    use std::time::Duration;

    fn envelope(id: &str) -> Envelope {
        Envelope {
            id: id.into(),
            topic: "t".into(),
            key: "k".into(),
            payload: b"p".to_vec(),
            headers: vec![("h".into(), "v".into())],
            source: "m".into(),
            published_at_ms: 7,
            traceparent: None,
        }
    }

    async fn database(dir: &std::path::Path) -> Database {
        let spec = DatabaseSpec {
            backend: DatabaseBackend::Sqlite,
            pool: 2,
            acquire_timeout: Timeout(Duration::from_secs(2)),
            max_result: crate::deployment::database::DEFAULT_MAX_RESULT,
            migrations: None,
        };
        let database = Database::open("m", &spec, dir, Duration::from_secs(2))
            .await
            .unwrap();
        create(&database).await.unwrap();
        database
    }

    #[tokio::test]
    async fn an_id_is_claimed_once_even_twice_in_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let database = database(dir.path()).await;
        let (a, b) = (envelope("a"), envelope("b"));
        let mut tx = database.begin().await.unwrap();
        let fresh = claim(&mut tx, &[&a, &b, &a], Outcome::Handled)
            .await
            .unwrap();
        assert_eq!(fresh, [true, true, false]);
        tx.commit().await.unwrap();
        let mut tx = database.begin().await.unwrap();
        let again = claim(&mut tx, &[&b, &envelope("c")], Outcome::Handled)
            .await
            .unwrap();
        assert_eq!(again, [false, true]);
        // Rolled back, the claim of `c` never happened.
        tx.rollback().await.unwrap();
        let mut tx = database.begin().await.unwrap();
        let after = claim(&mut tx, &[&envelope("c")], Outcome::Handled)
            .await
            .unwrap();
        assert_eq!(after, [true]);
    }

    #[tokio::test]
    async fn the_outbox_keeps_order_and_forgets_what_was_sent() {
        let dir = tempfile::tempdir().unwrap();
        let database = database(dir.path()).await;
        for id in ["1", "2", "3"] {
            append(&database, &envelope(id)).await.unwrap();
        }
        let pending = pending(&database, "m", 10).await.unwrap();
        let ids: Vec<&str> = pending.iter().map(|p| p.envelope.id.as_str()).collect();
        assert_eq!(ids, ["1", "2", "3"]);
        assert_eq!(pending[0].envelope, envelope("1"));
        assert_eq!(oldest(&database).await.unwrap(), Some(7));
        remove(&database, &[pending[0].seq, pending[2].seq])
            .await
            .unwrap();
        let left = super::pending(&database, "m", 10).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].envelope.id, "2");
    }
}
