//! The caller of the call tests: an HTTP module whose routes each make one call into
//! the `callee` module through `modhost-testing:kinds`, and report what came back.
//!
//! - `GET /caller/echo`: sends a value holding every kind of WIT type and checks the
//!   echo is identical (200) or not (500);
//! - `GET /caller/reserve?sku=S&quantity=N`: a typed `result` across the boundary;
//! - `GET /caller/crash`, `/caller/spin`: the callee traps / runs past its deadline;
//! - `GET /caller/served`: how many calls the callee instance has served (1 when
//!   fresh, counting up when the callee reuses instances);
//! - `GET /caller/bounce?n=N`: callee and caller call each other N times (a cycle);
//! - `GET /caller/flaky`: a call the callee fails every other time;
//! - `GET /caller/nap?ms=N`: a call the callee takes N milliseconds to answer.

wit_bindgen::generate!({
    path: "../../../wit/testing",
    world: "caller",
    additional_derives: [PartialEq],
});

use modhost_guest::{Request, Response};
use modhost_testing::kinds::api::{self, Color, Everything, Item, Perms, Reason};
use modhost_testing::kinds::bounce::bounce;

struct Caller;

impl exports::modhost_testing::kinds::bounce_back::Guest for Caller {
    fn bounce_back(n: u32) -> u32 {
        if n == 0 {
            0
        } else {
            bounce(n - 1) + 1
        }
    }
}

export!(Caller);

fn every_kind() -> Everything {
    Everything {
        items: vec![
            Item {
                sku: "KB-001".into(),
                quantity: 2,
            },
            Item {
                sku: "ünïcødé ✓".into(),
                quantity: u32::MAX,
            },
        ],
        note: Some("gift wrap".into()),
        pair: (true, '€'),
        color: Color::Blue,
        perms: Perms::READ | Perms::ADMIN,
        small: (i8::MIN, u8::MAX, i16::MIN, u16::MAX),
        large: (i32::MIN, u32::MAX, i64::MIN, u64::MAX),
        floats: (1.5, -0.000_001),
        bytes: (0..=255).collect(),
    }
}

fn handle(request: Request) -> Response {
    let number = |name: &str| {
        request
            .query_param(name)
            .and_then(|v| v.parse::<u32>().ok())
    };
    match request.path.as_str() {
        "/caller/echo" => {
            let sent = every_kind();
            let mut empty = every_kind();
            empty.items.clear();
            empty.note = None;
            empty.perms = Perms::empty();
            empty.bytes.clear();
            let echoed = api::echo(&sent);
            let echoed_empty = api::echo(&empty);
            if echoed == sent && echoed_empty == empty {
                Response::json(
                    200,
                    &serde_json::json!({ "identical": true, "echo": format!("{echoed:?}") }),
                )
            } else {
                Response::error(
                    500,
                    "echo_differs",
                    &format!("sent {sent:?}, got {echoed:?}"),
                )
            }
        }
        "/caller/reserve" => {
            let item = Item {
                sku: request.query_param("sku").unwrap_or_default().to_string(),
                quantity: number("quantity").unwrap_or(1),
            };
            match api::reserve(&item) {
                Ok(reserved) => Response::json(200, &serde_json::json!({ "reserved": reserved })),
                Err(Reason::OutOfStock(wanted)) => Response::error(
                    409,
                    "out_of_stock",
                    &format!("only 10 available, {wanted} wanted"),
                ),
                Err(Reason::UnknownSku) => Response::error(404, "unknown_sku", "no such sku"),
            }
        }
        "/caller/crash" => {
            api::crash();
            Response::text(200, "the callee did not crash")
        }
        "/caller/spin" => {
            api::spin();
            Response::text(200, "the callee returned")
        }
        "/caller/served" => Response::json(200, &serde_json::json!({ "served": api::served() })),
        "/caller/flaky" => Response::json(200, &serde_json::json!({ "served": api::flaky() })),
        "/caller/nap" => {
            let ms = api::nap(number("ms").unwrap_or(100));
            Response::json(200, &serde_json::json!({ "slept_ms": ms }))
        }
        "/caller/bounce" => {
            let hops = bounce(number("n").unwrap_or(1));
            Response::json(200, &serde_json::json!({ "hops": hops }))
        }
        other => Response::not_found(other),
    }
}

modhost_guest::http_module!(handle);
