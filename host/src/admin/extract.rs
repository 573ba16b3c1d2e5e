//! `POST /v1/modules/M/extract {"to": NODE}` (`modhost extract M --to NODE`): module M
//! moves from this node, with its data, to node NODE, while the application serves.
//! With `"to_postgres": URL` (`--to-postgres`), a SQLite module moves onto Postgres on
//! the way: NODE links it with that database and, at the switch, carries the file it
//! received into the module's schema as it opens it (`capabilities::sql::carry`).
//!
//! This node coordinates; the steps (each logged, each node's part in
//! [`crate::module::extraction`]):
//! 1. **prepare** — NODE links M with the version the deployment serves, contract-checked
//!    as at start, and waits for its data;
//! 2. **copy** — M's data files are sent whole while M goes on serving here;
//! 3. **hold** — M's new requests and calls wait (up to `max_pause`), its event relay
//!    and consumer stop, its work in flight finishes, its files settle; the chunks
//!    that changed since the copy are sent, then each file's SHA-256 and row counts;
//! 4. **switch** — NODE checks them, opens M and serves it; every other node routes M
//!    to NODE; this node does too, and releases the held work, which goes there. Each
//!    node writes M's new line in its deployment file's `[placement]`, so a restart
//!    keeps it. M's files stay here, unused.
//!
//! A failure at any step before the switch — NODE unreachable or dying mid-copy, a
//! digest or a count that does not match, work that does not drain in time — calls it
//! off: NODE drops what it received, and M goes on serving here with its held work,
//! nothing lost. The answer says which step failed and why.
//!
//! Afterwards, asked of the node M left: `{"commit": true}` (`--commit`) removes the
//! copy of M's data kept there; `{"abort": true}` (`--abort`) brings M back there, the
//! same way, coordinated by the node that runs it now ([`super::mover::Mover`] serves both sides).

use http::StatusCode;
use std::time::Duration;

use super::Admin;
use crate::runtime::responses::{self, Body};

/// How long M's work may be held by default while its last changes are copied.
pub const DEFAULT_MAX_PAUSE: Duration = Duration::from_secs(5);

/// What the operator asks for: one of `to`, `commit` and `abort`.
#[derive(serde::Deserialize)]
#[cfg_attr(not(feature = "mesh"), allow(dead_code))]
#[serde(deny_unknown_fields)]
pub(super) struct Extract {
    /// The node the module moves to.
    #[serde(default)]
    to: Option<String>,
    /// Remove the copy of the module's data kept on this node, which it left.
    #[serde(default)]
    commit: bool,
    /// Bring the module back to this node, which it left.
    #[serde(default)]
    abort: bool,
    /// The longest the module's work may be held, in milliseconds.
    #[serde(default)]
    max_pause_ms: Option<u64>,
    /// With `to`: the Postgres a SQLite module moves onto (a `postgres://` URL, or
    /// `$NAME` of an environment variable every node has), its data carried there.
    #[serde(default)]
    to_postgres: Option<String>,
}

impl Admin {
    /// Moves `module` from this node to the node `body` names, or commits or aborts a
    /// move it made (see the module docs).
    pub(super) async fn extract(&self, module: &str, body: &[u8]) -> http::Response<Body> {
        let request: Extract = match serde_json::from_slice(body) {
            Ok(request) => request,
            Err(error) => return bad_request(&error.to_string()),
        };
        let max_pause = request
            .max_pause_ms
            .map_or(DEFAULT_MAX_PAUSE, Duration::from_millis);
        #[cfg(feature = "mesh")]
        if let Some(mover) = &self.mover {
            let (status, answer) = match (request.to, request.commit, request.abort) {
                (Some(to), false, false) => {
                    mover
                        .extract(module, &to, max_pause, request.to_postgres)
                        .await
                }
                (None, true, false) if request.to_postgres.is_none() => mover.commit(module),
                (None, false, true) if request.to_postgres.is_none() => {
                    mover.abort(module, max_pause).await
                }
                _ => return bad_request("give one of them (to_postgres goes with to)"),
            };
            return responses::json(status, &answer);
        }
        let _ = (module, max_pause, request.to_postgres);
        responses::error(
            StatusCode::CONFLICT,
            "not_split",
            "a single node has no other node to move a module to: give the deployment \
             [nodes] and [mesh], and run it as one of them",
            None,
        )
    }
}

fn bad_request(why: &str) -> http::Response<Body> {
    responses::error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        &format!(
            "{why}: expected {{\"to\": NODE, \"max_pause_ms\"?: N, \"to_postgres\"?: URL}}, \
             {{\"commit\": true}} or {{\"abort\": true}}"
        ),
        None,
    )
}
