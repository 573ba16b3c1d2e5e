//! Components made by the wider ecosystem, for `wasmtime serve`, run under modhost
//! unchanged: a wstd (async Rust) server and a handler on the bare `wasip2` bindings,
//! with streamed request and response bodies, and a WASI 0.3 server on the `wasip3`
//! bindings (as Spin 4 and wasmCloud v2 build them), beside a module built with
//! modhost's SDK. A hostile WASI 0.3 module is held to its limits like any other; a
//! component for a WASI release modhost does not serve is refused at load, by name.

mod common;
use common::*;

const ECOSYSTEM: &str = r#"
[app]
name = "ecosystem"

[modules.wstd]
component = "{wstdserver}"
routes = ["/wstd"]
limits = { timeout = "1s" }

[modules.plain]
component = "{plainhttp}"
routes = ["/plain"]
limits = { timeout = "2s" }

[modules.hello]
component = "{hello}"
routes = ["/hello"]

[modules.next]
component = "{p3http}"
routes = ["/next"]

[modules.next.limits]
timeout = "1s"
memory = "32MiB"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_made_for_wasmtime_serve_are_served_unchanged() {
    let deployment = TestDeployment::new(ECOSYSTEM);
    let host = Modhost::start(&deployment);
    let http = client(false);

    let hello = send(&http, "GET", &host.url("/wstd"), None).await;
    assert_eq!(hello.status, 200);
    assert_eq!(hello.text(), "Hello from a wstd server\n");

    let sent = letters(200 * 1024);
    streams_both_ways(&http, &host, "/wstd", &sent).await;
    let headers = send_with_headers(
        &http,
        "GET",
        &host.url("/wstd/headers"),
        &[("x-team", "payments")],
        None,
    )
    .await;
    assert_eq!(headers.status, 200);
    assert_eq!(headers.headers["x-team"], "payments");

    let missing = send(&http, "GET", &host.url("/wstd/nothing"), None).await;
    assert_eq!(missing.status, 404);

    // The bare bindings: an explicit content-length, and a body upper-cased as it
    // streams through.
    let plain = send(&http, "GET", &host.url("/plain"), None).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.headers["content-length"], "39");
    assert_eq!(plain.text(), "Hello from a plain wasi:http component\n");
    let upper = send(&http, "POST", &host.url("/plain/upper"), Some(&sent)).await;
    assert_eq!(upper.status, 200);
    assert_eq!(upper.headers["transfer-encoding"], "chunked");
    assert!(
        upper.body == sent.to_ascii_uppercase().as_bytes(),
        "not upper-cased"
    );

    // WASI 0.3: a greeting written after the handler returned, an echo and a
    // generated stream (the guest writes both from tasks of its own while the host
    // streams them out), headers and status, and its own 404.
    let next = send(&http, "GET", &host.url("/next"), None).await;
    assert_eq!(
        (next.status, next.text().as_str()),
        (200, "Hello from WASI 0.3\n")
    );
    streams_both_ways(&http, &host, "/next", &sent).await;
    let headers = send_with_headers(
        &http,
        "GET",
        &host.url("/next/headers"),
        &[("x-team", "payments")],
        None,
    )
    .await;
    assert_eq!(headers.status, 201);
    assert_eq!(headers.headers["x-team"], "payments");
    let missing = send(&http, "GET", &host.url("/next/nothing"), None).await;
    assert_eq!(
        (missing.status, missing.text().as_str()),
        (404, "not found\n")
    );
    // Its output is the host's log, tagged with the module, in the request's span.
    let logged = send(&http, "GET", &host.url("/next/log"), None).await;
    assert_eq!(logged.status, 200);
    let line = host.wait_for_log("a line from a WASI 0.3 module");
    assert!(line.contains(r#""module":"next""#), "{line}");
    assert!(line.contains(r#""path":"/next/log""#), "{line}");
    // Deny by default holds on WASI 0.3's client as on 0.2's outgoing handler.
    let outbound = send(&http, "GET", &host.url("/next/outbound"), None).await;
    assert_eq!(
        (outbound.status, outbound.text().as_str()),
        (200, "refused: ErrorCode::HttpRequestDenied\n")
    );

    // The SDK's module beside them.
    let ok = send(&http, "GET", &host.url("/hello"), None).await;
    assert_eq!((ok.status, ok.text().as_str()), (200, "ok"));
}

/// `length` bytes of the alphabet, repeated.
fn letters(length: usize) -> String {
    (0..length)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect()
}

/// The server at `prefix` streams both ways: `sent` echoed back as it is read, every
/// byte in order; and a response it generates chunk by chunk, of no declared length
/// (64 chunks of 16 KiB, each its own letter).
async fn streams_both_ways(http: &HttpClient, host: &Modhost, prefix: &str, sent: &str) {
    let echoed = send(
        http,
        "POST",
        &host.url(&format!("{prefix}/echo")),
        Some(sent),
    )
    .await;
    assert_eq!(echoed.status, 200, "{prefix}: {}", echoed.text());
    assert_eq!(echoed.body.len(), sent.len(), "{prefix}");
    assert!(echoed.body == sent.as_bytes(), "{prefix}: the echo differs");
    let url = host.url(&format!("{prefix}/stream?chunks=64&size=16384"));
    let streamed = send(http, "GET", &url, None).await;
    assert_eq!(streamed.status, 200, "{prefix}");
    assert!(streamed.headers.get("content-length").is_none(), "{prefix}");
    assert_eq!(streamed.headers["transfer-encoding"], "chunked", "{prefix}");
    assert_eq!(streamed.body.len(), 64 * 16384, "{prefix}");
    for (i, chunk) in streamed.body.chunks(16384).enumerate() {
        let letter = b'a' + (i % 26) as u8;
        assert!(
            chunk.iter().all(|&b| b == letter),
            "{prefix}: chunk {i} is wrong"
        );
    }
}

/// Two components beyond what modhost serves, written into `dir`, each with what its
/// refusal must say: one for a later WASI release, and a WASI 0.3 one that reaches for
/// a host capability.
fn beyond_served(dir: &std::path::Path) -> [(std::path::PathBuf, &'static str); 2] {
    let write = |name: &str, wat: &str| {
        let path = dir.join(name);
        std::fs::write(&path, wat::parse_str(wat).unwrap()).unwrap();
        path
    };
    let later = write(
        "wasi-0.4.wasm",
        r#"(component
            (import "wasi:cli/environment@0.4.0" (instance
                (export "get-arguments" (func (result (list string))))))
            (import "wasi:clocks/monotonic-clock@0.2.4" (instance
                (export "now" (func (result u64)))))
        )"#,
    );
    let reaching = write(
        "p3-with-sql.wasm",
        r#"(component
            (import "wasi:clocks/monotonic-clock@0.3.0" (instance))
            (import "modhost:sql/query@1.0.0" (instance))
        )"#,
    );
    [
        (
            later,
            "imports wasi:cli/environment@0.4.0: modhost serves WASI 0.2 and 0.3 components",
        ),
        (
            reaching,
            "is a WASI 0.3 component and imports modhost:sql/query@1.0.0: a WASI 0.3 module \
             may import WASI and wasi:http only",
        ),
    ]
}

/// A hostile WASI 0.3 module — one that computes for ever, one that grows its memory
/// without end, one that panics — is held to its module's limits as a WASI 0.2 one is:
/// each request gets its proper status and error code, and the module itself and its
/// neighbours keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_wasi_0_3_module_is_held_to_its_limits() {
    let deployment = TestDeployment::new(ECOSYSTEM);
    let host = Modhost::start(&deployment);
    let http = client(false);
    for (action, status, code) in [
        ("spin", 504, "module_timeout"),
        ("hog", 500, "module_out_of_memory"),
        ("trap", 500, "module_trapped"),
    ] {
        let reply = send(&http, "GET", &host.url(&format!("/next/{action}")), None).await;
        let line = host.failure_log(&reply, status);
        assert_eq!(
            reply.json()["error"]["code"],
            code,
            "{action}: {}",
            reply.text()
        );
        assert!(line.contains(code), "{action}: {line}");
        let next = send(&http, "GET", &host.url("/next"), None).await;
        assert_eq!(next.text(), "Hello from WASI 0.3\n", "after {action}");
        let hello = send(&http, "GET", &host.url("/hello"), None).await;
        assert_eq!(hello.text(), "ok", "after {action}");
        let wstd = send(&http, "GET", &host.url("/wstd"), None).await;
        assert_eq!(wstd.text(), "Hello from a wstd server\n", "after {action}");
    }
}

/// GET `url`, whose module sends its head and then outruns its deadline: the client
/// gets the head (200) and then a body that ends in an error, not as if whole, and the
/// log names the request and `module_timeout`.
async fn body_cut_off_at_the_deadline(http: &HttpClient, host: &Modhost, url: &str) {
    let response = http
        .request(
            hyper::Request::get(url)
                .body(http_body_util::Full::default())
                .unwrap(),
        )
        .await
        .expect("the head");
    assert_eq!(response.status(), 200, "{url}");
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body = http_body_util::BodyExt::collect(response.into_body()).await;
    assert!(body.is_err(), "{url}: a cut-off body ended as if whole");
    let line =
        host.wait_for_log_with(&["module failed after sending its response head", id.as_str()]);
    assert!(line.contains("module_timeout"), "{url}: {line}");
}

/// An instance ends with the request it serves, on both WASI lines. A body it cannot
/// finish within its module's timeout (it waits on a timer between chunks, where no
/// epoch deadline fires) is cut off: the client gets an error, not a short body that
/// looks whole, and the log says which module failed and why. One that fails just
/// after setting its head — it traps, or outruns its deadline on a timer or computing —
/// has sent the client nothing yet: the client gets the status that says so, not a
/// connection closed before any status. A client that leaves before the head
/// takes the instance, and its concurrency permit, with it. Either way the module
/// serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_ends_with_the_request_it_serves_on_both_wasi_lines() {
    let deployment = TestDeployment::new(ECOSYSTEM);
    let host = Modhost::start(&deployment);
    let http = client(false);
    for prefix in ["/wstd", "/next"] {
        // 20,000 chunks a millisecond apart: past the module's 1 s.
        let url = host.url(&format!("{prefix}/stream?chunks=20000&size=16"));
        body_cut_off_at_the_deadline(&http, &host, &url).await;
        let again = send(&http, "GET", &host.url(prefix), None).await;
        assert_eq!(again.status, 200, "{prefix}: {}", again.text());
    }
    // An instance that fails just after setting its head — it traps, or its deadline
    // comes (15 ms later) — has sent nothing yet: the client gets the status that says
    // why, not a connection closed before any head. One whose head went out well before
    // its deadline gets its body cut off, as above.
    for (prefix, timeout_ms) in [("/plain", 2000), ("/next", 1000)] {
        let just_before = timeout_ms - 15;
        for (query, status, code) in [
            ("then=trap".to_string(), 500, "module_trapped"),
            (
                format!("after={just_before}&then=sleep"),
                504,
                "module_timeout",
            ),
            (
                format!("after={just_before}&then=spin"),
                504,
                "module_timeout",
            ),
        ] {
            let url = host.url(&format!("{prefix}/stall?{query}"));
            let stalled = send(&http, "GET", &url, None).await;
            assert_eq!(stalled.status, status, "{url}: {}", stalled.text());
            assert_eq!(
                stalled.json()["error"]["code"],
                code,
                "{url}: {}",
                stalled.text()
            );
            let again = send(&http, "GET", &host.url(prefix), None).await;
            assert_eq!(again.status, 200, "{prefix}: {}", again.text());
        }
        let url = host.url(&format!("{prefix}/stall?then=sleep"));
        body_cut_off_at_the_deadline(&http, &host, &url).await;
    }
    drop(host);

    let deployment = TestDeployment::new(
        r#"
[app]
name = "left"

[modules.faulty]
component = "{faulty}"
routes = ["/faulty"]
limits = { timeout = "30s", concurrency = 1 }

[modules.next]
component = "{p3http}"
routes = ["/next"]
limits = { timeout = "30s", concurrency = 1 }
"#,
    );
    let host = Modhost::start(&deployment);
    for (module, slow) in [
        ("faulty", "/faulty/sleep?ms=20000"),
        ("next", "/next/sleep?ms=20000"),
    ] {
        let url = host.url(slow);
        let waiting = tokio::spawn(async move { get(&url).await });
        // The instance is waiting on its timer, holding the module's only permit…
        wait_for_in_flight(&host, module, 1, "the slow request is not in").await;
        // …and the client leaves: the instance goes, long before its 20 s are up.
        waiting.abort();
        wait_for_in_flight(&host, module, 0, "the instance outlived its client").await;
        let next = get(&host.url(&format!("/{module}/sleep?ms=1"))).await;
        assert_eq!(next.status, 200, "{module}: {}", next.text());
    }
}

/// A module reaching past its box — a TCP connection (to the gateway's own listener,
/// which would take it), the filesystem, the environment — gets nothing, on either
/// WASI line (a WASI 0.3 component reaches them through its standard library's 0.2
/// imports, linked on its engine with the same grant-nothing context). Its neighbour
/// serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_reaching_for_sockets_files_or_environment_gets_nothing_on_both_wasi_lines() {
    let deployment = TestDeployment::new(
        r#"
[app]
name = "reach"

[modules.faulty]
component = "{faulty}"
routes = ["/faulty"]

[modules.next]
component = "{p3http}"
routes = ["/next"]

[modules.hello]
component = "{hello}"
routes = ["/hello"]
"#,
    );
    let host = Modhost::start(&deployment);
    for module in ["faulty", "next"] {
        let reply = get(&host.url(&format!("/{module}/reach?to={}", host.addr))).await;
        assert_eq!(reply.status, 200, "{module}: {}", reply.text());
        let text = reply.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{module}: {text}");
        assert!(lines[0].starts_with("tcp: refused"), "{module}: {text}");
        assert!(lines[1].starts_with("files: refused"), "{module}: {text}");
        assert_eq!(lines[2], "env: 0 variables", "{module}: {text}");
        assert_eq!(get(&host.url("/hello")).await.text(), "ok");
    }
}

/// A component for a WASI release modhost does not serve is refused when the
/// deployment loads, naming each such import and what to do; so is a WASI 0.3
/// component that reaches beyond WASI (WASI 0.3 modules get WASI and wasi:http only).
/// Nothing is served. A WASI 0.3 server precompiled with `modhost compile` loads and
/// serves from its `.cwasm`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_beyond_the_served_wasi_are_refused_at_load_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for (component, named) in beyond_served(dir.path()) {
        let deployment = TestDeployment::new(&format!(
            "[app]\nname = \"refused\"\n\n[modules.next]\ncomponent = \"{}\"\n\n\
             [modules.hello]\ncomponent = \"{{hello}}\"\nroutes = [\"/hello\"]\n",
            component.display()
        ));
        let (code, stderr) = check(&deployment);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains(named), "{stderr}");
        assert!(stderr.contains("module `next`"), "{stderr}");
        assert!(
            !stderr.contains("monotonic-clock"),
            "a served import is not named: {stderr}"
        );
    }

    // Precompiled for the concurrent engine, it is told from a WASI 0.2 `.cwasm` and
    // loads as it was compiled.
    let output = std::process::Command::new(modhost_bin())
        .arg("compile")
        .arg(guest("p3http"))
        .arg("--out-dir")
        .arg(dir.path())
        .output()
        .expect("run modhost compile");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let cwasm = dir.path().join("p3http.cwasm");
    let deployment = TestDeployment::new(&format!(
        "[app]\nname = \"precompiled\"\n\n[modules.next]\ncomponent = \"{}\"\nroutes = [\"/next\"]\n\n\
         [modules.hello]\ncomponent = \"{{hello}}\"\nroutes = [\"/hello\"]\n",
        cwasm.display()
    ));
    let (code, stderr) = check(&deployment);
    assert_eq!(code, Some(0), "{stderr}");
    let host = Modhost::start(&deployment);
    let next = get(&host.url("/next")).await;
    assert_eq!(
        (next.status, next.text().as_str()),
        (200, "Hello from WASI 0.3\n")
    );
    assert_eq!(get(&host.url("/hello")).await.text(), "ok");
}

/// Hot swap crosses WASI lines: a module serving a WASI 0.2 component takes a WASI 0.3
/// one through the admin API and serves it at once, then goes back. A component
/// beyond what modhost serves — a later WASI release, or a WASI 0.3 one reaching for
/// the host's capabilities — is refused by name on the same path (what a team, or
/// whoever holds the token, could try on a live node), and the module and its
/// neighbours keep serving the version they had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_crosses_wasi_lines_and_refuses_what_is_not_served() {
    const TOKEN: &str = "ecosystem-admin-token-0123456789";
    let deployment = TestDeployment::new(&format!("{ECOSYSTEM}\n[admin]\ntoken = \"{TOKEN}\"\n"));
    let host = Modhost::start_with(&deployment, "run", &["--admin-listen", "127.0.0.1:0"]);
    let admin = format!("http://{}", host.admin.expect("an admin listener"));
    let swap = |component: &std::path::Path| {
        std::process::Command::new(modhost_bin())
            .args(["swap", "plain", component.to_str().unwrap()])
            .args(["--admin", &admin, "--token", TOKEN])
            .output()
            .expect("run modhost swap")
    };
    let before = get(&host.url("/plain")).await;
    assert_eq!(before.status, 200, "{}", before.text());
    let plain_version = before.headers["x-modhost-version"].clone();

    // 0.2 → 0.3: the same route, now answered by the WASI 0.3 server.
    let output = swap(&guest("p3http"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let swapped = get(&host.url("/plain")).await;
    assert_eq!(
        (swapped.status, swapped.text().as_str()),
        (200, "Hello from WASI 0.3\n")
    );
    assert_ne!(swapped.headers["x-modhost-version"], plain_version);
    let echoed = send(
        &client(false),
        "POST",
        &host.url("/plain/echo"),
        Some("both ways"),
    )
    .await;
    assert_eq!(echoed.text(), "both ways");

    // 0.3 → 0.2: back to the plain component.
    let output = swap(&guest("plainhttp"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let back = get(&host.url("/plain")).await;
    assert_eq!(back.text(), "Hello from a plain wasi:http component\n");
    assert_eq!(back.headers["x-modhost-version"], plain_version);

    for (component, named) in beyond_served(deployment.dir.path()) {
        let output = swap(&component);
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{err}");
        assert!(err.contains(named), "{err}");
        // Nothing changed: the old version serves, and so do the neighbours.
        let after = get(&host.url("/plain")).await;
        assert_eq!(after.status, 200, "{}", after.text());
        assert_eq!(after.headers["x-modhost-version"], plain_version);
        assert_eq!(get(&host.url("/hello")).await.text(), "ok");
        assert_eq!(
            get(&host.url("/next")).await.text(),
            "Hello from WASI 0.3\n"
        );
        assert_eq!(
            get(&host.url("/wstd")).await.text(),
            "Hello from a wstd server\n"
        );
    }
}
