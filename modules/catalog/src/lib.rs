//! The `catalog` module: the products the shop sells.
//!
//! HTTP API (all JSON):
//! - `GET /catalog/products?category=C` lists products, optionally of one category;
//! - `GET /catalog/products/{sku}` returns one product, or 404;
//! - `POST /catalog/products` with `{"sku", "name", "price_cents", "category"}`
//!   validates and creates a product: 201, 400 with field errors, 409 for a taken sku.
//!
//! Every request runs in a fresh instance. Until the host's SQL capability lands, the
//! catalogue is fixed data compiled in, and a created product is validated and returned
//! but not stored.

use modhost_guest::{Request, Response};
use serde::{Deserialize, Serialize};

/// A product as the API returns it. Prices are integer cents: money is never a float.
#[derive(Debug, Clone, Serialize)]
struct Product {
    sku: &'static str,
    name: &'static str,
    category: &'static str,
    price_cents: u64,
    currency: &'static str,
}

const PRODUCTS: &[Product] = &[
    Product {
        sku: "KB-001",
        name: "Mechanical keyboard",
        category: "peripherals",
        price_cents: 8900,
        currency: "EUR",
    },
    Product {
        sku: "MS-002",
        name: "Wireless mouse",
        category: "peripherals",
        price_cents: 2900,
        currency: "EUR",
    },
    Product {
        sku: "MN-003",
        name: "27-inch monitor",
        category: "displays",
        price_cents: 24900,
        currency: "EUR",
    },
    Product {
        sku: "CB-004",
        name: "USB-C cable",
        category: "cables",
        price_cents: 900,
        currency: "EUR",
    },
];

const CATEGORIES: &[&str] = &["peripherals", "displays", "cables"];

/// The body of `POST /catalog/products`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewProduct {
    sku: Option<String>,
    name: Option<String>,
    category: Option<String>,
    price_cents: Option<i64>,
}

fn handle(request: Request) -> Response {
    let segments = request.segments();
    match (request.method.as_str(), segments.as_slice()) {
        ("GET", ["catalog"]) => Response::json(
            200,
            &serde_json::json!({ "products": "/catalog/products", "categories": CATEGORIES }),
        ),
        ("GET", ["catalog", "products"]) => list(&request),
        ("POST", ["catalog", "products"]) => create(&request),
        ("GET", ["catalog", "products", sku]) => get(sku),
        (method, ["catalog"] | ["catalog", "products"] | ["catalog", "products", _]) => {
            Response::method_not_allowed(method)
        }
        _ => Response::not_found(&format!("no such resource: {}", request.path)),
    }
}

fn list(request: &Request) -> Response {
    let category = request.query_param("category");
    if let Some(category) = category {
        if !CATEGORIES.contains(&category) {
            return Response::error(
                400,
                "invalid_query",
                &format!(
                    "unknown category {category:?}; known: {}",
                    CATEGORIES.join(", ")
                ),
            );
        }
    }
    let products: Vec<&Product> = PRODUCTS
        .iter()
        .filter(|product| category.is_none_or(|category| product.category == category))
        .collect();
    Response::json(
        200,
        &serde_json::json!({ "products": products, "total": products.len() }),
    )
}

fn get(sku: &str) -> Response {
    match PRODUCTS
        .iter()
        .find(|product| product.sku.eq_ignore_ascii_case(sku))
    {
        Some(product) => Response::json(200, product),
        None => Response::not_found(&format!("no product with sku {sku}")),
    }
}

fn create(request: &Request) -> Response {
    let new: NewProduct = match request.json() {
        Ok(new) => new,
        Err(response) => return response,
    };
    let mut problems = serde_json::Map::new();
    let sku = new.sku.as_deref().map(str::trim).unwrap_or_default();
    if !is_valid_sku(sku) {
        problems.insert(
            "sku".into(),
            "must look like AB-123 (letters, dash, digits)".into(),
        );
    }
    let name = new.name.as_deref().map(str::trim).unwrap_or_default();
    if name.is_empty() || name.chars().count() > 200 {
        problems.insert("name".into(), "is required, at most 200 characters".into());
    }
    let category = new.category.as_deref().unwrap_or_default();
    if !CATEGORIES.contains(&category) {
        problems.insert(
            "category".into(),
            format!("must be one of {}", CATEGORIES.join(", ")).into(),
        );
    }
    match new.price_cents {
        Some(price) if price > 0 && price <= 100_000_000 => {}
        _ => {
            problems.insert(
                "price_cents".into(),
                "must be a whole number of cents from 1 to 100000000".into(),
            );
        }
    }
    if !problems.is_empty() {
        return Response::validation("the product is not valid", problems);
    }
    if PRODUCTS
        .iter()
        .any(|product| product.sku.eq_ignore_ascii_case(sku))
    {
        return Response::error(409, "sku_taken", &format!("sku {sku} already exists"));
    }
    Response::json(
        201,
        &serde_json::json!({
            "sku": sku.to_ascii_uppercase(),
            "name": name,
            "category": category,
            "price_cents": new.price_cents,
            "currency": "EUR",
        }),
    )
}

fn is_valid_sku(sku: &str) -> bool {
    let Some((letters, digits)) = sku.split_once('-') else {
        return false;
    };
    (1..=4).contains(&letters.len())
        && letters.chars().all(|c| c.is_ascii_alphabetic())
        && (1..=6).contains(&digits.len())
        && digits.chars().all(|c| c.is_ascii_digit())
}

modhost_guest::http_module!(handle);
