//! A module extracted into a node of its own with its data, while it takes writes
//! (`modhost extract`): no request fails beyond waiting, every row written before and
//! during the move is on the new node once, the old node serves it no more, and it
//! comes back the same way. An extraction that fails leaves it serving where it was.

mod common;

use common::cluster::Cluster;
use common::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "test-admin-token-0123456789";

/// `users` (its SQLite file, its migrations) on node a; b runs nothing at first.
fn cluster() -> Cluster {
    let toml = format!(
        "[app]\nname = \"extract\"\n\n\
         [modules.users]\ncomponent = \"{{users}}\"\nroutes = [\"/users\"]\ndatabase = \"sqlite\"\n\
         migrations = \"{{repo}}/modules/users/migrations\"\n\n\
         [admin]\ntoken = \"{TOKEN}\"\n"
    );
    Cluster::start(&toml, &["a", "b"], &[("users", &["a"])])
}

/// `modhost extract MODULE ARGS…` against `from`'s admin API: exit code, the JSON it
/// printed (stdout on success, stderr otherwise), stderr.
fn extract_with(
    module: &str,
    from: &Modhost,
    args: &[&str],
) -> (Option<i32>, serde_json::Value, String) {
    let admin = format!("http://{}", from.admin.expect("an admin listener"));
    extract_at(&admin, module, args)
}

/// `modhost extract MODULE ARGS…` against the admin API at `admin`.
fn extract_at(
    admin: &str,
    module: &str,
    args: &[&str],
) -> (Option<i32>, serde_json::Value, String) {
    let output = std::process::Command::new(modhost_bin())
        .args(["extract", module])
        .args(args)
        .args(["--admin", admin, "--token", TOKEN])
        .output()
        .expect("run modhost extract");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let printed = if output.status.success() {
        output.stdout.clone()
    } else {
        stderr
            .lines()
            .take_while(|line| !line.starts_with("modhost:"))
            .collect::<Vec<_>>()
            .join("\n")
            .into_bytes()
    };
    let json = serde_json::from_slice(&printed).unwrap_or(serde_json::Value::Null);
    (output.status.code(), json, stderr)
}

/// `modhost extract MODULE --to TO` against `from`'s admin API.
fn extract_module(
    module: &str,
    from: &Modhost,
    to: &str,
) -> (Option<i32>, serde_json::Value, String) {
    extract_with(module, from, &["--to", to])
}

/// `modhost extract users --to TO` against `from`'s admin API.
fn extract(from: &Modhost, to: &str) -> (Option<i32>, serde_json::Value, String) {
    extract_module("users", from, to)
}

/// The modules `node` serves, as its `/readyz` lists them.
async fn serving(node: &Modhost) -> Vec<String> {
    let ready = get(&node.url("/readyz")).await.json();
    ready["modules"]
        .as_object()
        .map(|modules| modules.keys().cloned().collect())
        .unwrap_or_default()
}

/// How many users `node`'s gateway lists.
async fn total(node: &Modhost) -> u64 {
    let reply = get(&node.url("/users?limit=1")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["total"].as_u64().expect("a total")
}

/// Writers creating users through both gateways, and readers.
#[derive(Default)]
struct Load {
    stop: AtomicBool,
    sent: AtomicU64,
    created: Mutex<Vec<(i64, String)>>,
    failures: Mutex<Vec<String>>,
    slowest: Mutex<Duration>,
}

impl Load {
    /// Three writers through `a`'s gateway, one through `b`'s.
    fn start(a: &Modhost, b: &Modhost, tag: &str) -> (Arc<Load>, Vec<tokio::task::JoinHandle<()>>) {
        let gateways = vec![
            a.url("/users"),
            a.url("/users"),
            a.url("/users"),
            b.url("/users"),
        ];
        Load::start_at(gateways, tag)
    }

    /// A writer per URL in `gateways`.
    fn start_at(gateways: Vec<String>, tag: &str) -> (Arc<Load>, Vec<tokio::task::JoinHandle<()>>) {
        let load = Arc::new(Load::default());
        let mut clients = Vec::new();
        for (client_no, url) in gateways.into_iter().enumerate() {
            let load = load.clone();
            let tag = tag.to_string();
            clients.push(tokio::spawn(async move {
                let http = client(false);
                let mut n = 0u64;
                while !load.stop.load(Ordering::Relaxed) {
                    n += 1;
                    let email = format!("{tag}-{client_no}-{n}@example.com");
                    let body = serde_json::json!({ "name": format!("Writer {n}"), "email": email })
                        .to_string();
                    let started = Instant::now();
                    let reply = send(&http, "POST", &url, Some(&body)).await;
                    let took = started.elapsed();
                    {
                        let mut slowest = load.slowest.lock().unwrap();
                        *slowest = (*slowest).max(took);
                    }
                    load.sent.fetch_add(1, Ordering::Relaxed);
                    if reply.status == 201 {
                        let id = reply.json()["id"].as_i64().expect("the new user's id");
                        load.created.lock().unwrap().push((id, email));
                    } else {
                        load.failures.lock().unwrap().push(format!(
                            "POST {url}: {} {}",
                            reply.status,
                            reply.text()
                        ));
                    }
                }
            }));
        }
        (load, clients)
    }

    /// Waits until `count` more requests have been answered.
    async fn passes(&self, count: u64) {
        wait_for_answers(&self.sent, count, || {
            format!("{:?}", self.failures.lock().unwrap())
        })
        .await;
    }

    async fn stop(&self, clients: Vec<tokio::task::JoinHandle<()>>) {
        self.stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_moves_to_another_node_with_its_data_while_it_takes_writes_and_back() {
    let cluster = cluster();
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    assert_eq!(serving(a).await, ["users"]);
    assert!(serving(b).await.is_empty());
    let before = total(a).await;

    let (load, clients) = Load::start(a, b, "there");
    load.passes(100).await;
    let (code, report, stderr) = extract(a, "b");
    assert_eq!(code, Some(0), "{stderr}\n{}", cluster.logs().join("\n"));
    load.passes(50).await;
    load.stop(clients).await;
    let failures = load.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{failures:?}\n{}",
        cluster.logs().join("\n")
    );

    // b serves users now, a does not; each row written before and during the move is
    // there, once.
    assert_eq!(serving(a).await, Vec::<String>::new());
    assert_eq!(serving(b).await, ["users"]);
    let created = load.created.lock().unwrap().clone();
    let mut ids: Vec<i64> = created.iter().map(|(id, _)| *id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), created.len(), "an id was given twice");
    assert_eq!(total(b).await, before + created.len() as u64);
    assert_eq!(
        total(a).await,
        before + created.len() as u64,
        "a forwards to b"
    );
    for (id, email) in created.iter().step_by(7) {
        let reply = get(&b.url(&format!("/users/{id}"))).await;
        assert_eq!(reply.status, 200, "user {id}: {}", reply.text());
        assert_eq!(reply.json()["email"], email.as_str());
    }
    let written = std::fs::read_to_string(&cluster.deployment.file).unwrap();
    assert!(written.contains("users = [\"b\"]"), "{written}");
    // a reports no state of a module it no longer runs (b does), only its counters.
    for (node, reports) in [(a, false), (b, true)] {
        let metrics = get(&node.url("/metrics")).await.text();
        let gauges = [
            "modhost_db_connections{",
            "modhost_module_in_flight{",
            "modhost_instances{",
        ];
        let state: Vec<&str> = metrics
            .lines()
            .filter(|line| line.contains(r#"module="users""#))
            .filter(|line| gauges.iter().any(|gauge| line.starts_with(gauge)))
            .collect();
        assert_eq!(!state.is_empty(), reports, "{state:?}");
    }

    // What the extraction measured: the copy, the pause, the rows it compared.
    let held_ms = report["held_ms"].as_f64().expect("held_ms");
    let rows = report["rows"]["users"].as_u64().expect("rows of users");
    assert!(rows >= before, "{report}");
    assert!(
        report["copied_bytes"].as_u64().unwrap_or_default() > 0,
        "{report}"
    );
    eprintln!(
        "extracted: {} bytes copied in {:.1} ms, {} bytes of last changes, held {held_ms:.1} ms, \
         {rows} users compared; {} writes, the slowest took {:?}",
        report["copied_bytes"],
        report["copy_ms"].as_f64().unwrap_or_default(),
        report["last_changes_bytes"],
        created.len(),
        load.slowest.lock().unwrap()
    );
    b.wait_for_log("extraction: the module serves on this node now, with its data");
    a.wait_for_log("extraction: the module left this node");

    // a kept its copy until told: --commit removes it (and only on the node it left).
    let kept = cluster
        .deployment
        .dir
        .path()
        .join("data-a/databases/users.sqlite");
    assert!(kept.exists());
    let (code, answer, stderr) = extract_with("users", b, &["--commit"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(answer["error"]["code"], "not_moved", "{answer}");
    let (code, committed, stderr) = extract_with("users", a, &["--commit"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(committed["serves_on"], "b", "{committed}");
    assert!(!kept.exists());
    let (code, answer, _) = extract_with("users", a, &["--commit"]);
    assert_eq!(code, Some(1));
    assert_eq!(answer["error"]["code"], "no_copy", "{answer}");

    // And back, the same way, under the same load.
    let moved = total(b).await;
    let (load, clients) = Load::start(a, b, "back");
    load.passes(100).await;
    let (code, _, stderr) = extract(b, "a");
    assert_eq!(code, Some(0), "{stderr}\n{}", cluster.logs().join("\n"));
    load.passes(50).await;
    load.stop(clients).await;
    let failures = load.failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(serving(a).await, ["users"]);
    assert!(serving(b).await.is_empty());
    let created_back = load.created.lock().unwrap().len() as u64;
    assert_eq!(total(a).await, moved + created_back);
    let written = std::fs::read_to_string(&cluster.deployment.file).unwrap();
    assert!(written.contains("users = [\"a\"]"), "{written}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extraction_that_fails_leaves_the_module_serving_where_it_was() {
    let mut cluster = cluster();
    let before = total(cluster.node("a")).await;

    // Refused up front: a node that is not one, the node it runs on, a module not here.
    let (code, answer, _) = extract(cluster.node("a"), "z");
    assert_eq!(code, Some(2), "{answer}");
    assert_eq!(answer["error"]["code"], "bad_node");
    let (code, answer, _) = extract(cluster.node("b"), "a");
    assert_eq!(code, Some(1), "{answer}");
    assert_eq!(answer["error"]["code"], "not_here");

    // A module with a canary beside its version is not moved (the target would serve
    // one version): promote or roll it back first.
    let admin = format!(
        "http://{}",
        cluster.node("a").admin.expect("an admin listener")
    );
    let v2 = variant(&guest("users"), "canary", cluster.deployment.dir.path());
    let admin_cli = |args: &[&str]| {
        let output = std::process::Command::new(modhost_bin())
            .args(args)
            .args(["--admin", &admin, "--token", TOKEN])
            .output()
            .expect("run modhost");
        assert!(output.status.success(), "{args:?}: {output:?}");
    };
    admin_cli(&["canary", "users", v2.to_str().unwrap(), "--weight", "10"]);
    let (code, answer, _) = extract(cluster.node("a"), "b");
    assert_eq!(code, Some(1), "{answer}");
    assert_eq!(answer["error"]["step"], "prepare", "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("runs a canary"),
        "{answer}"
    );
    admin_cli(&["rollback", "users"]);

    // The target dies before it gets the data: called off at the first step that
    // needs it, and the module serves on a, its writes go on there.
    cluster.node_mut("b").kill();
    let (code, answer, stderr) = extract(cluster.node("a"), "b");
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(answer["error"]["code"], "extraction_failed", "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("serves on a as before"),
        "{answer}"
    );
    let a = cluster.node("a");
    assert_eq!(serving(a).await, ["users"]);
    let reply = send(
        &client(false),
        "POST",
        &a.url("/users"),
        Some(r#"{"name": "After", "email": "after@example.com"}"#),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(total(a).await, before + 1);
    let written = std::fs::read_to_string(&cluster.deployment.file).unwrap();
    assert!(written.contains("users = [\"a\"]"), "{written}");

    // While b is down, users gets a new version on a (b cannot adopt it then).
    let v3 = variant(
        &guest("users"),
        "while-b-was-down",
        cluster.deployment.dir.path(),
    );
    admin_cli(&["swap", "users", v3.to_str().unwrap()]);
    let swapped =
        get(&cluster.node("a").url("/readyz")).await.json()["modules"]["users"]["version"].clone();

    // b back, empty-handed: what it received of an attempt is gone, and a move now
    // succeeds with every row, b serving the version a served.
    cluster.start_node("b", &[]);
    let b = cluster.node("b");
    // A node a module is arriving on says so, and forgets it when it is called off.
    let mut peer = common::peer::Peer::connect(&cluster.deployment.file, "a", "b").await;
    let (status, _) = peer.post("/v1/admin/arrive?module=users", Vec::new()).await;
    assert_eq!(status, 200);
    let ready = get(&b.url("/readyz")).await.json();
    assert_eq!(ready["modules"]["users"]["status"], "arriving", "{ready}");
    assert_eq!(ready["modules"]["users"]["stage"], "receiving", "{ready}");
    let (status, _) = peer
        .post("/v1/admin/abandon?module=users", Vec::new())
        .await;
    assert_eq!(status, 200);
    assert!(serving(b).await.is_empty());
    let (code, report, stderr) = extract(cluster.node("a"), "b");
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["rows"]["users"].as_u64(), Some(before + 1));
    assert_eq!(total(b).await, before + 1);
    let serves = get(&b.url("/readyz")).await.json()["modules"]["users"]["version"].clone();
    assert_eq!(serves, swapped, "b serves the version a served");

    // a restarted with a file that was not updated (it still places users on a):
    // a's copy is out of date, and a does not serve it beside b.
    let file = cluster.deployment.file.clone();
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("users = [\"b\"]", "users = [\"a\"]")).unwrap();
    cluster.start_node("a", &[]);
    let ready = get(&cluster.node("a").url("/readyz")).await.json();
    let users = &ready["modules"]["users"];
    assert_eq!(users["status"], "failed", "{ready}");
    assert!(
        users["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("moved to node b"),
        "{ready}"
    );
    let reply = get(&cluster.node("a").url("/users?limit=1")).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(total(cluster.node("b")).await, before + 1);
}

/// An order of one USB-C cable (500 in stock) for customer 2, paid by a good card.
const ORDER: &str = r#"{"customer_id": 2, "lines": [{"sku": "CB-004", "quantity": 1}],
    "card": {"number": "4242 4242 4242 4242", "expiry_month": 12, "expiry_year": 2030}}"#;

/// Orders placed through node a's gateway by a few clients, until stopped (or 400).
#[derive(Default)]
struct Orders {
    stop: AtomicBool,
    placed: Mutex<Vec<(String, String)>>,
    failures: Mutex<Vec<String>>,
    slowest: Mutex<Duration>,
}

impl Orders {
    fn start(url: String) -> (Arc<Orders>, Vec<tokio::task::JoinHandle<()>>) {
        let orders = Arc::new(Orders::default());
        let clients = (0..3)
            .map(|_| {
                let (orders, url) = (orders.clone(), url.clone());
                tokio::spawn(async move {
                    let http = client(false);
                    while !orders.stop.load(Ordering::Relaxed)
                        && orders.placed.lock().unwrap().len() < 400
                    {
                        let started = Instant::now();
                        let reply = send(&http, "POST", &url, Some(ORDER)).await;
                        let took = started.elapsed();
                        let mut slowest = orders.slowest.lock().unwrap();
                        *slowest = (*slowest).max(took);
                        drop(slowest);
                        if reply.status == 201 {
                            let order = reply.json();
                            let id = order["id"].as_str().unwrap_or_default().to_string();
                            let receipt = order["payment"]["receipt_id"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string();
                            orders.placed.lock().unwrap().push((id, receipt));
                        } else {
                            orders.failures.lock().unwrap().push(format!(
                                "{} {}",
                                reply.status,
                                reply.text()
                            ));
                        }
                    }
                })
            })
            .collect();
        (orders, clients)
    }

    async fn passes(&self, count: usize) {
        let target = self.placed.lock().unwrap().len() + count;
        for _ in 0..6000 {
            if self.placed.lock().unwrap().len() >= target {
                return;
            }
            assert!(
                self.failures.lock().unwrap().is_empty(),
                "{:?}",
                self.failures.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the orders stalled");
    }

    async fn stop(&self, clients: Vec<tokio::task::JoinHandle<()>>) {
        self.stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.await.unwrap();
        }
    }
}

/// The charges in a payments database file: receipt id → how many rows have it.
async fn charges(file: &std::path::Path) -> std::collections::BTreeMap<String, u64> {
    use sqlx::Connection;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(file)
        .read_only(true);
    let mut connection = sqlx::SqliteConnection::connect_with(&options)
        .await
        .expect("open the payments database");
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT id, count(*) FROM charges GROUP BY id")
        .fetch_all(&mut connection)
        .await
        .expect("read the charges");
    rows.into_iter()
        .map(|(id, count)| (id, count as u64))
        .collect()
}

/// How many `payment_received` notifications order `id` got.
async fn payment_notices(node: &Modhost, id: &str) -> usize {
    let reply = get(&node.url(&format!("/notifications?order_id={id}"))).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["notifications"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|notice| notice["kind"] == "payment_received")
                .count()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shop_s_payments_move_to_a_node_of_their_own_under_orders_with_their_charges_and_events(
) {
    let Some(broker) = common::kafka::Broker::start() else {
        return;
    };
    // The one-node shop as node a of a file that names b too, events on the broker.
    let overlay = format!(
        "extends = \"base.toml\"\n\n[events]\nbackend = \"kafka\"\nbrokers = \"{}\"\n\
         partitions = 3\nbackoff = \"50ms\"\nmax_backoff = \"500ms\"\n\n\
         [admin]\ntoken = \"{TOKEN}\"\n",
        broker.address()
    );
    let everything_on_a: Vec<(&str, &[&str])> = common::shop::PLACEMENT
        .iter()
        .map(|(module, _)| (*module, &["a"][..]))
        .collect();
    let cluster = Cluster::start_extending(SHOP, &overlay, &["a", "b"], &everything_on_a);
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let data = |node: &str| {
        cluster
            .deployment
            .dir
            .path()
            .join(format!("data-{node}/databases/payments.sqlite"))
    };

    let (orders, clients) = Orders::start(a.url("/orders"));
    orders.passes(20).await;
    let (code, report, stderr) = extract_module("payments", a, "b");
    assert_eq!(code, Some(0), "{stderr}\n{}", cluster.logs().join("\n"));
    orders.passes(20).await;
    orders.stop(clients).await;
    let failures = orders.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{failures:?}\n{}",
        cluster.logs().join("\n")
    );
    let placed = orders.placed.lock().unwrap().clone();
    eprintln!(
        "payments extracted under {} orders, none failed; held {:.1} ms, the slowest order \
         took {:?}; {} charges compared",
        placed.len(),
        report["held_ms"].as_f64().unwrap_or_default(),
        orders.slowest.lock().unwrap(),
        report["rows"]["charges"]
    );

    // b runs payments, a does not; every charge made before and during the move is in
    // b's database, once.
    assert!(!serving(a).await.contains(&"payments".to_string()));
    assert_eq!(serving(b).await, ["payments"]);
    let on_b = charges(&data("b")).await;
    for (order, receipt) in &placed {
        assert_eq!(
            on_b.get(receipt),
            Some(&1),
            "order {order}'s charge {receipt}"
        );
    }
    // Every payments.charged was delivered once: one notice per order.
    for (order, _) in &placed {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let notices = payment_notices(a, order).await;
            assert!(notices <= 1, "order {order} was told {notices} times");
            if notices == 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "order {order} never heard of its payment\n{}",
                cluster.logs().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Back into the monolith, under orders again.
    // Called back from the node it left (--abort): b moves it back, the same way.
    let (orders, clients) = Orders::start(a.url("/orders"));
    orders.passes(20).await;
    let (code, _, stderr) = extract_with("payments", a, &["--abort"]);
    assert_eq!(code, Some(0), "{stderr}\n{}", cluster.logs().join("\n"));
    orders.passes(20).await;
    orders.stop(clients).await;
    assert!(orders.failures.lock().unwrap().is_empty());
    assert!(serving(a).await.contains(&"payments".to_string()));
    assert!(serving(b).await.is_empty());
    let on_a = charges(&data("a")).await;
    let back = orders.placed.lock().unwrap().clone();
    for (order, receipt) in placed.iter().chain(&back) {
        assert_eq!(
            on_a.get(receipt),
            Some(&1),
            "order {order}'s charge {receipt}"
        );
    }
    let (code, _, stderr) = extract_with("payments", b, &["--commit"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!data("b").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_dies_mid_copy_or_finds_its_copy_wrong_leaves_the_module_serving() {
    use common::peer::{Scripted, ScriptedPeer};
    let toml = format!(
        "[app]\nname = \"extract\"\n\n\
         [modules.users]\ncomponent = \"{{users}}\"\nroutes = [\"/users\"]\ndatabase = \"sqlite\"\n\
         migrations = \"{{repo}}/modules/users/migrations\"\n\n\
         [admin]\ntoken = \"{TOKEN}\"\n"
    );
    // Node a is real; node b is played by the test.
    let deployment = Cluster::write(&toml, &["a", "b"], &[("users", &["a"])]);
    Cluster::certs(&deployment);
    let mut cluster = Cluster {
        deployment,
        nodes: Default::default(),
    };
    cluster.start_node("a", &[]);
    let file = cluster.deployment.file.clone();
    let a = cluster.node("a");
    let before = total(a).await;
    let (load, clients) = Load::start_at(vec![a.url("/users"), a.url("/users")], "failing");
    load.passes(20).await;

    // What a target that takes the module answers: one file awaited, a's version.
    let version = get(&a.url("/readyz")).await.json()["modules"]["users"]["version"]
        .as_str()
        .expect("the version users serves")
        .to_string();
    let prepared = serde_json::json!({ "files": 1, "version": version })
        .to_string()
        .into_bytes();

    // b takes the module, then dies as the data comes.
    let plan = prepared.clone();
    let dying = ScriptedPeer::serve(&file, "b", move |path| match path {
        "/v1/admin/adopt" => Scripted::Answer(200, Vec::new()),
        "/v1/admin/arrive" => Scripted::Answer(200, plan.clone()),
        _ => Scripted::Die,
    })
    .await;
    let (code, answer, stderr) = extract(a, "b");
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(answer["error"]["step"], "copy", "{answer}");
    assert!(dying.requests().contains(&"/v1/admin/chunks".to_string()));
    drop(dying);
    load.passes(20).await;

    // b receives everything, then finds its copy does not match what a settled.
    let mismatched = ScriptedPeer::serve(&file, "b", move |path| match path {
        "/v1/admin/arrive" => Scripted::Answer(200, prepared.clone()),
        "/v1/admin/adopt" | "/v1/admin/chunks" | "/v1/admin/abandon" => {
            Scripted::Answer(200, Vec::new())
        }
        "/v1/admin/arrived" => Scripted::Later(
            Duration::from_millis(800),
            409,
            b"the copy does not match the source's files (SHA-256 [\"00\"] here)".to_vec(),
        ),
        _ => Scripted::Answer(404, Vec::new()),
    })
    .await;
    // While b checks (slowly), a's status says the module is held there.
    let admin = format!("http://{}", a.admin.expect("an admin listener"));
    let moving = tokio::task::spawn_blocking(move || extract_at(&admin, "users", &["--to", "b"]));
    let mut seen_held = false;
    for _ in 0..500 {
        let ready = get(&a.url("/readyz")).await.json();
        if ready["modules"]["users"]["status"] == "held" {
            seen_held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (code, answer, stderr) = moving.await.unwrap();
    assert!(seen_held, "a's status never said the module was held");
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(answer["error"]["step"], "switch", "{answer}");
    assert_eq!(
        get(&a.url("/readyz")).await.json()["modules"]["users"]["status"],
        "serving"
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("does not match"),
        "{answer}"
    );
    // The held writes went on here; b was told to drop what it received.
    let asked = mismatched.requests();
    assert!(
        asked.contains(&"/v1/admin/abandon".to_string()),
        "{asked:?}"
    );
    load.passes(20).await;
    load.stop(clients).await;
    let failures = load.failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "{failures:?}\n{}", a.logs().join("\n"));
    assert_eq!(serving(a).await, ["users"]);
    let created = load.created.lock().unwrap().len() as u64;
    assert_eq!(total(a).await, before + created, "every write kept");
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(written.contains("users = [\"a\"]"), "{written}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_on_postgres_moves_with_no_copy_and_no_failed_write() {
    let Some(postgres) = common::postgres::Postgres::start() else {
        return;
    };
    let url = postgres.create_database("extract");
    let toml = format!(
        "[app]\nname = \"extract\"\n\n\
         [modules.users]\ncomponent = \"{{users}}\"\nroutes = [\"/users\"]\n\
         database = {{ postgres = {url:?} }}\n\
         migrations = \"{{repo}}/modules/users/migrations\"\n\n\
         [admin]\ntoken = \"{TOKEN}\"\n"
    );
    let cluster = Cluster::start(&toml, &["a", "b"], &[("users", &["a"])]);
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let before = total(a).await;
    let (load, clients) = Load::start(a, b, "postgres");
    load.passes(50).await;
    let (code, report, stderr) = extract(a, "b");
    assert_eq!(code, Some(0), "{stderr}\n{}", cluster.logs().join("\n"));
    load.passes(50).await;
    load.stop(clients).await;
    let failures = load.failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "{failures:?}");

    // Its schema is reached from every node: nothing was copied, nothing is kept.
    assert_eq!(report["files"], 0, "{report}");
    assert_eq!(report["copied_bytes"], 0, "{report}");
    assert_eq!(serving(b).await, ["users"]);
    assert!(serving(a).await.is_empty());
    let created = load.created.lock().unwrap().len() as u64;
    assert_eq!(total(b).await, before + created);
    let (code, answer, _) = extract_with("users", a, &["--commit"]);
    assert_eq!(code, Some(1));
    assert_eq!(answer["error"]["code"], "no_copy", "{answer}");
}

/// A batch of chunks as the mesh carries them: the file's length, then each chunk's
/// offset, length and bytes.
fn chunk_batch(len: u64, chunks: &[(u64, u32, &[u8])]) -> Vec<u8> {
    let mut batch = len.to_be_bytes().to_vec();
    for (offset, claimed, bytes) in chunks {
        batch.extend_from_slice(&offset.to_be_bytes());
        batch.extend_from_slice(&claimed.to_be_bytes());
        batch.extend_from_slice(bytes);
    }
    batch
}

/// A peer node may move only what its placement allows: a node that does not run a
/// module cannot push data into it, make a node serve it, route it elsewhere, or widen
/// whom its calls are accepted from; nor ask for it to be moved to a third node. The
/// node the module runs on cannot make a target serve a copy that was not checked.
/// Each attempt is refused; the module and its neighbour keep serving, and the target
/// serves nothing of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_move_a_module_its_placement_does_not_give_it() {
    let toml = format!(
        "[app]\nname = \"extract\"\n\n\
         [modules.users]\ncomponent = \"{{users}}\"\nroutes = [\"/users\"]\ndatabase = \"sqlite\"\n\
         migrations = \"{{repo}}/modules/users/migrations\"\n\n\
         [modules.hello]\ncomponent = \"{{hello}}\"\nroutes = [\"/hello\"]\n\n\
         [admin]\ntoken = \"{TOKEN}\"\n"
    );
    let cluster = Cluster::start(
        &toml,
        &["a", "b", "c"],
        &[("users", &["a"]), ("hello", &["a"])],
    );
    let file = cluster.deployment.file.clone();
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let before = total(a).await;

    // Node b, which runs neither module, asks a for each step of a move.
    let mut from_b = common::peer::Peer::connect(&file, "b", "a").await;
    let data = chunk_batch(4, &[(0, 4, b"SQLi")]);
    let forged = br#"{"digests":[],"counts":{}}"#.to_vec();
    let onto = br#"{"postgres":"postgres://b@127.0.0.1:1/theirs"}"#.to_vec();
    for (path, body) in [
        ("/v1/admin/arrive?module=users", Vec::new()),
        ("/v1/admin/arrive?module=users", onto.clone()),
        ("/v1/admin/moved?module=users&to=b", onto.clone()),
        ("/v1/admin/chunks?module=users&file=0", data.clone()),
        ("/v1/admin/arrived?module=users", forged.clone()),
        ("/v1/admin/serve?module=users", Vec::new()),
        ("/v1/admin/moving?module=users&to=b", Vec::new()),
        ("/v1/admin/moved?module=users&to=b", Vec::new()),
        ("/v1/admin/abandon?module=users", Vec::new()),
        ("/v1/admin/moving?module=hello&to=b", Vec::new()),
        ("/v1/admin/extract?module=users&to=c", Vec::new()),
        // Not even to itself: users did not come to a from b.
        ("/v1/admin/extract?module=users&to=b", Vec::new()),
    ] {
        let (status, said) = from_b.post(path, body).await;
        assert_eq!(status, 403, "{path}: {said:?}");
    }
    a.wait_for_log("mesh: refused to move a module for a node that does not run it");
    a.wait_for_log("mesh: refused to move a module for a peer it did not come from");
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(written.contains("database = \"sqlite\""), "{written}");
    // Node a, which runs users, asks b to take it, then misbehaves.
    let mut from_a = common::peer::Peer::connect(&file, "a", "b").await;
    // A database b cannot read is refused, and nothing is linked.
    for body in [
        br#"{"postgres": 5}"#.to_vec(),
        br#"{"postgres": "mysql://a@127.0.0.1/db"}"#.to_vec(),
        br#"{"postgres": "postgres://a@127.0.0.1/db", "schema": "theirs"}"#.to_vec(),
    ] {
        let (status, said) = from_a.post("/v1/admin/arrive?module=users", body).await;
        assert_eq!(status, 409, "{said:?}");
    }
    let (status, plan) = from_a
        .post("/v1/admin/arrive?module=users", Vec::new())
        .await;
    assert_eq!(status, 200, "{plan:?}");
    let plan: serde_json::Value = serde_json::from_slice(&plan).expect("a plan");
    assert_eq!(plan["files"], 1, "{plan}");
    // b's status follows the copy: what came, of how much.
    let (status, said) = from_a
        .post("/v1/admin/chunks?module=users&file=0", data.clone())
        .await;
    assert_eq!(status, 200, "{said:?}");
    let ready = get(&b.url("/readyz")).await.json();
    let users = &ready["modules"]["users"];
    assert_eq!(
        (
            &users["stage"],
            &users["received_bytes"],
            &users["file_bytes"]
        ),
        (&"receiving".into(), &4.into(), &4.into()),
        "{ready}"
    );
    for (path, body, refusal) in [
        // A chunk that reaches past the file's length, one cut short, a file that
        // is not awaited, serving before the copy was checked.
        (
            "/v1/admin/chunks?module=users&file=0",
            chunk_batch(4, &[(0, 8, b"SQLite f")]),
            "does not fit",
        ),
        (
            "/v1/admin/chunks?module=users&file=0",
            chunk_batch(1 << 20, &[(0, 1 << 16, b"SQLite")]),
            "cut short",
        ),
        (
            "/v1/admin/chunks?module=users&file=7",
            data.clone(),
            "no data file 7",
        ),
        (
            "/v1/admin/serve?module=users",
            Vec::new(),
            "has not arrived",
        ),
        (
            "/v1/admin/moving?module=users&to=b",
            Vec::new(),
            "not another node",
        ),
        (
            "/v1/admin/moved?module=users&to=z",
            Vec::new(),
            "not another node",
        ),
        // What b received does not match what a claims to have settled.
        ("/v1/admin/chunks?module=users&file=0", data.clone(), ""),
        (
            "/v1/admin/arrived?module=users",
            br#"{"digests":["00"],"counts":{}}"#.to_vec(),
            "does not match",
        ),
        // The arrival is gone with it: nothing to serve.
        ("/v1/admin/serve?module=users", Vec::new(), "not arriving"),
    ] {
        let (status, said) = from_a.post(path, body).await;
        let said = String::from_utf8_lossy(&said);
        if refusal.is_empty() {
            assert_eq!(status, 200, "{path}: {said}");
        } else {
            assert_eq!(status, 409, "{path}: {said}");
            assert!(said.contains(refusal), "{path}: {said}");
        }
    }
    assert!(serving(b).await.is_empty(), "b serves nothing of users");
    let databases = cluster.deployment.dir.path().join("data-b/databases");
    let leftovers: Vec<_> = std::fs::read_dir(&databases)
        .map(|entries| entries.flatten().map(|entry| entry.file_name()).collect())
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "b kept what it received: {leftovers:?}"
    );
    // b is asked to move users, which never came to it, back to a.
    let (status, said) = from_a
        .post("/v1/admin/extract?module=users&to=a", Vec::new())
        .await;
    assert_eq!(status, 403, "{said:?}");
    assert!(
        String::from_utf8_lossy(&said).contains("did not come here from a"),
        "{said:?}"
    );

    // The module and its neighbour serve on a as before; b's gateway reaches them.
    assert_eq!(serving(a).await, ["hello", "users"]);
    let reply = send(
        &client(false),
        "POST",
        &b.url("/users"),
        Some(r#"{"name": "After", "email": "after-peer@example.com"}"#),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(total(a).await, before + 1);
    let reply = get(&a.url("/hello")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    // A source that announces a module and then goes quiet leaves nothing behind:
    // meanwhile b refuses to start the module another way (a reload placing it
    // there), and once the source was quiet for the time it gave, b drops the
    // arrival, and the reload applies.
    let (status, said) = from_a
        .post("/v1/admin/arrive?module=hello&idle_ms=10000", Vec::new())
        .await;
    assert_eq!(status, 200, "{said:?}");
    let ready = get(&b.url("/readyz")).await.json();
    assert_eq!(ready["modules"]["hello"]["status"], "arriving", "{ready}");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("hello = [\"a\"]", "hello = [\"a\", \"b\"]"),
    )
    .unwrap();
    let (code, _, stderr) = reload_node(b, TOKEN);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("arriving on this node"), "{stderr}");
    b.wait_for_log("the source went quiet");
    assert!(serving(b).await.is_empty());
    let (code, placed, stderr) = reload_node(b, TOKEN);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(placed["started"], serde_json::json!(["hello"]), "{placed}");
    assert_eq!(serving(b).await, ["hello"]);
}

/// Stops node `node` of `cluster` as an operator does (SIGTERM), and waits until it has.
fn stop_node(cluster: &mut Cluster, node: &str) {
    stop_host(cluster.node_mut(node));
}

/// Stops `host` as an operator does (SIGTERM), and waits until it has.
fn stop_host(host: &mut Modhost) {
    host.signal("TERM");
    let status = host.wait(Duration::from_secs(30));
    assert!(status.success(), "{status:?}\n{}", host.logs().join("\n"));
}

/// Runs `statement` on the SQLite file `file`, as an operator with `sqlite3` would.
async fn write_file(file: &std::path::Path, statement: &str) {
    use sqlx::Connection;
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(file);
    let mut connection = sqlx::SqliteConnection::connect_with(&options)
        .await
        .expect("open the file");
    sqlx::query(statement)
        .execute(&mut connection)
        .await
        .expect("write the file");
    connection.close().await.expect("close the file");
}

/// `users` switched from its SQLite file on a to Postgres, and placed on a and b in
/// the same restart. Its schema awaits a's file until it is carried: b, which has no
/// file, does not open the module meanwhile (what it wrote there the carry would
/// replace). A's first carry fails on a value Postgres refuses; once it is mended
/// there, a carries the file, and b serves the module with a's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_awaiting_a_sqlite_file_opens_only_on_the_node_that_has_it() {
    let Some(postgres) = common::postgres::Postgres::start() else {
        return;
    };
    let url = postgres.create_database("awaiting");
    let mut cluster = cluster();
    let a = cluster.node("a");
    for n in 0..5 {
        let body = format!(r#"{{"name": "Kept {n}", "email": "kept{n}@example.com"}}"#);
        let reply = send(&client(false), "POST", &a.url("/users"), Some(&body)).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
    }
    let before = total(a).await;
    stop_node(&mut cluster, "a");
    stop_node(&mut cluster, "b");
    let file = cluster
        .deployment
        .dir
        .path()
        .join("data-a/databases/users.sqlite");
    // SQLite keeps a text in a BIGINT column; Postgres takes none.
    write_file(
        &file,
        "INSERT INTO users (id, name, email) VALUES ('not a number', 'Bad', 'bad@example.com')",
    )
    .await;
    let text = std::fs::read_to_string(&cluster.deployment.file).unwrap();
    let split = text
        .replacen(
            "database = \"sqlite\"",
            &format!("database = {{ postgres = {url:?} }}"),
            1,
        )
        .replacen("users = [\"a\"]", "users = [\"a\", \"b\"]", 1);
    assert!(split.contains("users = [\"a\", \"b\"]"), "{split}");
    std::fs::write(&cluster.deployment.file, split).unwrap();

    cluster.start_node("a", &[]);
    let refused = cluster
        .node("a")
        .wait_for_log_with(&["module not started", "\"module\":\"users\""]);
    assert!(
        refused.contains("invalid input syntax for type bigint"),
        "{refused}"
    );
    cluster.start_node("b", &[]);
    cluster.node("b").wait_for_log_with(&[
        "module not started",
        "awaits the SQLite file of another node",
    ]);
    for node in ["a", "b"] {
        let reply = get(&cluster.node(node).url("/users?limit=1")).await;
        assert_eq!(reply.status, 503, "{node}: {}", reply.text());
    }

    // Mended on a: a carries its file, and b, restarted, serves a's rows.
    stop_node(&mut cluster, "a");
    write_file(&file, "DELETE FROM users WHERE id = 'not a number'").await;
    cluster.start_node("a", &[]);
    let carried = cluster.node("a").wait_for_log_with(&[
        "the module's SQLite data is carried over to postgres",
        "\"module\":\"users\"",
    ]);
    assert!(
        carried.contains(&format!(r#"\"users\": {before}"#)),
        "{carried}"
    );
    assert_eq!(total(cluster.node("a")).await, before);
    stop_node(&mut cluster, "b");
    cluster.start_node("b", &[]);
    assert_eq!(total(cluster.node("b")).await, before);
    let body = r#"{"name": "After", "email": "after@example.com"}"#;
    let reply = send(
        &client(false),
        "POST",
        &cluster.node("b").url("/users"),
        Some(body),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(total(cluster.node("a")).await, before + 1);
    assert!(file
        .with_file_name("users.sqlite.carried-to-postgres")
        .exists());
}

/// On one node, a file removed while its schema awaits it (its carry failed) ends the
/// awaiting: the module serves its schema, and the file put back later is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_one_node_a_file_removed_while_awaited_leaves_the_schema_to_the_module() {
    let Some(postgres) = common::postgres::Postgres::start() else {
        return;
    };
    let url = postgres.create_database("removed");
    let sqlite = "[app]\nname = \"removed\"\n\n\
         [modules.users]\ncomponent = \"{users}\"\nroutes = [\"/users\"]\ndatabase = \"sqlite\"\n\
         migrations = \"{repo}/modules/users/migrations\"\n";
    let deployment = TestDeployment::new(sqlite);
    let mut host = Modhost::start(&deployment);
    let body = r#"{"name": "Only in the file", "email": "file@example.com"}"#;
    let reply = send(&client(false), "POST", &host.url("/users"), Some(body)).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    stop_host(&mut host);
    let file = deployment.data_dir().join("databases/users.sqlite");
    write_file(
        &file,
        "INSERT INTO users (id, name, email) VALUES ('not a number', 'Bad', 'bad@example.com')",
    )
    .await;
    let text = std::fs::read_to_string(&deployment.file).unwrap().replacen(
        "database = \"sqlite\"",
        &format!("database = {{ postgres = {url:?} }}"),
        1,
    );
    std::fs::write(&deployment.file, text).unwrap();

    // The carry fails: the module does not start; its schema awaits the file.
    let mut host = Modhost::start(&deployment);
    host.wait_for_log_with(&["module not started", "invalid input syntax for type bigint"]);
    stop_host(&mut host);

    // The operator gives the file up: the module serves its schema (its seed rows).
    let kept = file.with_file_name("users.sqlite.kept");
    std::fs::rename(&file, &kept).unwrap();
    let mut host = Modhost::start(&deployment);
    host.wait_for_log("the schema awaits no other");
    assert_eq!(total(&host).await, 3);
    let body = r#"{"name": "On postgres", "email": "pg@example.com"}"#;
    let reply = send(&client(false), "POST", &host.url("/users"), Some(body)).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    stop_host(&mut host);

    // The file put back is left alone: the schema's rows are the module's.
    std::fs::rename(&kept, &file).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    let host = Modhost::start(&deployment);
    host.wait_for_log_with(&[
        "its SQLite file is left as it was, unused",
        "\"module\":\"users\"",
    ]);
    assert_eq!(total(&host).await, 4);
    assert_eq!(std::fs::read(&file).unwrap(), bytes);
}

/// The schemas of `url`'s database named in `names` that exist.
async fn schemas(url: &str, names: &[&str]) -> Vec<String> {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(url).await.unwrap();
    let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
    let found: Vec<(String,)> =
        sqlx::query_as("SELECT nspname::text FROM pg_namespace WHERE nspname = ANY($1) ORDER BY 1")
            .bind(&names)
            .fetch_all(&mut admin)
            .await
            .unwrap();
    admin.close().await.unwrap();
    found.into_iter().map(|(name,)| name).collect()
}

/// Runs `statements` on `url`'s database as its administrator.
async fn run_sql(url: &str, statements: &[&str]) {
    use sqlx::{Connection, Executor};
    let mut admin = sqlx::PgConnection::connect(url).await.unwrap();
    for statement in statements {
        admin.execute(*statement).await.unwrap();
    }
    admin.close().await.unwrap();
}

/// Asserts that no write of `load` failed; adds the users it created to `created`.
fn no_write_failed(load: &Load, created: &mut Vec<(i64, String)>) {
    let failures = load.failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "{failures:?}");
    created.extend(load.created.lock().unwrap().iter().cloned());
}

/// `users` moves from its SQLite file on a onto Postgres on b (`--to-postgres`) under
/// writes through both gateways: refused up front while its schema exists; a
/// carry that fails (a table its migrations do not make) calls it off with nothing
/// left on Postgres; then it moves, every row written before and during the move in
/// its schema once, both nodes' file saying so; a reload takes that file; and it comes
/// back to a on Postgres, with no copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_module_moves_onto_postgres_on_another_node_under_writes_and_back() {
    let Some(postgres) = common::postgres::Postgres::start() else {
        return;
    };
    let url = postgres.create_database("onto");
    let mut cluster = cluster();
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let before = total(a).await;
    let data = cluster.deployment.dir.path().to_path_buf();
    let file = |node: &str| data.join(format!("data-{node}/databases/users.sqlite"));
    let to_postgres = |from: &Modhost, to: &str| {
        extract_with("users", from, &["--to", to, "--to-postgres", &url])
    };
    let mut created = Vec::new();

    // A schema that exists is someone's: refused before anything moves.
    run_sql(
        &url,
        &["CREATE SCHEMA users", "CREATE TABLE users.theirs (n int)"],
    )
    .await;
    let (load, clients) = Load::start(a, b, "in-use");
    load.passes(30).await;
    let (code, refused, stderr) = to_postgres(a, "b");
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(refused["error"]["step"], "prepare", "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("its postgres schemas exist already (users)"),
        "{refused}"
    );
    load.passes(30).await;
    load.stop(clients).await;
    no_write_failed(&load, &mut created);
    run_sql(&url, &["DROP SCHEMA users CASCADE"]).await;
    assert_eq!(serving(a).await, ["users"]);

    // A carry that fails on b calls the move off: nothing is left on Postgres. (The
    // file is written with its node stopped: the host alone writes a file it serves.)
    stop_node(&mut cluster, "a");
    write_file(&file("a"), "CREATE TABLE stray (n BIGINT)").await;
    cluster.start_node("a", &[]);
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let (load, clients) = Load::start(a, b, "failing");
    load.passes(30).await;
    let (code, failed, stderr) = to_postgres(a, "b");
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(failed["error"]["step"], "switch", "{failed}");
    let message = failed["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("stray"), "{failed}");
    load.passes(30).await;
    load.stop(clients).await;
    no_write_failed(&load, &mut created);
    assert_eq!(serving(a).await, ["users"]);
    assert!(serving(b).await.is_empty());
    b.wait_for_log("what was carried into the module's new database is removed");
    assert_eq!(
        schemas(&url, &["users", "modhost_users"]).await,
        Vec::<String>::new()
    );
    assert!(!file("b").exists());
    let written = std::fs::read_to_string(&cluster.deployment.file).unwrap();
    assert!(written.contains("database = \"sqlite\""), "{written}");

    // Mended: it moves, under writes, its rows carried and checked on b.
    stop_node(&mut cluster, "a");
    write_file(&file("a"), "DROP TABLE stray").await;
    cluster.start_node("a", &[]);
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let (load, clients) = Load::start(a, b, "onto");
    load.passes(100).await;
    let (code, report, stderr) = to_postgres(a, "b");
    assert_eq!(code, Some(0), "{stderr}\n{}", cluster.logs().join("\n"));
    load.passes(50).await;
    load.stop(clients).await;
    no_write_failed(&load, &mut created);
    assert_eq!(report["database"], "postgres", "{report}");
    assert_eq!(serving(a).await, Vec::<String>::new());
    assert_eq!(serving(b).await, ["users"]);
    let mut ids: Vec<i64> = created.iter().map(|(id, _)| *id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), created.len(), "an id was given twice");
    let everyone = before + created.len() as u64;
    assert_eq!(total(b).await, everyone);
    assert_eq!(total(a).await, everyone, "a forwards to b");
    for (id, email) in created.iter().step_by(5) {
        let reply = get(&b.url(&format!("/users/{id}"))).await;
        assert_eq!(reply.status, 200, "user {id}: {}", reply.text());
        assert_eq!(reply.json()["email"], email.as_str());
    }
    {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
        let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM users.users")
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert_eq!(rows as u64, everyone, "the rows are in the schema");
        admin.close().await.unwrap();
    }
    b.wait_for_log("the module's SQLite data is carried over to postgres, checked");
    assert!(!file("b").exists());
    assert!(file("b")
        .with_file_name("users.sqlite.carried-to-postgres")
        .exists());
    assert!(file("a").exists(), "a keeps its copy until told");
    let written = std::fs::read_to_string(&cluster.deployment.file).unwrap();
    assert!(written.contains("users = [\"b\"]"), "{written}");
    assert!(
        written.contains(&format!("database = {{ postgres = {url:?} }}")),
        "{written}"
    );
    eprintln!(
        "onto postgres: {} bytes copied in {:.1} ms, held {:.1} ms (the carry included), {} rows compared",
        report["copied_bytes"],
        report["copy_ms"].as_f64().unwrap_or_default(),
        report["held_ms"].as_f64().unwrap_or_default(),
        report["rows"]["users"]
    );

    // b restarted reads its database from the file: Postgres, with every row (not
    // an empty SQLite file in place of the one set aside).
    stop_node(&mut cluster, "b");
    cluster.start_node("b", &[]);
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    assert_eq!(total(b).await, everyone);

    // Each node took the new database as if its file had said so from the start: a
    // reload of the file (written by both) finds nothing else changed.
    for node in [a, b] {
        let (code, _, stderr) = reload_node(node, TOKEN);
        assert_eq!(code, Some(0), "{stderr}");
    }

    // Back to a, on Postgres: no copy, every row.
    let (load, clients) = Load::start(a, b, "back");
    load.passes(50).await;
    let (code, back, stderr) = extract(b, "a");
    assert_eq!(code, Some(0), "{stderr}\n{}", cluster.logs().join("\n"));
    load.passes(50).await;
    load.stop(clients).await;
    no_write_failed(&load, &mut created);
    assert_eq!(back["files"], 0, "{back}");
    assert_eq!(back["copied_bytes"], 0, "{back}");
    assert_eq!(serving(a).await, ["users"]);
    let everyone = before + created.len() as u64;
    assert_eq!(total(a).await, everyone);

    // A restart reads the file as written: a serves users on Postgres.
    stop_node(&mut cluster, "a");
    cluster.start_node("a", &[]);
    assert_eq!(total(cluster.node("a")).await, everyone);
}
