//! The probe of the events tests: publishes events on request and records every event
//! its handler receives, so a test can compare what was published with what was
//! handled — exactly once each, in order per key.
//!
//! HTTP (under whichever route it is deployed at):
//! - `POST …/publish` with `{"events": [{"topic", "key", "payload", "headers"?}],
//!   "in_tx": bool (default true), "rollback": bool}`: in one transaction, records each
//!   event in its own `published` table and publishes it with `publish-in`, then
//!   commits (or rolls back, when asked: nothing may then be delivered). With
//!   `"in_tx": false` each event is published with `publish`, on its own. Answers
//!   `{"ids": [...]}`.
//! - `GET …/effects`: what the handler recorded, in handling order;
//!   `GET …/effects/count`: how many (`{"count": n}`), for the load driver.
//! - `GET …/published`: what `publish` recorded, in publication order.
//! - `POST …/sql` with `{"sql": "…"}`: runs any statement against its own database, as
//!   a hostile module would (say, writing the host's outbox by hand). Answers
//!   `{"changed": n}` or `{"error": "…"}`.
//!
//! The handler (`modhost:events/subscriber`) first records the event in `effects`,
//! inside the host's transaction, then acts on the payload:
//! - `fail-always`: returns an error (the recorded effect must be rolled back);
//! - `fail-twice`: returns an error on attempts 1 and 2;
//! - `trap-once`: panics on attempt 1;
//! - `fail-until:MARK`: returns an error until this module has published an event whose
//!   payload is MARK (a row in `published`): a failure whose cause can be fixed, for
//!   replaying dead letters;
//! - `forward:TOPIC`: publishes the event on to TOPIC in the same transaction;
//! - anything else: succeeds.

wit_bindgen::generate!({
    path: [
        "../../../wit/modhost/sql.wit",
        "../../../wit/modhost/events.wit",
        "../../../wit/testing/eventprobe/eventprobe.wit",
    ],
    world: "testing:eventprobe/eventprobe",
    generate_all,
});

use exports::modhost::events::subscriber::Guest;
use modhost::events::publisher::{self, PublishError};
use modhost::events::types::Event;
use modhost::sql::sql::{self as sql, Transaction, Value};
use modhost_guest::{Request, Response};
use serde::Deserialize;
use serde_json::{json, Value as Json};

#[derive(Deserialize)]
struct Batch {
    events: Vec<NewEvent>,
    #[serde(default = "yes")]
    in_tx: bool,
    #[serde(default)]
    rollback: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct NewEvent {
    topic: String,
    key: String,
    payload: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
}

fn handle(request: Request) -> Response {
    let segments = request.segments();
    match (request.method.as_str(), segments.last().copied()) {
        ("POST", Some("publish")) => publish(&request),
        ("POST", Some("sql")) => raw_sql(&request),
        ("GET", Some("count")) => count(),
        ("GET", Some("effects")) => list(
            "SELECT event_id, topic, key, payload, source, attempt, headers FROM effects ORDER BY seq",
        ),
        ("GET", Some("published")) => {
            list("SELECT event_id, topic, key, payload FROM published ORDER BY seq")
        }
        _ => Response::not_found(&request.path),
    }
}

modhost_guest::http_module!(handle);

fn raw_sql(request: &Request) -> Response {
    let body: Json = match request.json() {
        Ok(body) => body,
        Err(response) => return response,
    };
    match sql::execute(body["sql"].as_str().unwrap_or_default(), &[]) {
        Ok(changed) => Response::json(200, &json!({ "changed": changed })),
        Err(error) => Response::json(200, &json!({ "error": format!("{error:?}") })),
    }
}

fn publish(request: &Request) -> Response {
    let batch: Batch = match request.json() {
        Ok(batch) => batch,
        Err(response) => return response,
    };
    let refused = |error: PublishError| {
        let (kind, message) = match error {
            PublishError::Denied(m) => ("denied", m),
            PublishError::Invalid(m) => ("invalid", m),
            PublishError::Unavailable(m) => ("unavailable", m),
        };
        Response::json(
            422,
            &json!({ "error": { "code": kind, "message": message } }),
        )
    };
    let mut ids = Vec::new();
    if !batch.in_tx {
        for event in &batch.events {
            match publisher::publish(
                &event.topic,
                &event.key,
                event.payload.as_bytes(),
                &event.headers,
            ) {
                Ok(id) => ids.push(id),
                Err(error) => return refused(error),
            }
        }
        return Response::json(200, &json!({ "ids": ids }));
    }
    let tx = match sql::begin() {
        Ok(tx) => tx,
        Err(error) => return Response::error(503, "unavailable", &format!("{error:?}")),
    };
    for event in &batch.events {
        let id = match publisher::publish_in(
            &tx,
            &event.topic,
            &event.key,
            event.payload.as_bytes(),
            &event.headers,
        ) {
            Ok(id) => id,
            Err(error) => return refused(error),
        };
        let recorded = tx.execute(
            "INSERT INTO published (seq, event_id, topic, key, payload) \
             VALUES ((SELECT COALESCE(MAX(seq), 0) + 1 FROM published), $1, $2, $3, $4)",
            &[
                Value::Text(id.clone()),
                Value::Text(event.topic.clone()),
                Value::Text(event.key.clone()),
                Value::Text(event.payload.clone()),
            ],
        );
        if let Err(error) = recorded {
            return Response::error(503, "unavailable", &format!("{error:?}"));
        }
        ids.push(id);
    }
    let finished = if batch.rollback {
        Transaction::rollback(tx)
    } else {
        Transaction::commit(tx)
    };
    match finished {
        Ok(()) => Response::json(200, &json!({ "ids": ids, "committed": !batch.rollback })),
        Err(error) => Response::error(503, "unavailable", &format!("{error:?}")),
    }
}

fn count() -> Response {
    match sql::query("SELECT COUNT(*) FROM effects", &[]) {
        Ok(rows) => match rows.rows.first().and_then(|row| row.first()) {
            Some(Value::Integer(n)) => Response::json(200, &json!({ "count": n })),
            _ => Response::error(500, "no_count", "COUNT(*) returned no integer"),
        },
        Err(error) => Response::error(503, "unavailable", &format!("{error:?}")),
    }
}

fn list(statement: &str) -> Response {
    let rows = match sql::query(statement, &[]) {
        Ok(rows) => rows,
        Err(error) => return Response::error(503, "unavailable", &format!("{error:?}")),
    };
    let listed: Vec<Json> = rows
        .rows
        .iter()
        .map(|row| {
            let fields = rows.columns.iter().zip(row).map(|(column, value)| {
                let value = match value {
                    Value::Integer(n) => json!(n),
                    Value::Text(text) => json!(text),
                    other => json!(format!("{other:?}")),
                };
                (column.clone(), value)
            });
            Json::Object(fields.collect())
        })
        .collect();
    Response::json(200, &json!({ "rows": listed }))
}

struct Probe;

impl Guest for Probe {
    fn handle(event: Event, tx: &Transaction) -> Result<(), String> {
        let payload = String::from_utf8_lossy(&event.payload).into_owned();
        tx.execute(
            "INSERT INTO effects (seq, event_id, topic, key, payload, source, attempt, headers) \
             VALUES ((SELECT COALESCE(MAX(seq), 0) + 1 FROM effects), $1, $2, $3, $4, $5, $6, $7)",
            &[
                Value::Text(event.id.clone()),
                Value::Text(event.topic.clone()),
                Value::Text(event.key.clone()),
                Value::Text(payload.clone()),
                Value::Text(event.source.clone()),
                Value::Integer(i64::from(event.attempt)),
                Value::Text(serde_json::to_string(&event.headers).unwrap_or_default()),
            ],
        )
        .map_err(|error| format!("recording the effect: {error:?}"))?;
        eprintln!(
            "handled {} ({}, attempt {})",
            event.id, event.topic, event.attempt
        );
        match payload.as_str() {
            "fail-always" => Err("refused: fail-always".into()),
            "fail-twice" if event.attempt <= 2 => {
                Err(format!("refused on attempt {}", event.attempt))
            }
            "trap-once" if event.attempt == 1 => panic!("trap-once: attempt 1"),
            until if until.starts_with("fail-until:") => {
                let mark = &until["fail-until:".len()..];
                let found = tx
                    .query(
                        "SELECT COUNT(*) FROM published WHERE payload = $1",
                        &[Value::Text(mark.to_string())],
                    )
                    .map_err(|error| format!("looking for {mark}: {error:?}"))?;
                match found.rows.first().and_then(|row| row.first()) {
                    Some(Value::Integer(n)) if *n > 0 => Ok(()),
                    _ => Err(format!("refused: {mark} not published yet")),
                }
            }
            forward if forward.starts_with("forward:") => {
                let topic = &forward["forward:".len()..];
                publisher::publish_in(tx, topic, &event.key, event.id.as_bytes(), &[])
                    .map(drop)
                    .map_err(|error| format!("forwarding: {error:?}"))
            }
            _ => Ok(()),
        }
    }
}

export!(Probe);
