//! Typed calls between modules, end to end: a `caller` module (HTTP) calls a `callee`
//! module through the `modhost-testing:kinds` contract in a real `modhost` process.

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_value_crosses_a_call_unchanged() {
    let deployment = TestDeployment::new(CALLS);
    let host = Modhost::start(&deployment);
    let reply = get(&host.url("/caller/echo")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["identical"], true);
    // Spot-check that the echo really carried the values (not defaults).
    let echo = body["echo"].as_str().unwrap();
    assert!(
        echo.contains("ünïcødé ✓") && echo.contains("'€'") && echo.contains("Blue"),
        "{echo}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_errors_cross_as_values() {
    let deployment = TestDeployment::new(CALLS);
    let host = Modhost::start(&deployment);
    let ok = get(&host.url("/caller/reserve?sku=KB-001&quantity=3")).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["reserved"], 3);

    let out = get(&host.url("/caller/reserve?sku=KB-001&quantity=11")).await;
    assert_eq!(out.status, 409);
    assert_eq!(out.json()["error"]["code"], "out_of_stock");

    let unknown = get(&host.url("/caller/reserve?sku=&quantity=1")).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"]["code"], "unknown_sku");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_callee_fails_the_callers_request_not_the_host() {
    let deployment = TestDeployment::new(CALLS);
    let host = Modhost::start(&deployment);
    let reply = get(&host.url("/caller/crash")).await;
    let logged = host.failure_log(&reply, 502);
    assert_eq!(reply.json()["error"]["code"], "call_failed");
    assert!(
        logged.contains("caller → callee.modhost-testing:kinds/api@1.0.0#crash"),
        "{logged}"
    );
    // The callee's panic message is logged inside the call's span: trace context
    // crossed the call.
    let panic_line = host.wait_for_log("callee: deliberate trap");
    let event: serde_json::Value = serde_json::from_str(&panic_line).unwrap();
    assert_eq!(event["span"]["name"], "call", "{event}");
    assert_eq!(event["span"]["caller"], "caller", "{event}");
    assert_eq!(event["span"]["callee"], "callee", "{event}");
    assert_eq!(
        event["span"]["function"], "modhost-testing:kinds/api@1.0.0#crash",
        "{event}"
    );
    // Both modules keep serving.
    assert_eq!(
        get(&host.url("/caller/reserve?sku=A-1&quantity=1"))
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callee_past_its_deadline_fails_the_call_with_a_timeout() {
    let deployment = TestDeployment::new(CALLS);
    let host = Modhost::start(&deployment);
    let reply = get(&host.url("/caller/spin")).await;
    let logged = host.failure_log(&reply, 504);
    assert_eq!(reply.json()["error"]["code"], "call_timeout");
    assert!(
        logged.contains("did not return within its timeout of 500ms"),
        "{logged}"
    );
    assert_eq!(
        get(&host.url("/caller/reserve?sku=A-1&quantity=1"))
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_may_call_each_other_in_a_cycle_but_runaway_recursion_stops() {
    let deployment = TestDeployment::new(CALLS);
    let host = Modhost::start(&deployment);
    let cycle = get(&host.url("/caller/bounce?n=9")).await;
    assert_eq!(cycle.status, 200, "{}", cycle.text());
    assert_eq!(cycle.json()["hops"], 9);

    let runaway = get(&host.url("/caller/bounce?n=100000")).await;
    let logged = host.failure_log(&runaway, 500);
    assert_eq!(runaway.json()["error"]["code"], "call_depth_exceeded");
    assert!(
        logged.contains("call depth limit of 32 exceeded"),
        "{logged:.2000}"
    );
    assert_eq!(get(&host.url("/caller/bounce?n=3")).await.json()["hops"], 3);
}

#[test]
fn an_ungranted_call_is_refused_at_load_naming_both_modules() {
    let deployment = TestDeployment::new(&CALLS.replace("calls = [\"callee\"]\n", ""));
    let (code, stderr) = check(&deployment);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("module `caller`: imports modhost-testing:kinds/api@1.0.0 from module `callee` without a grant"),
        "{stderr}"
    );
    assert!(stderr.contains("modules.caller.calls"), "{stderr}");
}

#[test]
fn an_import_of_no_deployed_module_is_refused() {
    let deployment = TestDeployment::new(
        "[app]\nname = \"x\"\n[modules.caller]\ncomponent = \"{caller}\"\nroutes = [\"/caller\"]\n",
    );
    let (code, stderr) = check(&deployment);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr
            .contains("imports modhost-testing:kinds/api@1.0.0, which no deployed module exports"),
        "{stderr}"
    );
}

#[test]
fn a_changed_signature_is_refused_with_both_signatures() {
    // An importer expecting `reserve: func(item: string) -> u32` of the contract.
    let dir = tempfile::tempdir().unwrap();
    let importer = dir.path().join("stale.wasm");
    let wasm = wat::parse_str(
        r#"(component
            (import "modhost-testing:kinds/api@1.0.0" (instance
                (export "reserve" (func (param "item" string) (result u32)))))
        )"#,
    )
    .unwrap();
    std::fs::write(&importer, wasm).unwrap();
    let deployment = TestDeployment::new(&format!(
        "[app]\nname = \"x\"\n[modules.stale]\ncomponent = {:?}\ncalls = [\"callee\"]\n\
         [modules.callee]\ncomponent = \"{{callee}}\"\n",
        importer.display().to_string()
    ));
    let (code, stderr) = check(&deployment);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("module `stale`: imports modhost-testing:kinds/api@1.0.0#reserve"),
        "{stderr}"
    );
    assert!(
        stderr.contains("stale expects: func(item: string) -> u32"),
        "{stderr}"
    );
    assert!(
        stderr.contains("callee exports: func(item: record { sku: string, quantity: u32 }) -> result<u32, variant { out-of-stock(u32), unknown-sku }>"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_callee_forgets_and_a_reused_one_remembers_until_it_fails() {
    let fresh = TestDeployment::new(CALLS);
    let host = Modhost::start(&fresh);
    for _ in 0..3 {
        assert_eq!(get(&host.url("/caller/served")).await.json()["served"], 1);
    }
    drop(host);

    let reuse = TestDeployment::new(&CALLS.replace(
        "limits = { timeout = \"500ms\", memory = \"16MiB\" }",
        "limits = { timeout = \"500ms\", memory = \"16MiB\" }\ninstances = \"reuse\"",
    ));
    let host = Modhost::start(&reuse);
    // One request at a time: the same warm instance serves every call.
    for expected in 1..=3 {
        let reply = get(&host.url("/caller/served")).await;
        assert_eq!(reply.json()["served"], expected, "{}", reply.text());
    }
    // Every kind of value still crosses unchanged through a reused instance.
    let echo = get(&host.url("/caller/echo")).await;
    assert_eq!(echo.status, 200, "{}", echo.text());
    assert_eq!(get(&host.url("/caller/served")).await.json()["served"], 4);

    // A trap discards the instance it happened in; the next call starts afresh.
    host.failure_log(&get(&host.url("/caller/crash")).await, 502);
    assert_eq!(get(&host.url("/caller/served")).await.json()["served"], 1);
    // So does a timeout.
    host.failure_log(&get(&host.url("/caller/spin")).await, 504);
    assert_eq!(get(&host.url("/caller/served")).await.json()["served"], 1);
    assert_eq!(get(&host.url("/caller/served")).await.json()["served"], 2);

    // Concurrent calls each get an instance of their own, never one in use.
    let url = host.url("/caller/echo");
    let replies = join_all((0..16).map(|_| {
        let url = url.clone();
        async move { get(&url).await }
    }))
    .await;
    assert!(replies.iter().all(|reply| reply.status == 200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_counted_and_timed_per_edge() {
    let deployment = TestDeployment::new(CALLS);
    let host = Modhost::start(&deployment);
    for _ in 0..3 {
        get(&host.url("/caller/reserve?sku=A-1&quantity=1")).await;
    }
    host.failure_log(&get(&host.url("/caller/crash")).await, 502);
    let metrics = get(&host.url("/metrics")).await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = metrics.text();
    let edge = r#"caller="caller",callee="callee""#;
    for expected in [
        format!(
            r#"modhost_calls_total{{{edge},function="modhost-testing:kinds/api@1.0.0#reserve",path="local",outcome="ok"}} 3"#
        ),
        format!(
            r#"modhost_calls_total{{{edge},function="modhost-testing:kinds/api@1.0.0#crash",path="local",outcome="error"}} 1"#
        ),
        format!(r#"modhost_call_duration_seconds_count{{{edge},path="local"}} 4"#),
        r#"modhost_http_requests_total{module="caller",status="200"} 3"#.to_string(),
        r#"modhost_http_requests_total{module="caller",status="502"} 1"#.to_string(),
    ] {
        assert!(text.contains(&expected), "{expected} missing from:\n{text}");
    }
}
