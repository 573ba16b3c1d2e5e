//! The `inventory` module: how many of each product the shop can sell, and at what
//! price, kept in its own database. It exports `shop:inventory/api` for other modules
//! and serves a read-only view over HTTP.
//!
//! Contract (`wit/shop/inventory.wit`):
//! - `reserve(order-id, lines)` holds stock for an order, every line or none, and
//!   prices it; `out-of-stock` lists every short product, `unknown-sku` names the
//!   first sku that does not exist, `invalid` describes a malformed order;
//! - `release(reservation-id)` gives a reservation's stock back (once);
//! - `level(sku)` is one product's stock level.
//!
//! HTTP API (JSON): `GET /inventory` lists stock levels; `GET /inventory/{sku}` is one
//! level, or 404.
//!
//! Stock never goes below zero, however many orders arrive at once: each line is
//! taken with one conditional `UPDATE … WHERE available >= quantity` inside the
//! reservation's transaction, so two orders cannot both take the last unit. The
//! schema and the initial stock are in `migrations/`.

wit_bindgen::generate!({
    path: ["../../wit/modhost/sql.wit", "../../wit/shop/inventory.wit"],
    world: "shop:inventory/inventory",
    generate_all,
});

use exports::shop::inventory::api::{
    Guest, Line, ReleaseError, Reservation, ReserveError, ReservedLine, Shortage, StockLevel,
};
use modhost::sql::sql::{self as sql, Transaction, Value};
use modhost_guest::{Request, Response};

/// Most lines one order may hold.
const MAX_LINES: usize = 100;

struct Inventory;

impl Guest for Inventory {
    fn reserve(order_id: String, lines: Vec<Line>) -> Result<Reservation, ReserveError> {
        validate(&order_id, &lines)?;
        let unavailable = |e: sql::Error| ReserveError::Unavailable(describe(&e));
        let tx = sql::begin().map_err(unavailable)?;
        // The transaction rolls back when `tx` is dropped on any early return.
        // Lines are taken in sku order, whatever order the order lists them in: two
        // orders for the same products then lock their rows in the same order and
        // cannot deadlock each other (Postgres).
        let mut by_sku: Vec<usize> = (0..lines.len()).collect();
        by_sku.sort_by(|a, b| lines[*a].sku.cmp(&lines[*b].sku));
        let mut reserved: Vec<Option<ReservedLine>> = vec![None; lines.len()];
        let mut shortages = Vec::new();
        for i in by_sku {
            let line = &lines[i];
            let quantity = Value::Integer(i64::from(line.quantity));
            let sku = Value::Text(line.sku.clone());
            let taken = tx
                .execute(
                    "UPDATE stock SET available = available - $1 \
                     WHERE sku = $2 AND available >= $1",
                    &[quantity, sku.clone()],
                )
                .map_err(unavailable)?;
            let Some(stock) = stock_level(Some(&tx), &line.sku).map_err(unavailable)? else {
                return Err(ReserveError::UnknownSku(line.sku.clone()));
            };
            if taken == 0 {
                shortages.push(Shortage {
                    sku: line.sku.clone(),
                    requested: line.quantity,
                    available: stock.available,
                });
            }
            reserved[i] = Some(ReservedLine {
                sku: stock.sku,
                name: stock.name,
                quantity: line.quantity,
                unit_price_cents: stock.unit_price_cents,
            });
        }
        let reserved: Vec<ReservedLine> = reserved.into_iter().flatten().collect();
        if !shortages.is_empty() {
            return Err(ReserveError::OutOfStock(shortages));
        }
        let total_cents = reserved
            .iter()
            .map(|line| u64::from(line.quantity).saturating_mul(line.unit_price_cents))
            .fold(0u64, u64::saturating_add);
        let id = modhost_guest::new_id("rsv");
        tx.execute(
            "INSERT INTO reservations (id, order_id, status, total_cents) VALUES ($1, $2, 'held', $3)",
            &[
                Value::Text(id.clone()),
                Value::Text(order_id.clone()),
                Value::Integer(total_cents as i64),
            ],
        )
        .map_err(unavailable)?;
        for line in &reserved {
            tx.execute(
                "INSERT INTO reservation_lines (reservation_id, sku, quantity, unit_price_cents) \
                 VALUES ($1, $2, $3, $4)",
                &[
                    Value::Text(id.clone()),
                    Value::Text(line.sku.clone()),
                    Value::Integer(i64::from(line.quantity)),
                    Value::Integer(line.unit_price_cents as i64),
                ],
            )
            .map_err(unavailable)?;
        }
        Transaction::commit(tx).map_err(unavailable)?;
        Ok(Reservation {
            id,
            order_id,
            lines: reserved,
            total_cents,
        })
    }

    fn release(reservation_id: String) -> Result<(), ReleaseError> {
        let unavailable = |e: sql::Error| ReleaseError::Unavailable(describe(&e));
        let tx = sql::begin().map_err(unavailable)?;
        let id = Value::Text(reservation_id.clone());
        let released = tx
            .execute(
                "UPDATE reservations SET status = 'released' WHERE id = $1 AND status = 'held'",
                std::slice::from_ref(&id),
            )
            .map_err(unavailable)?;
        if released == 0 {
            let known = tx
                .query(
                    "SELECT 1 FROM reservations WHERE id = $1",
                    std::slice::from_ref(&id),
                )
                .map_err(unavailable)?;
            return if known.rows.is_empty() {
                Err(ReleaseError::UnknownReservation(reservation_id))
            } else {
                Ok(()) // released before: nothing to give back twice
            };
        }
        tx.execute(
            "UPDATE stock SET available = available + \
             (SELECT quantity FROM reservation_lines l WHERE l.reservation_id = $1 AND l.sku = stock.sku) \
             WHERE sku IN (SELECT sku FROM reservation_lines WHERE reservation_id = $1)",
            std::slice::from_ref(&id),
        )
        .map_err(unavailable)?;
        Transaction::commit(tx).map_err(unavailable)
    }

    fn level(sku: String) -> Option<StockLevel> {
        // A database failure here has no error case in the contract: trap, and the
        // caller's request fails with the reason in the log.
        match stock_level(None, &sku) {
            Ok(level) => level,
            Err(e) => panic!("inventory: reading stock of {sku}: {}", describe(&e)),
        }
    }
}

export!(Inventory);

fn validate(order_id: &str, lines: &[Line]) -> Result<(), ReserveError> {
    if order_id.trim().is_empty() {
        return Err(ReserveError::Invalid("the order id is empty".into()));
    }
    if lines.is_empty() {
        return Err(ReserveError::Invalid(
            "an order needs at least one line".into(),
        ));
    }
    if lines.len() > MAX_LINES {
        return Err(ReserveError::Invalid(format!(
            "an order has at most {MAX_LINES} lines"
        )));
    }
    for (i, line) in lines.iter().enumerate() {
        if line.quantity == 0 {
            return Err(ReserveError::Invalid(format!(
                "line {i} ({}) has quantity 0",
                line.sku
            )));
        }
        if lines[..i].iter().any(|earlier| earlier.sku == line.sku) {
            return Err(ReserveError::Invalid(format!(
                "{} appears on more than one line",
                line.sku
            )));
        }
    }
    Ok(())
}

const LEVEL_COLUMNS: &str = "SELECT sku, name, available, unit_price_cents FROM stock";

/// One product's stock level, read in `tx` when given.
fn stock_level(tx: Option<&Transaction>, sku: &str) -> Result<Option<StockLevel>, sql::Error> {
    let statement = format!("{LEVEL_COLUMNS} WHERE sku = $1");
    let params = [Value::Text(sku.to_string())];
    let rows = match tx {
        Some(tx) => tx.query(&statement, &params)?,
        None => sql::query(&statement, &params)?,
    };
    Ok(rows.rows.iter().find_map(|row| level_from(row)))
}

fn level_from(row: &[Value]) -> Option<StockLevel> {
    match row {
        [Value::Text(sku), Value::Text(name), Value::Integer(available), Value::Integer(price)] => {
            Some(StockLevel {
                sku: sku.clone(),
                name: name.clone(),
                available: u32::try_from(*available).unwrap_or(u32::MAX),
                unit_price_cents: u64::try_from(*price).unwrap_or(0),
            })
        }
        _ => None,
    }
}

fn describe(error: &sql::Error) -> String {
    match error {
        sql::Error::ConstraintViolation(failure) => failure.message.clone(),
        sql::Error::Syntax(m)
        | sql::Error::Denied(m)
        | sql::Error::Unavailable(m)
        | sql::Error::Other(m) => m.clone(),
        sql::Error::Timeout => "timed out".into(),
        sql::Error::TooLarge(limit) => format!("result larger than {limit} bytes"),
    }
}

fn level_json(level: &StockLevel) -> serde_json::Value {
    serde_json::json!({
        "sku": level.sku,
        "name": level.name,
        "available": level.available,
        "unit_price_cents": level.unit_price_cents,
    })
}

fn handle(request: Request) -> Response {
    let segments = request.segments();
    match (request.method.as_str(), segments.as_slice()) {
        ("GET", ["inventory"]) => match sql::query(&format!("{LEVEL_COLUMNS} ORDER BY sku"), &[]) {
            Ok(rows) => {
                let levels: Vec<_> = rows
                    .rows
                    .iter()
                    .filter_map(|row| level_from(row))
                    .map(|level| level_json(&level))
                    .collect();
                Response::json(200, &serde_json::json!({ "stock": levels }))
            }
            Err(e) => Response::error(503, "unavailable", &describe(&e)),
        },
        ("GET", ["inventory", sku]) => match stock_level(None, sku) {
            Ok(Some(level)) => Response::json(200, &level_json(&level)),
            Ok(None) => Response::not_found(&format!("no product with sku {sku}")),
            Err(e) => Response::error(503, "unavailable", &describe(&e)),
        },
        (method, ["inventory"] | ["inventory", _]) => Response::method_not_allowed(method),
        _ => Response::not_found(&request.path),
    }
}

modhost_guest::http_module!(handle);
