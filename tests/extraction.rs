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

/// `modhost extract users --to TO` against `from`'s admin API: exit code, the JSON it
/// printed (stdout on success, stderr otherwise), stderr.
fn extract(from: &Modhost, to: &str, extra: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let admin = format!("http://{}", from.admin.expect("an admin listener"));
    let output = std::process::Command::new(modhost_bin())
        .args([
            "extract", "users", "--to", to, "--admin", &admin, "--token", TOKEN,
        ])
        .args(extra)
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
    fn start(a: &Modhost, b: &Modhost, tag: &str) -> (Arc<Load>, Vec<tokio::task::JoinHandle<()>>) {
        let load = Arc::new(Load::default());
        let mut clients = Vec::new();
        let gateways = [
            a.url("/users"),
            a.url("/users"),
            a.url("/users"),
            b.url("/users"),
        ];
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
        let target = self.sent.load(Ordering::Relaxed) + count;
        for _ in 0..3000 {
            if self.sent.load(Ordering::Relaxed) >= target {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the load stalled: {:?}", self.failures.lock().unwrap());
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
    let (code, report, stderr) = extract(a, "b", &[]);
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

    // And back, the same way, under the same load.
    let moved = total(b).await;
    let (load, clients) = Load::start(a, b, "back");
    load.passes(100).await;
    let (code, _, stderr) = extract(b, "a", &[]);
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
    let (code, answer, _) = extract(cluster.node("a"), "z", &[]);
    assert_eq!(code, Some(2), "{answer}");
    assert_eq!(answer["error"]["code"], "bad_node");
    let (code, answer, _) = extract(cluster.node("b"), "a", &[]);
    assert_eq!(code, Some(1), "{answer}");
    assert_eq!(answer["error"]["code"], "not_here");

    // The target dies before it gets the data: called off at the first step that
    // needs it, and the module serves on a, its writes go on there.
    cluster.node_mut("b").kill();
    let (code, answer, stderr) = extract(cluster.node("a"), "b", &[]);
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

    // b back, empty-handed: what it received of an attempt is gone, and a move now
    // succeeds with every row.
    cluster.start_node("b", &[]);
    let b = cluster.node("b");
    let (code, report, stderr) = extract(cluster.node("a"), "b", &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["rows"]["users"].as_u64(), Some(before + 1));
    assert_eq!(total(b).await, before + 1);
}
