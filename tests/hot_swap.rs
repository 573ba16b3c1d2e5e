//! Hot swap under live traffic: new module versions switched in through the admin API
//! (driven by the `modhost` command line), checked before they serve, canaried,
//! promoted, rolled back — by hand or on their own — and remembered across restarts.
//!
//! A "new version" of a test module is its component with a custom section appended:
//! the same code, another digest, so another version — which every response names in
//! its `x-modhost-version` header.

mod common;

use common::cluster::Cluster;
use common::*;
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "test-admin-token-0123456789";

const SWAPS: &str = r#"
[app]
name = "swaps"

[admin]
token = "test-admin-token-0123456789"

[rollout]
min_requests = 20
max_error_rate = 0.2

[modules.hello]
component = "{hello}"
routes = ["/hello"]
limits = { concurrency = 512 }

[modules.faulty]
component = "{hello}"
routes = ["/faulty"]

[modules.caller]
component = "{caller}"
routes = ["/caller"]
calls = ["callee"]

[modules.callee]
component = "{callee}"
calls = ["caller"]

[modules.probe]
component = "{sqlprobe}"
routes = ["/probe"]
database = "sqlite"
"#;

/// The version a response came from.
fn version(reply: &Reply) -> String {
    reply
        .headers
        .get("x-modhost-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Starts the swap deployment with its admin API on a free port.
fn start(deployment: &TestDeployment) -> Modhost {
    let host = Modhost::start_with(deployment, "run", &["--admin-listen", "127.0.0.1:0"]);
    assert!(host.admin.is_some(), "no admin address in the ready line");
    host
}

/// Runs `modhost ARGS… --admin ADMIN --token TOKEN`: exit code, stdout, stderr.
fn cli(admin: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(modhost_bin())
        .args(args)
        .args(["--admin", admin, "--token", TOKEN])
        .output()
        .expect("run modhost");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn admin_of(host: &Modhost) -> String {
    format!("http://{}", host.admin.expect("an admin listener"))
}

/// `modhost status` as JSON.
fn status(host: &Modhost) -> serde_json::Value {
    let (code, out, err) = cli(&admin_of(host), &["status"]);
    assert_eq!(code, Some(0), "{err}");
    serde_json::from_str(&out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_under_steady_load_fails_no_request_and_switches_responses() {
    let deployment = TestDeployment::new(SWAPS);
    let host = start(&deployment);
    let v2 = variant(&guest("hello"), "v2", deployment.dir.path());
    let v1 = version(&get(&host.url("/hello")).await);
    assert!(!v1.is_empty());

    // Eight clients, one request after another each, for twelve seconds.
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<(Instant, u16, String)>>> = Arc::default();
    let url = host.url("/hello");
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (stop, seen, url) = (stop.clone(), seen.clone(), url.clone());
            tokio::spawn(async move {
                let http = client(false);
                while !stop.load(Ordering::Relaxed) {
                    // When it was sent: a request sent after the swap returned
                    // must meet the new version.
                    let sent = Instant::now();
                    let reply = send(&http, "GET", &url, None).await;
                    seen.lock()
                        .unwrap()
                        .push((sent, reply.status, version(&reply)));
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let admin = admin_of(&host);
    let v2_path = v2.display().to_string();
    let (code, out, err) =
        tokio::task::spawn_blocking(move || cli(&admin, &["swap", "hello", &v2_path]))
            .await
            .unwrap();
    assert_eq!(code, Some(0), "{out}{err}");
    // The swap is done when the admin API answers it.
    let swapped_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(7)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }

    let seen = seen.lock().unwrap();
    let failed: Vec<_> = seen
        .iter()
        .filter(|(_, status, _)| *status != 200)
        .collect();
    assert!(
        failed.is_empty(),
        "{} failed requests: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(seen.len() > 2000, "only {} requests", seen.len());
    let versions: BTreeMap<&str, usize> =
        seen.iter().fold(BTreeMap::new(), |mut counts, (_, _, v)| {
            *counts.entry(v.as_str()).or_default() += 1;
            counts
        });
    assert_eq!(versions.len(), 2, "{versions:?}");
    let v2 = versions.keys().find(|v| **v != v1).unwrap().to_string();
    // Everything sent once the swap was answered came from the new version.
    let late: Vec<_> = seen
        .iter()
        .filter(|(sent, _, _)| *sent > swapped_at)
        .collect();
    assert!(!late.is_empty());
    assert!(
        late.iter().all(|(_, _, v)| *v == v2),
        "old version after the swap"
    );

    let state = status(&host);
    assert_eq!(
        state["nodes"]["local"]["hello"]["version"],
        v2.as_str(),
        "{state}"
    );
    assert_eq!(
        state["nodes"]["local"]["hello"]["previous"],
        v1.as_str(),
        "{state}"
    );
    host.wait_for_log("replaced version drained");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_breaks_an_importer_is_refused_and_the_old_one_serves() {
    let deployment = TestDeployment::new(SWAPS);
    let host = start(&deployment);
    let admin = admin_of(&host);
    // A callee whose `reserve` takes a u32 and returns a u32, and which lacks the rest
    // of the contract `caller` imports.
    let broken = deployment.dir.path().join("callee-broken.wasm");
    std::fs::write(
        &broken,
        wat::parse_str(
            r#"(component
                (core module $m (func (export "f") (param i32) (result i32) local.get 0))
                (core instance $i (instantiate $m))
                (func $reserve (param "item" u32) (result u32) (canon lift (core func $i "f")))
                (instance $api (export "reserve" (func $reserve)))
                (export "modhost-testing:kinds/api@1.0.0" (instance $api))
            )"#,
        )
        .unwrap(),
    )
    .unwrap();
    let before = get(&host.url("/caller/reserve?sku=A&quantity=1")).await;
    assert_eq!(before.status, 200, "{}", before.text());

    let (code, out, err) = cli(&admin, &["swap", "callee", broken.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("imports modhost-testing:kinds/api@1.0.0#reserve with a signature module `callee` does not have"), "{err}");
    assert!(
        err.contains("caller expects: func(item: record { sku: string, quantity: u32 })"),
        "{err}"
    );
    assert!(
        err.contains("callee exports: func(item: u32) -> u32"),
        "{err}"
    );
    // Nothing changed.
    let after = get(&host.url("/caller/reserve?sku=A&quantity=1")).await;
    assert_eq!(after.status, 200, "{}", after.text());
    assert!(status(&host)["nodes"]["local"]["callee"]["previous"].is_null());

    // Swapping in what already serves, an unknown module, a missing file, a bad token.
    let (code, _, err) = cli(&admin, &["swap", "hello", guest("hello").to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("already serves"), "{err}");
    let (code, _, err) = cli(
        &admin,
        &["swap", "nobody", guest("hello").to_str().unwrap()],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("unknown_module"), "{err}");
    let (code, _, err) = cli(&admin, &["swap", "hello", "/nowhere/x.wasm"]);
    assert_eq!(code, Some(1), "{err}");
    let output = Command::new(modhost_bin())
        .args([
            "status",
            "--admin",
            &admin,
            "--token",
            "wrong-token-wrong-token",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("401"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_needs_more_than_its_share_of_the_pool_is_refused_and_the_old_one_serves() {
    let deployment = TestDeployment::new(SWAPS);
    let host = start(&deployment);
    // Three memories in one instance: more than a component's share of the pool's
    // memory slots (two), so at full concurrency it would take other modules' slots.
    let modules: String = (0..3)
        .map(|i| format!("(core module $m{i} (memory 1)) (core instance (instantiate $m{i}))"))
        .collect();
    let greedy = deployment.dir.path().join("greedy.wasm");
    std::fs::write(
        &greedy,
        wat::parse_str(format!("(component {modules})")).unwrap(),
    )
    .unwrap();
    let (code, out, err) = cli(
        &admin_of(&host),
        &["swap", "faulty", greedy.to_str().unwrap()],
    );
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("memories"), "{err}");
    // The old version serves, and so does its neighbour.
    for path in ["/faulty", "/hello"] {
        let reply = get(&host.url(path)).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    }
    assert!(status(&host)["nodes"]["local"]["faulty"]["previous"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_gets_its_share_then_is_promoted_and_rolled_back() {
    let deployment = TestDeployment::new(SWAPS);
    let host = start(&deployment);
    let admin = admin_of(&host);
    let v1 = version(&get(&host.url("/hello")).await);
    let v2_file = variant(&guest("hello"), "canary", deployment.dir.path());
    let (code, out, err) = cli(
        &admin,
        &[
            "canary",
            "hello",
            v2_file.to_str().unwrap(),
            "--weight",
            "10",
        ],
    );
    assert_eq!(code, Some(0), "{out}{err}");

    // 10,000 requests: 10% ± 2% reach the canary.
    let http = client(false);
    let url = host.url("/hello");
    let replies = join_all((0..16).map(|_| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let mut versions = Vec::new();
            for _ in 0..625 {
                let reply = send(&http, "GET", &url, None).await;
                assert_eq!(reply.status, 200);
                versions.push(version(&reply));
            }
            versions
        }
    }))
    .await;
    let all: Vec<String> = replies.into_iter().flatten().collect();
    assert_eq!(all.len(), 10_000);
    let canary = all.iter().filter(|v| **v != v1).count();
    assert!(
        (800..=1200).contains(&canary),
        "the canary got {canary} of 10000"
    );
    let v2 = all.iter().find(|v| **v != v1).unwrap().clone();
    let state = status(&host);
    assert_eq!(
        state["nodes"]["local"]["hello"]["canary"]["weight"], 10,
        "{state}"
    );
    assert_eq!(
        state["nodes"]["local"]["hello"]["canary"]["version"],
        v2.as_str()
    );

    // The same sticky key always lands on the same version.
    for key in ["alice", "bob", "carol"] {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let request = http::Request::get(host.url("/hello"))
                .header("x-canary-key", key)
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
            let response = http.request(request).await.unwrap();
            seen.insert(
                response.headers()["x-modhost-version"]
                    .to_str()
                    .unwrap()
                    .to_string(),
            );
        }
        assert_eq!(seen.len(), 1, "key {key} saw {seen:?}");
    }

    // Promoted: every request gets the new version.
    let (code, out, err) = cli(&admin, &["promote", "hello"]);
    assert_eq!(code, Some(0), "{out}{err}");
    for _ in 0..50 {
        assert_eq!(version(&get(&url).await), v2);
    }
    // Rolled back: every request gets the old one again.
    let (code, out, err) = cli(&admin, &["rollback", "hello"]);
    assert_eq!(code, Some(0), "{out}{err}");
    for _ in 0..50 {
        assert_eq!(version(&get(&url).await), v1);
    }
    let (code, _, err) = cli(&admin, &["promote", "hello"]);
    assert_eq!(code, Some(1), "no canary to promote: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_errors_rolls_itself_back() {
    let deployment = TestDeployment::new(SWAPS);
    let host = start(&deployment);
    let admin = admin_of(&host);
    // `/faulty` is served by `hello` (always 200); its canary is the faulty module,
    // which traps on `/faulty/trap`.
    let (code, out, err) = cli(
        &admin,
        &[
            "canary",
            "faulty",
            guest("faulty").to_str().unwrap(),
            "--weight",
            "50",
        ],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let url = host.url("/faulty/trap");
    let mut failures = 0;
    for _ in 0..200 {
        if get(&url).await.status == 500 {
            failures += 1;
        }
    }
    assert!(failures > 0, "the canary never served");
    // Rolled back after ~20% errors over at least 20 requests: far fewer than 100
    // failures, and none since.
    assert!(failures < 60, "{failures} failures");
    host.wait_for_log("canary rolled back");
    for _ in 0..50 {
        assert_eq!(get(&url).await.status, 200);
    }
    assert!(status(&host)["nodes"]["local"]["faulty"]["canary"].is_null());
    let metrics = get(&host.url("/metrics")).await.text();
    assert!(
        metrics.contains(r#"modhost_rollbacks_total{module="faulty",reason="canary_errors"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_serves_the_last_promoted_version() {
    let deployment = TestDeployment::new(SWAPS);
    let mut host = start(&deployment);
    let v1 = version(&get(&host.url("/hello")).await);
    let v2_file = variant(&guest("hello"), "kept", deployment.dir.path());
    let (code, out, err) = cli(
        &admin_of(&host),
        &["swap", "hello", v2_file.to_str().unwrap()],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let v2 = version(&get(&host.url("/hello")).await);
    assert_ne!(v1, v2);
    // The file it came from goes away; the node kept its own copy.
    std::fs::remove_file(&v2_file).unwrap();
    host.kill();
    let host = start(&deployment);
    assert_eq!(version(&get(&host.url("/hello")).await), v2);
    host.wait_for_log("serving the last promoted version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_brings_its_migrations_and_a_failing_one_is_refused() {
    let deployment = TestDeployment::new(SWAPS);
    let host = start(&deployment);
    let admin = admin_of(&host);
    let run = |steps: serde_json::Value| {
        let url = host.url("/probe/sql");
        async move {
            send(
                &client(false),
                "POST",
                &url,
                Some(&serde_json::json!({ "steps": steps }).to_string()),
            )
            .await
            .json()["results"][0]
                .clone()
        }
    };
    let query = serde_json::json!([{ "op": "query", "sql": "SELECT COUNT(*) FROM ledger" }]);
    assert!(
        run(query.clone()).await["error"].is_object(),
        "no ledger table yet"
    );

    // The new version's migrations create its table before it serves.
    let migrations = deployment.dir.path().join("migrations");
    std::fs::create_dir_all(&migrations).unwrap();
    std::fs::write(
        migrations.join("0001_ledger.sql"),
        "CREATE TABLE ledger (id BIGINT PRIMARY KEY);",
    )
    .unwrap();
    let v2 = variant(&guest("sqlprobe"), "with-ledger", deployment.dir.path());
    let (code, out, err) = cli(
        &admin,
        &[
            "swap",
            "probe",
            v2.to_str().unwrap(),
            "--migrations",
            migrations.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(run(query.clone()).await["rows"].is_object());

    // A migration that fails refuses the version; the serving one is untouched.
    std::fs::write(migrations.join("0002_broken.sql"), "CREATE TABLE oops (;").unwrap();
    let v3 = variant(
        &guest("sqlprobe"),
        "broken-migration",
        deployment.dir.path(),
    );
    let (code, out, err) = cli(
        &admin,
        &[
            "swap",
            "probe",
            v3.to_str().unwrap(),
            "--migrations",
            migrations.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("0002_broken.sql"), "{err}");
    assert_eq!(
        version(&get(&host.url("/probe/anything")).await),
        version(&get(&host.url("/probe/x")).await)
    );
    assert_eq!(
        status(&host)["nodes"]["local"]["probe"]["version"],
        version(&get(&host.url("/probe/x")).await).as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_driven_from_one_node_applies_to_every_node_running_the_module() {
    let cluster = Cluster::start(
        "[app]\nname = \"swaps\"\n[admin]\ntoken = \"test-admin-token-0123456789\"\n\
         [modules.hello]\ncomponent = \"{hello}\"\nroutes = [\"/hello\"]\n\
         [modules.faulty]\ncomponent = \"{faulty}\"\nroutes = [\"/faulty\"]\n",
        &["a", "b"],
        &[("hello", &["a", "b"]), ("faulty", &["a"])],
    );
    let v1 = version(&get(&cluster.node("b").url("/hello")).await);
    let v2_file = variant(&guest("hello"), "everywhere", cluster.deployment.dir.path());
    // Driven from node a; b runs hello too.
    let (code, out, err) = cli(
        &admin_of(cluster.node("a")),
        &["swap", "hello", v2_file.to_str().unwrap()],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        answer["nodes"]["a"]["version"].is_string() && answer["nodes"]["b"]["version"].is_string(),
        "{answer}"
    );
    for node in ["a", "b"] {
        let v = version(&get(&cluster.node(node).url("/hello")).await);
        assert_ne!(v, v1, "node {node} still serves the old version");
    }
    // Status from either node shows every node's versions.
    let state = status(cluster.node("b"));
    assert_eq!(
        state["nodes"]["a"]["hello"]["version"], state["nodes"]["b"]["hello"]["version"],
        "{state}"
    );
    assert!(
        state["nodes"]["a"]["faulty"].is_object() && state["nodes"]["b"]["faulty"].is_null(),
        "{state}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_watch_rebuilds_a_changed_crate_and_swaps_it_in() {
    let reply = workspace().join("modules/testing/watched/reply.txt");
    std::fs::write(&reply, "first build\n").unwrap();
    let deployment =
        TestDeployment::new(&format!(
        "[app]\nname = \"watch\"\n[modules.watched]\ncomponent = {:?}\nroutes = [\"/watched\"]\n",
        workspace().join("modules/testing/watched").display().to_string()
    ));
    let host = Modhost::start_with(&deployment, "up", &["--watch"]);
    assert_eq!(get(&host.url("/watched")).await.text(), "first build");
    host.wait_for_log("--watch: watching");

    std::fs::write(&reply, "second build\n").unwrap();
    // reply.txt is outside src/: touch the source so the watcher sees a change.
    let source = workspace().join("modules/testing/watched/src/lib.rs");
    let text = std::fs::read_to_string(&source).unwrap();
    std::fs::write(&source, &text).unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if get(&host.url("/watched")).await.text() == "second build" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new build was not swapped in:\n{}",
            host.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    host.wait_for_log("--watch: swapped in the new build");
}

/// A component exporting `test:x/api@1.0.0` with `functions`, each returning a u32.
fn exporter(functions: &[&str]) -> Vec<u8> {
    let core: String = functions
        .iter()
        .map(|f| format!("(func (export \"{f}\") (result i32) i32.const 1)"))
        .collect();
    let lifted: String = functions
        .iter()
        .map(|f| format!("(func ${f} (result u32) (canon lift (core func $i \"{f}\")))"))
        .collect();
    let exported: String = functions
        .iter()
        .map(|f| format!("(export \"{f}\" (func ${f}))"))
        .collect();
    wat::parse_str(format!(
        "(component (core module $m {core}) (core instance $i (instantiate $m)) {lifted} \
         (instance $api {exported}) (export \"test:x/api@1.0.0\" (instance $api)))"
    ))
    .unwrap()
}

/// A component importing `functions` of `test:x/api@1.0.0`.
fn importer(functions: &[&str]) -> Vec<u8> {
    let imported: String = functions
        .iter()
        .map(|f| format!("(export \"{f}\" (func (result u32)))"))
        .collect();
    wat::parse_str(format!(
        "(component (import \"test:x/api@1.0.0\" (instance $x {imported})))"
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_contract_checks_see_the_versions_serving_on_other_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: Vec<u8>| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    };
    // x runs on node a, y (which imports x's interface) on node b.
    let x1 = write("x1.wasm", exporter(&["one", "three"]));
    let y1 = write("y1.wasm", importer(&["one"]));
    let mut cluster = Cluster::start(
        &format!(
            "[app]\nname = \"contracts\"\n[admin]\ntoken = \"{TOKEN}\"\n\
             [modules.x]\ncomponent = {x1:?}\n\
             [modules.y]\ncomponent = {y1:?}\ncalls = [\"x\"]\n"
        ),
        &["a", "b"],
        &[("x", &["a"]), ("y", &["b"])],
    );
    let (on_a, on_b) = (admin_of(cluster.node("a")), admin_of(cluster.node("b")));

    // x's new version drops `three` (y does not use it) and adds `two`; node b, which
    // does not run x, adopts it.
    let x2 = write("x2.wasm", exporter(&["one", "two"]));
    let (code, out, err) = cli(&on_a, &["swap", "x", &x2]);
    assert_eq!(code, Some(0), "{out}{err}");
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(answer["adopted"]["b"]["version"].is_string(), "{answer}");

    // On node b, y's new version needs `two`: checked against x's new version (which
    // has it) and linked against it, not against x's start-up version (which had not).
    let y2 = write("y2.wasm", importer(&["one", "two"]));
    let (code, out, err) = cli(&on_b, &["swap", "y", &y2]);
    assert_eq!(code, Some(0), "{out}{err}");

    // A version of y that needs `three`, which x's start-up version had and its
    // serving one no longer has, is refused.
    let y3 = write("y3.wasm", importer(&["one", "three"]));
    let (code, out, err) = cli(&on_b, &["swap", "y", &y3]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("imports test:x/api@1.0.0#three but module `x` does not export it"),
        "{err}"
    );

    // Node a adopted y's new version in turn: a version of x without `two` breaks it.
    let x3 = write("x3.wasm", exporter(&["one"]));
    let (code, out, err) = cli(&on_a, &["swap", "x", &x3]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("imports test:x/api@1.0.0#two but module `x` does not export it"),
        "{err}"
    );

    // What a node adopted, it remembers: restarted, b still checks against x's new
    // version.
    cluster.node_mut("b").kill();
    cluster.start_node("b", &[]);
    let (code, out, err) = cli(&admin_of(cluster.node("b")), &["swap", "y", &y3]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("#three but module `x` does not export it"),
        "{err}"
    );
}
