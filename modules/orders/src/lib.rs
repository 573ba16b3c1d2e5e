//! The `orders` module: placing an order. It owns no stock and takes no money itself;
//! it calls `inventory` and `payments` through their contracts.
//!
//! `POST /orders` with
//! `{"customer_id": 7, "lines": [{"sku": "KB-001", "quantity": 2}],
//!   "card": {"number": "4242 4242 4242 4242", "expiry_month": 12, "expiry_year": 2030}}`:
//! 1. validates the body (400 with a message per field);
//! 2. `shop:inventory/api.reserve`: stock for every line, priced — or 409
//!    `out_of_stock` listing each short product, 422 `unknown_sku`, 422
//!    `invalid_order`;
//! 3. stores the order as `pending`, with its lines and reservation;
//! 4. `shop:fraud/api.assess` (the fraud module, written in Python): a `reject`
//!    verdict releases the reservation, the order is `rejected`, and the answer is 403
//!    `order_refused` with the rules that fired; `review` and `approve` go on;
//! 5. `shop:payments/api.charge` for the reservation's total — or 402
//!    `payment_declined` with the issuer's reason, 422 `invalid_card` /
//!    `invalid_amount`; a refused charge releases the reservation (compensation) and
//!    the order is `rejected`;
//! 6. marks the order `confirmed` with its receipt and answers 201 with it and
//!    `Location: /orders/{id}`.
//!
//! `GET /orders/{id}` returns a stored order (with its `status` and, when rejected or
//! cancelled, its `reason`), or 404.
//!
//! The rest of the saga runs on events (`wit/shop/orders.wit`):
//! - `payments.charged`: a `pending` order becomes `confirmed`. This completes an
//!   order whose placement was cut off between the charge and step 5 (a crash, a
//!   timeout): the charge's event arrives anyway, from payments' outbox.
//! - `payments.failed` (a charge that failed to settle, days later): the order's
//!   stock is released through inventory, the order becomes `cancelled` with the
//!   reason, and `orders.cancelled` is published — all in the handler's transaction,
//!   so a retry after a failed release changes nothing twice.
//!
//! If a call itself fails (the callee crashed, timed out or is unavailable), the host
//! fails this request with a 5xx naming the broken edge; the order stays `pending`
//! until a `payments.charged` event confirms it.

wit_bindgen::generate!({
    path: [
        "../../wit/modhost/sql.wit",
        "../../wit/modhost/events.wit",
        "../../wit/shop/inventory.wit",
        // payments.wit's world imports wasi:config; its package must resolve too.
        "../../wit/wasi/config",
        "../../wit/shop/payments.wit",
        "../../wit/shop/users.wit",
        "../../wit/shop/fraud.wit",
        "../../wit/shop/orders.wit",
    ],
    world: "shop:orders/orders",
    generate_all,
});

use exports::modhost::events::subscriber::Guest;
use modhost::events::publisher;
use modhost::events::types::Event;
use modhost::sql::sql::{self as sql, Transaction, Value};
use modhost_guest::{Request, Response};
use serde::Deserialize;
use serde_json::{json, Map, Value as Value_};
use shop::fraud::api::{self as fraud, AssessError, AssessmentRequest, OrderLine, Verdict};
use shop::inventory::api::{self as inventory, Line, ReserveError};
use shop::payments::api::{self as payments, Card, ChargeError, ChargeRequest, DeclineReason};

/// The currency the shop prices and charges in.
const CURRENCY: &str = "EUR";
/// Most lines one order may hold.
const MAX_LINES: usize = 100;
/// Most of one product one order may hold.
const MAX_QUANTITY: u64 = 1000;

/// The body of `POST /orders`. Every field is optional here so that a missing one is
/// reported by name, with the others, rather than as a parse error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrder {
    customer_id: Option<Value_>,
    lines: Option<Vec<NewLine>>,
    card: Option<NewCard>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewLine {
    sku: Option<String>,
    quantity: Option<Value_>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCard {
    number: Option<String>,
    expiry_month: Option<Value_>,
    expiry_year: Option<Value_>,
}

/// A validated order, ready to place.
struct Order {
    customer_id: u64,
    lines: Vec<Line>,
    card: Card,
}

fn handle(request: Request) -> Response {
    match (request.method.as_str(), request.segments().as_slice()) {
        ("POST", ["orders"]) => place(&request),
        ("GET", ["orders", id]) => get(id),
        (method, ["orders"] | ["orders", _]) => Response::method_not_allowed(method),
        _ => Response::not_found(&request.path),
    }
}

modhost_guest::http_module!(handle);

fn place(request: &Request) -> Response {
    let order = match request.json::<NewOrder>().and_then(validate) {
        Ok(order) => order,
        Err(response) => return response,
    };
    let order_id = modhost_guest::new_id("ord");

    let reservation = match inventory::reserve(&order_id, &order.lines) {
        Ok(reservation) => reservation,
        Err(error) => return reserve_failed(error),
    };

    let mut stored = Stored {
        id: order_id.clone(),
        status: "pending".into(),
        reason: None,
        customer_id: order.customer_id,
        total_cents: reservation.total_cents,
        reservation_id: reservation.id.clone(),
        receipt_id: String::new(),
        card_last4: String::new(),
        lines: reservation.lines.clone(),
    };
    if let Err(error) = store(&stored) {
        release(&reservation.id, &order_id);
        return Response::error(
            503,
            "unavailable",
            &format!("the order could not be stored: {error:?}"),
        );
    }

    if let Some(refused) = assess(&stored) {
        return refused;
    }

    let charge = ChargeRequest {
        order_id: order_id.clone(),
        amount_cents: reservation.total_cents,
        currency: CURRENCY.into(),
        card: order.card,
    };
    let receipt = match payments::charge(&charge) {
        Ok(receipt) => receipt,
        Err(error) => {
            // Compensate: the stock held for an order that will not be paid goes back.
            release(&reservation.id, &order_id);
            let reason = format!("payment refused: {error:?}");
            if let Err(failed) = set_status(&order_id, "rejected", Some(&reason)) {
                eprintln!("orders: marking order {order_id} rejected failed: {failed:?}");
            }
            return charge_failed(error);
        }
    };

    stored.status = "confirmed".into();
    stored.receipt_id = receipt.id.clone();
    stored.card_last4 = receipt.card_last4.clone();
    if let Err(error) = confirm(&order_id, &receipt.id, &receipt.card_last4) {
        // The card was charged, so the order will be confirmed: payments published
        // `payments.charged` with the charge, and its handler confirms the order.
        eprintln!(
            "orders: order {order_id} was paid (receipt {}); confirming it failed ({error:?}), \
             the payments.charged event will",
            receipt.id
        );
    }
    let mut response = Response::json(201, &order_json(&stored));
    response.headers.push((
        "location".into(),
        format!("/orders/{order_id}").into_bytes(),
    ));
    response
}

/// Asks the fraud module about a stored, reserved order. `None` when it may be
/// charged; otherwise the answer, after the reservation was released and the order
/// marked `rejected` (compensation, as for a refused charge).
fn assess(order: &Stored) -> Option<Response> {
    let request = AssessmentRequest {
        order_id: order.id.clone(),
        customer_id: order.customer_id,
        total_cents: order.total_cents,
        currency: CURRENCY.into(),
        lines: order
            .lines
            .iter()
            .map(|line| OrderLine {
                sku: line.sku.clone(),
                quantity: line.quantity,
                unit_price_cents: line.unit_price_cents,
            })
            .collect(),
    };
    let (reason, response) = match fraud::assess(&request) {
        Ok(assessment) if assessment.verdict != Verdict::Reject => return None,
        Ok(assessment) => {
            let mut details = Map::new();
            details.insert("assessment_id".into(), assessment.id.into());
            details.insert("score".into(), assessment.score.into());
            details.insert("reasons".into(), assessment.reasons.clone().into());
            (
                format!("refused by fraud checks: {}", assessment.reasons.join(", ")),
                Response::error_with(
                    403,
                    "order_refused",
                    "the order cannot be accepted",
                    details,
                ),
            )
        }
        Err(AssessError::Invalid(message)) => (
            format!("fraud check refused the order: {message}"),
            Response::error(422, "invalid_order", &message),
        ),
        Err(AssessError::Unavailable(message)) => (
            format!("fraud check unavailable: {message}"),
            Response::error(
                503,
                "unavailable",
                &format!("orders cannot be checked right now; try again: {message}"),
            ),
        ),
    };
    release(&order.reservation_id, &order.id);
    if let Err(failed) = set_status(&order.id, "rejected", Some(&reason)) {
        eprintln!(
            "orders: marking order {} rejected failed: {failed:?}",
            order.id
        );
    }
    Some(response)
}

/// Gives an order's reserved stock back, logging (not failing on) a refusal.
fn release(reservation_id: &str, order_id: &str) {
    if let Err(error) = inventory::release(reservation_id) {
        eprintln!(
            "orders: releasing reservation {reservation_id} of unpaid order {order_id} failed: {error:?}"
        );
    }
}

/// Marks a pending order paid with its receipt.
fn confirm(order_id: &str, receipt_id: &str, card_last4: &str) -> Result<u64, sql::Error> {
    sql::execute(
        "UPDATE orders SET status = 'confirmed', receipt_id = $2, card_last4 = $3 \
         WHERE id = $1 AND status = 'pending'",
        &[
            Value::Text(order_id.into()),
            Value::Text(receipt_id.into()),
            Value::Text(card_last4.into()),
        ],
    )
}

/// Sets an order's status and reason.
fn set_status(order_id: &str, status: &str, reason: Option<&str>) -> Result<u64, sql::Error> {
    sql::execute(
        "UPDATE orders SET status = $2, reason = $3 WHERE id = $1",
        &[
            Value::Text(order_id.into()),
            Value::Text(status.into()),
            reason.map_or(Value::Null, |r| Value::Text(r.into())),
        ],
    )
}

/// An order as stored.
struct Stored {
    id: String,
    status: String,
    reason: Option<String>,
    customer_id: u64,
    total_cents: u64,
    reservation_id: String,
    receipt_id: String,
    card_last4: String,
    lines: Vec<inventory::ReservedLine>,
}

fn order_json(order: &Stored) -> Value_ {
    let lines: Vec<Value_> = order
        .lines
        .iter()
        .map(|line| {
            json!({
                "sku": line.sku,
                "name": line.name,
                "quantity": line.quantity,
                "unit_price_cents": line.unit_price_cents,
                "line_total_cents": u64::from(line.quantity).saturating_mul(line.unit_price_cents),
            })
        })
        .collect();
    let mut json = json!({
        "id": order.id,
        "status": order.status,
        "customer_id": order.customer_id,
        "lines": lines,
        "total_cents": order.total_cents,
        "currency": CURRENCY,
        "reservation_id": order.reservation_id,
    });
    if !order.receipt_id.is_empty() {
        json["payment"] = json!({
            "receipt_id": order.receipt_id,
            "amount_cents": order.total_cents,
            "card_last4": order.card_last4,
        });
    }
    if let Some(reason) = &order.reason {
        json["reason"] = reason.as_str().into();
    }
    json
}

/// Writes the order and its lines in one transaction.
fn store(order: &Stored) -> Result<(), sql::Error> {
    let tx = sql::begin()?;
    tx.execute(
        "INSERT INTO orders (id, customer_id, status, total_cents, currency, reservation_id, \
         receipt_id, card_last4, created_at) VALUES ($1, $2, $9, $3, $4, $5, $6, $7, $8)",
        &[
            Value::Text(order.id.clone()),
            Value::Integer(order.customer_id as i64),
            Value::Integer(order.total_cents as i64),
            Value::Text(CURRENCY.into()),
            Value::Text(order.reservation_id.clone()),
            Value::Text(order.receipt_id.clone()),
            Value::Text(order.card_last4.clone()),
            Value::Integer(modhost_guest::unix_time() as i64),
            Value::Text(order.status.clone()),
        ],
    )?;
    for (position, line) in order.lines.iter().enumerate() {
        tx.execute(
            "INSERT INTO order_lines (order_id, position, sku, name, quantity, unit_price_cents) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                Value::Text(order.id.clone()),
                Value::Integer(position as i64),
                Value::Text(line.sku.clone()),
                Value::Text(line.name.clone()),
                Value::Integer(i64::from(line.quantity)),
                Value::Integer(line.unit_price_cents as i64),
            ],
        )?;
    }
    Transaction::commit(tx)
}

fn get(id: &str) -> Response {
    let id_param = [Value::Text(id.to_string())];
    let header = sql::query(
        "SELECT customer_id, total_cents, reservation_id, receipt_id, card_last4, status, reason \
         FROM orders WHERE id = $1",
        &id_param,
    );
    let lines = sql::query(
        "SELECT sku, name, quantity, unit_price_cents FROM order_lines \
         WHERE order_id = $1 ORDER BY position",
        &id_param,
    );
    let (header, lines) = match (header, lines) {
        (Ok(header), Ok(lines)) => (header, lines),
        (Err(error), _) | (_, Err(error)) => {
            return Response::error(503, "unavailable", &format!("{error:?}"))
        }
    };
    let Some(
        [Value::Integer(customer_id), Value::Integer(total), Value::Text(reservation_id), Value::Text(receipt_id), Value::Text(card_last4), Value::Text(status), reason],
    ) = header.rows.first().map(Vec::as_slice)
    else {
        return Response::not_found(&format!("no order {id}"));
    };
    let lines = lines
        .rows
        .iter()
        .filter_map(|row| match row.as_slice() {
            [Value::Text(sku), Value::Text(name), Value::Integer(quantity), Value::Integer(price)] => {
                Some(inventory::ReservedLine {
                    sku: sku.clone(),
                    name: name.clone(),
                    quantity: u32::try_from(*quantity).unwrap_or(0),
                    unit_price_cents: u64::try_from(*price).unwrap_or(0),
                })
            }
            _ => None,
        })
        .collect();
    Response::json(
        200,
        &order_json(&Stored {
            id: id.to_string(),
            status: status.clone(),
            reason: match reason {
                Value::Text(reason) => Some(reason.clone()),
                _ => None,
            },
            customer_id: u64::try_from(*customer_id).unwrap_or(0),
            total_cents: u64::try_from(*total).unwrap_or(0),
            reservation_id: reservation_id.clone(),
            receipt_id: receipt_id.clone(),
            card_last4: card_last4.clone(),
            lines,
        }),
    )
}

/// Checks every field, and reports every problem at once.
fn validate(new: NewOrder) -> Result<Order, Response> {
    let mut problems = Map::new();
    let customer_id = match whole_number(new.customer_id.as_ref(), 1..=i64::MAX as u64) {
        Ok(id) => id,
        Err(problem) => {
            problems.insert("customer_id".into(), problem.into());
            0
        }
    };

    let mut lines = Vec::new();
    match new.lines {
        None => {
            problems.insert("lines".into(), "is required".into());
        }
        Some(given) if given.is_empty() => {
            problems.insert("lines".into(), "needs at least one line".into());
        }
        Some(given) if given.len() > MAX_LINES => {
            problems.insert(
                "lines".into(),
                format!("has more than {MAX_LINES} lines").into(),
            );
        }
        Some(given) => {
            for (i, line) in given.into_iter().enumerate() {
                let sku = line.sku.as_deref().map(str::trim).unwrap_or_default();
                if sku.is_empty() {
                    problems.insert(format!("lines[{i}].sku"), "is required".into());
                }
                match whole_number(line.quantity.as_ref(), 1..=MAX_QUANTITY) {
                    Ok(quantity) => lines.push(Line {
                        sku: sku.to_string(),
                        quantity: quantity as u32,
                    }),
                    Err(problem) => {
                        problems.insert(format!("lines[{i}].quantity"), problem.into());
                    }
                }
            }
        }
    }

    let card = match new.card {
        None => {
            problems.insert("card".into(), "is required".into());
            None
        }
        Some(card) => {
            let number = card.number.unwrap_or_default();
            if number.trim().is_empty() {
                problems.insert("card.number".into(), "is required".into());
            }
            let month = whole_number(card.expiry_month.as_ref(), 1..=12);
            let year = whole_number(card.expiry_year.as_ref(), 2000..=9999);
            if let Err(problem) = &month {
                problems.insert("card.expiry_month".into(), problem.as_str().into());
            }
            if let Err(problem) = &year {
                problems.insert("card.expiry_year".into(), problem.as_str().into());
            }
            match (month, year) {
                (Ok(month), Ok(year)) => Some(Card {
                    number,
                    expiry_month: month as u8,
                    expiry_year: year as u16,
                }),
                _ => None,
            }
        }
    };

    match card {
        Some(card) if problems.is_empty() => Ok(Order {
            customer_id,
            lines,
            card,
        }),
        _ => Err(Response::validation("the order is not valid", problems)),
    }
}

/// A JSON whole number within `range`, or what is wrong with the value.
fn whole_number(
    value: Option<&Value_>,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, String> {
    let Some(value) = value else {
        return Err("is required".into());
    };
    match value.as_u64() {
        Some(n) if range.contains(&n) => Ok(n),
        _ => Err(format!(
            "must be a whole number from {} to {}",
            range.start(),
            range.end()
        )),
    }
}

fn reserve_failed(error: ReserveError) -> Response {
    match error {
        ReserveError::OutOfStock(shortages) => {
            let listed: Vec<Value_> = shortages
                .iter()
                .map(
                    |s| json!({ "sku": s.sku, "requested": s.requested, "available": s.available }),
                )
                .collect();
            let skus: Vec<&str> = shortages.iter().map(|s| s.sku.as_str()).collect();
            let mut details = Map::new();
            details.insert("shortages".into(), listed.into());
            Response::error_with(
                409,
                "out_of_stock",
                &format!("not enough stock of {}", skus.join(", ")),
                details,
            )
        }
        ReserveError::UnknownSku(sku) => {
            let mut details = Map::new();
            details.insert("sku".into(), sku.as_str().into());
            Response::error_with(
                422,
                "unknown_sku",
                &format!("no product has sku {sku}"),
                details,
            )
        }
        ReserveError::Invalid(why) => Response::error(422, "invalid_order", &why),
        ReserveError::Unavailable(why) => Response::error(503, "inventory_unavailable", &why),
    }
}

fn charge_failed(error: ChargeError) -> Response {
    match error {
        ChargeError::Declined(reason) => {
            let reason = match reason {
                DeclineReason::CardDeclined => "card_declined",
                DeclineReason::InsufficientFunds => "insufficient_funds",
                DeclineReason::ExpiredCard => "expired_card",
                DeclineReason::OverLimit => "over_limit",
            };
            let mut details = Map::new();
            details.insert("reason".into(), reason.into());
            Response::error_with(
                402,
                "payment_declined",
                &format!("the card was declined ({reason})"),
                details,
            )
        }
        ChargeError::InvalidCard(why) => Response::error(422, "invalid_card", &why),
        ChargeError::InvalidAmount(why) => Response::error(422, "invalid_amount", &why),
        ChargeError::Unavailable(why) => Response::error(503, "payments_unavailable", &why),
    }
}

/// The part of `payments.charged` orders uses.
#[derive(Deserialize)]
struct Charged {
    order_id: String,
    receipt_id: String,
    card_last4: String,
}

/// The part of `payments.failed` orders uses.
#[derive(Deserialize)]
struct PaymentFailed {
    order_id: String,
    reason: String,
}

struct Saga;

impl Guest for Saga {
    fn handle(event: Event, tx: &Transaction) -> Result<(), String> {
        match event.topic.as_str() {
            "payments.charged" => {
                let charged: Charged = parse(&event)?;
                // Confirms an order whose placement stopped after the charge; one
                // already confirmed is left as it is.
                tx.execute(
                    "UPDATE orders SET status = 'confirmed', receipt_id = $2, card_last4 = $3 \
                     WHERE id = $1 AND status = 'pending'",
                    &[
                        Value::Text(charged.order_id),
                        Value::Text(charged.receipt_id),
                        Value::Text(charged.card_last4),
                    ],
                )
                .map(drop)
                .map_err(|error| format!("confirming the order: {error:?}"))
            }
            "payments.failed" => cancel(&parse::<PaymentFailed>(&event)?, tx),
            other => Err(format!("orders does not handle {other}")),
        }
    }
}

export!(Saga);

/// Compensates a payment that failed after the order was placed: stock back, order
/// cancelled, `orders.cancelled` published — or nothing, if it was already done.
fn cancel(failed: &PaymentFailed, tx: &Transaction) -> Result<(), String> {
    let found = tx
        .query(
            "SELECT status, reservation_id, customer_id, total_cents, currency FROM orders \
             WHERE id = $1",
            &[Value::Text(failed.order_id.clone())],
        )
        .map_err(|error| format!("reading the order: {error:?}"))?;
    let Some(
        [Value::Text(status), Value::Text(reservation_id), Value::Integer(customer_id), Value::Integer(total_cents), Value::Text(currency)],
    ) = found.rows.first().map(Vec::as_slice)
    else {
        eprintln!(
            "orders: payment of unknown order {} failed; nothing to cancel",
            failed.order_id
        );
        return Ok(());
    };
    if status != "confirmed" && status != "pending" {
        return Ok(());
    }
    match inventory::release(reservation_id) {
        Ok(()) | Err(inventory::ReleaseError::UnknownReservation(_)) => {}
        // Inventory cannot take the stock back now: fail, and the host retries later.
        Err(inventory::ReleaseError::Unavailable(why)) => {
            return Err(format!("releasing reservation {reservation_id}: {why}"))
        }
    }
    let reason = format!("payment failed: {}", failed.reason);
    tx.execute(
        "UPDATE orders SET status = 'cancelled', reason = $2 WHERE id = $1",
        &[
            Value::Text(failed.order_id.clone()),
            Value::Text(reason.clone()),
        ],
    )
    .map_err(|error| format!("cancelling the order: {error:?}"))?;
    let payload = json!({
        "order_id": failed.order_id,
        "customer_id": customer_id,
        "reason": reason,
        "total_cents": total_cents,
        "currency": currency,
    });
    publisher::publish_in(
        tx,
        "orders.cancelled",
        &failed.order_id,
        payload.to_string().as_bytes(),
        &[("content-type".into(), "application/json".into())],
    )
    .map(drop)
    .map_err(|error| format!("publishing orders.cancelled: {error:?}"))
}

/// The event's JSON payload, or an error naming the event.
fn parse<T: serde::de::DeserializeOwned>(event: &Event) -> Result<T, String> {
    serde_json::from_slice(&event.payload)
        .map_err(|error| format!("{} event {}: bad payload: {error}", event.topic, event.id))
}
