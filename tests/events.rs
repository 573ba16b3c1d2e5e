//! Events between modules, end to end, on both buses: the same suite runs on the
//! embedded bus and on a real Kafka-protocol broker (tansu).
//!
//! Three instances of the `eventprobe` test module: `source` publishes `probe.events`
//! (over HTTP, inside its own transactions); `sink` and `audit` subscribe to it, each
//! recording every event its handler sees, in the handler's transaction. What `sink` recorded is then
//! compared with what `source` committed: every committed event exactly once, none
//! that was rolled back, and per key in publication order — also across a kill -9 of
//! the node between commit and send, a crash after send, and a broker outage.

mod common;

use common::kafka::{Broker, Reached};
use common::{client, send, Modhost, Reply, TestDeployment};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;
use std::time::{Duration, Instant};

/// Which bus a test runs on.
enum Bus {
    Embedded,
    Kafka(Broker),
}

impl Bus {
    /// The Kafka bus, or `None` when tansu is not installed (outside CI).
    fn kafka() -> Option<Bus> {
        Broker::start().map(Bus::Kafka)
    }

    fn section(&self) -> String {
        match self {
            Bus::Embedded => "backend = \"embedded\"".to_string(),
            Bus::Kafka(broker) => format!(
                "backend = \"kafka\"\nbrokers = \"{}\"\npartitions = 3",
                broker.address()
            ),
        }
    }
}

/// `modhost events SUBCOMMAND FILE --data-dir DIR ARGS…` on `deployment`.
fn events_command(deployment: &TestDeployment, subcommand: &str, args: &[&str]) -> Output {
    std::process::Command::new(common::modhost_bin())
        .args(["events", subcommand])
        .arg(&deployment.file)
        .arg("--data-dir")
        .arg(deployment.data_dir())
        .args(args)
        .env("MODHOST_LOG", "warn")
        .output()
        .unwrap_or_else(|error| panic!("run modhost events {subcommand}: {error}"))
}

/// A command's `--json` output: one JSON value per line.
fn json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

/// `modhost events replay --module MODULE --event ID… --json` on `deployment`: its
/// lines, or its error output when it fails.
fn replay(deployment: &TestDeployment, module: &str, ids: &[&str]) -> Result<Vec<Value>, String> {
    let mut args = vec!["--module", module, "--json"];
    for id in ids {
        args.extend(["--event", id]);
    }
    let output = events_command(deployment, "replay", &args);
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(json_lines(&output))
}

/// `source` publishes, `sink` receives; `sink` forwards to `source` on request.
fn probes(bus: &Bus, database: &str) -> TestDeployment {
    probes_on(&bus.section(), database)
}

/// [`probes`], with `events` (the bus's keys) opening `[events]`.
fn probes_on(events: &str, database: &str) -> TestDeployment {
    TestDeployment::new(&format!(
        r#"
[app]
name = "probes"

[events]
{events}
max_attempts = 3
backoff = "50ms"
max_backoff = "200ms"
batch = 50

[modules.source]
component = "{{eventprobe}}"
routes = ["/source"]
database = {database}
migrations = "{{repo}}/modules/testing/eventprobe/migrations"
publishes = ["probe.events"]
subscribes = ["probe.forwarded"]

[modules.sink]
component = "{{eventprobe}}"
routes = ["/sink"]
database = {database}
migrations = "{{repo}}/modules/testing/eventprobe/migrations"
publishes = ["probe.forwarded"]
subscribes = ["probe.events"]

[modules.audit]
component = "{{eventprobe}}"
routes = ["/audit"]
database = {database}
migrations = "{{repo}}/modules/testing/eventprobe/migrations"
publishes = ["probe.forwarded"]
subscribes = ["probe.events"]
"#
    ))
}

const SQLITE: &str = "\"sqlite\"";

/// One event to publish: key and payload on `probe.events`.
fn event(key: &str, payload: &str) -> Value {
    json!({ "topic": "probe.events", "key": key, "payload": payload })
}

/// Publishes `events` from `source` in one transaction; returns their ids.
async fn publish(host: &Modhost, events: Vec<Value>) -> Vec<String> {
    publish_with(host, json!({ "events": events }), &[]).await
}

async fn publish_with(host: &Modhost, body: Value, headers: &[(&str, &str)]) -> Vec<String> {
    let reply = post(host, "/source/publish", &body, headers).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|id| id.as_str().expect("id").to_string())
        .collect()
}

async fn post(host: &Modhost, path: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
    let mut request = http::Request::builder()
        .method("POST")
        .uri(host.url(path))
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(60), client(false).request(request))
        .await
        .expect("answer within 60s")
        .expect("answer");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    use http_body_util::BodyExt;
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

/// What a module's handler recorded, in handling order.
async fn effects(host: &Modhost, module: &str) -> Vec<Value> {
    let reply = send(
        &client(false),
        "GET",
        &host.url(&format!("/{module}/effects")),
        None,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["rows"].as_array().cloned().unwrap_or_default()
}

/// Whether `module`'s handler has recorded (committed) an effect of event `id`.
async fn has_effect(host: &Modhost, module: &str, id: &str) -> bool {
    effects(host, module)
        .await
        .iter()
        .any(|effect| effect["event_id"] == id)
}

/// Waits (bounded) until `module` has recorded an effect for every one of `ids`, then
/// returns its effects for those ids.
async fn wait_for(host: &Modhost, module: &str, ids: &[String]) -> Vec<Value> {
    let wanted: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mine: Vec<Value> = effects(host, module)
            .await
            .into_iter()
            .filter(|e| wanted.contains(e["event_id"].as_str().unwrap_or_default()))
            .collect();
        let seen: BTreeSet<&str> = mine.iter().filter_map(|e| e["event_id"].as_str()).collect();
        if seen.len() == wanted.len() {
            return mine;
        }
        assert!(
            Instant::now() < deadline,
            "{module} handled {} of {} events within 90s; log:\n{}",
            seen.len(),
            wanted.len(),
            host.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every published event exactly once in `effects`, and per key in the order of
/// `published` (ids with their keys, in publication order).
fn assert_once_in_order(published: &[(String, String)], effects: &[Value]) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for effect in effects {
        *counts
            .entry(effect["event_id"].as_str().unwrap_or_default())
            .or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "events handled more than once: {twice:?}");
    for (id, _) in published {
        assert_eq!(counts.get(id.as_str()), Some(&1), "event {id} not handled");
    }
    let mut expected: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (id, key) in published {
        expected.entry(key).or_default().push(id);
    }
    let mut handled: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for effect in effects {
        handled
            .entry(effect["key"].as_str().unwrap_or_default())
            .or_default()
            .push(effect["event_id"].as_str().unwrap_or_default());
    }
    for (key, ids) in &expected {
        assert_eq!(
            handled.get(key),
            Some(ids),
            "events of key {key} were handled out of order"
        );
    }
}

/// Publishes `rounds` transactions of `per_round` events over `keys` keys; returns
/// (id, key) in publication order.
async fn publish_rounds(
    host: &Modhost,
    rounds: usize,
    per_round: usize,
    keys: usize,
    tag: &str,
) -> Vec<(String, String)> {
    let mut published = Vec::new();
    for round in 0..rounds {
        let batch: Vec<(String, String)> = (0..per_round)
            .map(|i| {
                let key = format!("{tag}-key-{}", (round * per_round + i) % keys);
                (key, format!("{tag} round {round} event {i}"))
            })
            .collect();
        let ids = publish(host, batch.iter().map(|(k, p)| event(k, p)).collect()).await;
        published.extend(ids.into_iter().zip(batch.into_iter().map(|(k, _)| k)));
    }
    published
}

// ---- the suite ------------------------------------------------------------------

/// Everything that holds on one running node, whichever the bus.
async fn suite(bus: Bus) {
    let deployment = probes(&bus, SQLITE);
    let host = Modhost::start(&deployment);

    // Committed events arrive once each, in order per key, with what was published.
    let published = publish_rounds(&host, 20, 10, 4, "order").await;
    let ids: Vec<String> = published.iter().map(|(id, _)| id.clone()).collect();
    let handled = wait_for(&host, "sink", &ids).await;
    assert_once_in_order(&published, &handled);
    let first = &handled[0];
    assert_eq!(first["topic"], "probe.events");
    assert_eq!(first["source"], "source");
    assert_eq!(first["attempt"], 1);
    assert!(first["payload"]
        .as_str()
        .unwrap()
        .starts_with("order round"));

    // A rolled-back transaction publishes nothing; events published after it arrive.
    let rolled_back = publish_with(
        &host,
        json!({ "events": [event("rb", "never")], "rollback": true }),
        &[],
    )
    .await;
    let marker = publish(&host, vec![event("rb", "after the rollback")]).await;
    wait_for(&host, "sink", &marker).await;
    let all = effects(&host, "sink").await;
    assert!(
        !all.iter().any(|e| e["event_id"] == rolled_back[0].as_str()),
        "a rolled-back event was delivered"
    );

    // Outside a transaction, `publish` commits on its own; headers travel along.
    let alone = publish_with(
        &host,
        json!({ "in_tx": false, "events": [{
            "topic": "probe.events", "key": "alone", "payload": "solo",
            "headers": [["content-type", "text/plain"]]
        }] }),
        &[],
    )
    .await;
    let solo = wait_for(&host, "sink", &alone).await;
    assert_eq!(solo[0]["headers"], r#"[["content-type","text/plain"]]"#);

    // A topic the module has no grant for is refused as a value; so is a host header.
    let denied = post(
        &host,
        "/source/publish",
        &json!({ "events": [{ "topic": "probe.forwarded", "key": "k", "payload": "x" }] }),
        &[],
    )
    .await;
    assert_eq!(denied.status, 422, "{}", denied.text());
    assert_eq!(denied.json()["error"]["code"], "denied");
    let reserved = post(
        &host,
        "/source/publish",
        &json!({ "events": [{ "topic": "probe.events", "key": "k", "payload": "x",
                              "headers": [["modhost-source", "forged"]] }] }),
        &[],
    )
    .await;
    assert_eq!(
        reserved.json()["error"]["code"],
        "invalid",
        "{}",
        reserved.text()
    );

    // Failing handlers: retried with backoff; the effect of a failed attempt is rolled
    // back; an event behind a failing one with the same key waits for it.
    let flaky = publish(
        &host,
        vec![
            event("flaky", "fail-twice"),
            event("flaky", "after fail-twice"),
            event("trapped", "trap-once"),
        ],
    )
    .await;
    let handled = wait_for(&host, "sink", &flaky).await;
    assert_eq!(handled.len(), 3, "{handled:?}");
    assert_eq!(handled[0]["event_id"], flaky[0].as_str());
    assert_eq!(
        handled[0]["attempt"], 3,
        "fail-twice succeeds on its third attempt"
    );
    assert_eq!(handled[1]["event_id"], flaky[1].as_str());
    let trapped = handled
        .iter()
        .find(|e| e["event_id"] == flaky[2].as_str())
        .unwrap();
    assert_eq!(
        trapped["attempt"], 2,
        "trap-once succeeds on its second attempt"
    );

    // A handler that always fails: dead-lettered after max_attempts (3), with the error;
    // delivery goes on behind it.
    let doomed = publish(
        &host,
        vec![
            event("doomed", "fail-always"),
            event("doomed", "behind the doomed one"),
        ],
    )
    .await;
    wait_for(&host, "sink", &doomed[1..]).await;
    assert!(
        !has_effect(&host, "sink", &doomed[0]).await,
        "a failed attempt's effect was kept"
    );
    let letters = dead_letters(&deployment);
    let letter = letters
        .iter()
        .find(|l| l["id"] == doomed[0].as_str() && l["module"] == "sink")
        .unwrap_or_else(|| panic!("no dead letter for {}: {letters:?}", doomed[0]));
    assert!(
        letters
            .iter()
            .any(|l| l["id"] == doomed[0].as_str() && l["module"] == "audit"),
        "every subscriber dead-letters on its own: {letters:?}"
    );
    assert_eq!(letter["topic"], "probe.events");
    assert_eq!(letter["attempts"], 3);
    assert!(
        letter["error"]
            .as_str()
            .unwrap()
            .contains("refused: fail-always"),
        "{letter}"
    );
    assert_eq!(letter["payload"], "fail-always");

    // Once the cause of the failures is fixed, `modhost events replay` sends a dead
    // letter through its module again: handled there once, as a new event, and skipped
    // by the other subscriber, whose inbox still holds it as given up.
    let mark = format!("fixed {}", doomed[0]);
    let stuck = publish(&host, vec![event("stuck", &format!("fail-until:{mark}"))]).await;
    wait_for_dead_letters(&deployment, &stuck[0], 2).await;
    let fix = json!({ "events": [{ "topic": "probe.forwarded", "key": "fix", "payload": mark }] });
    let reply = post(&host, "/sink/publish", &fix, &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let audit_skipped = r#"modhost_events_duplicates_total{module="audit",topic="probe.events"}"#;
    let skipped_before = metric(&host, audit_skipped).await;
    let replayed = replay(&deployment, "sink", &[&stuck[0]]).expect("replay");
    assert_eq!(
        replayed,
        [json!({ "module": "sink", "id": stuck[0], "topic": "probe.events", "outcome": "sent" })]
    );
    let handled = wait_for(&host, "sink", &stuck).await;
    assert_eq!(handled.len(), 1, "{handled:?}");
    assert_eq!(handled[0]["attempt"], 1, "a replayed event starts over");
    assert_eq!(handled[0]["key"], "stuck");
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&host, audit_skipped).await <= skipped_before {
        assert!(
            Instant::now() < deadline,
            "audit never saw the replayed event"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !has_effect(&host, "audit", &stuck[0]).await,
        "the replay reached a module it was not for"
    );
    // Replaying it again sends nothing: the module has handled it since.
    let again = replay(&deployment, "sink", &[&stuck[0]]).expect("replay again");
    assert_eq!(again[0]["outcome"], "already-handled");
    // An id that is no dead letter of the module is refused, and nothing is sent.
    let refused = replay(&deployment, "sink", &[&stuck[0], "no-such-event"])
        .expect_err("an unknown id is refused");
    assert!(refused.contains("no-such-event"), "{refused}");
    // A module that subscribes to nothing has nothing to replay: a usage error.
    let status = events_command(&deployment, "replay", &["--module", "nosuch"]).status;
    assert_eq!(status.code(), Some(2), "{status:?}");

    // A handler publishes in its own transaction: each subscriber forwards the event,
    // and both forwarded events arrive at `source`.
    let forwarded = publish(&host, vec![event("fwd", "forward:probe.forwarded")]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let back: Vec<Value> = effects(&host, "source")
            .await
            .into_iter()
            .filter(|e| e["payload"] == forwarded[0].as_str())
            .collect();
        let sources: BTreeSet<&str> = back.iter().filter_map(|e| e["source"].as_str()).collect();
        if sources == BTreeSet::from(["audit", "sink"]) {
            assert_eq!(back.len(), 2, "{back:?}");
            assert!(back.iter().all(|e| e["topic"] == "probe.forwarded"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the forwarded event did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The trace of the publishing request reaches the handler.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traced = publish_with(
        &host,
        json!({ "events": [event("traced", "traced")] }),
        &[("traceparent", &format!("00-{trace_id}-00f067aa0ba902b7-01"))],
    )
    .await;
    wait_for(&host, "sink", &traced).await;
    let line = host.wait_for_log(&format!("handled {}", traced[0]));
    assert!(
        line.contains(trace_id),
        "the handler's log line lacks the trace id: {line}"
    );

    // Metrics count what happened.
    let metrics = send(&client(false), "GET", &host.url("/metrics"), None)
        .await
        .text();
    for series in [
        r#"modhost_events_published_total{module="source",topic="probe.events"}"#,
        r#"modhost_events_delivered_total{module="sink",topic="probe.events"}"#,
        r#"modhost_events_retried_total{module="sink",topic="probe.events"}"#,
        // `doomed` and `stuck` (before its replay).
        r#"modhost_events_dead_lettered_total{module="sink",topic="probe.events"} 2"#,
        r#"modhost_events_outbox_lag_seconds{module="source"}"#,
    ] {
        assert!(metrics.contains(series), "{series} missing from\n{metrics}");
    }
}

/// Waits (bounded) until event `id` is a dead letter of `count` subscribers.
async fn wait_for_dead_letters(deployment: &TestDeployment, id: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while dead_letters(deployment)
        .iter()
        .filter(|l| l["id"] == id)
        .count()
        < count
    {
        assert!(Instant::now() < deadline, "{id} was not dead-lettered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `modhost events dead-letters --json` on `deployment`.
fn dead_letters(deployment: &TestDeployment) -> Vec<Value> {
    let output = events_command(deployment, "dead-letters", &["--json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    json_lines(&output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_suite_on_the_embedded_bus() {
    suite(Bus::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_suite_on_kafka() {
    let Some(bus) = Bus::kafka() else { return };
    suite(bus).await;
}

// ---- crashes ----------------------------------------------------------------------

/// Kill -9 between commit and send: the node commits events but its relay holds them
/// (fault `relay-stall`) until the node is killed. After a restart every one of them
/// is delivered, once.
async fn killed_between_commit_and_send(bus: Bus) {
    let deployment = probes(&bus, SQLITE);
    let mut host = Modhost::start_with_env(
        &deployment,
        "run",
        &[],
        &[("MODHOST_FAULTS", "relay-stall")],
    );
    let published = publish_rounds(&host, 5, 20, 3, "stalled").await;
    host.wait_for_log("fault relay-stall");
    host.kill();

    let host = Modhost::start(&deployment);
    let ids: Vec<String> = published.iter().map(|(id, _)| id.clone()).collect();
    for subscriber in ["sink", "audit"] {
        let handled = wait_for(&host, subscriber, &ids).await;
        assert_once_in_order(&published, &handled);
    }
}

/// A crash after the bus confirmed events but before they left the outbox: they are
/// sent again after the restart, and the subscriber's inbox skips the copies.
async fn crashed_after_send(bus: Bus) {
    let deployment = probes(&bus, SQLITE);
    let mut crashing = Modhost::start_with_env(
        &deployment,
        "run",
        &[],
        &[("MODHOST_FAULTS", "relay-crash-after-send")],
    );
    if let Bus::Kafka(_) = bus {
        // The crash leaves members in the consumer groups that never say goodbye: the
        // restarted node must take their places back.
        for group in ["probes.sink", "probes.audit"] {
            crashing.wait_for_log_with(&["events: partitions assigned", group]);
        }
    }
    let published = publish_rounds(&crashing, 1, 30, 3, "resent").await;
    crashing.wait(Duration::from_secs(30));

    crashing.wait_for_log("fault relay-crash-after-send");
    // Shown only when the test fails: what the process did before it crashed.
    eprintln!("the crashed process's log:\n{}", crashing.logs().join("\n"));

    let host = Modhost::start(&deployment);
    let ids: Vec<String> = published.iter().map(|(id, _)| id.clone()).collect();
    for subscriber in ["sink", "audit"] {
        let handled = wait_for(&host, subscriber, &ids).await;
        assert_once_in_order(&published, &handled);
    }
    // The copies sent before the crash reached the bus too; the inbox skipped them.
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(
        &host,
        r#"modhost_events_duplicates_total{module="sink",topic="probe.events"}"#,
    )
    .await
        < 1.0
    {
        assert!(Instant::now() < deadline, "no duplicate was ever skipped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of one metric series, 0 when it is not there yet.
async fn metric(host: &Modhost, series: &str) -> f64 {
    let text = send(&client(false), "GET", &host.url("/metrics"), None)
        .await
        .text();
    text.lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

/// `sink`'s own SQL tries the host's tables in its database (`statements`, each of
/// which must be denied): publish by writing its outbox, forget what its inbox
/// remembers, drop or read the host's tables. Events still flow, the first once.
async fn host_tables_out_of_reach(bus: Bus, database: &str, statements: Vec<String>) {
    let deployment = probes(&bus, database);
    let host = Modhost::start(&deployment);
    let real = publish(&host, vec![event("k", "real")]).await;
    wait_for(&host, "sink", &real).await;
    for sql in statements {
        let sql = sql.replace("{id}", &real[0]);
        let reply = post(&host, "/sink/sql", &json!({ "sql": sql }), &[]).await;
        let error = reply.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            error.starts_with("Error::Denied"),
            "{sql}: {}",
            reply.json()
        );
    }
    // Events flow as before, and the first was handled once.
    let again = publish(&host, vec![event("k", "after")]).await;
    let handled = wait_for(&host, "sink", &again).await;
    assert_eq!(handled.len(), 1);
    let all = effects(&host, "sink").await;
    assert_eq!(
        all.iter()
            .filter(|e| e["event_id"] == real[0].as_str())
            .count(),
        1
    );
    assert!(all.iter().all(|e| e["payload"] != "forged"), "{all:?}");
}

/// On SQLite the host's tables sit in the module's file, and its guard keeps the
/// module's SQL from every name starting with `modhost_`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_cannot_touch_its_outbox_or_inbox_on_sqlite() {
    let statements = [
        "INSERT INTO modhost_outbox (id, topic, key, payload, headers, traceparent, \
         published_at, seal) VALUES ('f1', 'probe.events', 'k', CAST('forged' AS BLOB), \
         '[]', NULL, 1, NULL)",
        "DELETE FROM modhost_inbox",
        "UPDATE modhost_outbox_refused SET reason = reason",
        "DROP TABLE modhost_migrations",
        "SELECT * FROM modhost_inbox WHERE id = '{id}'",
    ];
    host_tables_out_of_reach(
        Bus::Embedded,
        SQLITE,
        statements.iter().map(|s| s.to_string()).collect(),
    )
    .await;
}

/// On Postgres the host's tables sit in the host's schema for the module
/// (`modhost_sink`), the administrator's; the module's role may only call the host's
/// functions there, which refuse it without the host's key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_cannot_touch_its_outbox_or_inbox_on_postgres_and_kafka() {
    let Some(bus) = Bus::kafka() else { return };
    let Some(postgres) = common::postgres::Postgres::start() else {
        return;
    };
    let url = postgres.create_database("reach");
    let statements = [
        "INSERT INTO modhost_sink.modhost_outbox (id, topic, key, payload, headers, \
         traceparent, published_at, seal) VALUES ('f1', 'probe.events', 'k', \
         'forged'::bytea, '[]', NULL, 1, NULL)",
        "SELECT modhost_sink.modhost_append_outbox('\\x00'::bytea, 'f2', 'probe.events', \
         'k', 'forged'::bytea, '[]', NULL, 1, NULL)",
        "SELECT modhost_sink.modhost_claim_inbox(sha256('guess'), '[]', 'handled', 1)",
        "DELETE FROM modhost_sink.modhost_inbox",
        "SELECT * FROM modhost_sink.modhost_inbox WHERE id = '{id}'",
        "DROP TABLE modhost_sink.modhost_migrations",
        "ALTER FUNCTION modhost_sink.modhost_append_outbox SECURITY INVOKER",
        "CREATE TABLE modhost_sink.mine (id TEXT)",
    ];
    host_tables_out_of_reach(
        bus,
        &format!("{{ postgres = {url:?} }}"),
        statements.iter().map(|s| s.to_string()).collect(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_commit_and_send_loses_nothing_on_the_embedded_bus() {
    killed_between_commit_and_send(Bus::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_commit_and_send_loses_nothing_on_kafka() {
    let Some(bus) = Bus::kafka() else { return };
    killed_between_commit_and_send(bus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_sent_twice_after_a_crash_are_handled_once_on_the_embedded_bus() {
    crashed_after_send(Bus::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_sent_twice_after_a_crash_are_handled_once_on_kafka() {
    let Some(bus) = Bus::kafka() else { return };
    crashed_after_send(bus).await;
}

/// A single server on the embedded bus becomes a node on a broker (restarted with
/// `[events]` naming Kafka, as when it joins a split deployment): the events its log
/// still owes — published but not handled yet, and dead letters — go to the broker
/// before anything newer, and are handled there once each, in order per key; a dead
/// letter can still be listed and replayed. The next start hands over nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_log_s_undelivered_events_and_dead_letters_move_to_the_broker() {
    let Some(kafka) = Bus::kafka() else { return };
    let deployment = probes(&Bus::Embedded, SQLITE);

    // On the embedded bus: an event both subscribers give up on (dead letters)…
    let host = Modhost::start(&deployment);
    let mark = "fixed after the move";
    let stuck = publish(&host, vec![event("stuck", &format!("fail-until:{mark}"))]).await;
    wait_for_dead_letters(&deployment, &stuck[0], 2).await;
    stop(host);

    // … then events no subscriber handles before the node stops (their deliveries
    // held), every one on the log.
    let host = Modhost::start_with_env(
        &deployment,
        "run",
        &[],
        &[("MODHOST_FAULTS", "delivery-stall")],
    );
    let published = publish_rounds(&host, 4, 10, 3, "owed").await;
    for module in ["sink", "audit"] {
        let lag =
            format!(r#"modhost_events_consumer_lag{{module="{module}",topic="probe.events"}}"#);
        let deadline = Instant::now() + Duration::from_secs(60);
        while metric(&host, &lag).await < published.len() as f64 {
            assert!(
                Instant::now() < deadline,
                "the events never reached the log"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!has_effect(&host, module, &published[0].0).await);
    }
    stop(host);

    // The same node, its data dir kept, on the broker.
    let on_kafka = probes(&kafka, SQLITE);
    std::fs::copy(&on_kafka.file, &deployment.file).expect("the deployment on Kafka");
    let host = Modhost::start(&deployment);
    let handed = host.wait_for_log("handed the embedded log");
    assert!(
        handed.contains(&format!("\"events\":{}", published.len() + 2)),
        "the owed events and both dead letters: {handed}"
    );
    let ids: Vec<String> = published.iter().map(|(id, _)| id.clone()).collect();
    for subscriber in ["sink", "audit"] {
        let handled = wait_for(&host, subscriber, &ids).await;
        assert_once_in_order(&published, &handled);
    }
    let letters = dead_letters(&deployment);
    for module in ["sink", "audit"] {
        assert!(
            letters
                .iter()
                .any(|l| l["id"] == stuck[0].as_str() && l["module"] == module),
            "{module}'s dead letter on the broker: {letters:?}"
        );
    }
    // The cause fixed, the dead letter is replayed from the broker.
    let fix = json!({ "events": [{ "topic": "probe.forwarded", "key": "fix", "payload": mark }] });
    let reply = post(&host, "/sink/publish", &fix, &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let replayed = replay(&deployment, "sink", &[&stuck[0]]).expect("replay");
    assert_eq!(replayed[0]["outcome"], "sent", "{replayed:?}");
    assert_eq!(wait_for(&host, "sink", &stuck).await.len(), 1);
    stop(host);

    // Handed over once: the next start sends nothing again.
    let host = Modhost::start(&deployment);
    host.wait_for_log("events: bus ready");
    let logs = host.logs().join("\n");
    assert!(!logs.contains("handed the embedded log"), "{logs}");
    for subscriber in ["sink", "audit"] {
        let handled = effects(&host, subscriber).await;
        let owed: Vec<Value> = handled
            .into_iter()
            .filter(|e| ids.contains(&e["event_id"].as_str().unwrap_or_default().to_string()))
            .collect();
        assert_once_in_order(&published, &owed);
    }
}

/// Stops `host` as an operator does (SIGTERM), and waits until it has.
fn stop(mut host: Modhost) {
    host.signal("TERM");
    let status = host.wait(Duration::from_secs(30));
    assert!(status.success(), "{status:?}\n{}", host.logs().join("\n"));
}

/// The broker is stopped for 10 s under a steady publish load (its connections closed,
/// its process stopped), then resumes: every committed event arrives, none twice, per
/// key in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_under_load_loses_nothing_and_keeps_order() {
    let Some(bus) = Bus::kafka() else { return };
    let deployment = probes(&bus, SQLITE);
    let host = Modhost::start(&deployment);
    let Bus::Kafka(broker) = bus else {
        unreachable!()
    };

    // The outage runs beside the load: 4 s in, the broker is stopped for 10 s.
    let outage = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_secs(4));
        broker.stop();
        std::thread::sleep(Duration::from_secs(10));
        broker.resume();
        broker
    });
    let mut published = Vec::new();
    let mut round = 0;
    let mut lag_during_outage: f64 = 0.0;
    let mut after_outage: Option<Instant> = None;
    let lag = r#"modhost_events_outbox_lag_seconds{module="source"}"#;
    // Publish until 4 s after the broker is back.
    while after_outage.is_none_or(|back| back.elapsed() < Duration::from_secs(4)) {
        if after_outage.is_none() {
            if outage.is_finished() {
                after_outage = Some(Instant::now());
            } else {
                // Events wait in the outbox meanwhile, and the metric says so.
                lag_during_outage = lag_during_outage.max(metric(&host, lag).await);
            }
        }
        let batch: Vec<(String, String)> = (0..5)
            .map(|i| {
                (
                    format!("outage-key-{}", (round * 5 + i) % 7),
                    format!("outage {round}.{i}"),
                )
            })
            .collect();
        let ids = publish(&host, batch.iter().map(|(k, p)| event(k, p)).collect()).await;
        published.extend(ids.into_iter().zip(batch.into_iter().map(|(k, _)| k)));
        round += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _broker = outage.await.expect("the outage thread");
    assert!(
        lag_during_outage >= 5.0,
        "the outbox lag during the outage was {lag_during_outage}s"
    );
    let ids: Vec<String> = published.iter().map(|(id, _)| id.clone()).collect();
    let handled = wait_for(&host, "sink", &ids).await;
    assert_once_in_order(&published, &handled);
    assert!(
        published.len() > 500,
        "only {} events published",
        published.len()
    );
    // Once everything is through, the outbox is empty again.
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&host, lag).await > 0.0 {
        assert!(Instant::now() < deadline, "the outbox did not drain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The outbox and inbox work the same in a module's Postgres schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_flow_between_modules_on_postgres() {
    let Some(postgres) = common::postgres::Postgres::start() else {
        return;
    };
    let url = postgres.create_database("probes");
    let deployment = probes(&Bus::Embedded, &format!("{{ postgres = {url:?} }}"));
    let host = Modhost::start(&deployment);
    let published = publish_rounds(&host, 10, 10, 3, "pg").await;
    let flaky = publish(&host, vec![event("pg-flaky", "fail-twice")]).await;
    let ids: Vec<String> = published.iter().map(|(id, _)| id.clone()).collect();
    let handled = wait_for(&host, "sink", &ids).await;
    assert_once_in_order(&published, &handled);
    let retried = wait_for(&host, "sink", &flaky).await;
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0]["attempt"], 3);
}

/// An operator moves two modules from SQLite to Postgres by writing their `database`
/// and restarting the node. At its start the node carries each one's SQLite file over
/// before the module serves: its rows, the events still waiting in its outbox (sent
/// from Postgres now, once each, in order) and its inbox (nothing handled twice), each
/// table checked, the file kept aside; seed rows its migrations made on Postgres give
/// way to the file's. The next start carries nothing. A SQLite file put back beside a
/// schema that holds the module's data is left alone: the module serves its schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_s_sqlite_data_and_events_are_carried_to_postgres_when_its_database_changes() {
    let Some(postgres) = common::postgres::Postgres::start() else {
        return;
    };
    let url = postgres.create_database("carried");
    let deployment = probes(&Bus::Embedded, SQLITE);
    let databases = deployment.data_dir().join("databases");
    // source has a table of every kind of value too, one referring to another, and a
    // serial column (a plain one on SQLite, which writes its values).
    let migrations = deployment.dir.path().join("source-migrations");
    common::copy_dir(
        &common::workspace().join("modules/testing/eventprobe/migrations"),
        &migrations,
    );
    std::fs::write(
        migrations.join("0002_kinds.sql"),
        "CREATE TABLE kinds (k TEXT PRIMARY KEY, n BIGSERIAL UNIQUE, ratio DOUBLE PRECISION, \
         flag BOOLEAN, data BYTEA, note TEXT, at TIMESTAMP);\n\
         CREATE TABLE kind_notes (k TEXT NOT NULL REFERENCES Kinds (k), note TEXT NOT NULL);\n\
         INSERT INTO kinds (k, n) VALUES ('seed', 100);\n\
         CREATE TABLE \"odd \"\"name\"\"\" (\"rowid\" TEXT NOT NULL, \"_rowid_\" TEXT, note TEXT);\n",
    )
    .unwrap();
    let text = std::fs::read_to_string(&deployment.file).unwrap();
    let probe = common::workspace().join("modules/testing/eventprobe/migrations");
    let text = text.replacen(
        &format!("{:?}", probe.display().to_string()),
        &format!("{:?}", migrations.display().to_string()),
        1,
    );
    std::fs::write(&deployment.file, &text).unwrap();
    assert!(text.contains("source-migrations"), "{text}");

    // Events handled on SQLite: in sink's and audit's effects and inboxes.
    let host = Modhost::start(&deployment);
    for statement in [
        "INSERT INTO kinds (k, n, ratio, flag, data, note, at) VALUES \
         ('a', 1, 0.1, 1, X'00ff', NULL, '2026-01-02 03:04:05'), \
         ('b', 7, -2.5e-7, 0, X'', 'x', NULL), ('c', 3, 1e300, NULL, NULL, 'é', NULL)",
        "UPDATE kinds SET note = 'changed' WHERE k = 'seed'",
        // SQLite keeps a text in a BOOLEAN column; Postgres takes none.
        "INSERT INTO kinds (k, n, flag) VALUES ('bad', 50, 'maybe')",
        "INSERT INTO kind_notes (k, note) VALUES ('a', 'first'), ('c', 'third')",
        // Names a hostile module's migrations may give, and values that read as SQL:
        // the carry quotes the one and binds the other, and pages by a rowid no
        // column hides.
        "INSERT INTO \"odd \"\"name\"\"\" (\"rowid\", \"_rowid_\", note) VALUES \
         ('r1', 'x', '''); DROP TABLE kinds; --'), ('r1', NULL, 'twice')",
    ] {
        let reply = post(&host, "/source/sql", &json!({ "sql": statement }), &[]).await;
        assert!(
            reply.json()["changed"].as_u64().is_some_and(|n| n > 0),
            "{}",
            reply.text()
        );
    }
    let mut published = publish_rounds(&host, 4, 10, 3, "handled").await;
    let ids: Vec<String> = published.iter().map(|(id, _)| id.clone()).collect();
    for subscriber in ["sink", "audit"] {
        wait_for(&host, subscriber, &ids).await;
    }
    stop(host);
    // Events committed but never sent: in source's outbox.
    let mut stalled = Modhost::start_with_env(
        &deployment,
        "run",
        &[],
        &[("MODHOST_FAULTS", "relay-stall")],
    );
    published.extend(publish_rounds(&stalled, 3, 10, 3, "waiting").await);
    stalled.wait_for_log("fault relay-stall");
    stalled.kill();

    // source and sink move to Postgres; audit stays on its SQLite file.
    let text = std::fs::read_to_string(&deployment.file).unwrap();
    let on_postgres = text.replacen(
        "database = \"sqlite\"",
        &format!("database = {{ postgres = {url:?} }}"),
        2,
    );
    assert_eq!(
        on_postgres.matches("postgres =").count(),
        2,
        "{on_postgres}"
    );
    std::fs::write(&deployment.file, on_postgres).unwrap();
    let carried = |host: &Modhost, module: &str| {
        host.wait_for_log_with(&[
            "the module's SQLite data is carried over to postgres",
            &format!("\"module\":\"{module}\""),
        ])
    };
    // source's file holds a value its Postgres column cannot: nothing of it is kept,
    // it does not start (503, the reason said); sink is carried and serves.
    let host = Modhost::start(&deployment);
    let sink = carried(&host, "sink");
    let failed = host.wait_for_log_with(&["module not started", "\"module\":\"source\""]);
    assert!(
        failed.contains("invalid input syntax for type boolean"),
        "{failed}"
    );
    let reply = send(&client(false), "GET", &host.url("/source/published"), None).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(effects(&host, "sink").await.len(), 40);
    stop(host);
    // Mended in the file, the carry is tried again at the next start, and made.
    {
        use sqlx::Connection;
        let options =
            sqlx::sqlite::SqliteConnectOptions::new().filename(databases.join("source.sqlite"));
        let mut file = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        sqlx::query("UPDATE kinds SET flag = NULL WHERE k = 'bad'")
            .execute(&mut file)
            .await
            .unwrap();
        file.close().await.unwrap();
    }
    let host = Modhost::start(&deployment);
    let source = carried(&host, "source");
    for (line, table, rows) in [
        (&source, "published", 70),
        (&source, "modhost_outbox", 30),
        (&source, "kinds", 5),
        (&source, "kind_notes", 2),
        (&sink, "effects", 40),
        (&sink, "modhost_inbox", 40),
    ] {
        assert!(
            line.contains(&format!(r#"\"{table}\": {rows}"#)),
            "{table}: {line}"
        );
    }
    // Every event once, in order: those handled before, and those the outbox held,
    // sent now from source's Postgres outbox to sink (Postgres) and audit (SQLite).
    let ids: Vec<String> = published.iter().map(|(id, _)| id.clone()).collect();
    for subscriber in ["sink", "audit"] {
        let handled = wait_for(&host, subscriber, &ids).await;
        assert_once_in_order(&published, &handled);
    }
    let reply = send(&client(false), "GET", &host.url("/source/published"), None).await;
    assert_eq!(reply.json()["rows"].as_array().map(Vec::len), Some(70));
    // The seed row its migration made on Postgres gave way to the file's (changed)
    // one; the serial column's sequence went past the values carried (100): a row
    // that takes the next one does not collide with them.
    let statement = "INSERT INTO kinds (k) VALUES ('d')";
    let reply = post(&host, "/source/sql", &json!({ "sql": statement }), &[]).await;
    assert_eq!(reply.json()["changed"], 1, "{}", reply.text());
    // Both rows of the oddly named table are there, their text kept as text.
    let statement = "UPDATE \"odd \"\"name\"\"\" SET note = note WHERE \"rowid\" = 'r1' \
                     AND note IN ('''); DROP TABLE kinds; --', 'twice')";
    let reply = post(&host, "/source/sql", &json!({ "sql": statement }), &[]).await;
    assert_eq!(reply.json()["changed"], 2, "{}", reply.text());
    for module in ["source", "sink"] {
        assert!(!databases.join(format!("{module}.sqlite")).exists());
        assert!(databases
            .join(format!("{module}.sqlite.carried-to-postgres"))
            .exists());
    }
    assert!(databases.join("audit.sqlite").exists());
    stop(host);

    // The next start carries nothing, and nothing is handled twice.
    let host = Modhost::start(&deployment);
    let more = publish_rounds(&host, 1, 5, 1, "after").await;
    let after: Vec<String> = more.iter().map(|(id, _)| id.clone()).collect();
    wait_for(&host, "sink", &after).await;
    published.extend(more);
    let ids: Vec<String> = published.iter().map(|(id, _)| id.clone()).collect();
    let handled = wait_for(&host, "sink", &ids).await;
    assert_once_in_order(&published, &handled);
    assert_eq!(effects(&host, "sink").await.len(), published.len());
    assert!(!host
        .logs()
        .iter()
        .any(|line| line.contains("carried over to postgres")));
    stop(host);

    // A SQLite file back beside sink's schema, which holds its rows (a backup put
    // there by hand, say): the schema is the module's data; the file is left alone.
    let stray = databases.join("sink.sqlite");
    std::fs::copy(databases.join("audit.sqlite"), &stray).unwrap();
    let bytes = std::fs::read(&stray).unwrap();
    let host = Modhost::start(&deployment);
    host.wait_for_log_with(&[
        "its SQLite file is left as it was, unused",
        "\"module\":\"sink\"",
    ]);
    assert_eq!(effects(&host, "sink").await.len(), published.len());
    let last = publish(&host, vec![event("stray", "after the file came back")]).await;
    wait_for(&host, "audit", &last).await;
    wait_for(&host, "sink", &last).await;
    assert_eq!(
        std::fs::read(&stray).unwrap(),
        bytes,
        "the stray file is left as it was"
    );
    assert_eq!(
        send(&client(false), "GET", &host.url("/source/published"), None)
            .await
            .json()["rows"]
            .as_array()
            .map(Vec::len),
        Some(76)
    );
}

/// Events reach a broker as a managed Kafka service is reached: over TLS, verified
/// against the deployment's CA for the name the broker is reached by. A node that
/// would connect in clear, or trust another CA, or log in with credentials the broker
/// refuses (SCRAM-SHA-512, the password read from the environment) does not reach the
/// bus: it logs why — never the password — and the events its modules commit wait in
/// their outboxes. (A login the broker accepts cannot be tested with tansu 0.6.0:
/// `common::kafka` says why.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_a_broker_over_tls_and_wrong_settings_are_refused() {
    let Some(broker) = Broker::start_with(Reached {
        tls: true,
        login: false,
    }) else {
        return;
    };
    let ca = broker.ca().display().to_string();
    let on = |broker: &Broker, security: &str| {
        format!(
            "backend = \"kafka\"\nbrokers = \"{}\"\npartitions = 3\n{security}",
            broker.address()
        )
    };
    let deployment = probes_on(&on(&broker, &format!("tls = {{ ca = {ca:?} }}")), SQLITE);
    let host = Modhost::start(&deployment);
    let published = publish_rounds(&host, 2, 5, 2, "tls").await;
    let ids: Vec<String> = published.iter().map(|(id, _)| id.clone()).collect();
    let handled = wait_for(&host, "sink", &ids).await;
    assert_once_in_order(&published, &handled);
    drop(host);

    let other_ca = deployment.dir.path().join("other-ca.pem");
    common::tls::TestCa::new("another CA").write(&other_ca);
    let other_ca = other_ca.display().to_string();
    let requiring_login = Broker::start_with(Reached {
        tls: true,
        login: true,
    })
    .expect("a second broker");
    let secret = "a-secret-from-the-environment";
    let password = [("MODHOST_TEST_KAFKA_PASSWORD", secret)];
    let scram = "sasl = { mechanism = \"SCRAM-SHA-512\", username = \"shop\", \
                 password = \"$MODHOST_TEST_KAFKA_PASSWORD\" }";
    for (events, why) in [
        // In clear, to a broker that speaks TLS only: it hangs up on the first request.
        (on(&broker, ""), "in state APIVERSION_QUERY"),
        (
            on(&broker, &format!("tls = {{ ca = {other_ca:?} }}")),
            "certificate verify failed",
        ),
        (
            on(
                &requiring_login,
                &format!("tls = {{ ca = {:?} }}\n{scram}", requiring_login.ca()),
            ),
            "SASL SCRAM authentication failed",
        ),
    ] {
        let deployment = probes_on(&events, SQLITE);
        let host = Modhost::start_with_env(&deployment, "run", &[], &password);
        host.wait_for_log_with(&[why]);
        assert!(
            !host.logs().iter().any(|line| line.contains(secret)),
            "the password reached the log"
        );
        // What its modules commit meanwhile waits in their outboxes.
        let ids = publish(&host, vec![event("waiting", "for the bus")]).await;
        assert_eq!(ids.len(), 1, "{events}");
        assert!(
            effects(&host, "sink").await.is_empty(),
            "{events}: an event arrived without the bus"
        );
    }
}
