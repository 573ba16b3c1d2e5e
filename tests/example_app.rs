//! The example shop served by real `modhost` processes: users and catalog as JSON APIs,
//! orders placed through typed calls into inventory, fraud (a Python module) and
//! payments, and the saga that runs on their events. One suite runs unchanged against
//! the shop on one node and the shop split over three (tests/common/shop.rs).

mod common;
use common::shop::Shop;
use common::*;

async fn users_api_lists_gets_creates_and_validates(host: &Shop) {
    let http = client(false);

    let list = send(&http, "GET", &host.url("/users"), None).await;
    assert_eq!(list.status, 200, "{}", list.text());
    assert_eq!(list.headers["content-type"], "application/json");
    let list = list.json();
    assert_eq!(list["total"], 3);
    assert_eq!(list["users"][0]["email"], "ada@example.com");

    let page = send(&http, "GET", &host.url("/users?limit=1&offset=1"), None)
        .await
        .json();
    assert_eq!(page["users"].as_array().unwrap().len(), 1);
    assert_eq!(page["users"][0]["id"], 2);

    let bad_page = send(&http, "GET", &host.url("/users?limit=0"), None).await;
    assert_eq!(bad_page.status, 400);
    assert_eq!(bad_page.json()["error"]["code"], "invalid_query");

    let one = send(&http, "GET", &host.url("/users/2"), None).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["name"], "Grace Hopper");

    let missing = send(&http, "GET", &host.url("/users/99"), None).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "not_found");

    let created = send(
        &http,
        "POST",
        &host.url("/users"),
        Some(r#"{"name": "Barbara Liskov", "email": "barbara@example.com"}"#),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["id"], 4);
    assert_eq!(created.json()["email"], "barbara@example.com");

    let invalid = send(
        &http,
        "POST",
        &host.url("/users"),
        Some(r#"{"name": "", "email": "nope"}"#),
    )
    .await;
    assert_eq!(invalid.status, 400);
    let error = invalid.json();
    assert_eq!(error["error"]["code"], "validation");
    assert_eq!(error["error"]["fields"]["name"], "is required");
    assert_eq!(error["error"]["fields"]["email"], "is not an email address");

    let not_json = send(&http, "POST", &host.url("/users"), Some("{name:")).await;
    assert_eq!(not_json.status, 400);
    assert_eq!(not_json.json()["error"]["code"], "invalid_json");

    let taken = send(
        &http,
        "POST",
        &host.url("/users"),
        Some(r#"{"name": "Ada", "email": "ADA@example.com"}"#),
    )
    .await;
    assert_eq!(taken.status, 409);

    let wrong_method = send(&http, "DELETE", &host.url("/users"), None).await;
    assert_eq!(wrong_method.status, 405);
}

async fn catalog_api_filters_gets_creates_and_validates(host: &Shop) {
    let http = client(false);

    let all = send(&http, "GET", &host.url("/catalog/products"), None)
        .await
        .json();
    assert_eq!(all["total"], 4);
    let cables = send(
        &http,
        "GET",
        &host.url("/catalog/products?category=cables"),
        None,
    )
    .await
    .json();
    assert_eq!(cables["total"], 1);
    assert_eq!(cables["products"][0]["sku"], "CB-004");

    let unknown = send(
        &http,
        "GET",
        &host.url("/catalog/products?category=boats"),
        None,
    )
    .await;
    assert_eq!(unknown.status, 400);

    let one = send(&http, "GET", &host.url("/catalog/products/kb-001"), None).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["price_cents"], 8900);

    let created = send(
        &http,
        "POST",
        &host.url("/catalog/products"),
        Some(r#"{"sku": "hd-010", "name": "Headset", "category": "peripherals", "price_cents": 4900}"#),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["sku"], "HD-010");

    let invalid = send(
        &http,
        "POST",
        &host.url("/catalog/products"),
        Some(r#"{"sku": "x", "name": "Thing", "category": "boats", "price_cents": -5}"#),
    )
    .await;
    assert_eq!(invalid.status, 400);
    let fields = &invalid.json()["error"]["fields"];
    assert!(
        fields["sku"].is_string()
            && fields["category"].is_string()
            && fields["price_cents"].is_string(),
        "{fields}"
    );

    let index = send(&http, "GET", &host.url("/catalog"), None).await;
    assert_eq!(index.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_unrouted_paths() {
    let deployment = TestDeployment::new(SHOP);
    let host = Modhost::start(&deployment);

    let health = get(&host.url("/healthz")).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");

    let ready = get(&host.url("/readyz")).await;
    assert_eq!(ready.status, 200);
    let ready = ready.json();
    assert_eq!(ready["status"], "ready");
    assert!(ready["modules"]["users"]["version"].is_string(), "{ready}");
    assert!(ready["modules"]["catalog"].is_object(), "{ready}");

    let nowhere = get(&host.url("/nowhere")).await;
    assert_eq!(nowhere.status, 404);
    assert_eq!(nowhere.json()["error"]["code"], "no_route");

    // Routes match at segment boundaries: /usersx is not /users.
    assert_eq!(get(&host.url("/usersx")).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_is_served_on_the_same_port() {
    let deployment = TestDeployment::new(SHOP);
    let host = Modhost::start(&deployment);
    let h2 = client(true);
    let url = host.url("/users/1");
    let replies = join_all((0..8).map(|_| {
        let (h2, url) = (h2.clone(), url.clone());
        async move { send(&h2, "GET", &url, None).await }
    }))
    .await;
    for reply in replies {
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["id"], 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_logs_carry_module_route_status_and_duration() {
    let deployment = TestDeployment::new(SHOP);
    let host = Modhost::start(&deployment);
    assert_eq!(get(&host.url("/users/1")).await.status, 200);

    let access = host.wait_for_log("request completed");
    let event: serde_json::Value = serde_json::from_str(&access).unwrap();
    let span = &event["span"];
    assert_eq!(span["module"], "users", "{event}");
    assert_eq!(span["route"], "/users", "{event}");
    assert_eq!(span["path"], "/users/1", "{event}");
    assert_eq!(span["status"], 200, "{event}");
    assert!(span["duration_us"].is_number(), "{event}");
}

/// An order body: `lines` as JSON, paid with card `number`.
fn order(lines: &str, number: &str) -> String {
    format!(
        r#"{{"customer_id": 2, "lines": {lines},
            "card": {{"number": "{number}", "expiry_month": 12, "expiry_year": 2030}}}}"#
    )
}

const GOOD_CARD: &str = "4242 4242 4242 4242";

async fn placing_an_order_reserves_stock_and_charges_the_card(host: &Shop) {
    let http = client(false);
    let keyboards = get(&host.url("/inventory/KB-001")).await.json()["available"]
        .as_u64()
        .unwrap();

    let body = order(
        r#"[{"sku": "KB-001", "quantity": 2}, {"sku": "CB-004", "quantity": 3}]"#,
        GOOD_CARD,
    );
    let placed = send(&http, "POST", &host.url("/orders"), Some(&body)).await;
    assert_eq!(placed.status, 201, "{}", placed.text());
    let order = placed.json();
    let id = order["id"].as_str().unwrap();
    assert!(id.starts_with("ord_"), "{order}");
    assert_eq!(placed.headers["location"], format!("/orders/{id}").as_str());
    assert_eq!(order["status"], "confirmed");
    assert_eq!(order["customer_id"], 2);
    // Priced by inventory: 2 × 89.00 + 3 × 9.00.
    assert_eq!(order["lines"][0]["name"], "Mechanical keyboard");
    assert_eq!(order["lines"][0]["line_total_cents"], 17800);
    assert_eq!(order["lines"][1]["line_total_cents"], 2700);
    assert_eq!(order["total_cents"], 20500);
    assert_eq!(order["currency"], "EUR");
    assert!(order["reservation_id"]
        .as_str()
        .unwrap()
        .starts_with("rsv_"));
    // Charged by payments, for exactly that total.
    assert_eq!(order["payment"]["amount_cents"], 20500);
    assert_eq!(order["payment"]["card_last4"], "4242");
    assert!(order["payment"]["receipt_id"]
        .as_str()
        .unwrap()
        .starts_with("pay_"));

    // Two typed calls made it: one edge to each module, both succeeded.
    let metrics = get(&host.url("/metrics")).await.text();
    for function in [
        "shop:inventory/api@1.1.0#reserve",
        "shop:fraud/api@1.0.0#assess",
        "shop:payments/api@1.1.0#charge",
    ] {
        let callee = function.split([':', '/']).nth(1).unwrap();
        // In-process on one node; over the mesh when split (orders on a, the others
        // on b and c).
        let path = match host {
            Shop::One { .. } => "local",
            Shop::Split { .. } => "remote",
        };
        let series = format!(
            r#"modhost_calls_total{{caller="orders",callee="{callee}",function="{function}",path="{path}",outcome="ok"}} 1"#
        );
        assert!(
            metrics.contains(&series),
            "{series} missing from:\n{metrics}"
        );
    }

    // The order is stored in orders' database…
    let stored = get(&host.url(&format!("/orders/{id}"))).await;
    assert_eq!(stored.status, 200, "{}", stored.text());
    assert_eq!(stored.json(), order);
    assert_eq!(get(&host.url("/orders/ord_missing")).await.status, 404);
    // …and the stock it took is gone from inventory's: 2 keyboards.
    let level = get(&host.url("/inventory/KB-001")).await;
    assert_eq!(level.status, 200);
    assert_eq!(level.json()["unit_price_cents"], 8900);
    assert_eq!(level.json()["available"], keyboards - 2);
    assert_eq!(get(&host.url("/inventory/NOPE")).await.status, 404);
    // Payments serves only the card network's settlement reports over HTTP.
    assert_eq!(get(&host.url("/payments")).await.status, 404);
}

/// Waits (bounded) until `path` answers with JSON that `done` accepts; returns it.
async fn eventually(
    host: &Shop,
    path: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let reply = get(&host.url(path)).await;
        if reply.status == 200 && done(&reply.json()) {
            return reply.json();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{path} never became what was expected; last answer {} {}\nlog:\n{}",
            reply.status,
            reply.text(),
            host.logs().join("\n")
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn kinds(notifications: &serde_json::Value) -> Vec<String> {
    notifications["notifications"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|n| n["kind"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The saga: payments publishes `payments.charged` with every charge (notifications
/// tells the customer); when the card network later reports that the charge failed to
/// settle, payments publishes `payments.failed`, orders compensates — stock released
/// through inventory, order cancelled, `orders.cancelled` published — and notifications
/// tells the customer again. Each step happens once, however often it is reported.
async fn a_payment_that_fails_later_cancels_the_order_and_returns_its_stock(host: &Shop) {
    let http = client(false);
    let keyboards = get(&host.url("/inventory/KB-001")).await.json()["available"]
        .as_u64()
        .unwrap();

    let placed = send(
        &http,
        "POST",
        &host.url("/orders"),
        Some(&order(r#"[{"sku": "KB-001", "quantity": 2}]"#, GOOD_CARD)),
    )
    .await;
    assert_eq!(placed.status, 201, "{}", placed.text());
    let id = placed.json()["id"].as_str().unwrap().to_string();
    let receipt = placed.json()["payment"]["receipt_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        get(&host.url("/inventory/KB-001")).await.json()["available"],
        keyboards - 2
    );

    // payments.charged → notifications: the customer hears about the payment.
    let path = format!("/notifications?order_id={id}");
    let told = eventually(host, &path, |n| kinds(n) == ["payment_received"]).await;
    let message = told["notifications"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("178.00 EUR") && message.contains("4242"),
        "{message}"
    );

    // The card network reports the charge failed to settle.
    let report = serde_json::json!({
        "receipt_id": receipt, "outcome": "failed", "reason": "insufficient funds at settlement"
    })
    .to_string();
    let settled = send(
        &http,
        "POST",
        &host.url("/payments/settlements"),
        Some(&report),
    )
    .await;
    assert_eq!(settled.status, 200, "{}", settled.text());
    assert_eq!(settled.json()["state"], "settlement-failed");

    // payments.failed → orders: cancelled, with the reason, and the stock is back.
    let cancelled = eventually(host, &format!("/orders/{id}"), |o| {
        o["status"] == "cancelled"
    })
    .await;
    assert_eq!(
        cancelled["reason"],
        "payment failed: insufficient funds at settlement"
    );
    assert_eq!(
        get(&host.url("/inventory/KB-001")).await.json()["available"],
        keyboards
    );
    // orders.cancelled → notifications: the customer hears about the cancellation.
    eventually(host, &path, |n| {
        kinds(n) == ["payment_received", "order_cancelled"]
    })
    .await;

    // The same report again changes nothing: no second release, no second message.
    let again = send(
        &http,
        "POST",
        &host.url("/payments/settlements"),
        Some(&report),
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.text());
    let marker = send(
        &http,
        "POST",
        &host.url("/orders"),
        Some(&order(r#"[{"sku": "MS-002", "quantity": 1}]"#, GOOD_CARD)),
    )
    .await;
    let marker_id = marker.json()["id"].as_str().unwrap().to_string();
    eventually(host, &format!("/notifications?order_id={marker_id}"), |n| {
        kinds(n) == ["payment_received"]
    })
    .await;
    assert_eq!(
        kinds(&get(&host.url(&path)).await.json()),
        ["payment_received", "order_cancelled"]
    );
    assert_eq!(
        get(&host.url("/inventory/KB-001")).await.json()["available"],
        keyboards
    );

    // Bad reports are refused.
    let unknown = send(
        &http,
        "POST",
        &host.url("/payments/settlements"),
        Some(r#"{"receipt_id": "pay_nope", "outcome": "failed"}"#),
    )
    .await;
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    let settled_ok = send(
        &http,
        "POST",
        &host.url("/payments/settlements"),
        Some(&format!(
            r#"{{"receipt_id": "{receipt}", "outcome": "settled"}}"#
        )),
    )
    .await;
    assert_eq!(settled_ok.status, 422, "{}", settled_ok.text());
}

async fn refused_orders_get_the_right_4xx_answer(host: &Shop) {
    let http = client(false);
    let place = |body: String| {
        let http = http.clone();
        let url = host.url("/orders");
        async move { send(&http, "POST", &url, Some(&body)).await }
    };

    // Only 5 monitors in stock: inventory's typed out-of-stock error lists the shortage.
    let short = place(order(
        r#"[{"sku": "MN-003", "quantity": 6}, {"sku": "MS-002", "quantity": 1}]"#,
        GOOD_CARD,
    ))
    .await;
    assert_eq!(short.status, 409, "{}", short.text());
    let error = &short.json()["error"];
    assert_eq!(error["code"], "out_of_stock");
    assert_eq!(
        error["shortages"],
        serde_json::json!([{ "sku": "MN-003", "requested": 6, "available": 5 }])
    );

    let unknown = place(order(r#"[{"sku": "XX-404", "quantity": 1}]"#, GOOD_CARD)).await;
    assert_eq!(unknown.status, 422, "{}", unknown.text());
    assert_eq!(unknown.json()["error"]["code"], "unknown_sku");
    assert_eq!(unknown.json()["error"]["sku"], "XX-404");

    let repeated = place(order(
        r#"[{"sku": "KB-001", "quantity": 1}, {"sku": "KB-001", "quantity": 1}]"#,
        GOOD_CARD,
    ))
    .await;
    assert_eq!(repeated.status, 422, "{}", repeated.text());
    assert_eq!(repeated.json()["error"]["code"], "invalid_order");

    // A declined payment gives its reserved stock back (orders compensates).
    let before = get(&host.url("/inventory/KB-001")).await.json()["available"].clone();
    // Payments' typed decline reasons become 402s.
    let one_keyboard = r#"[{"sku": "KB-001", "quantity": 1}]"#;
    for (card, reason) in [
        ("4000 0000 0000 0002", "card_declined"),
        ("4000-0000-0000-9995", "insufficient_funds"),
    ] {
        let declined = place(order(one_keyboard, card)).await;
        assert_eq!(declined.status, 402, "{}", declined.text());
        assert_eq!(declined.json()["error"]["code"], "payment_declined");
        assert_eq!(declined.json()["error"]["reason"], reason);
    }
    // In stock, but 40 × 89.00 + 60 × 29.00 is over the 5 000.00 charge limit.
    let over = place(order(
        r#"[{"sku": "KB-001", "quantity": 40}, {"sku": "MS-002", "quantity": 60}]"#,
        GOOD_CARD,
    ))
    .await;
    assert_eq!(over.status, 402, "{}", over.text());
    assert_eq!(over.json()["error"]["reason"], "over_limit");
    let expired = place(
        order(one_keyboard, GOOD_CARD).replace(r#""expiry_year": 2030"#, r#""expiry_year": 2001"#),
    )
    .await;
    assert_eq!(
        expired.json()["error"]["reason"],
        "expired_card",
        "{}",
        expired.text()
    );

    assert_eq!(
        get(&host.url("/inventory/KB-001")).await.json()["available"],
        before,
        "declined orders must not keep stock"
    );
    let bad_number = place(order(one_keyboard, "4242 4242 4242 4241")).await;
    assert_eq!(bad_number.status, 422, "{}", bad_number.text());
    assert_eq!(bad_number.json()["error"]["code"], "invalid_card");

    // The body is checked before any call: every problem at once.
    let invalid = place(
        r#"{"lines": [{"sku": "", "quantity": 0}], "card": {"expiry_month": 13}}"#.to_string(),
    )
    .await;
    assert_eq!(invalid.status, 400, "{}", invalid.text());
    let fields = &invalid.json()["error"]["fields"];
    assert_eq!(fields["customer_id"], "is required");
    assert_eq!(fields["lines[0].sku"], "is required");
    assert_eq!(
        fields["lines[0].quantity"],
        "must be a whole number from 1 to 1000"
    );
    assert_eq!(fields["card.number"], "is required");
    assert_eq!(
        fields["card.expiry_month"],
        "must be a whole number from 1 to 12"
    );
    assert_eq!(fields["card.expiry_year"], "is required");

    assert_eq!(
        send(&http, "GET", &host.url("/orders"), None).await.status,
        405
    );
    // Refusals are answers, not failures: the host stays healthy.
    assert_eq!(get(&host.url("/readyz")).await.status, 200);
}

/// Catalog lookups come from its key-value cache once they have been made, and a new
/// product is in the cache from the start.
async fn catalog_lookups_are_cached(host: &Shop) {
    let cache = |reply: &Reply| {
        reply
            .headers
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let first = get(&host.url("/catalog/products/cb-004")).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(cache(&first), "miss");
    let again = get(&host.url("/catalog/products/CB-004")).await;
    assert_eq!(cache(&again), "hit");
    assert_eq!(
        again.json(),
        first.json(),
        "the cache answers what the database did"
    );
    // Created by catalog_api_filters_gets_creates_and_validates: cached when written.
    let created = get(&host.url("/catalog/products/HD-010")).await;
    assert_eq!((created.status, cache(&created).as_str()), (200, "hit"));
    let missing = get(&host.url("/catalog/products/ZZ-999")).await;
    assert_eq!(missing.status, 404);
}

/// The node that runs `module` (the only node, or its node of the split).
fn node_of<'a>(shop: &'a Shop, module: &str) -> &'a Modhost {
    match shop {
        Shop::One { host, .. } => host,
        Shop::Split { cluster, .. } => {
            let (_, nodes) = common::shop::PLACEMENT
                .iter()
                .find(|(placed, _)| *placed == module)
                .expect("a placed module");
            cluster.node(nodes[0])
        }
    }
}

/// The fraud module — Python, built by componentize-py — scores every order between
/// reserving and charging: orders (Rust) calls it through `shop:fraud/api`, it calls
/// users (Rust) back through `shop:users/api`, keeps its assessments in its own
/// database, publishes `fraud.flagged` inside the transaction that records a flagged
/// assessment, and learns from `payments.failed`. Two failed settlements and a
/// throwaway address: the next order is refused before the card is charged.
async fn the_python_fraud_module_scores_every_order(shop: &Shop) {
    let http = client(false);
    let created = send(
        &http,
        "POST",
        &shop.url("/users"),
        Some(r#"{"name": "Mallory", "email": "mallory@Mailinator.com"}"#),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let mallory = created.json()["id"].as_u64().unwrap();
    let order_for = |customer: u64, lines: &str| {
        format!(
            r#"{{"customer_id": {customer}, "lines": {lines},
                "card": {{"number": "{GOOD_CARD}", "expiry_month": 12, "expiry_year": 2030}}}}"#
        )
    };
    let keyboards = || async {
        get(&shop.url("/inventory/KB-001")).await.json()["available"]
            .as_u64()
            .unwrap()
    };
    let stock_before = keyboards().await;

    // 12 keyboards (1,068.00 EUR) on a throwaway address: charged, but flagged.
    let large = order_for(mallory, r#"[{"sku": "KB-001", "quantity": 12}]"#);
    let placed = send(&http, "POST", &shop.url("/orders"), Some(&large)).await;
    assert_eq!(placed.status, 201, "{}", placed.text());
    let order_id = placed.json()["id"].as_str().unwrap().to_string();
    let receipt = placed.json()["payment"]["receipt_id"]
        .as_str()
        .unwrap()
        .to_string();
    let assessed = get(&shop.url(&format!("/fraud/assessments/{order_id}"))).await;
    assert_eq!(assessed.status, 200, "{}", assessed.text());
    let assessed = assessed.json();
    assert_eq!(assessed["customer_id"], mallory);
    assert_eq!(assessed["total_cents"], 106800);
    assert_eq!(assessed["verdict"], "review");
    assert_eq!(assessed["score"], 60);
    assert_eq!(
        assessed["reasons"],
        serde_json::json!(["disposable-email", "large-order"])
    );
    // The flag left fraud's outbox for the bus, published by the Python module.
    let fraud_node = node_of(shop, "fraud");
    let series = r#"modhost_events_published_total{module="fraud",topic="fraud.flagged"} 1"#;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let metrics = get(&fraud_node.url("/metrics")).await.text();
        if metrics.contains(series) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{series} missing from:\n{metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // The charge fails to settle: payments.failed reaches the Python handler, which
    // counts it against Mallory — once, however often it is reported.
    let report =
        format!(r#"{{"receipt_id": "{receipt}", "outcome": "failed", "reason": "stolen card"}}"#);
    for _ in 0..2 {
        let settled = send(
            &http,
            "POST",
            &shop.url("/payments/settlements"),
            Some(&report),
        )
        .await;
        assert_eq!(settled.status, 200, "{}", settled.text());
    }
    let history = eventually(shop, &format!("/fraud/customers/{mallory}"), |h| {
        h["failed_settlements"] == 1
    })
    .await;
    assert_eq!(history["assessments"], 1);
    assert_eq!(history["flagged"], 1);
    eventually(shop, &format!("/orders/{order_id}"), |o| {
        o["status"] == "cancelled"
    })
    .await;
    assert_eq!(
        keyboards().await,
        stock_before,
        "the cancelled order's stock is back"
    );

    // The next order scores 80: refused, nothing charged, the stock released.
    let small = order_for(mallory, r#"[{"sku": "KB-001", "quantity": 1}]"#);
    let refused = send(&http, "POST", &shop.url("/orders"), Some(&small)).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    let error = &refused.json()["error"];
    assert_eq!(error["code"], "order_refused");
    assert_eq!(error["score"], 80);
    assert_eq!(
        error["reasons"],
        serde_json::json!(["disposable-email", "failed-settlements"])
    );
    assert_eq!(
        keyboards().await,
        stock_before,
        "a refused order holds no stock"
    );
    let history = get(&shop.url(&format!("/fraud/customers/{mallory}")))
        .await
        .json();
    assert_eq!(
        (history["assessments"].clone(), history["flagged"].clone()),
        (2.into(), 2.into())
    );

    // Grace (customer 2) is known with a real address, and one charge of hers failed
    // to settle earlier in this suite: 40 points, approved, not flagged.
    eventually(shop, "/fraud/customers/2", |h| h["failed_settlements"] == 1).await;
    let grace = send(
        &http,
        "POST",
        &shop.url("/orders"),
        Some(&order_for(2, r#"[{"sku": "CB-004", "quantity": 1}]"#)),
    )
    .await;
    assert_eq!(grace.status, 201, "{}", grace.text());
    let grace_id = grace.json()["id"].as_str().unwrap().to_string();
    let assessed = get(&shop.url(&format!("/fraud/assessments/{grace_id}")))
        .await
        .json();
    assert_eq!(assessed["verdict"], "approve");
    assert_eq!(assessed["score"], 40);
    assert_eq!(
        assessed["reasons"],
        serde_json::json!(["failed-settlements"])
    );
    // Nobody is customer 999: reviewed, charged.
    let stranger = send(
        &http,
        "POST",
        &shop.url("/orders"),
        Some(&order_for(999, r#"[{"sku": "CB-004", "quantity": 1}]"#)),
    )
    .await;
    assert_eq!(stranger.status, 201, "{}", stranger.text());
    let stranger_id = stranger.json()["id"].as_str().unwrap().to_string();
    let assessed = get(&shop.url(&format!("/fraud/assessments/{stranger_id}")))
        .await
        .json();
    assert_eq!(assessed["reasons"], serde_json::json!(["unknown-customer"]));
    assert_eq!(assessed["verdict"], "review");

    // Its HTTP API refuses what it does not serve, with the shop's error shape.
    let missing = get(&shop.url("/fraud/assessments/ord_nope")).await;
    assert_eq!(missing.status, 404, "{}", missing.text());
    assert_eq!(missing.json()["error"]["code"], "not_found");
    for bad in ["x", "%C2%B2", "99999999999999999999999"] {
        let bad = get(&shop.url(&format!("/fraud/customers/{bad}"))).await;
        assert_eq!(bad.status, 400, "{}", bad.text());
    }
    let wrong = send(
        &http,
        "DELETE",
        &shop.url(&format!("/fraud/assessments/{grace_id}")),
        None,
    )
    .await;
    assert_eq!(wrong.status, 405, "{}", wrong.text());
}

/// Everything a client of the shop can see, on whichever shop it is given.
async fn the_shop_suite(shop: &Shop) {
    users_api_lists_gets_creates_and_validates(shop).await;
    catalog_api_filters_gets_creates_and_validates(shop).await;
    catalog_lookups_are_cached(shop).await;
    placing_an_order_reserves_stock_and_charges_the_card(shop).await;
    refused_orders_get_the_right_4xx_answer(shop).await;
    a_payment_that_fails_later_cancels_the_order_and_returns_its_stock(shop).await;
    the_python_fraud_module_scores_every_order(shop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shop_on_one_node() {
    the_shop_suite(&Shop::one()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shop_split_over_three_nodes() {
    let Some(shop) = Shop::split() else { return };
    the_shop_suite(&shop).await;
}

/// The node running `fraud` (node c, the Python module alone) dies: placing an order
/// fails at once with a 503 that says so; the node comes back: orders go through
/// again, nothing else restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_fraud_node_fails_orders_fast_and_its_return_restores_them() {
    let Some(mut shop) = Shop::split() else {
        return;
    };
    let body = order(r#"[{"sku": "CB-004", "quantity": 1}]"#, GOOD_CARD);
    let placed = send(&client(false), "POST", &shop.url("/orders"), Some(&body)).await;
    assert_eq!(placed.status, 201, "{}", placed.text());

    let Shop::Split { cluster, .. } = &mut shop else {
        unreachable!()
    };
    cluster.node_mut("c").kill();
    let started = std::time::Instant::now();
    let failed = send(&client(false), "POST", &shop.url("/orders"), Some(&body)).await;
    let took = started.elapsed();
    assert_eq!(failed.status, 503, "{}", failed.text());
    assert_eq!(failed.json()["error"]["code"], "call_unavailable");
    // orders' timeout is 5s; a dead node is known at once.
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
    let logged = shop.entry().failure_log(&failed, 503);
    assert!(logged.contains("orders → fraud"), "{logged}");

    let Shop::Split { cluster, .. } = &mut shop else {
        unreachable!()
    };
    cluster.start_node("c", &[]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let again = send(&client(false), "POST", &shop.url("/orders"), Some(&body)).await;
        if again.status == 201 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "orders did not resume: {} {}",
            again.status,
            again.text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[test]
fn an_orders_build_with_a_stale_contract_is_refused_by_check() {
    // An importer still expecting `reserve: func(sku: string, quantity: u32) -> bool`.
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("orders-stale.wasm");
    let wasm = wat::parse_str(
        r#"(component
            (import "shop:inventory/api@1.0.0" (instance
                (export "reserve" (func (param "sku" string) (param "quantity" u32) (result bool)))))
        )"#,
    )
    .unwrap();
    std::fs::write(&stale, wasm).unwrap();
    let deployment = TestDeployment::new(&SHOP.replace("{orders}", &stale.display().to_string()));
    let (code, stderr) = check(&deployment);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("module `orders`: imports shop:inventory/api@1.0.0#reserve"),
        "{stderr}"
    );
    assert!(
        stderr.contains("orders expects: func(sku: string, quantity: u32) -> bool"),
        "{stderr}"
    );
    assert!(
        stderr.contains("inventory exports: func(order-id: string, lines: list<record { sku: string, quantity: u32 }>) -> result<record {"),
        "{stderr}"
    );

    // And without the grant, even the right build is refused.
    let ungranted = TestDeployment::new(&SHOP.replace(
        "calls = [\"inventory\", \"fraud\", \"payments\"]",
        "calls = [\"inventory\", \"fraud\"]",
    ));
    let (code, stderr) = check(&ungranted);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("module `orders`: imports shop:payments/api@1.1.0 from module `payments` without a grant"),
        "{stderr}"
    );
}

/// 200 orders for one monitor each, all at once, against 5 in stock… with the stock
/// raised to 50 first by a migration of this test's own: exactly 50 are sold.
async fn no_stock_is_oversold(deployment: &TestDeployment) {
    let host = Modhost::start(deployment);
    let http = client(false);
    let url = host.url("/orders");
    let replies = join_all((0..200).map(|i| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let body = format!(
                r#"{{"customer_id": {}, "lines": [{{"sku": "MN-003", "quantity": 1}}],
                    "card": {{"number": "{GOOD_CARD}", "expiry_month": 12, "expiry_year": 2030}}}}"#,
                i + 1
            );
            send(&http, "POST", &url, Some(&body)).await
        }
    }))
    .await;
    let sold = replies.iter().filter(|r| r.status == 201).count();
    let refused = replies
        .iter()
        .filter(|r| r.status == 409 && r.json()["error"]["code"] == "out_of_stock")
        .count();
    let other: Vec<_> = replies
        .iter()
        .filter(|r| r.status != 201 && r.status != 409)
        .map(|r| format!("{} {}", r.status, r.text()))
        .collect();
    assert!(other.is_empty(), "unexpected answers: {other:?}");
    assert_eq!(sold, 50, "sold {sold}, refused {refused}");
    assert_eq!(refused, 150);
    let level = get(&host.url("/inventory/MN-003")).await.json();
    assert_eq!(level["available"], 0, "{level}");
}

/// The shop with 50 monitors: inventory's migrations plus one more.
fn fifty_monitors(database: &str) -> TestDeployment {
    let migrations = tempfile::tempdir().unwrap().keep();
    for entry in std::fs::read_dir(repo_path("modules/inventory/migrations")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), migrations.join(entry.file_name())).unwrap();
    }
    std::fs::write(
        migrations.join("9001_test_fifty_monitors.sql"),
        "UPDATE stock SET available = 50 WHERE sku = 'MN-003';",
    )
    .unwrap();
    TestDeployment::new(
        &SHOP
            .replace(
                "migrations = \"{repo}/modules/inventory/migrations\"",
                &format!("migrations = {:?}", migrations.display().to_string()),
            )
            .replace("database = \"sqlite\"", database),
    )
}

fn repo_path(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_orders_never_oversell_on_sqlite() {
    no_stock_is_oversold(&fifty_monitors("database = \"sqlite\"")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_orders_never_oversell_on_postgres() {
    let Some(postgres) = common::postgres::Postgres::start() else {
        return;
    };
    let url = postgres.create_database("shop");
    no_stock_is_oversold(&fifty_monitors(&format!(
        "database = {{ postgres = {url:?} }}"
    )))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_migration_stops_only_its_own_module() {
    let migrations = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(repo_path("modules/inventory/migrations")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), migrations.path().join(entry.file_name())).unwrap();
    }
    std::fs::write(
        migrations.path().join("0002_broken.sql"),
        "ALTER TABLE no_such_table ADD COLUMN x BIGINT;",
    )
    .unwrap();
    let deployment = TestDeployment::new(&SHOP.replace(
        "migrations = \"{repo}/modules/inventory/migrations\"",
        &format!("migrations = {:?}", migrations.path().display().to_string()),
    ));
    let host = Modhost::start(&deployment);
    let logged = host.wait_for_log("module not started");
    assert!(logged.contains("0002_broken.sql"), "{logged}");
    assert!(logged.contains("no_such_table"), "{logged}");

    // Inventory does not serve: its requests and calls into it get 503, with the reason.
    let stock = get(&host.url("/inventory/KB-001")).await;
    assert_eq!(stock.status, 503, "{}", stock.text());
    assert_eq!(stock.json()["error"]["code"], "module_unavailable");
    assert!(stock.text().contains("0002_broken.sql"), "{}", stock.text());
    let body = order(r#"[{"sku": "KB-001", "quantity": 1}]"#, GOOD_CARD);
    let placed = send(&client(false), "POST", &host.url("/orders"), Some(&body)).await;
    assert_eq!(placed.status, 503, "{}", placed.text());
    assert_eq!(placed.json()["error"]["code"], "call_unavailable");

    // Every other module serves, and readiness says which one failed and why.
    assert_eq!(get(&host.url("/users/1")).await.status, 200);
    let ready = get(&host.url("/readyz")).await.json();
    assert_eq!(ready["modules"]["inventory"]["status"], "failed", "{ready}");
    assert_eq!(ready["modules"]["users"]["status"], "serving", "{ready}");
}

#[test]
fn a_module_that_imports_sql_without_a_database_is_refused() {
    let deployment = TestDeployment::new(&SHOP.replacen(
        "database = \"sqlite\"\nmigrations = \"{repo}/modules/inventory/migrations\"\n",
        "",
        1,
    ));
    let (code, stderr) = check(&deployment);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("imports modhost:sql/sql@2.0.0 but the module has no database"),
        "{stderr}"
    );
    assert!(stderr.contains("[modules.inventory]"), "{stderr}");
}

/// Payments takes its processor's settings from the deployment (`wasi:config`): the
/// charge limit and currencies it is given, and its credentials from the environment
/// — which appear nowhere the host writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_takes_its_processor_settings_from_the_deployment() {
    const DEFAULT: &str = "config = { currencies = \"EUR,USD,GBP\", charge_limit_cents = 500000, processor_key = { env = \"PAYMENTS_PROCESSOR_KEY\", default = \"sk_test_sandbox\" } }";
    const KEY: &str = "sk_test_e2e-7f3a9c";
    let shop = |config: &str| {
        assert!(
            SHOP.contains(DEFAULT),
            "SHOP configures payments as this test expects"
        );
        TestDeployment::new(&SHOP.replace(DEFAULT, config))
    };
    let one_keyboard = r#"[{"sku": "KB-001", "quantity": 1}]"#;
    let two_keyboards = r#"[{"sku": "KB-001", "quantity": 2}]"#;
    let place = |host: &Modhost, lines: &str| {
        let url = host.url("/orders");
        let body = order(lines, GOOD_CARD);
        async move { send(&client(false), "POST", &url, Some(&body)).await }
    };

    // A lower limit, and the key from the environment.
    let limited = shop(
        "config = { charge_limit_cents = 10000, processor_key = { env = \"PAYMENTS_PROCESSOR_KEY\" } }",
    );
    let host = Modhost::start_with_env(&limited, "run", &[], &[("PAYMENTS_PROCESSOR_KEY", KEY)]);
    let within = place(&host, one_keyboard).await;
    assert_eq!(within.status, 201, "{}", within.text());
    let over = place(&host, two_keyboards).await;
    assert_eq!(over.status, 402, "{}", over.text());
    assert_eq!(over.json()["error"]["reason"], "over_limit");
    let seen = format!(
        "{}\n{}\n{}",
        host.logs().join("\n"),
        get(&host.url("/readyz")).await.text(),
        get(&host.url("/metrics")).await.text()
    );
    assert!(
        !seen.contains(KEY),
        "the processor key is in the host's output"
    );
    drop(host);

    // Currencies the shop does not charge in.
    let dollars = shop("config = { currencies = \"USD\", processor_key = \"sk_test_plain\" }");
    let host = Modhost::start(&dollars);
    let refused = place(&host, one_keyboard).await;
    assert_eq!(refused.status, 422, "{}", refused.text());
    assert!(
        refused.text().contains("is not one of USD"),
        "{}",
        refused.text()
    );
    drop(host);

    // Credentials the test processor refuses: nothing is charged, payments says why.
    let live = shop("config = { processor_key = \"sk_live_not-for-tests\" }");
    let host = Modhost::start(&live);
    let unavailable = place(&host, one_keyboard).await;
    assert_eq!(unavailable.status, 503, "{}", unavailable.text());
    assert_eq!(unavailable.json()["error"]["code"], "payments_unavailable");
    assert!(
        unavailable.text().contains("accepts only test keys"),
        "{}",
        unavailable.text()
    );
}
