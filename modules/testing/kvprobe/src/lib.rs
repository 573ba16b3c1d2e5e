//! The probe of the `wasi:keyvalue` tests: runs a script of key-value steps, sent over
//! HTTP, against the buckets its module may open, and reports what each step returned.
//! The same script then tests the capability through a real module on every store.
//!
//! `POST …/kv` with `{"steps": [STEP, …]}`. A STEP is one of
//! `{"op": "open", "bucket": B}` (later steps use the last bucket opened),
//! `{"op": "get" | "delete" | "exists", "key": K}`,
//! `{"op": "set", "key": K, "value": TEXT}` or `{"op": "set", "key": K, "bytes": N}`
//! (a value of N bytes), `{"op": "list", "cursor"?: C}`,
//! `{"op": "increment", "key": K, "delta": D}`, `{"op": "get-many" | "delete-many",
//! "keys": [K, …]}`, `{"op": "set-many", "pairs": [[K, TEXT], …]}`. The answer lists,
//! per step, what it returned (`{"ok": true}`, `{"value": TEXT | null}`,
//! `{"exists": bool}`, `{"keys": […], "cursor": C | null}`, `{"count": N}`,
//! `{"values": [TEXT | null, …]}`) or `{"error": {"kind", "message"?}}`.

wit_bindgen::generate!({
    path: "../../../wit/wasi/keyvalue",
    world: "wasi:keyvalue/imports",
});

use modhost_guest::{Request, Response};
use serde_json::{json, Value as Json};
use wasi::keyvalue::{atomics, batch, store};

fn handle(request: Request) -> Response {
    if request.method != "POST" || !request.path.ends_with("/kv") {
        return Response::not_found(&request.path);
    }
    let script: Json = match request.json() {
        Ok(script) => script,
        Err(response) => return response,
    };
    let Some(steps) = script["steps"].as_array() else {
        return Response::error(400, "bad_script", "steps must be an array");
    };
    let mut bucket: Option<store::Bucket> = None;
    let mut results = Vec::new();
    for step in steps {
        let op = step["op"].as_str().unwrap_or_default();
        let key = step["key"].as_str().unwrap_or_default();
        let keys: Vec<String> = step["keys"]
            .as_array()
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if op == "open" {
            let name = step["bucket"].as_str().unwrap_or_default();
            results.push(match store::open(name) {
                Ok(opened) => {
                    bucket = Some(opened);
                    json!({ "ok": true })
                }
                Err(error) => error_json(&error),
            });
            continue;
        }
        let Some(open) = &bucket else {
            results.push(json!({ "error": { "kind": "probe", "message": "no bucket is open" } }));
            continue;
        };
        let result = match op {
            "get" => open
                .get(key)
                .map(|value| json!({ "value": value.map(text) })),
            "set" => {
                let value = match step["bytes"].as_u64() {
                    Some(n) => vec![b'x'; n as usize],
                    None => step["value"]
                        .as_str()
                        .unwrap_or_default()
                        .as_bytes()
                        .to_vec(),
                };
                open.set(key, &value).map(|()| json!({ "ok": true }))
            }
            "delete" => open.delete(key).map(|()| json!({ "ok": true })),
            "exists" => open.exists(key).map(|exists| json!({ "exists": exists })),
            "list" => open
                .list_keys(step["cursor"].as_u64())
                .map(|page| json!({ "keys": page.keys, "cursor": page.cursor })),
            "increment" => atomics::increment(open, key, step["delta"].as_u64().unwrap_or(1))
                .map(|count| json!({ "count": count })),
            "get-many" => batch::get_many(open, &keys).map(|values| {
                let values: Vec<Json> = values
                    .into_iter()
                    .map(|value| value.map_or(Json::Null, |(_, v)| Json::from(text(v))))
                    .collect();
                json!({ "values": values })
            }),
            "set-many" => {
                let pairs: Vec<(String, Vec<u8>)> = step["pairs"]
                    .as_array()
                    .map(|pairs| {
                        pairs
                            .iter()
                            .filter_map(|pair| {
                                Some((
                                    pair[0].as_str()?.to_string(),
                                    pair[1].as_str()?.as_bytes().to_vec(),
                                ))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                batch::set_many(open, &pairs).map(|()| json!({ "ok": true }))
            }
            "delete-many" => batch::delete_many(open, &keys).map(|()| json!({ "ok": true })),
            other => {
                return Response::error(400, "bad_step", &format!("unknown op {other:?}"));
            }
        };
        results.push(result.unwrap_or_else(|error| error_json(&error)));
    }
    Response::json(200, &json!({ "results": results }))
}

fn text(value: Vec<u8>) -> String {
    String::from_utf8_lossy(&value).into_owned()
}

fn error_json(error: &store::Error) -> Json {
    match error {
        store::Error::NoSuchStore => json!({ "error": { "kind": "no-such-store" } }),
        store::Error::AccessDenied => json!({ "error": { "kind": "access-denied" } }),
        store::Error::Other(message) => {
            json!({ "error": { "kind": "other", "message": message } })
        }
    }
}

modhost_guest::http_module!(handle);
