//! The `{{name}}` module (scaffolded by `modhost new`).
//!
//! - `GET /{{name}}`: the notes, oldest first.
//! - `POST /{{name}}` with `{"text": "..."}`: stores a note; 201 with it, or 400.
//! - `{{namespace}}:{{name}}/api.count` (`../../wit/{{namespace}}/{{name}}.wit`): for other modules.
//!
//! Its notes live in its own database (`migrations/`); every request runs in a fresh
//! instance, so nothing is kept in memory.

wit_bindgen::generate!({
    path: ["../../wit/modhost/sql.wit", "../../wit/{{namespace}}/{{name}}.wit"],
    world: "{{namespace}}:{{name}}/{{name}}",
    generate_all,
});

use modhost::sql::sql::{self as sql, Value};
use modhost_guest::{Request, Response};
use serde::Deserialize;

/// The body of `POST /{{name}}`.
#[derive(Deserialize)]
struct NewNote {
    text: Option<String>,
}

/// The note's text, trimmed, or the problem with it.
fn validate(note: &NewNote) -> Result<String, &'static str> {
    let text = note.text.as_deref().map(str::trim).unwrap_or_default();
    match text.chars().count() {
        0 => Err("is required"),
        n if n > 500 => Err("is longer than 500 characters"),
        _ => Ok(text.to_string()),
    }
}

fn handle(request: Request) -> Response {
    match (request.method.as_str(), request.segments().as_slice()) {
        ("GET", ["{{name}}"]) => list(),
        ("POST", ["{{name}}"]) => create(&request),
        (method, ["{{name}}"]) => Response::method_not_allowed(method),
        _ => Response::not_found(&request.path),
    }
}

modhost_guest::http_module!(handle);

fn unavailable(error: sql::Error) -> Response {
    Response::error(503, "unavailable", &format!("the database is unavailable: {error:?}"))
}

fn list() -> Response {
    match sql::query("SELECT id, text FROM notes ORDER BY id", &[]) {
        Ok(rows) => {
            let notes: Vec<serde_json::Value> = rows
                .rows
                .iter()
                .filter_map(|row| match row.as_slice() {
                    [Value::Integer(id), Value::Text(text)] => {
                        Some(serde_json::json!({ "id": id, "text": text }))
                    }
                    _ => None,
                })
                .collect();
            Response::json(200, &serde_json::json!({ "notes": notes }))
        }
        Err(error) => unavailable(error),
    }
}

fn create(request: &Request) -> Response {
    let note: NewNote = match request.json() {
        Ok(note) => note,
        Err(response) => return response,
    };
    let text = match validate(&note) {
        Ok(text) => text,
        Err(problem) => {
            let mut fields = serde_json::Map::new();
            fields.insert("text".into(), problem.into());
            return Response::validation("the note is not valid", fields);
        }
    };
    let inserted = sql::query(
        "INSERT INTO notes (id, text, created_at) \
         SELECT COALESCE(MAX(id), 0) + 1, $1, $2 FROM notes RETURNING id",
        &[
            Value::Text(text.clone()),
            Value::Integer(i64::try_from(modhost_guest::unix_time()).unwrap_or(i64::MAX)),
        ],
    );
    match inserted {
        Ok(rows) => {
            let id = match rows.rows.first().map(Vec::as_slice) {
                Some([Value::Integer(id)]) => *id,
                _ => 0,
            };
            Response::json(201, &serde_json::json!({ "id": id, "text": text }))
        }
        Err(error) => unavailable(error),
    }
}

/// `{{namespace}}:{{name}}/api`, for other modules.
struct Contract;

impl exports::{{namespace_ident}}::{{ident}}::api::Guest for Contract {
    fn count() -> Result<u64, String> {
        let rows = sql::query("SELECT COUNT(*) FROM notes", &[]).map_err(|e| format!("{e:?}"))?;
        match rows.rows.first().map(Vec::as_slice) {
            Some([Value::Integer(n)]) => Ok(u64::try_from(*n).unwrap_or_default()),
            _ => Err("COUNT(*) returned no number".into()),
        }
    }
}

export!(Contract);

#[cfg(test)]
mod tests {
    use super::*;

    fn note(text: Option<&str>) -> NewNote {
        NewNote {
            text: text.map(str::to_string),
        }
    }

    #[test]
    fn a_note_needs_some_text_and_not_too_much() {
        assert_eq!(validate(&note(Some("  milk  "))), Ok("milk".to_string()));
        assert_eq!(validate(&note(Some("   "))), Err("is required"));
        assert_eq!(validate(&note(None)), Err("is required"));
        assert_eq!(
            validate(&note(Some(&"x".repeat(501)))),
            Err("is longer than 500 characters")
        );
    }
}
