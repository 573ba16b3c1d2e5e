//! Modules split over nodes: separate `modhost` processes, real mutual TLS between
//! them. The `caller` test module runs on node `a`, `callee` on node `b`: the same
//! components and call sites as in one process (tests/module_calls.rs), placed apart
//! by the deployment file alone.

mod common;

use common::cluster::Cluster;
use common::*;
use std::time::{Duration, Instant};

/// `caller` on `a`, `callee` on `b`.
fn split() -> Cluster {
    Cluster::start(
        CALLS,
        &["a", "b"],
        &[("caller", &["a"]), ("callee", &["b"])],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_cross_nodes_with_every_value_kind_and_every_failure_typed() {
    let cluster = split();
    let a = cluster.node("a");

    // Every WIT value kind, through the wire format and back, unchanged.
    let echo = get(&a.url("/caller/echo")).await;
    assert_eq!(echo.status, 200, "{}", echo.text());
    assert_eq!(echo.json()["identical"], true, "{}", echo.text());
    assert!(echo.json()["echo"].as_str().unwrap().contains("ünïcødé ✓"));

    // Typed errors are values: they cross as such.
    let ok = get(&a.url("/caller/reserve?sku=KB-001&quantity=3")).await;
    assert_eq!(ok.json()["reserved"], 3, "{}", ok.text());
    let out = get(&a.url("/caller/reserve?sku=KB-001&quantity=11")).await;
    assert_eq!(out.status, 409, "{}", out.text());

    // A callee trap on b fails the request on a with the same answer as in one
    // process, naming the edge.
    let crash = get(&a.url("/caller/crash")).await;
    let logged = a.failure_log(&crash, 502);
    assert_eq!(crash.json()["error"]["code"], "call_failed");
    assert!(
        logged.contains("caller → callee.modhost-testing:kinds/api@1.0.0#crash"),
        "{logged}"
    );
    // The callee's own log line on b carries the trace of the request on a.
    let trace_id = serde_json::from_str::<serde_json::Value>(&logged).unwrap()["span"]["trace_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!trace_id.is_empty(), "{logged}");
    let remote = cluster.node("b").wait_for_log("callee: deliberate trap");
    assert!(
        remote.contains(&trace_id),
        "trace {trace_id} did not cross: {remote}"
    );

    // A callee past its deadline on b: a timeout, as in one process.
    let spin = get(&a.url("/caller/spin")).await;
    a.failure_log(&spin, 504);
    assert_eq!(spin.json()["error"]["code"], "call_timeout");

    // Cycles cross back and forth (a → b → a → …), and runaway recursion still stops.
    let cycle = get(&a.url("/caller/bounce?n=7")).await;
    assert_eq!(cycle.json()["hops"], 7, "{}", cycle.text());
    let runaway = get(&a.url("/caller/bounce?n=100000")).await;
    assert_eq!(runaway.status, 500, "{}", runaway.text());
    assert_eq!(runaway.json()["error"]["code"], "call_depth_exceeded");

    // Every call is counted on the caller's node, per edge, like a local one.
    let metrics = get(&a.url("/metrics")).await.text();
    assert!(
        metrics.contains(r#"modhost_calls_total{caller="caller",callee="callee",function="modhost-testing:kinds/api@1.0.0#reserve",path="remote",outcome="ok"} 2"#),
        "{metrics}"
    );
}

/// Nodes reached by DNS name, as Kubernetes Services reach pods: each node's mesh
/// address is `localhost:PORT`; a node listens on every interface at its port, and
/// its peers resolve the name when they connect. Calls cross, verified as before by
/// the node names in the certificates, which also carry the DNS names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_reached_by_dns_name_call_each_other() {
    let deployment = Cluster::write(
        CALLS,
        &["a", "b"],
        &[("caller", &["a"]), ("callee", &["b"])],
    );
    let text = std::fs::read_to_string(&deployment.file).unwrap();
    let named = text.replace("mesh = \"127.0.0.1:", "mesh = \"localhost:");
    assert_eq!(named.matches("mesh = \"localhost:").count(), 2, "{named}");
    std::fs::write(&deployment.file, named).unwrap();
    let cluster = Cluster::launch(deployment, &["a", "b"]);
    let a = cluster.node("a");
    let ok = get(&a.url("/caller/reserve?sku=KB-001&quantity=3")).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["reserved"], 3, "{}", ok.text());
    let cycle = get(&a.url("/caller/bounce?n=4")).await;
    assert_eq!(cycle.json()["hops"], 4, "{}", cycle.text());
    // b's gateway forwards a's route over the named mesh, the other way.
    let forwarded = get(&cluster
        .node("b")
        .url("/caller/reserve?sku=KB-001&quantity=2"))
    .await;
    assert_eq!(forwarded.status, 200, "{}", forwarded.text());
    assert_eq!(forwarded.json()["reserved"], 2, "{}", forwarded.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_serves_any_route_by_forwarding() {
    let cluster = split();
    // `/caller` belongs to a module on a; b's gateway forwards it over the mesh.
    let b = cluster.node("b");
    let reply = get(&b.url("/caller/reserve?sku=KB-001&quantity=2")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["reserved"], 2);
    // A module failure on a comes back through b with a's answer.
    let crash = get(&b.url("/caller/crash")).await;
    assert_eq!(crash.status, 502, "{}", crash.text());
    assert_eq!(crash.json()["error"]["code"], "call_failed");
    // b's readiness lists what b runs.
    let ready = get(&b.url("/readyz")).await.json();
    assert!(
        ready["modules"]["callee"].is_object() && ready["modules"]["caller"].is_null(),
        "{ready}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_frozen_node_fails_calls_fast_and_service_resumes_when_it_returns() {
    let mut cluster = split();
    let ok = get(&cluster.node("a").url("/caller/reserve?sku=A&quantity=1")).await;
    assert_eq!(ok.status, 200, "{}", ok.text());

    // Killed: calls fail at once with a typed 503, never a hang — the connection is
    // refused (nothing waits for an answer), and after three failures in a row (the
    // test deployment's `consecutive_failures`) b is not even tried.
    cluster.node_mut("b").kill();
    for attempt in 0..5 {
        let reply = get(&cluster.node("a").url("/caller/reserve?sku=A&quantity=1")).await;
        let logged = cluster.node("a").failure_log(&reply, 503);
        assert_eq!(reply.json()["error"]["code"], "call_unavailable");
        let why = if attempt < 3 {
            "is unreachable"
        } else {
            "ejected after failing"
        };
        assert!(
            logged.contains("callee") && logged.contains(why),
            "{logged}"
        );
    }

    // Back: the same node a serves again, without a restart of its own (a ping finds
    // b back after its ejection's `open_for`).
    cluster.start_node("b", &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = get(&cluster.node("a").url("/caller/reserve?sku=A&quantity=1")).await;
        if reply.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "service did not resume: {}",
            reply.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Frozen (partitioned): the call fails with a 503 after the callee's timeout
    // (500ms) plus the network's share, not a hang.
    cluster.node("b").signal("STOP");
    let reply = get(&cluster.node("a").url("/caller/reserve?sku=A&quantity=1")).await;
    cluster.node("b").signal("CONT");
    assert_eq!(
        reply.status,
        503,
        "{}\n{}",
        reply.text(),
        cluster.logs().join("\n")
    );
    let logged = cluster.node("a").failure_log(&reply, 503);
    assert_eq!(reply.json()["error"]["code"], "call_unavailable");
    assert!(logged.contains("did not answer within"), "{logged}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_from_another_ca_outside_the_deployment_or_expired_is_refused_and_both_sides_log_it()
{
    let cluster = split();

    // An impostor: the same deployment, but its own CA. It claims to be node a and
    // calls b, which refuses the TLS handshake.
    let impostor = beside(&cluster, "a", false);
    Cluster::certs(&impostor);
    let other = refused_call(impostor, "a").await;
    other
        .node("a")
        .wait_for_log("TLS handshake with a peer failed");
    cluster
        .node("b")
        .wait_for_log("refused a peer: TLS handshake failed");

    // A node the deployment does not name, with a certificate from the right CA:
    // refused after the handshake, for its name.
    let mallory = beside(&cluster, "mallory", true);
    Cluster::certs(&mallory);
    let outsider = refused_call(mallory, "mallory").await;
    cluster
        .node("b")
        .wait_for_log("its certificate names no node of this deployment");
    outsider.node("mallory").wait_for_log("call_unavailable");

    // Node a's own name and CA, but a certificate that has expired: refused in the
    // handshake, for its date.
    let lapsed = beside(&cluster, "a", true);
    let loaded = modhost::deployment::Deployment::load(&lapsed.file).expect("deployment");
    // Valid until yesterday.
    modhost::mesh::certs::generate(&loaded, &["a".to_string()], -1, false)
        .expect("an expired certificate");
    let expired = refused_call(lapsed, "a").await;
    // TLS 1.3: a learns of the refusal after its side of the handshake — from b's
    // alert (`CertificateExpired`), or, when it was already writing, as a broken pipe
    // on the call's stream; either way its failed call names b as unreachable.
    expired
        .node("a")
        .wait_for_log("module `callee` (on b) is unreachable");
    cluster
        .node("b")
        .wait_for_log("invalid peer certificate: Expired");

    // The real node a still gets through.
    let ok = get(&cluster.node("a").url("/caller/reserve?sku=A&quantity=1")).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificates_are_picked_up_without_a_restart() {
    let cluster = split();
    let before = get(&cluster.node("a").url("/caller/reserve?sku=A&quantity=1")).await;
    assert_eq!(before.status, 200);
    let certs = cluster.deployment.dir.path().join("certs");
    let old = std::fs::read(certs.join("b.pem")).unwrap();
    // A new certificate for b, from the same CA (what a renewal does).
    let output = std::process::Command::new(modhost_bin())
        .args(["certs"])
        .arg(&cluster.deployment.file)
        .args(["--node", "b"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_ne!(std::fs::read(certs.join("b.pem")).unwrap(), old);
    cluster
        .node("b")
        .wait_for_log("mesh: certificates reloaded");
    // New connections see the new certificate; calls keep working throughout.
    let after = get(&cluster.node("a").url("/caller/reserve?sku=A&quantity=1")).await;
    assert_eq!(after.status, 200, "{}", after.text());
}

#[test]
fn check_validates_placement() {
    let cases = [
        // A module placed nowhere.
        (
            format!("{CALLS}\n[nodes.a]\nlisten = \"127.0.0.1:18101\"\nmesh = \"127.0.0.1:18102\"\n[placement]\ncaller = [\"a\"]\n"),
            "placement.callee: module `callee` is not placed on any node",
        ),
        // A node reached by another node's name would carry it in its certificate.
        (
            format!("{CALLS}\n[nodes.a]\nlisten = \"127.0.0.1:18101\"\nmesh = \"127.0.0.1:18102\"\n[nodes.b]\nlisten = \"a:18103\"\nmesh = \"127.0.0.1:18104\"\n[placement]\ncaller = [\"a\"]\ncallee = [\"b\"]\n[mesh]\nca = \"ca.pem\"\ncert = \"{{node}}.pem\"\nkey = \"{{node}}.key\"\n"),
            "nodes.b.listen: `a` is node a's name",
        ),
        // An unknown node.
        (
            format!("{CALLS}\n[nodes.a]\nlisten = \"127.0.0.1:18101\"\nmesh = \"127.0.0.1:18102\"\n[placement]\ncaller = [\"a\"]\ncallee = [\"z\"]\n"),
            "placement.callee[0]: no node `z` in [nodes]",
        ),
        // Two nodes without a mesh.
        (
            format!("{CALLS}\n[nodes.a]\nlisten = \"127.0.0.1:18101\"\nmesh = \"127.0.0.1:18102\"\n[nodes.b]\nlisten = \"127.0.0.1:18103\"\nmesh = \"127.0.0.1:18104\"\n[placement]\ncaller = [\"a\"]\ncallee = [\"b\"]\n"),
            "mesh: a deployment of several nodes needs [mesh]",
        ),
        // Two nodes on one address, even a wildcard one.
        (
            format!("{CALLS}\n[nodes.a]\nlisten = \"0.0.0.0:18101\"\nmesh = \"127.0.0.1:18102\"\n[nodes.b]\nlisten = \"0.0.0.0:18101\"\nmesh = \"127.0.0.1:18104\"\n[placement]\ncaller = [\"a\"]\ncallee = [\"b\"]\n"),
            "nodes.b.listen: 0.0.0.0:18101 is also nodes.a.listen",
        ),
        // One node's wildcard listener overlapping its other listener's port.
        (
            format!("{CALLS}\n[nodes.a]\nlisten = \"127.0.0.1:18101\"\nmesh = \"0.0.0.0:18101\"\n[placement]\ncaller = [\"a\"]\ncallee = [\"a\"]\n"),
            "nodes.a.mesh: 0.0.0.0:18101 is also nodes.a.listen",
        ),
    ];
    for (text, expected) in cases {
        let deployment = TestDeployment::new(&text);
        let (code, stderr) = check(&deployment);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in:\n{stderr}"
        );
    }
}

/// The mesh address of `node` in `deployment`'s file.
/// Another deployment whose `caller` runs on `caller_node` and calls `cluster`'s node
/// `b` (its mesh address); with `same_ca`, it holds `cluster`'s CA, else none yet.
fn beside(cluster: &Cluster, caller_node: &str, same_ca: bool) -> TestDeployment {
    let deployment = Cluster::write(
        CALLS,
        &[caller_node, "b"],
        &[("caller", &[caller_node]), ("callee", &["b"])],
    );
    retarget(&deployment, "b", &mesh_address(&cluster.deployment, "b"));
    if same_ca {
        let certs = deployment.dir.path().join("certs");
        std::fs::create_dir_all(&certs).unwrap();
        for file in ["ca.pem", "ca.key"] {
            std::fs::copy(
                cluster.deployment.dir.path().join("certs").join(file),
                certs.join(file),
            )
            .unwrap();
        }
    }
    deployment
}

/// Starts `node` of `deployment` on its own and has its `caller` call `callee`: the
/// peer refuses it, so the answer is a 503.
async fn refused_call(deployment: TestDeployment, node: &str) -> Cluster {
    let mut alone = Cluster {
        deployment,
        nodes: Default::default(),
    };
    alone.start_node(node, &[]);
    let reply = get(&alone.node(node).url("/caller/reserve?sku=A&quantity=1")).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    alone
}

fn mesh_address(deployment: &TestDeployment, node: &str) -> String {
    let text = std::fs::read_to_string(&deployment.file).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    table["nodes"][node]["mesh"].as_str().unwrap().to_string()
}

/// Points `deployment`'s node `node` at `mesh` (another cluster's node).
fn retarget(deployment: &TestDeployment, node: &str, mesh: &str) {
    let text = std::fs::read_to_string(&deployment.file).unwrap();
    let old = mesh_address(deployment, node);
    std::fs::write(&deployment.file, text.replace(&old, mesh)).unwrap();
}

/// A request's id reaches the log of every call it causes, on every node: what the
/// callee writes on its node is logged under the id the client sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requests_id_crosses_the_mesh_with_its_calls() {
    let cluster = split();
    let reply = send_with_headers(
        &client(false),
        "GET",
        &cluster.node("a").url("/caller/crash"),
        &[("x-request-id", "order-7781")],
        None,
    )
    .await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(reply.headers["x-request-id"], "order-7781");
    // The callee's own output on b, in the call's span, names the request.
    let line = cluster.node("b").wait_for_log_with(&[
        "callee: deliberate trap",
        r#""name":"remote_call""#,
        r#""request_id":"order-7781""#,
    ]);
    assert!(line.contains(r#""caller":"caller""#), "{line}");
}

/// Calls `function` (no parameters) of the test interface on `peer`'s node for
/// `caller`, giving it `deadline_ms`; the answer's body.
async fn call(peer: &mut common::peer::Peer, function: &str, deadline_ms: u64) -> bytes::Bytes {
    let interface = "modhost-testing:kinds/api@1.0.0";
    let frame = common::peer::call_frame_within("caller", interface, function, deadline_ms);
    let (status, body) = peer.post("/v1/call", frame).await;
    assert_eq!(status, 200, "{function}: {body:?}");
    body
}

/// A peer's deadline can shorten a call, never lengthen it: none left fails the call
/// as timed out, and the largest there is leaves the callee's own timeout in force.
/// A request id a peer sends that the gateway would not have kept is not logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_deadline_can_shorten_a_call_but_never_lengthen_it() {
    use modhost::mesh::wire::outcome;
    use modhost::module::CallFailure;

    let cluster = split();
    let mut peer = common::peer::Peer::connect(&cluster.deployment.file, "a", "b").await;
    let timed_out = [outcome::FAILED, CallFailure::TimedOut.code()];

    let body = call(&mut peer, "spin", 0).await;
    assert_eq!(body[..2], timed_out, "{body:?}");
    let body = call(&mut peer, "served", u64::MAX).await;
    assert_eq!(body[0], outcome::OK, "{body:?}");
    let body = call(&mut peer, "spin", u64::MAX).await;
    assert_eq!(body[..2], timed_out, "{body:?}");
    let said = String::from_utf8_lossy(&body);
    assert!(said.contains("within its timeout of 500ms"), "{said}");

    // The node serves its own caller as before.
    let reply = get(&cluster.node("a").url("/caller/reserve?sku=A&quantity=1")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let logs = cluster.node("b").logs().join("\n");
    assert!(!logs.contains("forged log line"), "{logs}");
}

/// A peer node proves who it is, and may then do only what its placement allows: call
/// for the modules placed on it, within their grants; forward requests for routes;
/// send Wasm, never native code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_can_do_only_what_its_placement_and_grants_allow() {
    let cluster = Cluster::start(
        &format!("{CALLS}\n[modules.hello]\ncomponent = \"{{hello}}\"\nroutes = [\"/hello\"]\n"),
        &["a", "b"],
        &[("caller", &["a"]), ("callee", &["b"]), ("hello", &["a"])],
    );
    let file = &cluster.deployment.file;
    let mut peer = common::peer::Peer::connect(file, "a", "b").await;
    let interface = "modhost-testing:kinds/api@1.0.0";

    // What node a may send: a call for `caller`, which runs on a and may call callee.
    let (status, body) = peer
        .post(
            "/v1/call",
            common::peer::call_frame("caller", interface, "served"),
        )
        .await;
    assert_eq!(status, 200, "{body:?}");

    // A module that does not exist, one placed on b, one on a without the grant.
    for (caller, refusal) in [
        ("intruder", "module `intruder` does not run on node a"),
        ("callee", "module `callee` does not run on node a"),
        ("hello", "module `hello` may not call `callee`"),
    ] {
        let (status, body) = peer
            .post(
                "/v1/call",
                common::peer::call_frame(caller, interface, "served"),
            )
            .await;
        assert_eq!(status, 403, "{caller}: {body:?}");
        let said = String::from_utf8_lossy(&body);
        assert!(said.contains(refusal), "{caller}: {said}");
    }
    cluster.node("b").wait_for_log("mesh: refused a call");

    // A forwarded request must be for a path the module serves: callee serves none.
    let (status, body) = peer.send("GET", "/v1/http/callee/served", Vec::new()).await;
    assert_eq!(status, 403, "{body:?}");

    // Precompiled code from a peer is refused, to stage or to adopt.
    let out = tempfile::tempdir().unwrap();
    let compiled = std::process::Command::new(modhost_bin())
        .arg("compile")
        .arg(guest("callee"))
        .arg("--out-dir")
        .arg(out.path())
        .output()
        .unwrap();
    assert!(compiled.status.success(), "{compiled:?}");
    let cwasm = std::fs::read(out.path().join("callee.cwasm")).unwrap();
    for action in ["stage?module=callee", "adopt?module=caller"] {
        let (status, body) = peer
            .post(&format!("/v1/admin/{action}"), cwasm.clone())
            .await;
        assert_eq!(status, 409, "{action}: {body:?}");
        assert!(
            String::from_utf8_lossy(&body).contains("Wasm components only"),
            "{action}: {body:?}"
        );
    }

    // Node b kept serving its neighbours all along.
    let reply = get(&cluster.node("a").url("/caller/reserve?sku=A&quantity=1")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// A peer that answers without end (here 1 GiB to every request): node a reads at most
/// 16 MiB of a call's answer and 256 MiB of an admin answer, fails that call or that
/// node's part of the answer, stays small, and keeps serving its own modules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_answers_without_end_is_cut_off_and_the_node_stays_small() {
    const TOKEN: &str = "test-admin-token-0123456789";
    const MIB: u64 = 1024 * 1024;
    let deployment = Cluster::write(
        &format!(
            "{CALLS}\n[admin]\ntoken = \"{TOKEN}\"\n\
             [modules.hello]\ncomponent = \"{{hello}}\"\nroutes = [\"/hello\"]\n"
        ),
        &["a", "b"],
        &[("caller", &["a"]), ("callee", &["b"]), ("hello", &["a"])],
    );
    Cluster::certs(&deployment);
    let hostile = common::peer::EndlessPeer::serve(&deployment.file, "b", 1024 * MIB).await;
    let mut cluster = Cluster {
        deployment,
        nodes: Default::default(),
    };
    cluster.start_node("a", &[]);
    let a = cluster.node("a");

    // A call into b: its answer is cut off at the bound, and the call fails typed.
    let reply = get(&a.url("/caller/reserve?sku=A&quantity=1")).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(hostile.requests().iter().any(|path| path == "/v1/call"));
    a.wait_for_log("length limit exceeded");
    let after_call = a.peak_resident_bytes();
    assert!(
        after_call < 128 * MIB,
        "node a peaked at {} MiB reading a call's answer",
        after_call / MIB
    );

    // The status of every node: b's part is cut off at its bound, a's is there.
    let admin = format!("http://{}", a.admin.expect("an admin listener"));
    let output = std::process::Command::new(modhost_bin())
        .args(["status", "--admin", &admin, "--token", TOKEN])
        .output()
        .expect("run modhost status");
    assert!(output.status.success(), "{output:?}");
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let b_error = status["nodes"]["b"]["error"].as_str().unwrap_or_default();
    assert!(b_error.contains("length limit exceeded"), "{status}");
    assert!(status["nodes"]["a"]["hello"].is_object(), "{status}");
    let after_admin = a.peak_resident_bytes();
    eprintln!(
        "node a's peak: {} MiB after the call, {} MiB after the status",
        after_call / MIB,
        after_admin / MIB
    );
    assert!(
        after_admin < (256 + 128) * MIB,
        "node a peaked at {} MiB reading an admin answer",
        after_admin / MIB
    );

    // Its own module served throughout.
    let hello = get(&a.url("/hello")).await;
    assert_eq!(hello.status, 200, "{}", hello.text());
}
