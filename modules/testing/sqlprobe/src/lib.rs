//! The probe of the `modhost:sql` tests: runs a script of SQL steps, sent over HTTP,
//! against its own database through the WIT interface, and reports what each step
//! returned. The same script then tests the capability through a real module on every
//! backend.
//!
//! `POST …/sql` (under whichever route it is deployed at) with `{"steps": [STEP, …]}`, where a STEP is
//! `{"op": "query" | "execute", "sql": "…", "params": [VALUE, …], "in_tx": bool}` or
//! `{"op": "begin" | "commit" | "rollback" | "drop"}` (one transaction at a time;
//! `drop` lets it go without committing). A VALUE is `null`, or one of
//! `{"integer": n}`, `{"real": x}`, `{"text": "…"}`, `{"blob": [bytes]}`,
//! `{"boolean": b}`. The answer lists, per step, `{"rows": {"columns", "rows"}}`,
//! `{"changed": n}`, `{"ok": true}` or `{"error": {"kind", "constraint"?, "message"?}}`.

wit_bindgen::generate!({
    path: "../../../wit/modhost/sql.wit",
    world: "modhost:sql/guest",
});

use modhost::sql::sql::{self as sql, Transaction, Value};
use modhost_guest::{Request, Response};
use serde_json::{json, Value as Json};

fn handle(request: Request) -> Response {
    if request.method != "POST" || !request.path.ends_with("/sql") {
        return Response::not_found(&request.path);
    }
    let script: Json = match request.json() {
        Ok(script) => script,
        Err(response) => return response,
    };
    let Some(steps) = script["steps"].as_array() else {
        return Response::error(400, "bad_script", "steps must be an array");
    };
    let mut tx: Option<Transaction> = None;
    let mut results = Vec::new();
    for step in steps {
        let op = step["op"].as_str().unwrap_or_default();
        let statement = step["sql"].as_str().unwrap_or_default();
        let params: Result<Vec<Value>, String> = step["params"]
            .as_array()
            .map(|values| values.iter().map(to_value).collect())
            .unwrap_or(Ok(Vec::new()));
        let params = match params {
            Ok(params) => params,
            Err(problem) => return Response::error(400, "bad_value", &problem),
        };
        let in_tx = step["in_tx"].as_bool().unwrap_or(false);
        let result = match (op, in_tx, &tx) {
            ("query", true, Some(t)) => t.query(statement, &params).map(rows_json),
            ("query", _, _) => sql::query(statement, &params).map(rows_json),
            ("execute", true, Some(t)) => t
                .execute(statement, &params)
                .map(|n| json!({ "changed": n })),
            ("execute", _, _) => sql::execute(statement, &params).map(|n| json!({ "changed": n })),
            ("begin", _, _) => sql::begin().map(|t| {
                tx = Some(t);
                json!({ "ok": true })
            }),
            ("commit", _, _) => match tx.take() {
                Some(t) => Transaction::commit(t).map(|()| json!({ "ok": true })),
                None => return Response::error(400, "bad_script", "commit without begin"),
            },
            ("rollback", _, _) => match tx.take() {
                Some(t) => Transaction::rollback(t).map(|()| json!({ "ok": true })),
                None => return Response::error(400, "bad_script", "rollback without begin"),
            },
            ("drop", _, _) => {
                drop(tx.take());
                Ok(json!({ "ok": true }))
            }
            _ => return Response::error(400, "bad_script", &format!("unknown op {op:?}")),
        };
        results.push(result.unwrap_or_else(|error| json!({ "error": error_json(&error) })));
    }
    Response::json(200, &json!({ "results": results }))
}

modhost_guest::http_module!(handle);

fn to_value(json: &Json) -> Result<Value, String> {
    if json.is_null() {
        return Ok(Value::Null);
    }
    let bad = || format!("not a value: {json}");
    let (kind, inner) = json
        .as_object()
        .and_then(|object| object.iter().next())
        .ok_or_else(bad)?;
    Ok(match kind.as_str() {
        "integer" => Value::Integer(inner.as_i64().ok_or_else(bad)?),
        "real" => Value::Real(inner.as_f64().ok_or_else(bad)?),
        "text" => Value::Text(inner.as_str().ok_or_else(bad)?.to_string()),
        "boolean" => Value::Boolean(inner.as_bool().ok_or_else(bad)?),
        "blob" => Value::Blob(
            inner
                .as_array()
                .ok_or_else(bad)?
                .iter()
                .map(|b| {
                    b.as_u64()
                        .and_then(|b| u8::try_from(b).ok())
                        .ok_or_else(bad)
                })
                .collect::<Result<_, _>>()?,
        ),
        _ => return Err(bad()),
    })
}

fn value_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Integer(n) => json!({ "integer": n }),
        Value::Real(x) => json!({ "real": x }),
        Value::Text(t) => json!({ "text": t }),
        Value::Blob(b) => json!({ "blob": b }),
        Value::Boolean(b) => json!({ "boolean": b }),
    }
}

fn rows_json(rows: sql::Rows) -> Json {
    let values: Vec<Vec<Json>> = rows
        .rows
        .iter()
        .map(|row| row.iter().map(value_json).collect())
        .collect();
    json!({ "rows": { "columns": rows.columns, "rows": values } })
}

fn error_json(error: &sql::Error) -> Json {
    match error {
        sql::Error::ConstraintViolation(failure) => json!({
            "kind": "constraint-violation",
            "constraint": failure.constraint,
            "message": failure.message,
        }),
        sql::Error::Syntax(m) => json!({ "kind": "syntax", "message": m }),
        sql::Error::Denied(m) => json!({ "kind": "denied", "message": m }),
        sql::Error::Unavailable(m) => json!({ "kind": "unavailable", "message": m }),
        sql::Error::Timeout => json!({ "kind": "timeout" }),
        sql::Error::TooLarge(limit) => json!({ "kind": "too-large", "limit": limit }),
        sql::Error::Other(m) => json!({ "kind": "other", "message": m }),
    }
}
