//! The example shop served by a real `modhost` process: users and catalog as JSON APIs.

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_api_lists_gets_creates_and_validates() {
    let deployment = TestDeployment::new(SHOP);
    let host = Modhost::start(&deployment);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_api_filters_gets_creates_and_validates() {
    let deployment = TestDeployment::new(SHOP);
    let host = Modhost::start(&deployment);
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
