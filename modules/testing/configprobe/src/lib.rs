//! The probe of the `wasi:config` tests: answers what its module's configuration
//! holds, as the module reads it through the WIT interface.
//!
//! `GET …/config` answers `{"values": {KEY: VALUE, …}}` (`get-all`);
//! `GET …/config/KEY` answers `{"value": VALUE | null}` (`get`).

wit_bindgen::generate!({
    path: "../../../wit/wasi/config",
    world: "wasi:config/imports",
});

use modhost_guest::{Request, Response};
use serde_json::json;
use wasi::config::store;

fn handle(request: Request) -> Response {
    let segments = request.segments();
    let answer = match segments.iter().rposition(|s| *s == "config") {
        Some(at) if at + 1 == segments.len() => store::get_all().map(|values| {
            let values: serde_json::Map<String, serde_json::Value> =
                values.into_iter().map(|(k, v)| (k, v.into())).collect();
            json!({ "values": values })
        }),
        Some(at) if at + 2 == segments.len() => {
            store::get(segments[at + 1]).map(|value| json!({ "value": value }))
        }
        _ => return Response::not_found(&request.path),
    };
    match answer {
        Ok(body) => Response::json(200, &body),
        Err(error) => Response::error(500, "config", &format!("{error:?}")),
    }
}

modhost_guest::http_module!(handle);
