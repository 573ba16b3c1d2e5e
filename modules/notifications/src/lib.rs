//! The `notifications` module: tells customers what happened to their payments and
//! orders. It calls no module and no module calls it: it only reacts to events.
//!
//! - `payments.charged` → a `payment_received` message with the amount and card;
//! - `orders.cancelled` → an `order_cancelled` message with the reason.
//!
//! Each message is written in the transaction the host gives the handler, together
//! with the host's record that the event was handled, so a redelivered event never
//! sends a second message. (The shop has no mail server: the messages are the queue
//! a mailer would drain; `GET /notifications?order_id=…` lists them.)

wit_bindgen::generate!({
    path: [
        "../../wit/modhost/sql.wit",
        "../../wit/modhost/events.wit",
        "../../wit/shop/notifications.wit",
    ],
    world: "shop:notifications/notifications",
    generate_all,
});

use exports::modhost::events::subscriber::Guest;
use modhost::events::types::Event;
use modhost::sql::sql::{self as sql, Transaction, Value};
use modhost_guest::{Request, Response};
use serde::Deserialize;
use serde_json::{json, Value as Json};

/// The part of `payments.charged` this module uses.
#[derive(Deserialize)]
struct Charged {
    order_id: String,
    receipt_id: String,
    amount_cents: u64,
    currency: String,
    card_last4: String,
}

/// The part of `orders.cancelled` this module uses.
#[derive(Deserialize)]
struct Cancelled {
    order_id: String,
    reason: String,
}

struct Notifications;

impl Guest for Notifications {
    fn handle(event: Event, tx: &Transaction) -> Result<(), String> {
        let (order_id, kind, message) = match event.topic.as_str() {
            "payments.charged" => {
                let charged: Charged = parse(&event)?;
                (
                    charged.order_id.clone(),
                    "payment_received",
                    format!(
                        "We received your payment of {} for order {} (card ending {}, receipt {}).",
                        money(charged.amount_cents, &charged.currency),
                        charged.order_id,
                        charged.card_last4,
                        charged.receipt_id
                    ),
                )
            }
            "orders.cancelled" => {
                let cancelled: Cancelled = parse(&event)?;
                (
                    cancelled.order_id.clone(),
                    "order_cancelled",
                    format!(
                        "Your order {} was cancelled: {}. Nothing will be charged.",
                        cancelled.order_id, cancelled.reason
                    ),
                )
            }
            // Subscriptions come from the deployment file; another topic is a
            // deployment mistake, and failing makes it visible (dead letters).
            other => return Err(format!("notifications does not handle {other}")),
        };
        tx.execute(
            "INSERT INTO notifications (id, seq, event_id, order_id, kind, message, created_at) \
             VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM notifications), $2, $3, $4, $5, $6)",
            &[
                Value::Text(modhost_guest::new_id("ntf")),
                Value::Text(event.id.clone()),
                Value::Text(order_id),
                Value::Text(kind.into()),
                Value::Text(message),
                Value::Integer(modhost_guest::unix_time() as i64),
            ],
        )
        .map(drop)
        .map_err(|error| format!("storing the notification: {error:?}"))
    }
}

export!(Notifications);

/// The event's JSON payload, or an error naming the event.
fn parse<T: serde::de::DeserializeOwned>(event: &Event) -> Result<T, String> {
    serde_json::from_slice(&event.payload)
        .map_err(|error| format!("{} event {}: bad payload: {error}", event.topic, event.id))
}

/// `1234` EUR cents as `12.34 EUR`.
fn money(cents: u64, currency: &str) -> String {
    format!("{}.{:02} {currency}", cents / 100, cents % 100)
}

fn handle(request: Request) -> Response {
    match (request.method.as_str(), request.segments().as_slice()) {
        ("GET", ["notifications"]) => list(request.query_param("order_id")),
        (method, ["notifications"]) => Response::method_not_allowed(method),
        _ => Response::not_found(&request.path),
    }
}

modhost_guest::http_module!(handle);

/// The notifications of one order, oldest first, or the latest 100, newest first.
fn list(order_id: Option<&str>) -> Response {
    let rows = match order_id {
        Some(order_id) => sql::query(
            "SELECT id, order_id, kind, message, created_at FROM notifications \
             WHERE order_id = $1 ORDER BY seq",
            &[Value::Text(order_id.to_string())],
        ),
        None => sql::query(
            "SELECT id, order_id, kind, message, created_at FROM notifications \
             ORDER BY seq DESC LIMIT 100",
            &[],
        ),
    };
    let rows = match rows {
        Ok(rows) => rows,
        Err(error) => return Response::error(503, "unavailable", &format!("{error:?}")),
    };
    let listed: Vec<Json> = rows
        .rows
        .iter()
        .filter_map(|row| match row.as_slice() {
            [Value::Text(id), Value::Text(order_id), Value::Text(kind), Value::Text(message), Value::Integer(at)] => {
                Some(json!({ "id": id, "order_id": order_id, "kind": kind, "message": message, "created_at": at }))
            }
            _ => None,
        })
        .collect();
    Response::json(200, &json!({ "notifications": listed }))
}
