//! The `catalog` module: the products the shop sells.
//!
//! HTTP API (all JSON):
//! - `GET /catalog/products?category=C` lists products, optionally of one category;
//! - `GET /catalog/products/{sku}` returns one product, or 404;
//! - `POST /catalog/products` with `{"sku", "name", "price_cents", "category"}`
//!   validates and creates a product: 201, 400 with field errors, 409 for a taken sku.
//!
//! Every request runs in a fresh instance; the catalogue is in the module's own
//! database (`migrations/` creates it with four products).
//!
//! Product lookups are cached in the module's `lookups` bucket (`wasi:keyvalue`): a
//! lookup answers from the cache when it can (`x-cache: hit`), else from the database,
//! and fills the cache (`x-cache: miss`); a new product is written to both. The cache
//! is only a shortcut: when the store cannot be reached, lookups go to the database.

wit_bindgen::generate!({
    path: [
        "../../wit/modhost/sql.wit",
        "../../wit/wasi/keyvalue",
        "../../wit/shop/catalog.wit",
    ],
    world: "shop:catalog/catalog",
    generate_all,
});

use modhost::sql::sql::{self as sql, Value};
use modhost_guest::{Request, Response};
use serde::{Deserialize, Serialize};
use wasi::keyvalue::store;

/// A product as the API returns it. Prices are integer cents: money is never a float.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Product {
    sku: String,
    name: String,
    category: String,
    price_cents: i64,
    currency: String,
}

impl Product {
    fn from_row(row: &[Value]) -> Option<Product> {
        match row {
            [Value::Text(sku), Value::Text(name), Value::Text(category), Value::Integer(price_cents), Value::Text(currency)] => {
                Some(Product {
                    sku: sku.clone(),
                    name: name.clone(),
                    category: category.clone(),
                    price_cents: *price_cents,
                    currency: currency.clone(),
                })
            }
            _ => None,
        }
    }
}

const COLUMNS: &str = "SELECT sku, name, category, price_cents, currency FROM products";

/// A database failure, as an answer.
fn unavailable(error: sql::Error) -> Response {
    Response::error(
        503,
        "unavailable",
        &format!("the catalogue is unavailable: {error:?}"),
    )
}

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
    let rows = match category {
        Some(category) => sql::query(
            &format!("{COLUMNS} WHERE category = $1 ORDER BY sku"),
            &[Value::Text(category.to_string())],
        ),
        None => sql::query(&format!("{COLUMNS} ORDER BY sku"), &[]),
    };
    match rows {
        Ok(rows) => {
            let products: Vec<Product> = rows
                .rows
                .iter()
                .filter_map(|r| Product::from_row(r))
                .collect();
            Response::json(
                200,
                &serde_json::json!({ "products": products, "total": products.len() }),
            )
        }
        Err(error) => unavailable(error),
    }
}

/// The bucket product lookups are cached in.
const LOOKUPS: &str = "lookups";

/// The cache key of product `sku`.
fn cache_key(sku: &str) -> String {
    format!("product:{sku}")
}

/// The lookups cache, if the store can be reached.
fn lookups() -> Option<store::Bucket> {
    store::open(LOOKUPS).ok()
}

/// Remembers `product` in the lookups cache (a failure only costs a later miss).
fn cache(bucket: Option<&store::Bucket>, product: &Product) {
    if let (Some(bucket), Ok(bytes)) = (bucket, serde_json::to_vec(product)) {
        let _ = bucket.set(&cache_key(&product.sku), &bytes);
    }
}

/// `response` with the `x-cache` header saying where the product came from.
fn from_cache(mut response: Response, hit: bool) -> Response {
    let value: &[u8] = if hit { b"hit" } else { b"miss" };
    response.headers.push(("x-cache".into(), value.to_vec()));
    response
}

fn get(sku: &str) -> Response {
    let sku = sku.to_ascii_uppercase();
    let bucket = lookups();
    let cached = bucket
        .as_ref()
        .and_then(|bucket| bucket.get(&cache_key(&sku)).ok().flatten())
        .and_then(|bytes| serde_json::from_slice::<Product>(&bytes).ok());
    if let Some(product) = cached {
        return from_cache(Response::json(200, &product), true);
    }
    match sql::query(
        &format!("{COLUMNS} WHERE sku = $1"),
        &[Value::Text(sku.clone())],
    ) {
        Ok(rows) => match rows.rows.first().and_then(|r| Product::from_row(r)) {
            Some(product) => {
                cache(bucket.as_ref(), &product);
                from_cache(Response::json(200, &product), false)
            }
            None => Response::not_found(&format!("no product with sku {sku}")),
        },
        Err(error) => unavailable(error),
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
    let product = Product {
        sku: sku.to_ascii_uppercase(),
        name: name.to_string(),
        category: category.to_string(),
        price_cents: new.price_cents.unwrap_or_default(),
        currency: "EUR".into(),
    };
    let inserted = sql::execute(
        "INSERT INTO products (sku, name, category, price_cents, currency) VALUES ($1, $2, $3, $4, $5)",
        &[
            Value::Text(product.sku.clone()),
            Value::Text(product.name.clone()),
            Value::Text(product.category.clone()),
            Value::Integer(product.price_cents),
            Value::Text(product.currency.clone()),
        ],
    );
    match inserted {
        Ok(_) => {
            cache(lookups().as_ref(), &product);
            Response::json(201, &product)
        }
        Err(sql::Error::ConstraintViolation(_)) => Response::error(
            409,
            "sku_taken",
            &format!("sku {} already exists", product.sku),
        ),
        Err(error) => unavailable(error),
    }
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
