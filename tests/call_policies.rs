//! Call policies (`[policies]`) against real `modhost` processes: a circuit breaker
//! that opens on a failing callee and closes after a probe (on one node, and across
//! two with mTLS), retries of idempotent functions only and within their budget, a
//! bulkhead whose queue absorbs a burst and sheds a flood while a neighbouring module
//! keeps serving, a policy timeout, and a frozen node ejected from its module's
//! balance while its sibling takes the calls.

mod common;
use common::cluster::Cluster;
use common::*;

use std::time::{Duration, Instant};

/// The sum of every sample of `metric` whose labels include all of `labels`.
fn sum(metrics: &str, metric: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(&format!("{metric}{{")))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The calls `callee` ran, failed or not, as its node counts them.
async fn callee_calls(node: &Modhost, outcome: &str) -> f64 {
    let metrics = get(&node.url("/metrics")).await.text();
    sum(
        &metrics,
        "modhost_version_outcomes_total",
        &["module=\"callee\"", &format!("outcome=\"{outcome}\"")],
    )
}

const BREAKER: &str = r#"
[policies.callee]
breaker = { failures = 3, open_for = "1s" }
"#;

/// Trips the breaker of `callee` through `caller_node`'s gateway and waits for a probe
/// to close it; `callee_node` runs the callee.
async fn trip_and_recover(caller_node: &Modhost, callee_node: &Modhost) {
    // Three failures in a row open the circuit…
    for _ in 0..3 {
        let reply = get(&caller_node.url("/caller/crash")).await;
        assert_eq!(reply.status, 502, "{}", reply.text());
    }
    assert_eq!(callee_calls(callee_node, "error").await, 3.0);
    // …after which calls fail at once, typed `unavailable`, without reaching the
    // callee — whatever function they call.
    for path in ["/caller/crash", "/caller/reserve?sku=A&quantity=1"] {
        let reply = get(&caller_node.url(path)).await;
        let logged = caller_node.failure_log(&reply, 503);
        assert_eq!(reply.json()["error"]["code"], "call_unavailable");
        assert!(logged.contains("circuit is open"), "{logged}");
    }
    assert_eq!(callee_calls(callee_node, "error").await, 3.0);
    assert_eq!(callee_calls(callee_node, "ok").await, 0.0);
    let metrics = get(&caller_node.url("/metrics")).await.text();
    assert_eq!(
        sum(&metrics, "modhost_breaker_open", &["policy=\"callee\""]),
        1.0
    );

    // After `open_for` one probe goes through; it succeeds, and the circuit closes.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = get(&caller_node.url("/caller/reserve?sku=A&quantity=1")).await;
        if reply.status == 200 {
            break;
        }
        assert_eq!(reply.status, 503, "{}", reply.text());
        assert!(Instant::now() < deadline, "the circuit never closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(callee_calls(callee_node, "ok").await, 1.0, "one probe");
    let metrics = get(&caller_node.url("/metrics")).await.text();
    assert_eq!(
        sum(&metrics, "modhost_breaker_open", &["policy=\"callee\""]),
        0.0
    );
    // Closed: calls reach the callee again.
    let reply = get(&caller_node.url("/caller/crash")).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(callee_calls(callee_node, "error").await, 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_callee_opens_its_circuit_and_a_probe_closes_it() {
    let deployment = TestDeployment::new(&format!("{CALLS}{BREAKER}"));
    let host = Modhost::start(&deployment);
    trip_and_recover(&host, &host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_holds_the_same_when_the_callee_runs_on_another_node() {
    let cluster = Cluster::start(
        &format!("{CALLS}{BREAKER}"),
        &["a", "b"],
        &[("caller", &["a"]), ("callee", &["b"])],
    );
    trip_and_recover(cluster.node("a"), cluster.node("b")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_idempotent_functions_are_retried_and_within_the_budget() {
    let deployment = TestDeployment::new(&format!(
        "{CALLS}
[policies.callee]
retries = {{ attempts = 3, idempotent = [\"flaky\"], backoff = \"1ms\", max_backoff = \"5ms\", budget = 0.1, min_per_second = 1 }}
"
    ));
    let host = Modhost::start(&deployment);

    // `crash` is not idempotent: each request reaches the callee once.
    for _ in 0..10 {
        assert_eq!(get(&host.url("/caller/crash")).await.status, 502);
    }
    assert_eq!(callee_calls(&host, "error").await, 10.0);

    // `flaky` fails half its calls. Without retries the callee would see one call
    // per request; retried within a 10% budget (plus 10 in reserve), it sees at most
    // 1.2 times that. Enough requests that the retries' extra successes (about a
    // twentieth of them) stand five deviations clear of the coin's own spread: with
    // 300 the last assertion failed about once in a hundred runs.
    let requests = 3000;
    let mut succeeded = 0;
    for _ in 0..requests {
        let reply = get(&host.url("/caller/flaky")).await;
        match reply.status {
            200 => succeeded += 1,
            502 => {}
            other => panic!("unexpected {other}: {}", reply.text()),
        }
    }
    let seen = callee_calls(&host, "ok").await + callee_calls(&host, "error").await - 10.0;
    let metrics = get(&host.url("/metrics")).await.text();
    let retried = sum(
        &metrics,
        "modhost_call_retries_total",
        &["policy=\"callee\""],
    );
    let refused = sum(
        &metrics,
        "modhost_call_retry_budget_exhausted_total",
        &["policy=\"callee\""],
    );
    eprintln!(
        "{requests} requests: {succeeded} succeeded, the callee saw {seen} calls \
         ({retried} retries, {refused} not retried: budget spent)"
    );
    assert_eq!(seen, f64::from(requests) + retried);
    assert!(
        seen <= 1.2 * f64::from(requests),
        "{seen} calls for {requests} requests"
    );
    assert!(
        retried >= 10.0,
        "the reserve and the budget were used: {retried}"
    );
    assert!(
        refused > 0.0,
        "the budget ran out with half the calls failing"
    );
    // Retries turned some failures into successes: more than the coin's half.
    assert!(succeeded > requests / 2, "{succeeded} of {requests}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_waits_in_the_bulkhead_queue_and_is_served() {
    let deployment = TestDeployment::new(&format!(
        "{CALLS}
[policies.callee]
bulkhead = {{ concurrency = 2, queue = 16, queue_timeout = \"5s\" }}
"
    ));
    let host = Modhost::start(&deployment);
    let url = host.url("/caller/nap?ms=200");
    let replies = join_all((0..10).map(|_| {
        let url = url.clone();
        async move { get(&url).await }
    }))
    .await;
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let metrics = get(&host.url("/metrics")).await.text();
    let waited = sum(
        &metrics,
        "modhost_bulkhead_wait_seconds_count",
        &["policy=\"callee\""],
    );
    assert!(waited >= 1.0, "some calls waited in the queue: {waited}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_callee_sheds_fast_and_its_neighbour_keeps_serving() {
    let deployment = TestDeployment::new(&format!(
        "{CALLS}
[policies.callee]
bulkhead = {{ concurrency = 2, queue = 2, queue_timeout = \"50ms\" }}

[modules.hello]
component = \"{{hello}}\"
routes = [\"/hello\"]
"
    ));
    let host = Modhost::start(&deployment);
    let period = Duration::from_secs(3);
    let started = Instant::now();

    // 12 clients keep the slow callee saturated…
    let flood = join_all((0..12).map(|_| {
        let url = host.url("/caller/nap?ms=100");
        async move {
            let http = client(false);
            let (mut served, mut shed) = (0u32, 0u32);
            while started.elapsed() < period {
                let reply = send(&http, "GET", &url, None).await;
                match reply.status {
                    200 => served += 1,
                    503 => {
                        assert_eq!(reply.json()["error"]["code"], "call_overloaded");
                        shed += 1;
                    }
                    other => panic!("unexpected {other}: {}", reply.text()),
                }
            }
            (served, shed)
        }
    }));
    // …while another client uses a module next to it.
    let neighbour = tokio::spawn({
        let url = host.url("/hello");
        async move {
            let http = client(false);
            let (mut ok, mut total) = (0u32, 0u32);
            while started.elapsed() < period {
                total += 1;
                if send(&http, "GET", &url, None).await.status == 200 {
                    ok += 1;
                }
            }
            (ok, total)
        }
    });
    let flood = flood.await;
    let (ok, total) = neighbour.await.unwrap();
    let served: u32 = flood.iter().map(|(served, _)| served).sum();
    let shed: u32 = flood.iter().map(|(_, shed)| shed).sum();
    eprintln!("saturated callee: {served} served, {shed} shed; neighbour: {ok}/{total} ok");
    assert!(
        shed > served,
        "the flood is mostly shed: {served} served, {shed} shed"
    );
    assert!(served > 0);
    assert!(total >= 100, "the neighbour was served throughout: {total}");
    assert!(
        f64::from(ok) >= 0.999 * f64::from(total),
        "the neighbour's success: {ok}/{total}"
    );
    let metrics = get(&host.url("/metrics")).await.text();
    assert_eq!(
        sum(
            &metrics,
            "modhost_bulkhead_shed_total",
            &["policy=\"callee\""]
        ),
        f64::from(shed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_timeout_ends_the_call_before_the_callees_own_locally_and_across_nodes() {
    let calls = CALLS.replace(
        "limits = { timeout = \"500ms\", memory = \"16MiB\" }",
        "limits = { timeout = \"4s\", memory = \"16MiB\" }",
    );
    let policy = "\n[policies.\"caller->callee\"]\ntimeout = \"300ms\"\n";
    let single = TestDeployment::new(&format!("{calls}{policy}"));
    let host = Modhost::start(&single);
    let cluster = Cluster::start(
        &format!("{calls}{policy}"),
        &["a", "b"],
        &[("caller", &["a"]), ("callee", &["b"])],
    );
    for (node, remote) in [(&host, false), (cluster.node("a"), true)] {
        let reply = get(&node.url("/caller/nap?ms=2000")).await;
        let logged = node.failure_log(&reply, 504);
        assert_eq!(reply.json()["error"]["code"], "call_timeout");
        // Across nodes the callee's node holds the call to the same deadline, and its
        // answer may come back first: either side ending it is right.
        assert!(
            logged.contains("policy's timeout of 300ms")
                || (remote && logged.contains("did not return within the caller's deadline")),
            "{logged}"
        );
        // A call within the timeout is untouched.
        let reply = get(&node.url("/caller/nap?ms=10")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
}

/// A request for a module on another node meets the module's policy on the way, as its
/// calls do: `caller` runs on a, and b's gateway forwards `/caller/…` there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_request_meets_its_modules_policy_as_its_calls_do() {
    let calls = CALLS.replace(
        "limits = { timeout = \"500ms\", memory = \"16MiB\" }",
        "limits = { timeout = \"4s\", memory = \"16MiB\" }",
    );
    let policy = r#"
[policies.caller]
timeout = "1s"
bulkhead = { concurrency = 1 }
breaker = { failures = 2, open_for = "60s" }
"#;
    let mut cluster = Cluster::start(
        &format!("{calls}{policy}"),
        &["a", "b"],
        &[("caller", &["a"]), ("callee", &["b"])],
    );
    let b = cluster.node("b");

    // The policy's timeout ends a forwarded request that takes longer.
    let reply = get(&b.url("/caller/nap?ms=2000")).await;
    let logged = b.failure_log(&reply, 504);
    assert_eq!(reply.json()["error"]["code"], "gateway_timeout");
    assert!(logged.contains("policy's timeout of 1s"), "{logged}");
    let reply = get(&b.url("/caller/nap?ms=10")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    // The bulkhead takes one at a time, no queue: of five at once, the first is
    // served and the others shed at once with 503 and `Retry-After`.
    let url = b.url("/caller/nap?ms=300");
    let replies = join_all((0..5).map(|_| {
        let url = url.clone();
        async move { get(&url).await }
    }))
    .await;
    let mut shed = 0;
    for reply in &replies {
        match reply.status {
            200 => {}
            503 => {
                assert_eq!(reply.json()["error"]["code"], "module_overloaded");
                assert_eq!(reply.headers["retry-after"], "1");
                shed += 1;
            }
            other => panic!("unexpected {other}: {}", reply.text()),
        }
    }
    assert!((1..5).contains(&shed), "{shed} of 5 shed");
    let metrics = get(&b.url("/metrics")).await.text();
    assert_eq!(
        sum(
            &metrics,
            "modhost_bulkhead_shed_total",
            &["policy=\"caller\""]
        ),
        f64::from(shed)
    );

    // a dies: two forwards fail, and the policy's circuit opens — before the mesh's
    // ejection (three), so the third fails at once on the policy's word.
    cluster.node_mut("a").kill();
    let b = cluster.node("b");
    for _ in 0..2 {
        let reply = get(&b.url("/caller/nap?ms=10")).await;
        let logged = b.failure_log(&reply, 503);
        assert!(logged.contains("cannot be reached"), "{logged}");
    }
    let reply = get(&b.url("/caller/nap?ms=10")).await;
    let logged = b.failure_log(&reply, 503);
    assert_eq!(reply.json()["error"]["code"], "module_unavailable");
    assert!(logged.contains("circuit is open"), "{logged}");
    let metrics = get(&b.url("/metrics")).await.text();
    assert_eq!(
        sum(&metrics, "modhost_breaker_open", &["policy=\"caller\""]),
        1.0
    );
}

/// `metric{module="MODULE",node="NODE"}` on `node`.
async fn endpoint_metric(node: &Modhost, metric: &str, module: &str, of: &str) -> f64 {
    let metrics = get(&node.url("/metrics")).await.text();
    sum(
        &metrics,
        metric,
        &[&format!("module=\"{module}\""), &format!("node=\"{of}\"")],
    )
}

/// `workers` clients each making `each` calls through `node` one after another; how
/// many failed.
async fn load(node: &Modhost, workers: usize, each: usize) -> usize {
    let url = node.url("/caller/nap?ms=5");
    let failed = join_all((0..workers).map(|_| {
        let url = url.clone();
        async move {
            let mut failed = 0;
            for _ in 0..each {
                let reply = get(&url).await;
                if reply.status != 200 {
                    assert_eq!(reply.status, 503, "{}", reply.text());
                    failed += 1;
                }
            }
            failed
        }
    }))
    .await;
    failed.into_iter().sum()
}

/// A module that fails on its nodes — every call runs past its timeout — gets those
/// nodes ejected from its own balance only: a neighbouring module on the same node is
/// still served there through the mesh, and never ejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_module_gets_its_nodes_ejected_for_itself_only() {
    let cluster = Cluster::start(
        &format!("{CALLS}\n[modules.hello]\ncomponent = \"{{hello}}\"\nroutes = [\"/hello\"]\n"),
        &["a", "b", "c"],
        &[
            ("caller", &["a"]),
            ("callee", &["b", "c"]),
            ("hello", &["c"]),
        ],
    );
    let a = cluster.node("a");
    let ejections = |node| endpoint_metric(a, "modhost_mesh_ejections_total", "callee", node);
    // Each call runs past the callee's 500ms timeout, answered `timed out` by its node;
    // three in a row eject that node. Calls go on until both nodes were ejected (a
    // node answers pings, so it comes back after `open_for` and fails again).
    let mut calls = 0;
    while ejections("b").await < 1.0 || ejections("c").await < 1.0 {
        assert!(calls < 40, "not both ejected after {calls} failing calls");
        let reply = get(&a.url("/caller/nap?ms=2000")).await;
        assert!(matches!(reply.status, 503 | 504), "{}", reply.text());
        calls += 1;
    }
    a.wait_for_log_with(&["node ejected from the module's balance", r#""node":"c""#]);
    // hello, on c beside the failing module, is served there through the mesh.
    for _ in 0..5 {
        let reply = get(&a.url("/hello")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    assert_eq!(
        endpoint_metric(a, "modhost_mesh_ejections_total", "hello", "c").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_is_ejected_and_its_sibling_takes_its_calls() {
    let cluster = Cluster::start(
        CALLS,
        &["a", "b", "c"],
        &[("caller", &["a"]), ("callee", &["b", "c"])],
    );
    // Both siblings take calls.
    assert_eq!(load(cluster.node("a"), 2, 20).await, 0);
    let on_b = callee_calls(cluster.node("b"), "ok").await;
    let on_c = callee_calls(cluster.node("c"), "ok").await;
    assert!(on_b > 0.0 && on_c > 0.0, "b {on_b}, c {on_c}");
    assert_eq!(on_b + on_c, 40.0);

    // c freezes (SIGSTOP): its connections stay open and nothing answers on them.
    cluster.node("c").signal("STOP");
    const WORKERS: usize = 4;
    let failed = load(cluster.node("a"), WORKERS, 25).await;
    eprintln!("{failed} of 100 calls failed while c froze");
    // The only calls that fail are those sent to c before it was ejected: the three
    // failures in a row that eject it (the test deployment's `consecutive_failures`),
    // and the calls then in flight to it — fewer than the clients, since the balance
    // sends a call to c only while c holds no more in flight than b.
    assert!(
        failed <= 2 + WORKERS,
        "{failed} failed calls\n{}",
        cluster.logs().join("\n")
    );
    let a = cluster.node("a");
    assert_eq!(
        endpoint_metric(a, "modhost_mesh_ejected", "callee", "c").await,
        1.0
    );
    assert_eq!(
        endpoint_metric(a, "modhost_mesh_ejections_total", "callee", "c").await,
        1.0
    );
    assert_eq!(
        endpoint_metric(a, "modhost_mesh_ejected", "callee", "b").await,
        0.0
    );
    // Ejected, c gets no calls at all (pings in the background find it still frozen):
    // b serves every one.
    let b_before = callee_calls(cluster.node("b"), "ok").await;
    assert_eq!(load(a, WORKERS, 25).await, 0);
    assert_eq!(
        callee_calls(cluster.node("b"), "ok").await - b_before,
        100.0
    );

    // c thaws: a ping finds it back, and it takes calls again.
    cluster.node("c").signal("CONT");
    let deadline = Instant::now() + Duration::from_secs(30);
    while endpoint_metric(cluster.node("a"), "modhost_mesh_ejected", "callee", "c").await != 0.0 {
        assert!(Instant::now() < deadline, "c never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // (The calls c held while frozen are answered as it thaws, to no one; they may
    // still be counted during this load, so it asks for more than they could be.)
    let c_before = callee_calls(cluster.node("c"), "ok").await;
    assert_eq!(load(cluster.node("a"), 2, 40).await, 0);
    let took = callee_calls(cluster.node("c"), "ok").await - c_before;
    assert!(took >= 10.0, "c took {took} of 80 calls after coming back");
    let logs = cluster.logs().join("\n");
    assert!(
        logs.contains("node ejected from the module's balance"),
        "{logs}"
    );
    assert!(logs.contains("node back in the module's balance"), "{logs}");
}

#[test]
fn a_retry_policy_naming_a_function_the_callee_lacks_is_refused_at_load() {
    let deployment = TestDeployment::new(&format!(
        "{CALLS}
[policies.callee]
retries = {{ attempts = 2, idempotent = [\"flaky\", \"refund\"] }}
"
    ));
    let (code, stderr) = check(&deployment);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("policies.\"callee\".retries.idempotent names `refund`, which module `callee` does not export"),
        "{stderr}"
    );
    assert!(
        stderr.contains("modhost-testing:kinds/api#flaky"),
        "{stderr}"
    );
    assert!(!stderr.contains("`flaky`"), "flaky is exported: {stderr}");
}
