//! A deliberately faulty module for fault-isolation tests.
//!
//! Each route misbehaves in one way a real module can: `/faulty/trap` panics (a trap),
//! `/faulty/loop` spins forever, `/faulty/oom` allocates without bound. The host must
//! fail only that request (500, 504, 500) and keep serving everything else.
//! `/faulty/ok` answers normally, to show the module itself recovers,
//! `/faulty/sleep?ms=N` answers after N milliseconds (for drain and bulkhead tests), and
//! `…/headers` (under any of its routes) answers the request headers it was given, as a JSON object (for
//! the gateway's tests: what a module sees of a client's request).

use modhost_guest::{Request, Response};

fn handle(request: Request) -> Response {
    match request.path.as_str() {
        "/faulty/ok" => Response::text(200, "ok"),
        "/faulty/trap" => panic!("faulty module: deliberate trap"),
        "/faulty/loop" => spin_forever(),
        "/faulty/oom" => allocate_forever(),
        "/faulty/sleep" => {
            let ms = request
                .query_param("ms")
                .and_then(|ms| ms.parse::<u64>().ok())
                .unwrap_or(100);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            Response::text(200, &format!("slept {ms}ms"))
        }
        path if path.ends_with("/headers") => {
            let headers: serde_json::Map<String, serde_json::Value> = request
                .headers
                .iter()
                .map(|(name, value)| {
                    let value = String::from_utf8_lossy(value).into_owned();
                    (name.clone(), serde_json::Value::String(value))
                })
                .collect();
            Response::json(200, &headers)
        }
        other => Response::not_found(other),
    }
}

fn spin_forever() -> ! {
    let mut counter: u64 = 0;
    loop {
        // black_box keeps the optimiser from proving the loop has no effect.
        counter = std::hint::black_box(counter.wrapping_add(1));
    }
}

fn allocate_forever() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // Touch every page so the memory is really committed, not just reserved.
        hoard.push(vec![0xA5; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}

modhost_guest::http_module!(handle);
