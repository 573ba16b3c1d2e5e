//! The `users` module: people who can sign in and place orders.
//!
//! HTTP API (all JSON):
//! - `GET /users?limit=N&offset=M` lists users, newest last;
//! - `GET /users/{id}` returns one user, or 404;
//! - `POST /users` with `{"name": "...", "email": "..."}` validates and creates a user:
//!   201 with the new user, 400 with field errors, 409 if the email is taken.
//!
//! Every request runs in a fresh instance, so the module keeps no state in memory.
//! Until the host's SQL capability lands, the directory is a fixed set compiled in, and
//! a created user is validated and returned but not stored.

use modhost_guest::{Request, Response};
use serde::{Deserialize, Serialize};

/// A user as the API returns it.
#[derive(Debug, Clone, Serialize)]
struct User {
    id: u64,
    name: &'static str,
    email: &'static str,
}

const DIRECTORY: &[User] = &[
    User {
        id: 1,
        name: "Ada Lovelace",
        email: "ada@example.com",
    },
    User {
        id: 2,
        name: "Grace Hopper",
        email: "grace@example.com",
    },
    User {
        id: 3,
        name: "Edsger Dijkstra",
        email: "edsger@example.com",
    },
];

/// The body of `POST /users`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: Option<String>,
    email: Option<String>,
}

fn handle(request: Request) -> Response {
    let segments = request.segments();
    match (request.method.as_str(), segments.as_slice()) {
        ("GET", ["users"]) => list(&request),
        ("POST", ["users"]) => create(&request),
        ("GET", ["users", id]) => get(id),
        (method, ["users"] | ["users", _]) => Response::method_not_allowed(method),
        _ => Response::not_found(&format!("no such resource: {}", request.path)),
    }
}

fn list(request: &Request) -> Response {
    let limit = match parse_param(request, "limit", 50, 1..=500) {
        Ok(limit) => limit,
        Err(response) => return response,
    };
    let offset = match parse_param(request, "offset", 0, 0..=u64::MAX) {
        Ok(offset) => offset,
        Err(response) => return response,
    };
    let page: Vec<&User> = DIRECTORY
        .iter()
        .skip(offset as usize)
        .take(limit as usize)
        .collect();
    Response::json(
        200,
        &serde_json::json!({ "users": page, "total": DIRECTORY.len(), "limit": limit, "offset": offset }),
    )
}

fn get(id: &str) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return Response::error(400, "invalid_id", "a user id is a positive integer");
    };
    match DIRECTORY.iter().find(|user| user.id == id) {
        Some(user) => Response::json(200, user),
        None => Response::not_found(&format!("no user with id {id}")),
    }
}

fn create(request: &Request) -> Response {
    let new_user: NewUser = match request.json() {
        Ok(new_user) => new_user,
        Err(response) => return response,
    };
    let mut problems = serde_json::Map::new();
    let name = new_user.name.as_deref().map(str::trim).unwrap_or_default();
    if name.is_empty() {
        problems.insert("name".into(), "is required".into());
    } else if name.chars().count() > 100 {
        problems.insert("name".into(), "is longer than 100 characters".into());
    }
    let email = new_user.email.as_deref().map(str::trim).unwrap_or_default();
    if email.is_empty() {
        problems.insert("email".into(), "is required".into());
    } else if !is_plausible_email(email) {
        problems.insert("email".into(), "is not an email address".into());
    }
    if !problems.is_empty() {
        return Response::validation("the user is not valid", problems);
    }
    if DIRECTORY
        .iter()
        .any(|user| user.email.eq_ignore_ascii_case(email))
    {
        return Response::error(
            409,
            "email_taken",
            &format!("{email} is already registered"),
        );
    }
    let id = DIRECTORY.iter().map(|user| user.id).max().unwrap_or(0) + 1;
    Response::json(
        201,
        &serde_json::json!({ "id": id, "name": name, "email": email }),
    )
}

/// One `@`, something before it, and a dotted domain after it: enough to catch typos
/// without rejecting real addresses.
fn is_plausible_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(char::is_whitespace)
}

/// Parses an optional integer query parameter, answering 400 when it is malformed or
/// out of `range`.
fn parse_param(
    request: &Request,
    name: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, Response> {
    let Some(raw) = request.query_param(name) else {
        return Ok(default);
    };
    match raw.parse::<u64>() {
        Ok(value) if range.contains(&value) => Ok(value),
        _ => Err(Response::error(
            400,
            "invalid_query",
            &format!(
                "{name} must be an integer from {} to {}",
                range.start(),
                range.end()
            ),
        )),
    }
}

modhost_guest::http_module!(handle);
