//! Seeing the system: spans exported over OTLP to a real receiver (a protocol-level
//! one, decoding OTLP's protobuf), one trace per user request across nodes and the
//! broker, and a collector that is away costing requests nothing; the metrics scraped
//! by a real Prometheus server and queried through its API; the dashboard opened in a
//! real browser (Chromium, driven by Playwright).

mod common;
use base64::Engine;
use common::browser::Browser;
use common::cluster::Cluster;
use common::kafka::Broker;
use common::otlp::{ReceivedSpan, Receiver};
use common::prometheus::Prometheus;
use common::shop::PLACEMENT;
use common::*;
use std::time::Duration;

const GOOD_ORDER: &str = r#"{"customer_id": 2, "lines": [{"sku": "KB-001", "quantity": 1}],
    "card": {"number": "4242 4242 4242 4242", "expiry_month": 12, "expiry_year": 2030}}"#;

/// The one span of `spans` named `name` for which `matches` holds.
fn one<'a>(
    spans: &'a [ReceivedSpan],
    name: &str,
    matches: impl Fn(&ReceivedSpan) -> bool,
) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.name == name && matches(s))
        .collect();
    assert_eq!(found.len(), 1, "one {name} span expected, got {found:#?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_trace_across_three_nodes_and_the_broker() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let receiver = Receiver::start().await;
    let toml = format!(
        "{SHOP}backend = \"kafka\"\nbrokers = \"{}\"\npartitions = 3\n\n\
         [telemetry]\notlp = \"{}\"\n",
        broker.address(),
        receiver.endpoint()
    );
    let cluster = Cluster::start(&toml, &["a", "b", "c"], PLACEMENT);
    let entry = cluster.node("a");

    let placed = send(
        &client(false),
        "POST",
        &entry.url("/orders"),
        Some(GOOD_ORDER),
    )
    .await;
    assert_eq!(placed.status, 201, "{}", placed.text());

    // The request's span at the entry node names the trace.
    let spans = receiver
        .wait_for(
            Duration::from_secs(30),
            "request span for POST /orders",
            |spans| {
                spans
                    .iter()
                    .any(|s| s.name == "request" && s.attribute("path") == "/orders")
            },
        )
        .await;
    let request = one(&spans, "request", |s| s.attribute("path") == "/orders");
    let trace = request.trace_id.clone();
    assert_eq!((request.node.as_str(), request.parent.as_str()), ("a", ""));
    assert_eq!(request.service, "shop");

    // Everything the order caused, in the same trace: the calls from orders (node a),
    // each served on its own node, and payments.charged handled by both subscribers.
    let in_trace = |s: &ReceivedSpan| s.trace_id == trace;
    let spans = receiver
        .wait_for(
            Duration::from_secs(30),
            "the order's whole trace",
            |spans| {
                let of = |name: &str| {
                    spans
                        .iter()
                        .filter(|s| in_trace(s) && s.name == name)
                        .count()
                };
                let charged_relayed = spans.iter().any(|s| {
                    in_trace(s) && s.name == "relay" && s.attribute("topic") == "payments.charged"
                });
                of("call") >= 4 && of("remote_call") >= 4 && of("event") >= 2 && charged_relayed
            },
        )
        .await;
    let spans: Vec<ReceivedSpan> = spans.into_iter().filter(in_trace).collect();
    let call_to = |callee: &'static str| {
        one(&spans, "call", move |s| {
            s.attribute("caller") == "orders" && s.attribute("callee") == callee
        })
    };
    let (reserve, assess, charge) = (call_to("inventory"), call_to("fraud"), call_to("payments"));
    for call in [reserve, assess, charge] {
        assert_eq!(call.node, "a", "{call:?}");
        assert_eq!(
            call.parent, request.span_id,
            "a call's parent is the request: {call:?}"
        );
    }
    let served = |callee: &'static str| {
        one(&spans, "remote_call", move |s| {
            s.attribute("callee") == callee
        })
    };
    let (reserved, assessed, charged) = (served("inventory"), served("fraud"), served("payments"));
    assert_eq!(
        (reserved.node.as_str(), reserved.parent.as_str()),
        ("b", reserve.span_id.as_str())
    );
    assert_eq!(
        (assessed.node.as_str(), assessed.parent.as_str()),
        ("c", assess.span_id.as_str())
    );
    assert_eq!(
        (charged.node.as_str(), charged.parent.as_str()),
        ("b", charge.span_id.as_str())
    );
    // The Python module on c called users on a, inside the assessment: the context
    // crossed into the Python component and out again.
    let lookup = one(&spans, "call", |s| {
        s.attribute("caller") == "fraud" && s.attribute("callee") == "users"
    });
    assert_eq!(
        (lookup.node.as_str(), lookup.parent.as_str()),
        ("c", assessed.span_id.as_str())
    );
    let looked_up = served("users");
    assert_eq!(
        (looked_up.node.as_str(), looked_up.parent.as_str()),
        ("a", lookup.span_id.as_str())
    );
    // payments.charged left payments' outbox through its relay on node b: a child of
    // the call that published it, and the parent of both handlers.
    let relay = one(&spans, "relay", |s| {
        s.attribute("topic") == "payments.charged"
    });
    assert_eq!(
        (relay.node.as_str(), relay.parent.as_str()),
        ("b", charged.span_id.as_str()),
        "{relay:?}"
    );
    assert_eq!(relay.attribute("module"), "payments");
    assert_eq!(relay.attribute("bus"), "kafka");
    for subscriber in ["orders", "notifications"] {
        // (A delivery the broker repeats is a span of its own, with the same parent.)
        let handled: Vec<&ReceivedSpan> = spans
            .iter()
            .filter(|s| {
                s.name == "event"
                    && s.attribute("module") == subscriber
                    && s.attribute("topic") == "payments.charged"
            })
            .collect();
        assert!(
            !handled.is_empty(),
            "{subscriber} handled no payments.charged"
        );
        for delivery in handled {
            assert_eq!(delivery.node, "a", "{delivery:?}");
            assert_eq!(
                delivery.parent, relay.span_id,
                "{subscriber}'s delivery is a child of the relay that sent the event"
            );
        }
    }
    // Every span's parent is a span of the trace, but the request's.
    for span in &spans {
        if span.span_id != request.span_id {
            assert!(
                spans.iter().any(|parent| parent.span_id == span.parent),
                "{span:?} has a parent the collector never got"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_costs_requests_nothing() {
    // A collector that takes the connection and the spans, and never answers: the
    // export task waits on it, bounded, while requests go on and their spans past the
    // queue's bound are dropped and counted.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = silent.local_addr().unwrap();
    let (exporting, exported) = tokio::sync::oneshot::channel();
    let collector = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut exporting = Some(exporting);
        let mut held = Vec::new();
        loop {
            let (mut stream, _) = silent.accept().await.unwrap();
            let mut first = [0u8; 1];
            if stream.read_exact(&mut first).await.is_ok() {
                if let Some(exporting) = exporting.take() {
                    let _ = exporting.send(());
                }
            }
            held.push(stream);
        }
    });
    let deployment = TestDeployment::new(&format!(
        "{SHOP}\n[telemetry]\notlp = \"http://{address}\"\nqueue = 1\n"
    ));
    let host = Modhost::start(&deployment);
    let http = client(false);
    let users = host.url("/users/2");
    let answer = send(&http, "GET", &users, None).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    // Its span is being sent, to no answer.
    tokio::time::timeout(Duration::from_secs(30), exported)
        .await
        .expect("the node sends its spans to the collector")
        .unwrap();
    for _ in 0..20 {
        let answer = send(&http, "GET", &users, None).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let placed = send(&http, "POST", &host.url("/orders"), Some(GOOD_ORDER)).await;
    assert_eq!(placed.status, 201, "{}", placed.text());
    let counter = |metrics: &str, name: &str| -> u64 {
        metrics
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().last())
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0) as u64
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = send(&http, "GET", &host.url("/metrics"), None).await.text();
        let dropped = counter(&metrics, "modhost_trace_spans_dropped_total");
        let failed = counter(&metrics, "modhost_trace_exports_failed_total");
        // The batch waited on times out, and fails; the spans that came meanwhile
        // found the queue full.
        if dropped > 0 && failed > 0 {
            assert_eq!(counter(&metrics, "modhost_trace_spans_exported_total"), 0);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dropped {dropped}, failed {failed}:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    collector.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modules_output_is_an_event_of_the_span_it_served_and_a_client_trace_is_joined() {
    let receiver = Receiver::start().await;
    let deployment = TestDeployment::new(&format!(
        r#"
[app]
name = "traced"

[modules.faulty]
component = "{{faulty}}"
routes = ["/faulty"]
limits = {{ memory = "16MiB", timeout = "500ms", concurrency = 16 }}

[telemetry]
otlp = "{}"
service_name = "edge-shop"
"#,
        receiver.endpoint()
    ));
    let host = Modhost::start(&deployment);
    // The client's own trace: the request joins it, as a child of the client's span.
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let trapped = send_with_headers(
        &client(false),
        "GET",
        &host.url("/faulty/trap"),
        &[(
            "traceparent",
            &format!("00-{client_trace}-{client_span}-01"),
        )],
        None,
    )
    .await;
    assert_eq!(trapped.status, 500, "{}", trapped.text());
    let spans = receiver
        .wait_for(
            Duration::from_secs(30),
            "the trapped request's span",
            |spans| spans.iter().any(|s| s.name == "request"),
        )
        .await;
    let request = one(&spans, "request", |s| s.attribute("path") == "/faulty/trap");
    assert_eq!(request.service, "edge-shop");
    assert_eq!(request.trace_id, client_trace);
    assert_eq!(request.parent, client_span);
    assert_eq!(request.attribute("status"), "500");
    // What the module wrote to stderr as it trapped, with the module's name.
    let said = request.events.iter().find(|(line, attributes)| {
        attributes.get("module").map(String::as_str) == Some("faulty")
            && line.contains("deliberate trap")
    });
    let Some((_, attributes)) = said else {
        panic!("no event of the module's in {request:#?}");
    };
    assert_eq!(attributes.get("stream").map(String::as_str), Some("stderr"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_node_and_a_rate_follows_the_load() {
    let deployment = TestDeployment::new(SHOP);
    let host = Modhost::start(&deployment);
    let Some(prometheus) = Prometheus::start(&[host.addr.to_string()]).await else {
        return;
    };
    let within = Duration::from_secs(30);
    prometheus
        .wait_for(within, r#"up{job="modhost"}"#, |up| {
            up.len() == 1 && up[0].value == 1.0
        })
        .await;

    // One order: a request per route, a call per edge, an event through the relay.
    let http = client(false);
    let placed = send(&http, "POST", &host.url("/orders"), Some(GOOD_ORDER)).await;
    assert_eq!(placed.status, 201, "{}", placed.text());
    let reserved = prometheus
        .wait_for(
            within,
            r#"modhost_calls_total{caller="orders",callee="inventory",outcome="ok"}"#,
            |calls| calls.iter().any(|c| c.value >= 1.0),
        )
        .await;
    assert_eq!(reserved[0].label("path"), "local", "{reserved:?}");
    // The charge's event was handled by both subscribers: nothing waits in
    // payments' outbox, nor on the bus for them.
    for (query, expected) in [
        (r#"modhost_events_outbox_depth{module="payments"}"#, 0.0),
        (
            r#"modhost_events_consumer_lag{module="orders",topic="payments.charged"}"#,
            0.0,
        ),
        (
            r#"modhost_events_consumer_lag{module="notifications",topic="payments.charged"}"#,
            0.0,
        ),
        (
            r#"modhost_events_delivered_total{module="notifications",topic="payments.charged"}"#,
            1.0,
        ),
    ] {
        prometheus
            .wait_for(within, query, |s| s.len() == 1 && s[0].value == expected)
            .await;
    }
    // The state read at each scrape: the version serving, no canary, the bulkhead's
    // size, the database pool.
    let serving = prometheus
        .wait_for(within, r#"modhost_module_version{module="users"}"#, |s| {
            s.len() == 1
        })
        .await;
    assert_eq!(serving[0].label("role"), "serving");
    assert_eq!(serving[0].value, 1.0);
    for (query, expected) in [
        (r#"modhost_canary_weight{module="users"}"#, 0.0),
        (r#"modhost_module_concurrency{module="users"}"#, 128.0),
        (r#"modhost_module_in_flight{module="users"}"#, 0.0),
        (
            r#"modhost_db_connections{module="orders",state="in_use"}"#,
            0.0,
        ),
        (r#"modhost_node_info{app="shop"}"#, 1.0),
    ] {
        prometheus
            .wait_for(within, query, |s| s.len() == 1 && s[0].value == expected)
            .await;
    }
    prometheus
        .wait_for(
            within,
            r#"modhost_db_acquire_seconds_count{module="orders"}"#,
            |s| s.len() == 1 && s[0].value >= 1.0,
        )
        .await;

    // Under load, the rate of /users requests rises above zero...
    let rate = r#"sum(rate(modhost_gateway_requests_total{route="/users",status="200"}[3s]))"#;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = tokio::spawn({
        let (stop, url) = (stop.clone(), host.url("/users/2"));
        async move {
            let http = client(false);
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let answer = send(&http, "GET", &url, None).await;
                assert_eq!(answer.status, 200, "{}", answer.text());
                sent += 1;
            }
            sent
        }
    });
    prometheus
        .wait_for(within, rate, |s| s.len() == 1 && s[0].value > 1.0)
        .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = load.await.unwrap();
    // ...Prometheus scraped every one of them...
    prometheus
        .wait_for(
            within,
            r#"modhost_gateway_requests_total{route="/users",status="200"}"#,
            |s| s.len() == 1 && s[0].value == sent as f64,
        )
        .await;
    let p99 = prometheus
        .query(r#"histogram_quantile(0.99, sum by (le) (rate(modhost_gateway_request_duration_seconds_bucket{route="/users"}[1m])))"#)
        .await;
    assert!(
        p99.len() == 1 && p99[0].value > 0.0 && p99[0].value < 84.0,
        "a p99 within the buckets: {p99:?}"
    );
    // ...and once the load stops, the rate falls back to zero.
    prometheus
        .wait_for(within, rate, |s| s.len() == 1 && s[0].value == 0.0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_draws_the_split_shop_live_in_a_browser() {
    let Some(browser) = Browser::find() else {
        return;
    };
    let Some(broker) = Broker::start() else {
        return;
    };
    const TOKEN: &str = "dashboard-token-0123456789abcdef";
    let toml = format!(
        "{SHOP}backend = \"kafka\"\nbrokers = \"{}\"\npartitions = 3\n\n\
         [admin]\ntoken = \"{TOKEN}\"\n\n\
         [telemetry]\nslow_request = \"1ms\"\n\
         trace_url = \"http://traces.example/trace/{{trace_id}}\"\n",
        broker.address()
    );
    let cluster = Cluster::start(&toml, &["a", "b", "c"], PLACEMENT);
    let entry = cluster.node("a");
    let admin = format!("http://{}", entry.admin.expect("node a's admin listener"));
    let http = client(false);
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("authorization", bearer.as_str())];

    // A canary of users takes a quarter of its traffic.
    let canary = variant(
        &guest("users"),
        "dashboard-canary",
        cluster.deployment.dir.path(),
    );
    let body = serde_json::json!({ "component": canary, "weight": 25 }).to_string();
    let started = send_with_headers(
        &http,
        "POST",
        &format!("{admin}/v1/modules/users/canary"),
        &auth,
        Some(&body),
    )
    .await;
    assert_eq!(started.status, 200, "{}", started.text());

    // Without the token: refused, with the challenges a browser and a client answer.
    let refused = send(&http, "GET", &format!("{admin}/dashboard"), None).await;
    assert_eq!(refused.status, 401);
    let challenges: Vec<&str> = refused
        .headers
        .get_all("www-authenticate")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect();
    assert!(
        challenges.iter().any(|c| c.starts_with("Basic")),
        "{challenges:?}"
    );
    let wrong = send_with_headers(
        &http,
        "GET",
        &format!("{admin}/v1/overview"),
        &[("authorization", "Basic b3BlcmF0b3I6bm90LXRoZS10b2tlbg==")],
        None,
    )
    .await;
    assert_eq!(wrong.status, 401, "a wrong password is refused");
    // The right password reads, but changes nothing: a browser would send it with a
    // form another site posted here.
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("operator:{TOKEN}"))
    );
    let read = send_with_headers(
        &http,
        "GET",
        &format!("{admin}/v1/status"),
        &[("authorization", basic.as_str())],
        None,
    )
    .await;
    assert_eq!(read.status, 200, "{}", read.text());
    let posted = send_with_headers(
        &http,
        "POST",
        &format!("{admin}/v1/modules/users/rollback"),
        &[("authorization", basic.as_str())],
        Some("{}"),
    )
    .await;
    assert_eq!(posted.status, 401, "{}", posted.text());

    // The JSON the page draws: every node, its modules, every declared edge.
    let overview =
        send_with_headers(&http, "GET", &format!("{admin}/v1/overview"), &auth, None).await;
    assert_eq!(overview.status, 200, "{}", overview.text());
    let overview = overview.json();
    assert_eq!(overview["app"], "shop");
    assert_eq!(overview["asked"], "a");
    let mut placed: Vec<String> = overview["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|node| {
            let name = node["name"].as_str().unwrap().to_string();
            node["modules"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |m| format!("{name}/{}", m["name"].as_str().unwrap()))
                .collect::<Vec<_>>()
        })
        .collect();
    placed.sort();
    let mut expected: Vec<String> = PLACEMENT
        .iter()
        .flat_map(|(module, on)| on.iter().map(move |node| format!("{node}/{module}")))
        .collect();
    expected.sort();
    assert_eq!(placed, expected, "{overview:#}");
    let edges: Vec<String> = overview["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let topic = e["topic"]
                .as_str()
                .map(|t| format!("@{t}"))
                .unwrap_or_default();
            format!(
                "{}->{}{topic}",
                e["from"].as_str().unwrap(),
                e["to"].as_str().unwrap()
            )
        })
        .collect();
    let shop_edges = [
        "orders->inventory",
        "orders->fraud",
        "fraud->users",
        "orders->payments",
        "payments->orders@payments.charged",
        "payments->orders@payments.failed",
        "payments->notifications@payments.charged",
        "payments->fraud@payments.failed",
        "orders->notifications@orders.cancelled",
    ];
    for edge in shop_edges {
        assert!(edges.contains(&edge.to_string()), "{edge} not in {edges:?}");
    }
    let remote = overview["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["from"] == "orders" && e["to"] == "inventory")
        .unwrap();
    assert_eq!(remote["path"], "remote");

    // The page, in Chromium: everything above drawn, and a rate rising under load.
    let screenshot = workspace().join("target/test-artifacts/dashboard.png");
    std::fs::create_dir_all(screenshot.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&screenshot);
    let modules: Vec<&str> = PLACEMENT.iter().map(|(module, _)| *module).collect();
    let seen = browser
        .run(
            &workspace().join("tests/dashboard/check.cjs"),
            vec![
                ("DASHBOARD".into(), format!("{admin}/dashboard")),
                ("TOKEN".into(), TOKEN.into()),
                ("GATEWAY".into(), entry.url("")),
                ("MODULES".into(), modules.join(",")),
                ("EDGES".into(), shop_edges.join(",")),
                ("CANARY".into(), "users=25".into()),
                ("LOADED_EDGE".into(), "orders->inventory".into()),
                ("ORDER".into(), GOOD_ORDER.into()),
                ("SCREENSHOT".into(), screenshot.display().to_string()),
            ],
        )
        .await;
    assert_eq!(seen["status"], 200, "{seen:#}");
    assert!(
        seen["rate_during"].as_f64().unwrap() > seen["rate_before"].as_f64().unwrap(),
        "{seen:#}"
    );
    assert!(seen["placed"].as_u64().unwrap() > 0, "{seen:#}");
    assert!(seen["canary"].as_str().unwrap().contains("25%"), "{seen:#}");
    assert_eq!(seen["problems"], serde_json::json!([]), "{seen:#}");
    assert_eq!(seen["error_banner"], "", "{seen:#}");
    let picture = std::fs::metadata(&screenshot).expect("the screenshot is kept");
    assert!(picture.len() > 10_000, "{} bytes", picture.len());

    // The orders placed were slower than the 1 ms `slow_request`: listed, with
    // their trace ids, linked through `trace_url`.
    let overview = send_with_headers(&http, "GET", &format!("{admin}/v1/overview"), &auth, None)
        .await
        .json();
    assert_eq!(
        overview["trace_url"],
        "http://traces.example/trace/{trace_id}"
    );
    let notable = overview["notable"].as_array().unwrap();
    assert!(
        notable.iter().any(|n| n["route"] == "/orders"
            && n["node"] == "a"
            && n["trace_id"].as_str().unwrap().len() == 32),
        "{notable:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_breaker_decisions_are_events_of_the_call_span() {
    let receiver = Receiver::start().await;
    let deployment = TestDeployment::new(&format!(
        "{CALLS}
[policies.callee]
retries = {{ attempts = 3, idempotent = [\"flaky\"], backoff = \"1ms\", max_backoff = \"5ms\", budget = 1.0, min_per_second = 100 }}
breaker = {{ failures = 3, open_for = \"1s\" }}

[telemetry]
otlp = \"{}\"
",
        receiver.endpoint()
    ));
    let host = Modhost::start(&deployment);
    // The decisions a call's span carries: its events that name the policy.
    let decisions = |span: &ReceivedSpan| -> Vec<String> {
        span.events
            .iter()
            .filter(|(_, attributes)| {
                attributes.get("policy").map(String::as_str) == Some("callee")
            })
            .map(|(message, _)| message.clone())
            .collect()
    };
    let a_call_said = |spans: &[ReceivedSpan], what: &str| {
        spans
            .iter()
            .find(|s| s.name == "call" && decisions(s).iter().any(|m| m.contains(what)))
            .cloned()
    };

    // Three crashes in a row open the circuit (`crash` is not retried); the next call
    // is refused at once. Each decision is an event of the call it was made for.
    for _ in 0..3 {
        assert_eq!(get(&host.url("/caller/crash")).await.status, 502);
    }
    assert_eq!(get(&host.url("/caller/crash")).await.status, 503);
    let spans = receiver
        .wait_for(
            Duration::from_secs(30),
            "the breaker's decisions",
            |spans| {
                a_call_said(spans, "circuit opened").is_some()
                    && a_call_said(spans, "refused: the circuit is open").is_some()
            },
        )
        .await;
    let opened = a_call_said(&spans, "circuit opened").unwrap();
    assert_eq!(opened.attribute("outcome"), "error", "{opened:#?}");
    assert_eq!(opened.attribute("callee"), "callee", "{opened:#?}");
    let refused = a_call_said(&spans, "refused: the circuit is open").unwrap();
    assert_ne!(refused.span_id, opened.span_id);

    // After `open_for`, `flaky` (which fails half its calls) goes through again: a
    // probe first, then calls, some retried. (Three failures in a row may open the
    // circuit again for a second: those requests get 503.)
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let reply = get(&host.url("/caller/flaky")).await;
        assert!([200, 502, 503].contains(&reply.status), "{}", reply.text());
        let spans = receiver.spans();
        if a_call_said(&spans, "retrying a failed call").is_some()
            && a_call_said(&spans, "probing the callee").is_some()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no retried call and probe among {spans:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
