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
    wait_for_in_flight(&host, "faulty", 1, "the slow request is not in").await;

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

/// Four slots, one client address allowed two of them, a module that holds one request
/// at a time.
const GUARDED: &str = r#"
[app]
name = "guarded"

[gateway]
max_connections = 4
max_connections_per_client = 2
header_read_timeout = "1s"
request_timeout = "20s"

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

/// The HTTP/2 connection preface and an empty SETTINGS frame: a client that starts
/// HTTP/2 and then says nothing.
const H2_PREFACE_AND_SETTINGS: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Reads from `stream` until it is closed (or 20 s pass): whether it was closed.
fn closed_by_the_server(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(error) => return error.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_http2_connections_are_closed_and_cannot_lock_clients_out() {
    let deployment = TestDeployment::new(&GUARDED.replace(
        "max_connections_per_client = 2",
        "max_connections_per_client = 1000",
    ));
    let host = Modhost::start(&deployment);
    // Every slot taken by a connection that sends the HTTP/2 preface, then nothing.
    let mut silent: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut stream = TcpStream::connect(host.addr).unwrap();
            stream.write_all(H2_PREFACE_AND_SETTINGS).unwrap();
            stream
        })
        .collect();
    // Another client is served once they are closed (header_read_timeout = 1s).
    let reply = get(&host.url("/users/1")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    for stream in &mut silent {
        assert!(
            closed_by_the_server(stream),
            "a silent connection stayed open"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_past_its_share_of_connections_gets_503_and_others_are_served() {
    let deployment = TestDeployment::new(GUARDED);
    let host = Modhost::start(&deployment);
    let request = b"GET /users/1 HTTP/1.1\r\nhost: t\r\n\r\n";
    // Two keep-alive connections, served once each: this client's share.
    let held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut stream = TcpStream::connect(host.addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            stream.write_all(request).unwrap();
            let mut reply = vec![0u8; 4096];
            let read = stream.read(&mut reply).unwrap();
            assert!(reply[..read].starts_with(b"HTTP/1.1 200"));
            stream
        })
        .collect();
    // A third from the same address is answered, 503, and closed.
    let mut third = TcpStream::connect(host.addr).unwrap();
    third.write_all(request).unwrap();
    let mut reply = String::new();
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = third.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.contains("too_many_connections"), "{reply}");
    // Once its connections close, the client may open others (the gateway counts a
    // connection until it has seen it close).
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = get(&host.url("/users/2")).await;
        if reply.status == 200 {
            break;
        }
        assert_eq!(reply.json()["error"]["code"], "too_many_connections");
        assert!(std::time::Instant::now() < deadline, "still refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_at_its_limit_refuses_before_the_body_is_sent() {
    // (Every request below opens a connection of its own: no per-client limit here.)
    let deployment = TestDeployment::new(&GUARDED.replace(
        "max_connections_per_client = 2",
        "max_connections_per_client = 1000",
    ));
    let host = Modhost::start(&deployment);
    // The module's one permit, held by a slow request.
    let slow_url = host.url("/faulty/sleep?ms=5000");
    let slow = tokio::spawn(async move { get(&slow_url).await });
    wait_for_in_flight(&host, "faulty", 1, "the slow request is not in").await;
    // A request that announces a body and never sends it is refused at once: the
    // gateway does not wait for (or buffer) a body for a module with no room.
    let mut stream = TcpStream::connect(host.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"POST /faulty/ok HTTP/1.1\r\nhost: t\r\ncontent-length: 4000\r\n\r\n")
        .unwrap();
    let mut reply = vec![0u8; 4096];
    let read = stream.read(&mut reply).unwrap();
    let reply = String::from_utf8_lossy(&reply[..read]);
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.contains("module_overloaded"), "{reply}");
    // The neighbour serves; the slow request completes.
    assert_eq!(get(&host.url("/users/1")).await.status, 200);
    assert_eq!(slow.await.unwrap().status, 200);
}
