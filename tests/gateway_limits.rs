//! The gateway's protections, against a real `modhost` process: header and body size
//! limits, slow clients, the per-module concurrency bulkhead, graceful shutdown.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const DEPLOYMENT: &str = r#"
[app]
name = "limits"

[gateway]
max_header_bytes = "8KiB"
max_body = "4KiB"
header_read_timeout = "1s"
request_timeout = "20s"
shutdown_grace = "20s"

[modules.users]
component = "{users}"
routes = ["/users"]
database = "sqlite"
migrations = "{repo}/modules/users/migrations"

[modules.faulty]
component = "{faulty}"
routes = ["/faulty"]
limits = { timeout = "10s", concurrency = 1 }
"#;

/// Sends raw bytes and reads until the server closes or 10 s pass.
fn raw_exchange(host: &Modhost, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(host.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_head_gets_431() {
    let deployment = TestDeployment::new(DEPLOYMENT);
    let host = Modhost::start(&deployment);
    let big = "x".repeat(16 * 1024);
    let reply = raw_exchange(
        &host,
        format!("GET /users HTTP/1.1\r\nhost: t\r\nx-big: {big}\r\nconnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply:.200}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_gets_413_whether_declared_or_streamed() {
    let deployment = TestDeployment::new(DEPLOYMENT);
    let host = Modhost::start(&deployment);
    let http = client(false);

    let body = format!(
        r#"{{"name": "{}", "email": "a@b.co"}}"#,
        "n".repeat(8 * 1024)
    );
    let declared = send(&http, "POST", &host.url("/users"), Some(&body)).await;
    assert_eq!(declared.status, 413);
    assert_eq!(declared.json()["error"]["code"], "body_too_large");

    // Chunked: no content-length, so the limit must stop the stream itself.
    let chunk = "y".repeat(3000);
    let chunked = raw_exchange(
        &host,
        format!(
            "POST /users HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
             {len:x}\r\n{chunk}\r\n{len:x}\r\n{chunk}\r\n0\r\n\r\n",
            len = chunk.len()
        )
        .as_bytes(),
    );
    assert!(chunked.starts_with("HTTP/1.1 413"), "{chunked:.200}");

    // Within the limit, the module sees the body.
    let small = send(
        &http,
        "POST",
        &host.url("/users"),
        Some(r#"{"name": "Al", "email": "al@b.co"}"#),
    )
    .await;
    assert_eq!(small.status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let deployment = TestDeployment::new(DEPLOYMENT);
    let host = Modhost::start(&deployment);
    let mut stream = TcpStream::connect(host.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(b"GET /users HTTP/1.1\r\nhost: t\r\nx-slow: ")
        .unwrap();
    // Never send the rest. The server must give up on its own (header_read_timeout);
    // the read returns once it closes the connection (possibly after a 408).
    let mut reply = Vec::new();
    let result = stream.read_to_end(&mut reply);
    assert!(
        result.is_ok(),
        "the server kept the slow connection open: {result:?}"
    );
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 408"),
        "{reply}"
    );

    // Meanwhile other clients are served.
    assert_eq!(get(&host.url("/users/1")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_at_its_concurrency_limit_answers_503_with_retry_after() {
    let deployment = TestDeployment::new(DEPLOYMENT);
    let host = Modhost::start(&deployment);
    let slow_url = host.url("/faulty/sleep?ms=3000");
    let slow = tokio::spawn(async move { get(&slow_url).await });

    // Wait until the slow request holds the module's only permit.
    let mut in_flight = 0;
    for _ in 0..200 {
        in_flight = get(&host.url("/readyz")).await.json()["modules"]["faulty"]["in_flight"]
            .as_u64()
            .unwrap();
        if in_flight == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(in_flight, 1);

    let refused = get(&host.url("/faulty/ok")).await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.headers["retry-after"], "1");
    assert_eq!(refused.json()["error"]["code"], "module_overloaded");
    // Other modules are not affected by faulty's bulkhead.
    assert_eq!(get(&host.url("/users/1")).await.status, 200);

    assert_eq!(slow.await.unwrap().status, 200);
    assert_eq!(get(&host.url("/faulty/ok")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_then_exits_zero() {
    let deployment = TestDeployment::new(DEPLOYMENT);
    let mut host = Modhost::start(&deployment);
    let slow_url = host.url("/faulty/sleep?ms=1500");
    let slow = tokio::spawn(async move { get(&slow_url).await });
    // Wait until the request is inside the module.
    for _ in 0..200 {
        let ready = get(&host.url("/readyz")).await.json();
        if ready["modules"]["faulty"]["in_flight"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    host.signal("TERM");
    let reply = slow.await.unwrap();
    assert_eq!(reply.status, 200, "the in-flight request was cut off");
    assert_eq!(reply.text(), "slept 1500ms");
    let status = host.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "modhost exit status");
    host.wait_for_log("gateway drained");
    assert!(
        TcpStream::connect(host.addr).is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_connects_and_sends_nothing_is_disconnected() {
    let deployment = TestDeployment::new(DEPLOYMENT);
    let host = Modhost::start(&deployment);
    let mut idle = TcpStream::connect(host.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // Send nothing: the server must close the connection on its own.
    let mut reply = Vec::new();
    let result = idle.read_to_end(&mut reply);
    assert!(
        result.is_ok(),
        "the server kept the silent connection open: {result:?}"
    );
    assert!(reply.is_empty(), "{}", String::from_utf8_lossy(&reply));
    assert_eq!(get(&host.url("/users/1")).await.status, 200);
}

const TIGHT: &str = r#"
[app]
name = "tight"

[gateway]
max_connections = 2
request_timeout = "1s"

[modules.users]
component = "{users}"
routes = ["/users"]
database = "sqlite"
migrations = "{repo}/modules/users/migrations"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_in_time_gets_408() {
    let deployment = TestDeployment::new(TIGHT);
    let host = Modhost::start(&deployment);
    // Promise 100 bytes, send 10, then stall.
    let reply = {
        let mut stream = TcpStream::connect(host.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream
            .write_all(b"POST /users HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\n{\"name\": ")
            .unwrap();
        let mut reply = vec![0u8; 4096];
        let read = stream.read(&mut reply).unwrap();
        String::from_utf8_lossy(&reply[..read]).into_owned()
    };
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("request_timeout"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_max_connections_wait_for_a_free_slot() {
    let deployment = TestDeployment::new(TIGHT);
    let host = Modhost::start(&deployment);
    // Two keep-alive connections, each having been served once, hold both slots.
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut stream = TcpStream::connect(host.addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            stream
                .write_all(b"GET /users/1 HTTP/1.1\r\nhost: t\r\n\r\n")
                .unwrap();
            let mut reply = vec![0u8; 4096];
            let read = stream.read(&mut reply).unwrap();
            assert!(reply[..read].starts_with(b"HTTP/1.1 200"));
            stream
        })
        .collect();

    // A third client is accepted by the kernel but not served while both are held.
    let url = host.url("/users/2");
    let third = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served past max_connections = 2"
    );

    // Free a slot: the waiting client is served.
    drop(held.pop());
    let reply = third.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["id"], 2);
}
