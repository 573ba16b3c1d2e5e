//! The `users` module: people who can sign in and place orders.
//!
//! HTTP API (all JSON):
//! - `GET /users?limit=N&offset=M` lists users, newest last;
//! - `GET /users/{id}` returns one user, or 404;
//! - `POST /users` with `{"name": "...", "email": "..."}` validates and creates a user:
//!   201 with the new user, 400 with field errors, 409 if the email is taken.
//!
//! Other modules look users up through `shop:users/api` (`wit/shop/users.wit`): the
//! fraud module asks who is behind an order.
//!
//! Every request runs in a fresh instance, so the module keeps no state in memory: the
//! directory is in its own database (`migrations/` creates it with three users).

wit_bindgen::generate!({
    path: ["../../wit/modhost/sql.wit", "../../wit/shop/users.wit"],
    world: "shop:users/users",
    generate_all,
});

use exports::shop::users::api::{self as api, Guest, LookupError};
use modhost::sql::sql::{self as sql, Value};
use modhost_guest::{Request, Response};
use serde::{Deserialize, Serialize};

/// A user as the API returns it.
#[derive(Debug, Clone, Serialize)]
struct User {
    id: i64,
    name: String,
    email: String,
}

impl User {
    fn from_row(row: &[Value]) -> Option<User> {
        match row {
            [Value::Integer(id), Value::Text(name), Value::Text(email)] => Some(User {
                id: *id,
                name: name.clone(),
                email: email.clone(),
            }),
            _ => None,
        }
    }
}

/// A database failure, as an answer.
fn unavailable(error: sql::Error) -> Response {
    Response::error(
        503,
        "unavailable",
        &format!("the user directory is unavailable: {error:?}"),
    )
}

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
    let offset = i64::try_from(offset).unwrap_or(i64::MAX);
    let page = sql::query(
        "SELECT id, name, email FROM users ORDER BY id LIMIT $1 OFFSET $2",
        &[Value::Integer(limit as i64), Value::Integer(offset)],
    );
    let total = sql::query("SELECT COUNT(*) FROM users", &[]);
    match (page, total) {
        (Ok(page), Ok(total)) => {
            let users: Vec<User> = page.rows.iter().filter_map(|r| User::from_row(r)).collect();
            let total = match total.rows.first().map(Vec::as_slice) {
                Some([Value::Integer(n)]) => *n,
                _ => 0,
            };
            Response::json(
                200,
                &serde_json::json!({ "users": users, "total": total, "limit": limit, "offset": offset }),
            )
        }
        (Err(error), _) | (_, Err(error)) => unavailable(error),
    }
}

fn get(id: &str) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return Response::error(400, "invalid_id", "a user id is a positive integer");
    };
    match find(id) {
        Ok(Some(user)) => Response::json(200, &user),
        Ok(None) => Response::not_found(&format!("no user with id {id}")),
        Err(error) => unavailable(error),
    }
}

/// The user with `id`, if there is one: the one lookup HTTP and the contract share.
fn find(id: u64) -> Result<Option<User>, sql::Error> {
    let rows = sql::query(
        "SELECT id, name, email FROM users WHERE id = $1",
        &[Value::Integer(i64::try_from(id).unwrap_or(i64::MAX))],
    )?;
    Ok(rows.rows.first().and_then(|r| User::from_row(r)))
}

/// `shop:users/api`, for other modules.
struct Contract;

impl Guest for Contract {
    fn get(id: u64) -> Result<Option<api::User>, LookupError> {
        let user = find(id).map_err(|error| LookupError::Unavailable(format!("{error:?}")))?;
        Ok(user.map(|user| api::User {
            id: u64::try_from(user.id).unwrap_or_default(),
            name: user.name,
            email: user.email,
        }))
    }
}

export!(Contract);

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
    // The next id is one past the largest; two creations racing for the same id
    // collide on the primary key, and the loser tries again. (On SQLite writers take
    // turns; on Postgres, with several writers at once, one wins each round: a few
    // rounds are not enough for a writer that keeps losing.)
    for _ in 0..32 {
        let inserted = sql::query(
            "INSERT INTO users (id, name, email) \
             SELECT COALESCE(MAX(id), 0) + 1, $1, $2 FROM users RETURNING id",
            &[
                Value::Text(name.to_string()),
                Value::Text(email.to_string()),
            ],
        );
        match inserted {
            Ok(rows) => {
                let id = match rows.rows.first().map(Vec::as_slice) {
                    Some([Value::Integer(id)]) => *id,
                    _ => 0,
                };
                return Response::json(
                    201,
                    &serde_json::json!({ "id": id, "name": name, "email": email }),
                );
            }
            Err(sql::Error::ConstraintViolation(failure))
                if failure.constraint.as_deref() == Some("users_email_unique")
                    || failure.message.contains("users_email_unique")
                    || failure.message.contains("users.email") =>
            {
                return Response::error(
                    409,
                    "email_taken",
                    &format!("{email} is already registered"),
                );
            }
            Err(sql::Error::ConstraintViolation(_)) => continue,
            Err(error) => return unavailable(error),
        }
    }
    Response::error(
        503,
        "busy",
        "too many users are being created at once; retry",
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
