//! A deliberately faulty module for fault-isolation tests.
//!
//! Each route misbehaves in one way a real module can: `/faulty/trap` panics (a trap),
//! `/faulty/loop` spins forever, `/faulty/oom` allocates without bound. The host must
//! fail only that request (500, 504, 500) and keep serving everything else.
//! `/faulty/ok` answers normally, to show the module itself recovers,
//! `/faulty/sleep?ms=N` answers after N milliseconds (for drain and bulkhead tests),
//! `/faulty/reach?to=ADDR` tries a TCP connection, the filesystem and the environment
//! and says what it got, and
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
        "/faulty/reach" => {
            Response::text(200, &reach(request.query_param("to").unwrap_or_default()))
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

/// What reaching past the module's box gets, one line each: a TCP connection to `to`,
/// the root directory, the environment. The host grants none of them.
fn reach(to: &str) -> String {
    let tcp = match std::net::TcpStream::connect(to) {
        Ok(_) => "tcp: connected".to_string(),
        Err(error) => format!("tcp: refused ({error})"),
    };
    let files = match std::fs::read_dir("/") {
        Ok(entries) => format!("files: {} entries", entries.count()),
        Err(error) => format!("files: refused ({error})"),
    };
    let env = format!("env: {} variables", std::env::vars().count());
    format!("{tcp}\n{files}\n{env}\n")
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
