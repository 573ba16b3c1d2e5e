//! The events load driver: publishes events through the `eventprobe` test module and
//! measures how fast they come out the other end — publish → bus → handler effect —
//! on whatever bus the running node uses. `benches/events-load.sh` runs it against the
//! embedded bus and Kafka.
//!
//! `events-load URL --events N --per-tx K --connections C`: C concurrent publishers
//! send `POST URL/source/publish` with K events each (one transaction per request:
//! K = 1 is single-event transactions, K = 100 batches of 100), N events in all, to
//! `source`; the driver polls `URL/sink/effects/count` until `sink`'s handler has
//! recorded all N, and prints events/s from the first publish to the last effect.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

struct Args {
    url: String,
    events: usize,
    per_tx: usize,
    connections: usize,
}

fn args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or("usage: events-load URL [--events N] [--per-tx K] [--connections C]")?;
    let mut parsed = Args {
        url: url.trim_end_matches('/').to_string(),
        events: 20_000,
        per_tx: 100,
        connections: 8,
    };
    while let Some(flag) = args.next() {
        let value: usize = args
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{flag} needs a number"))?;
        match flag.as_str() {
            "--events" => parsed.events = value,
            "--per-tx" => parsed.per_tx = value.max(1),
            "--connections" => parsed.connections = value.max(1),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(parsed)
}

async fn request(
    http: &Http,
    method: &str,
    url: &str,
    body: String,
) -> Result<(u16, Bytes), String> {
    let request = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = http.request(request).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

async fn effects(http: &Http, url: &str) -> Result<usize, String> {
    let (status, body) = request(
        http,
        "GET",
        &format!("{url}/sink/effects/count"),
        String::new(),
    )
    .await?;
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    match (status, value["count"].as_u64()) {
        (200, Some(n)) => Ok(n as usize),
        _ => Err(format!("effects/count answered {status}: {value}")),
    }
}

#[tokio::main]
async fn main() {
    let args = match args() {
        Ok(args) => Arc::new(args),
        Err(problem) => {
            eprintln!("{problem}");
            std::process::exit(2);
        }
    };
    let http: Http = Client::builder(TokioExecutor::new()).build_http();
    let before = effects(&http, &args.url).await.expect("sink is reachable");
    let transactions = args.events.div_ceil(args.per_tx);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut publishers = Vec::new();
    for publisher in 0..args.connections {
        let (http, args, next) = (http.clone(), args.clone(), next.clone());
        publishers.push(tokio::spawn(async move {
            loop {
                let tx = next.fetch_add(1, Ordering::Relaxed);
                if tx >= transactions {
                    return;
                }
                let events: Vec<serde_json::Value> = (0..args.per_tx)
                    .map(|i| {
                        serde_json::json!({
                            "topic": "probe.events",
                            "key": format!("key-{}", (tx * args.per_tx + i) % 64),
                            "payload": format!("load {publisher} tx {tx} event {i} ........................"),
                        })
                    })
                    .collect();
                let body = serde_json::json!({ "events": events }).to_string();
                match request(&http, "POST", &format!("{}/source/publish", args.url), body).await {
                    Ok((200, _)) => {}
                    Ok((status, body)) => panic!("publish answered {status}: {}", String::from_utf8_lossy(&body)),
                    Err(error) => panic!("publish failed: {error}"),
                }
            }
        }));
    }
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
    let published_in = started.elapsed();
    let total = transactions * args.per_tx;
    loop {
        let handled = effects(&http, &args.url).await.expect("effects") - before;
        if handled >= total {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "only {handled} of {total} events handled in 600 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    println!(
        "events={total} per_tx={} connections={} published_in={:.2}s end_to_end={:.2}s events_per_s={:.0}",
        args.per_tx,
        args.connections,
        published_in.as_secs_f64(),
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64()
    );
}
