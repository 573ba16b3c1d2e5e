//! A new placement applied while the nodes serve: a module starts or stops serving on a
//! node without any node restarting (`SIGHUP`, or `modhost reload` through the admin
//! API), under a steady load of calls that never fails; and what a reload refuses,
//! leaving the node serving as it did.

mod common;

use common::cluster::Cluster;
use common::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "test-admin-token-0123456789";

/// `caller` and `callee` (no database) and `hello` (a SQLite file), with an admin API
/// on each node.
fn deployment() -> String {
    format!(
        "{CALLS}\n\
         [modules.hello]\ncomponent = \"{{hello}}\"\nroutes = [\"/hello\"]\ndatabase = \"sqlite\"\n\
         [admin]\ntoken = \"{TOKEN}\"\n"
    )
}

/// Rewrites the placement line of `module` in the cluster's file.
fn place(cluster: &Cluster, module: &str, nodes: &[&str]) {
    let file = &cluster.deployment.file;
    let text = std::fs::read_to_string(file).unwrap();
    let placed: Vec<String> = nodes.iter().map(|node| format!("{node:?}")).collect();
    let line = format!("{module} = [{}]", placed.join(", "));
    let text: Vec<String> = text
        .lines()
        .map(|old| {
            if old.starts_with(&format!("{module} = [")) {
                line.clone()
            } else {
                old.to_string()
            }
        })
        .collect();
    std::fs::write(file, text.join("\n") + "\n").unwrap();
}

/// `modhost reload` against `node`'s admin API: exit code, stdout, stderr.
fn reload(node: &Modhost) -> (Option<i32>, serde_json::Value, String) {
    reload_node(node, TOKEN)
}

/// The lines of `node`'s log that say how a reload ended.
fn reload_outcomes(node: &Modhost) -> Vec<String> {
    node.logs()
        .into_iter()
        .filter(|line| line.contains("reload: "))
        .collect()
}

/// Reloads `node` with `SIGHUP` and waits for its log to say how it ended: that line's
/// fields (`message`, and `started` and `stopped`, or `reason`).
fn hang_up(node: &Modhost) -> serde_json::Value {
    let before = reload_outcomes(node).len();
    node.signal("HUP");
    for _ in 0..3000 {
        if let Some(outcome) = reload_outcomes(node).get(before) {
            let line: serde_json::Value = serde_json::from_str(outcome).expect("a JSON log line");
            return line["fields"].clone();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!(
        "no reload outcome after SIGHUP:\n{}",
        node.logs().join("\n")
    );
}

/// The modules serving on `node`, as its `/readyz` lists them.
async fn serving(node: &Modhost) -> Vec<String> {
    let ready = get(&node.url("/readyz")).await.json();
    let mut modules: Vec<String> = ready["modules"]
        .as_object()
        .map(|modules| modules.keys().cloned().collect())
        .unwrap_or_default();
    modules.sort();
    modules
}

/// How many calls from `caller` to `callee` `node` counted on `path` (local, remote).
async fn calls_on(node: &Modhost, path: &str) -> u64 {
    let metrics = get(&node.url("/metrics")).await.text();
    metrics
        .lines()
        .filter(|line| {
            line.starts_with("modhost_calls_total{caller=\"caller\",callee=\"callee\"")
                && line.contains(&format!("path=\"{path}\",outcome=\"ok\""))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Requests sent and failed by the load.
#[derive(Default)]
struct Load {
    sent: AtomicU64,
    failed: AtomicU64,
    stop: AtomicBool,
    failures: std::sync::Mutex<Vec<String>>,
}

impl Load {
    /// Waits until `count` more requests have been answered: traffic crossed the
    /// change just made.
    async fn passes(&self, count: u64) {
        wait_for_answers(&self.sent, count, || {
            format!("{:?}", self.failures.lock().unwrap())
        })
        .await;
    }
}

/// Four clients calling `callee` through `caller` on node a (each call takes the callee
/// 20 ms, so calls are in flight whenever a placement changes), and one asking b's
/// gateway, which forwards `/caller` to a.
fn start_load(a: &Modhost, b: &Modhost) -> (Arc<Load>, Vec<tokio::task::JoinHandle<()>>) {
    let load = Arc::new(Load::default());
    let mut clients = Vec::new();
    let urls = [
        a.url("/caller/nap?ms=20"),
        a.url("/caller/nap?ms=20"),
        a.url("/caller/reserve?sku=KB-001&quantity=1"),
        a.url("/caller/nap?ms=20"),
        b.url("/caller/reserve?sku=KB-001&quantity=2"),
    ];
    for url in urls {
        let load = load.clone();
        clients.push(tokio::spawn(async move {
            while !load.stop.load(Ordering::Relaxed) {
                let reply = get(&url).await;
                load.sent.fetch_add(1, Ordering::Relaxed);
                if reply.status != 200 {
                    load.failed.fetch_add(1, Ordering::Relaxed);
                    load.failures.lock().unwrap().push(format!(
                        "{url}: {} {}",
                        reply.status,
                        reply.text()
                    ));
                }
            }
        }));
    }
    (load, clients)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_moves_between_running_nodes_without_a_failed_call() {
    let cluster = Cluster::start(
        &deployment(),
        &["a", "b"],
        &[("caller", &["a"]), ("callee", &["b"]), ("hello", &["a"])],
    );
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    assert_eq!(serving(a).await, ["caller", "hello"]);
    assert_eq!(serving(b).await, ["callee"]);
    let (load, clients) = start_load(a, b);
    let wait_for_calls = |node: &'static str, path: &'static str| {
        let host = cluster.node(node);
        async move {
            let before = calls_on(host, path).await;
            for _ in 0..500 {
                if calls_on(host, path).await > before {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let metrics = get(&host.url("/metrics")).await.text();
            let calls: Vec<&str> = metrics
                .lines()
                .filter(|line| line.starts_with("modhost_calls_total"))
                .collect();
            panic!("node {node} made no {path} call to callee: {calls:#?}");
        }
    };
    wait_for_calls("a", "remote").await;

    // callee comes to a beside b: a takes it (SIGHUP), b is told too and has nothing
    // to change. a's calls stay in the process from then on.
    place(&cluster, "callee", &["a", "b"]);
    let outcome = hang_up(a);
    assert_eq!(outcome["started"], "[\"callee\"]", "{outcome}");
    assert_eq!(outcome["stopped"], "[]", "{outcome}");
    let (code, placed, stderr) = reload(b);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(placed, serde_json::json!({ "started": [], "stopped": [] }));
    assert_eq!(serving(a).await, ["callee", "caller", "hello"]);
    wait_for_calls("a", "local").await;
    load.passes(25).await;

    // Then on a alone: a first (nothing to change), then b gives it up — with calls
    // still arriving, its work in flight finishes there.
    place(&cluster, "callee", &["a"]);
    let (code, placed, stderr) = reload(a);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(placed, serde_json::json!({ "started": [], "stopped": [] }));
    let outcome = hang_up(b);
    assert_eq!(outcome["stopped"], "[\"callee\"]", "{outcome}");
    b.wait_for_log("placement: the module no longer serves on this node");
    assert!(serving(b).await.is_empty());
    load.passes(25).await;

    // And back to b, through the admin API: b takes it, then a gives it up; a's
    // calls cross the mesh again.
    place(&cluster, "callee", &["a", "b"]);
    let (code, placed, stderr) = reload(b);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(placed["started"], serde_json::json!(["callee"]));
    load.passes(25).await;
    place(&cluster, "callee", &["b"]);
    let (code, placed, stderr) = reload(a);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(placed["stopped"], serde_json::json!(["callee"]));
    assert_eq!(serving(a).await, ["caller", "hello"]);
    assert_eq!(serving(b).await, ["callee"]);
    wait_for_calls("a", "remote").await;
    load.passes(25).await;

    load.stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let (sent, failed) = (
        load.sent.load(Ordering::Relaxed),
        load.failed.load(Ordering::Relaxed),
    );
    eprintln!("{sent} requests during four placement changes, {failed} failed");
    assert_eq!(
        failed,
        0,
        "{:?}\n{}",
        load.failures.lock().unwrap(),
        cluster.logs().join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_cannot_apply_leaves_the_node_serving_as_it_did() {
    let cluster = Cluster::start(
        &deployment(),
        &["a", "b"],
        &[("caller", &["a"]), ("callee", &["b"]), ("hello", &["a"])],
    );
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let file = cluster.deployment.file.clone();
    let original = std::fs::read_to_string(&file).unwrap();
    let still_serving = || async {
        assert_eq!(get(&a.url("/hello")).await.status, 200);
        let reply = get(&a.url("/caller/reserve?sku=KB-001&quantity=1")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(serving(a).await, ["caller", "hello"]);
        assert_eq!(serving(b).await, ["callee"]);
    };

    // A module with a SQLite file does not move by placement: its data would stay.
    place(&cluster, "hello", &["b"]);
    let (code, _, stderr) = reload(a);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("placement.hello") && stderr.contains("SQLite file on node a"),
        "{stderr}"
    );
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
    still_serving().await;

    // Anything but the placement changed: named by key, refused, on SIGHUP too.
    std::fs::write(
        &file,
        original.replace(
            "limits = { timeout = \"5s\" }",
            "limits = { timeout = \"9s\" }",
        ),
    )
    .unwrap();
    let (code, _, stderr) = reload(a);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("modules.caller") && stderr.contains("restart the node"),
        "{stderr}"
    );
    let outcome = hang_up(a);
    let reason = outcome["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("modules.caller"), "{outcome}");
    still_serving().await;

    // A file that does not validate: the same problems a start reports.
    std::fs::write(
        &file,
        original.replace("[placement]", "[placement]\nnobody = [\"a\"]"),
    )
    .unwrap();
    let (code, _, stderr) = reload(b);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("placement.nobody") && stderr.contains("no module `nobody`"),
        "{stderr}"
    );
    std::fs::write(&file, "this is not toml [").unwrap();
    let (code, _, stderr) = reload(b);
    assert_eq!(code, Some(2), "{stderr}");
    still_serving().await;

    // The original file again: nothing to change, and the node says so.
    std::fs::write(&file, &original).unwrap();
    let (code, placed, stderr) = reload(a);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(placed, serde_json::json!({ "started": [], "stopped": [] }));
}

/// A `SIGHUP` sent while a node starts — as soon as it logs its first module loaded,
/// before it binds its listeners — does not end it (the signal's default): the node
/// starts, serves, and reloads its file once it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_while_a_node_starts_is_a_reload_once_it_serves() {
    let deployment = Cluster::write(
        &deployment(),
        &["a", "b"],
        &[("caller", &["a"]), ("callee", &["b"]), ("hello", &["a"])],
    );
    Cluster::certs(&deployment);
    let args: Vec<std::ffi::OsString> = vec![
        "run".into(),
        deployment.file.clone().into(),
        "--node".into(),
        "a".into(),
        "--data-dir".into(),
        deployment.dir.path().join("data-a").into(),
    ];
    let a = Modhost::spawn_signalled(
        std::process::Command::new(common::modhost_bin()),
        &args,
        &[],
        Some(("module loaded", "HUP")),
    );
    for _ in 0..3000 {
        if !reload_outcomes(&a).is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let outcomes = reload_outcomes(&a);
    assert!(
        outcomes
            .first()
            .is_some_and(|line| line.contains("reload: the deployment's placement applied")),
        "{}",
        a.logs().join("\n")
    );
    assert_eq!(serving(&a).await, ["caller", "hello"]);
    let reply = get(&a.url("/hello")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}
