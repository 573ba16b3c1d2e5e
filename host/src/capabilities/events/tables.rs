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
//! On SQLite both live in the module's file, beside its tables, so that they commit
//! in its transactions; on Postgres in the module's host schema. Like
//! `modhost_migrations`, names starting with `modhost_` are the host's.
//!
//! The host reads and writes them with [`Database::host_query`] and its kin, and
//! inside a module's transaction through the backend's keyed host functions; the
//! module's own SQL cannot reach them on either backend (see the SQL capability). The
//! **seal** on every outbox row ([`Envelope::seal`], a MAC under a key of the host's)
//! stays as a second line: the relay sends a row only if its seal holds, and sets any
//! other aside (logged, and counted in `modhost_events_refused_total`).

use super::envelope::{self, Envelope};
use crate::capabilities::sql::{Database, Error, Transaction, Value};

/// What the outbox's seals are made with: [`Database::host_key`] for this purpose.
pub const SEAL_PURPOSE: &str = "modhost_outbox seal";

/// Largest outbox row the relay reads whole (its fields' bytes together); a larger
/// one cannot be an event the host wrote (see [`envelope::MAX_EVENT`]) and is
/// refused unread.
const MAX_ROW: i64 = 4 * 1024 * 1024;

/// The statements that create both tables, for the database's dialect.
fn create_statements(backend: &str) -> [&'static str; 3] {
    match backend {
        "postgres" => [
            "CREATE TABLE IF NOT EXISTS modhost_outbox (\
             seq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL UNIQUE, topic TEXT NOT NULL, \
             key TEXT NOT NULL, payload BYTEA NOT NULL, headers TEXT NOT NULL, \
             traceparent TEXT, published_at BIGINT NOT NULL, seal TEXT)",
            "CREATE TABLE IF NOT EXISTS modhost_inbox (\
             id TEXT PRIMARY KEY, topic TEXT NOT NULL, source TEXT NOT NULL, \
             outcome TEXT NOT NULL, handled_at BIGINT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS modhost_outbox_refused (\
             seq BIGINT, id TEXT, topic TEXT, key TEXT, payload BYTEA, headers TEXT, \
             traceparent TEXT, published_at BIGINT, seal TEXT, \
             reason TEXT NOT NULL, refused_at BIGINT NOT NULL)",
        ],
        _ => [
            "CREATE TABLE IF NOT EXISTS modhost_outbox (\
             seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, \
             topic TEXT NOT NULL, key TEXT NOT NULL, payload BLOB NOT NULL, \
             headers TEXT NOT NULL, traceparent TEXT, published_at INTEGER NOT NULL, seal TEXT)",
            "CREATE TABLE IF NOT EXISTS modhost_inbox (\
             id TEXT PRIMARY KEY, topic TEXT NOT NULL, source TEXT NOT NULL, \
             outcome TEXT NOT NULL, handled_at INTEGER NOT NULL)",
            // Untyped columns: a refused row keeps whatever the module wrote.
            "CREATE TABLE IF NOT EXISTS modhost_outbox_refused (\
             seq, id, topic, key, payload, headers, traceparent, published_at, seal, \
             reason TEXT NOT NULL, refused_at INTEGER NOT NULL)",
        ],
    }
}

/// Creates the outbox and inbox in `database` if they are missing. An outbox made
/// before rows were sealed gets its `seal` column, and the rows it holds (written by
/// the host before this version, and so trusted) their seals.
pub async fn create(database: &Database, source: &str) -> Result<(), Error> {
    let mut statements: Vec<String> = create_statements(database.backend())
        .iter()
        .map(|statement| statement.to_string())
        .collect();
    // On Postgres the module's transactions reach these tables through the host's
    // functions: an event published, a batch of events claimed as handled.
    statements.extend(database.host_function(
        APPEND_OUTBOX,
        "p_id text, p_topic text, p_key text, p_payload bytea, p_headers text, \
         p_traceparent text, p_published_at bigint, p_seal text",
        "bigint",
        "INSERT INTO modhost_outbox \
         (id, topic, key, payload, headers, traceparent, published_at, seal) \
         VALUES (p_id, p_topic, p_key, p_payload, p_headers, p_traceparent, \
         p_published_at, p_seal); RETURN 1;",
    ));
    statements.extend(database.host_function(
        CLAIM_INBOX,
        "p_entries text, p_outcome text, p_handled_at bigint",
        "SETOF text",
        "RETURN QUERY WITH claimed AS ( \
           INSERT INTO modhost_inbox (id, topic, source, outcome, handled_at) \
           SELECT e->>0, e->>1, e->>2, p_outcome, p_handled_at \
           FROM jsonb_array_elements(p_entries::jsonb) AS e \
           ON CONFLICT (id) DO NOTHING RETURNING modhost_inbox.id) \
         SELECT claimed.id FROM claimed;",
    ));
    database.host_prepare(&statements).await?;
    let has_seal = database
        .host_query(
            match database.backend() {
                "postgres" => {
                    "SELECT count(*) FROM information_schema.columns WHERE table_schema = \
                     current_schema() AND table_name = 'modhost_outbox' AND column_name = 'seal'"
                }
                _ => "SELECT count(*) FROM pragma_table_info('modhost_outbox') WHERE name = 'seal'",
            },
            Vec::new(),
        )
        .await?;
    if has_seal.rows != [vec![Value::Integer(1)]] {
        database
            .host_execute(
                "ALTER TABLE modhost_outbox ADD COLUMN seal TEXT",
                Vec::new(),
            )
            .await?;
        let key = database.host_key(SEAL_PURPOSE);
        // Forward by position: a row that cannot be read stays unsealed (the relay
        // sets it aside) and is not read again.
        let mut after = i64::MIN;
        loop {
            let rows = database
                .host_query(
                    "SELECT seq, id, topic, key, payload, headers, traceparent, published_at \
                     FROM modhost_outbox WHERE seal IS NULL AND seq > $1 ORDER BY seq LIMIT 500",
                    vec![Value::Integer(after)],
                )
                .await?;
            if rows.rows.is_empty() {
                break;
            }
            for row in rows.rows {
                if let Some(Value::Integer(seq)) = row.first() {
                    after = after.max(*seq);
                }
                let Some((seq, envelope)) = decode_row(row, source) else {
                    continue;
                };
                database
                    .host_execute(
                        "UPDATE modhost_outbox SET seal = $1 WHERE seq = $2",
                        vec![Value::Text(envelope.seal(&key)), Value::Integer(seq)],
                    )
                    .await?;
            }
        }
    }
    Ok(())
}

/// The host function (Postgres) that appends a sealed row to the outbox.
const APPEND_OUTBOX: &str = "modhost_append_outbox";
/// The host function (Postgres) that records events in the inbox, returning the new.
const CLAIM_INBOX: &str = "modhost_claim_inbox";

const INSERT_OUTBOX: &str = "INSERT INTO modhost_outbox \
     (id, topic, key, payload, headers, traceparent, published_at, seal) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

fn outbox_row(envelope: &Envelope, seal: String) -> Vec<Value> {
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
        Value::Text(seal),
    ]
}

/// Writes `envelope` to `database`'s outbox inside `tx` (a transaction on it), sealed.
pub async fn append_in(
    database: &Database,
    tx: &mut Transaction,
    envelope: &Envelope,
) -> Result<(), Error> {
    let seal = envelope.seal(&database.host_key(SEAL_PURPOSE));
    let row = outbox_row(envelope, seal);
    match database.backend() {
        "postgres" => tx.host_call(APPEND_OUTBOX, row).await.map(drop),
        _ => tx.host_execute(INSERT_OUTBOX, row).await.map(drop),
    }
}

/// Writes `envelope` to the outbox in a transaction of its own, sealed.
pub async fn append(database: &Database, envelope: &Envelope) -> Result<(), Error> {
    let seal = envelope.seal(&database.host_key(SEAL_PURPOSE));
    database
        .host_execute(INSERT_OUTBOX, outbox_row(envelope, seal))
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

/// An outbox row the relay will not send, and why.
#[derive(Debug, Clone)]
pub struct Refused {
    /// The row's position.
    pub seq: i64,
    /// The topic it claims (cut to 200 bytes), for the log and the metric.
    pub topic: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// The next rows of an outbox: those to send, in order, and those to remove unsent.
#[derive(Debug, Default)]
pub struct Batch {
    /// Rows the host wrote, in publication order.
    pub ready: Vec<Pending>,
    /// Rows the host did not write (or cannot read).
    pub refused: Vec<Refused>,
}

/// The oldest `limit` committed rows of `source`'s outbox: the events its `publish`
/// wrote, in publication order, and apart from them every row whose seal does not
/// hold, that is malformed, or too large to be an event.
pub async fn pending(database: &Database, source: &str, limit: u32) -> Result<Batch, Error> {
    pending_after(database, source, i64::MIN, limit).await
}

/// [`pending`], from the rows past position `after` on.
async fn pending_after(
    database: &Database,
    source: &str,
    after: i64,
    limit: u32,
) -> Result<Batch, Error> {
    // First each row's size (its fields' bytes), so that a row too large to be an
    // event is never read whole.
    let size = match database.backend() {
        "postgres" => {
            "octet_length(id) + octet_length(topic) + octet_length(key) + octet_length(payload) \
             + octet_length(headers) + coalesce(octet_length(traceparent), 0) \
             + coalesce(octet_length(seal), 0)"
        }
        _ => {
            "length(CAST(id AS BLOB)) + length(CAST(topic AS BLOB)) + length(CAST(key AS BLOB)) \
             + length(CAST(payload AS BLOB)) + length(CAST(headers AS BLOB)) \
             + coalesce(length(CAST(traceparent AS BLOB)), 0) + coalesce(length(CAST(seal AS BLOB)), 0)"
        }
    };
    let sizes = database
        .host_query(
            &format!(
                "SELECT seq, substr(CAST(topic AS TEXT), 1, 200), {size} FROM modhost_outbox \
                 WHERE seq > $2 ORDER BY seq LIMIT $1"
            ),
            vec![Value::Integer(i64::from(limit)), Value::Integer(after)],
        )
        .await?;
    let mut batch = Batch::default();
    let mut readable = Vec::new();
    for row in sizes.rows {
        match row.as_slice() {
            [Value::Integer(seq), _, Value::Integer(size)] if *size <= MAX_ROW => {
                readable.push(*seq)
            }
            [Value::Integer(seq), topic, _] => batch.refused.push(Refused {
                seq: *seq,
                topic: match topic {
                    Value::Text(topic) => topic.clone(),
                    _ => String::new(),
                },
                reason: "larger than any event",
            }),
            _ => {}
        }
    }
    let key = database.host_key(SEAL_PURPOSE);
    // Then the rows themselves, those between the first and last readable one whose
    // size is within bounds: one statement, the same every time, so it stays
    // compiled. (A row that became visible in between is measured here too.)
    if let (Some(first), Some(last)) = (readable.first(), readable.last()) {
        let rows = database
            .host_query(
                &format!(
                    "SELECT seq, id, topic, key, payload, headers, traceparent, published_at, seal \
                     FROM modhost_outbox WHERE seq >= $1 AND seq <= $2 AND {size} <= $3 \
                     ORDER BY seq"
                ),
                vec![
                    Value::Integer(*first),
                    Value::Integer(*last),
                    Value::Integer(MAX_ROW),
                ],
            )
            .await?;
        for mut row in rows.rows {
            let seal = match row.pop() {
                Some(Value::Text(seal)) => Some(seal),
                _ => None,
            };
            let seq = match row.first() {
                Some(Value::Integer(seq)) => *seq,
                _ => continue,
            };
            let topic = match row.get(2) {
                Some(Value::Text(topic)) => topic.chars().take(200).collect(),
                _ => String::new(),
            };
            let refuse = |reason| Refused {
                seq,
                topic: topic.clone(),
                reason,
            };
            match decode_row(row, source) {
                None => batch.refused.push(refuse("malformed")),
                Some((_, envelope)) => match seal {
                    Some(seal) if envelope.sealed_by(&seal, &key) => {
                        // Sealed by the host, which checked it at publication; checked
                        // again here all the same.
                        match envelope::check(&envelope.key, &envelope.payload, &envelope.headers) {
                            None => batch.ready.push(Pending { seq, envelope }),
                            Some(_) => batch.refused.push(refuse("malformed")),
                        }
                    }
                    _ => batch.refused.push(refuse("not written by the host")),
                },
            }
        }
    }
    Ok(batch)
}

/// An outbox row of `source`'s (without its seal) as its position and event, if it has
/// the shape the host writes.
fn decode_row(row: Vec<Value>, source: &str) -> Option<(i64, Envelope)> {
    match <[Value; 8]>::try_from(row).ok()? {
        [Value::Integer(seq), Value::Text(id), Value::Text(topic), Value::Text(key), Value::Blob(payload), Value::Text(headers), traceparent, Value::Integer(published_at_ms)] => {
            Some((
                seq,
                Envelope {
                    id,
                    topic,
                    key,
                    payload,
                    headers: serde_json::from_str(&headers).ok()?,
                    source: source.to_string(),
                    published_at_ms,
                    traceparent: match traceparent {
                        Value::Text(text) => Some(text),
                        Value::Null => None,
                        _ => return None,
                    },
                },
            ))
        }
        _ => None,
    }
}

/// Moves `refused` rows out of the outbox, unsent, into `modhost_outbox_refused`,
/// each with its reason: nothing the relay will not send is thrown away (a row sealed
/// under a key the node has since lost would be refused too), and an operator can
/// look at them there.
pub async fn set_aside(database: &Database, refused: &[Refused]) -> Result<(), Error> {
    let mut tx = database.host_begin().await?;
    let now = envelope::now_ms();
    for row in refused {
        tx.host_execute(
            "INSERT INTO modhost_outbox_refused SELECT seq, id, topic, key, payload, headers, \
             traceparent, published_at, seal, $2, $3 FROM modhost_outbox WHERE seq = $1",
            vec![
                Value::Integer(row.seq),
                Value::Text(row.reason.to_string()),
                Value::Integer(now),
            ],
        )
        .await?;
        tx.host_execute(
            "DELETE FROM modhost_outbox WHERE seq = $1",
            vec![Value::Integer(row.seq)],
        )
        .await?;
    }
    tx.commit().await
}

/// Removes events the bus has confirmed from the outbox.
pub async fn remove(database: &Database, seqs: &[i64]) -> Result<(), Error> {
    for chunk in seqs.chunks(500) {
        let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        database
            .host_execute(
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

/// What waits in a module's outbox for the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// How many events.
    pub depth: u64,
    /// The publication time of the oldest, if there is one.
    pub oldest: Option<i64>,
}

/// What waits in the outbox now.
pub async fn backlog(database: &Database) -> Result<Backlog, Error> {
    let rows = database
        .host_query(
            "SELECT COUNT(*), MIN(published_at) FROM modhost_outbox",
            Vec::new(),
        )
        .await?;
    let row = rows.rows.first().map(Vec::as_slice).unwrap_or_default();
    Ok(Backlog {
        depth: match row.first() {
            Some(Value::Integer(count)) => u64::try_from(*count).unwrap_or(0),
            _ => 0,
        },
        oldest: match row.get(1) {
            Some(Value::Integer(ms)) => Some(*ms),
            _ => None,
        },
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
        .host_query(
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
        .host_execute(
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
    let entries: Vec<[&str; 3]> = envelopes
        .iter()
        .map(|e| [e.id.as_str(), e.topic.as_str(), e.source.as_str()])
        .collect();
    let mut claimed = claim_entries(tx, &entries, outcome).await?;
    // An id twice in one batch (a resent copy next to the original) is new once: its
    // first occurrence.
    Ok(envelopes.iter().map(|e| claimed.remove(&e.id)).collect())
}

/// Records `entries` (each an event's id, topic and source) in the inbox inside `tx`
/// with `outcome`, in one statement per 200; returns the ids that were not there.
async fn claim_entries(
    tx: &mut Transaction,
    entries: &[[&str; 3]],
    outcome: Outcome,
) -> Result<std::collections::HashSet<String>, Error> {
    let mut claimed = std::collections::HashSet::new();
    let now = super::envelope::now_ms();
    for chunk in entries.chunks(200) {
        let entries = serde_json::to_string(chunk)
            .map_err(|e| Error::Other(format!("encoding inbox entries: {e}")))?;
        let params = vec![
            Value::Text(entries),
            Value::Text(outcome.as_str().into()),
            Value::Integer(now),
        ];
        let inserted = if tx.backend() == "postgres" {
            tx.host_call(CLAIM_INBOX, params).await?
        } else {
            // `WHERE true` tells SQLite's parser the `ON CONFLICT` is the upsert's.
            tx.host_query(
                "INSERT INTO modhost_inbox (id, topic, source, outcome, handled_at) \
                 SELECT e.value ->> 0, e.value ->> 1, e.value ->> 2, $2, $3 \
                 FROM json_each($1) AS e WHERE true \
                 ON CONFLICT (id) DO NOTHING RETURNING id",
                params,
            )
            .await?
        };
        claimed.extend(first_texts(inserted.rows));
    }
    Ok(claimed)
}

/// Which of the outbox and inbox the SQLite database `from` has.
async fn present_in(from: &Database) -> Result<Vec<String>, Error> {
    let present = from
        .query(
            "SELECT name FROM sqlite_schema WHERE type = 'table' \
             AND name IN ('modhost_outbox', 'modhost_inbox')",
            Vec::new(),
        )
        .await?;
    Ok(first_texts(present.rows).collect())
}

/// The events waiting in the outbox of the SQLite database `from`, if it has one.
pub async fn waiting_in(from: &Database) -> Result<u64, Error> {
    if !present_in(from)
        .await?
        .iter()
        .any(|table| table == "modhost_outbox")
    {
        return Ok(0);
    }
    let counted = from
        .host_query("SELECT count(*) FROM modhost_outbox", Vec::new())
        .await?;
    Ok(match counted.rows.first().and_then(|row| row.first()) {
        Some(Value::Integer(n)) => u64::try_from(*n).unwrap_or_default(),
        _ => 0,
    })
}

/// Carries the outbox and inbox of `from`, a module's SQLite database of before, into
/// `to`, its database on Postgres, inside `into` (a transaction on `to`):
///
/// - every event still waiting in the outbox, in publication order, sealed again with
///   `to`'s key (the relay there checks seals with it). A row whose seal does not hold
///   under `from`'s key was not written by the host: it is not carried (it stays in
///   the file set aside) and is logged;
/// - every id in the inbox, with its outcome, so that an event handled before is not
///   handled again. Its time becomes now: it is kept the inbox's retention from now.
///
/// Returns the rows carried, by table.
pub async fn carry(
    from: &Database,
    to: &Database,
    into: &mut Transaction,
    source: &str,
) -> Result<std::collections::BTreeMap<String, u64>, Error> {
    let mut counts = std::collections::BTreeMap::new();
    let present = present_in(from).await?;
    if present.iter().any(|table| table == "modhost_outbox") {
        // An outbox from before rows were sealed gets its seals first.
        create(from, source).await?;
        let (mut carried, mut refused, mut after) = (0u64, 0u64, i64::MIN);
        loop {
            let batch = pending_after(from, source, after, 500).await?;
            let last = batch
                .ready
                .iter()
                .map(|pending| pending.seq)
                .chain(batch.refused.iter().map(|refused| refused.seq))
                .max();
            let Some(last) = last else { break };
            after = last;
            for pending in &batch.ready {
                append_in(to, into, &pending.envelope).await?;
            }
            carried += batch.ready.len() as u64;
            for row in &batch.refused {
                tracing::warn!(module = source, seq = row.seq, topic = %row.topic, reason = row.reason, "events: an outbox row of the SQLite file is not carried to postgres; it stays in the file set aside");
            }
            refused += batch.refused.len() as u64;
        }
        counts.insert("modhost_outbox".to_string(), carried);
        if refused > 0 {
            counts.insert("modhost_outbox (not carried)".to_string(), refused);
        }
    }
    if present.iter().any(|table| table == "modhost_inbox") {
        let (mut carried, mut after) = (0u64, String::new());
        loop {
            let page = from
                .host_query(
                    "SELECT id, topic, source, outcome FROM modhost_inbox WHERE id > $1 \
                     ORDER BY id LIMIT 1000",
                    vec![Value::Text(after.clone())],
                )
                .await?;
            let Some(Value::Text(last)) = page.rows.last().and_then(|row| row.first()) else {
                break;
            };
            after = last.clone();
            let mut by_outcome: std::collections::BTreeMap<&str, Vec<[&str; 3]>> =
                Default::default();
            for row in &page.rows {
                if let [Value::Text(id), Value::Text(topic), Value::Text(source), Value::Text(outcome)] =
                    row.as_slice()
                {
                    by_outcome.entry(outcome).or_default().push([
                        id.as_str(),
                        topic.as_str(),
                        source.as_str(),
                    ]);
                }
            }
            for (outcome, entries) in by_outcome {
                let outcome: Outcome = outcome.parse().map_err(Error::Other)?;
                carried += claim_entries(into, &entries, outcome).await?.len() as u64;
            }
        }
        counts.insert("modhost_inbox".to_string(), carried);
    }
    Ok(counts)
}

/// The first value of each row that is text.
fn first_texts(rows: Vec<Vec<Value>>) -> impl Iterator<Item = String> {
    rows.into_iter()
        .filter_map(|row| match row.into_iter().next() {
            Some(Value::Text(text)) => Some(text),
            _ => None,
        })
}

/// Forgets inbox records older than `before_ms`: events that old are past redelivery.
pub async fn forget_before(database: &Database, before_ms: i64) -> Result<u64, Error> {
    database
        .host_execute(
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
        create(&database, "m").await.unwrap();
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
        let pending = pending(&database, "m", 10).await.unwrap().ready;
        let ids: Vec<&str> = pending.iter().map(|p| p.envelope.id.as_str()).collect();
        assert_eq!(ids, ["1", "2", "3"]);
        assert_eq!(pending[0].envelope, envelope("1"));
        let waiting = Backlog {
            depth: 3,
            oldest: Some(7),
        };
        assert_eq!(backlog(&database).await.unwrap(), waiting);
        remove(&database, &[pending[0].seq, pending[2].seq])
            .await
            .unwrap();
        let left = super::pending(&database, "m", 10).await.unwrap().ready;
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].envelope.id, "2");
        assert_eq!(backlog(&database).await.unwrap().depth, 1);
        remove(&database, &[left[0].seq]).await.unwrap();
        let empty = Backlog {
            depth: 0,
            oldest: None,
        };
        assert_eq!(backlog(&database).await.unwrap(), empty);
    }

    #[tokio::test]
    async fn rows_the_host_did_not_write_are_refused_and_do_not_hold_up_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let database = database(dir.path()).await;
        append(&database, &envelope("1")).await.unwrap();
        let forged = "INSERT INTO modhost_outbox \
                      (id, topic, key, payload, headers, traceparent, published_at, seal) \
                      VALUES ($1, 'payments.charged', 'k', X'00', '[]', NULL, 7, $2)";
        // A module's own SQL cannot reach the outbox at all...
        let refused = database
            .execute(forged, vec![Value::Text("f0".into()), Value::Null])
            .await;
        assert!(matches!(refused, Err(Error::Denied(_))), "{refused:?}");
        // ...but should a row get there by other means (a hand, a bug), the seal
        // refuses it: no seal, a forged seal, a row changed after it was sealed, a
        // payload of the wrong type, a huge row.
        for (id, seal) in [("f1", Value::Null), ("f2", Value::Text("00".repeat(32)))] {
            database
                .host_execute(forged, vec![Value::Text(id.into()), seal])
                .await
                .unwrap();
        }
        append(&database, &envelope("2")).await.unwrap();
        database
            .host_execute(
                "UPDATE modhost_outbox SET topic = 'payments.charged' WHERE id = '2'",
                vec![],
            )
            .await
            .unwrap();
        database
            .host_execute(
                "INSERT INTO modhost_outbox (id, topic, key, payload, headers, published_at) \
                 VALUES ('f3', 't', 'k', 'text, not a blob', '[]', 7)",
                vec![],
            )
            .await
            .unwrap();
        database
            .host_execute(
                "INSERT INTO modhost_outbox (id, topic, key, payload, headers, published_at) \
                 VALUES ('f4', 't', 'k', zeroblob(5000000), '[]', 7)",
                vec![],
            )
            .await
            .unwrap();
        append(&database, &envelope("3")).await.unwrap();

        let batch = pending(&database, "m", 10).await.unwrap();
        let ready: Vec<&str> = batch.ready.iter().map(|p| p.envelope.id.as_str()).collect();
        assert_eq!(ready, ["1", "3"]);
        let reasons: Vec<&str> = batch.refused.iter().map(|r| r.reason).collect();
        set_aside(&database, &batch.refused).await.unwrap();
        let kept = database
            .host_query(
                "SELECT id, reason FROM modhost_outbox_refused ORDER BY seq",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(kept.rows.len(), 5, "{kept:?}");
        let next = pending(&database, "m", 10).await.unwrap();
        assert!(next.refused.is_empty(), "{next:?}");
        assert_eq!(next.ready.len(), 2);
        assert_eq!(
            reasons,
            [
                "larger than any event",
                "not written by the host",
                "not written by the host",
                "not written by the host",
                "malformed"
            ]
        );
    }

    #[tokio::test]
    async fn an_outbox_from_before_seals_gets_them_for_the_rows_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let database = database(dir.path()).await;
        database
            .host_execute("DROP TABLE modhost_outbox", vec![])
            .await
            .unwrap();
        database
            .host_execute(
                "CREATE TABLE modhost_outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, \
                 id TEXT NOT NULL UNIQUE, topic TEXT NOT NULL, key TEXT NOT NULL, \
                 payload BLOB NOT NULL, headers TEXT NOT NULL, traceparent TEXT, \
                 published_at INTEGER NOT NULL)",
                vec![],
            )
            .await
            .unwrap();
        database
            .host_execute(
                "INSERT INTO modhost_outbox (id, topic, key, payload, headers, published_at) \
                 VALUES ('old', 't', 'k', X'70', '[[\"h\",\"v\"]]', 7)",
                vec![],
            )
            .await
            .unwrap();
        // A row that cannot be read is left unsealed, and start-up goes on.
        database
            .host_execute(
                "INSERT INTO modhost_outbox (id, topic, key, payload, headers, published_at) \
                 VALUES ('bad', 't', 'k', X'70', 'not json', 8)",
                vec![],
            )
            .await
            .unwrap();
        create(&database, "m").await.unwrap();
        let batch = pending(&database, "m", 10).await.unwrap();
        assert_eq!(batch.refused.len(), 1, "{batch:?}");
        assert_eq!(batch.ready.len(), 1, "{batch:?}");
        assert_eq!(batch.ready[0].envelope, envelope("old"));
    }
}
