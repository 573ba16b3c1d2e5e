//! The `inventory` module: how many of each product the shop can sell, and at what
//! price. It exports `shop:inventory/api` for other modules and serves a read-only
//! view over HTTP.
//!
//! Contract (`wit/shop/inventory.wit`):
//! - `reserve(order-id, lines)` holds stock for an order, every line or none, and
//!   prices it; `out-of-stock` lists every short product, `unknown-sku` names the
//!   first sku that does not exist, `invalid` describes a malformed order;
//! - `level(sku)` is one product's stock level.
//!
//! HTTP API (JSON): `GET /inventory` lists stock levels; `GET /inventory/{sku}` is one
//! level, or 404.
//!
//! Until the host's SQL capability lands, stock levels are fixed data compiled in:
//! `reserve` checks an order against them and prices it, but does not yet draw the
//! stock down (a reservation is not stored).

wit_bindgen::generate!({
    path: "../../wit/shop/inventory.wit",
    world: "inventory",
});

use exports::shop::inventory::api::{
    Guest, Line, Reservation, ReserveError, ReservedLine, Shortage, StockLevel,
};
use modhost_guest::{Request, Response};

/// One product's stock. Prices are integer cents: money is never a float.
struct Stock {
    sku: &'static str,
    name: &'static str,
    available: u32,
    unit_price_cents: u64,
}

const STOCK: &[Stock] = &[
    Stock {
        sku: "KB-001",
        name: "Mechanical keyboard",
        available: 50,
        unit_price_cents: 8900,
    },
    Stock {
        sku: "MS-002",
        name: "Wireless mouse",
        available: 120,
        unit_price_cents: 2900,
    },
    Stock {
        sku: "MN-003",
        name: "27-inch monitor",
        available: 5,
        unit_price_cents: 24900,
    },
    Stock {
        sku: "CB-004",
        name: "USB-C cable",
        available: 500,
        unit_price_cents: 900,
    },
];

/// Most lines one order may hold.
const MAX_LINES: usize = 100;

fn find(sku: &str) -> Option<&'static Stock> {
    STOCK.iter().find(|stock| stock.sku == sku)
}

fn level_of(stock: &Stock) -> StockLevel {
    StockLevel {
        sku: stock.sku.into(),
        name: stock.name.into(),
        available: stock.available,
        unit_price_cents: stock.unit_price_cents,
    }
}

struct Inventory;

impl Guest for Inventory {
    fn reserve(order_id: String, lines: Vec<Line>) -> Result<Reservation, ReserveError> {
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
        let mut reserved = Vec::with_capacity(lines.len());
        let mut shortages = Vec::new();
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
            let Some(stock) = find(&line.sku) else {
                return Err(ReserveError::UnknownSku(line.sku.clone()));
            };
            if line.quantity > stock.available {
                shortages.push(Shortage {
                    sku: line.sku.clone(),
                    requested: line.quantity,
                    available: stock.available,
                });
            }
            reserved.push(ReservedLine {
                sku: stock.sku.into(),
                name: stock.name.into(),
                quantity: line.quantity,
                unit_price_cents: stock.unit_price_cents,
            });
        }
        if !shortages.is_empty() {
            return Err(ReserveError::OutOfStock(shortages));
        }
        // u32 quantities times prices below 2^32 cents, at most 100 lines: no overflow
        // is possible, but say so in code rather than in a comment alone.
        let total_cents = reserved
            .iter()
            .map(|line| u64::from(line.quantity).saturating_mul(line.unit_price_cents))
            .fold(0u64, u64::saturating_add);
        Ok(Reservation {
            id: modhost_guest::new_id("rsv"),
            order_id,
            lines: reserved,
            total_cents,
        })
    }

    fn level(sku: String) -> Option<StockLevel> {
        find(&sku).map(level_of)
    }
}

export!(Inventory);

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
        ("GET", ["inventory"]) => {
            let levels: Vec<_> = STOCK.iter().map(|s| level_json(&level_of(s))).collect();
            Response::json(200, &serde_json::json!({ "stock": levels }))
        }
        ("GET", ["inventory", sku]) => match find(sku) {
            Some(stock) => Response::json(200, &level_json(&level_of(stock))),
            None => Response::not_found(&format!("no product with sku {sku}")),
        },
        (method, ["inventory"] | ["inventory", _]) => Response::method_not_allowed(method),
        _ => Response::not_found(&request.path),
    }
}

modhost_guest::http_module!(handle);
