//! Components made by the wider ecosystem, for `wasmtime serve`, run under modhost
//! unchanged: a wstd (async Rust) server and a handler on the bare `wasip2` bindings,
//! with streamed request and response bodies, beside a module built with modhost's
//! SDK. And a component for another WASI release is refused at load, by name.

mod common;
use common::*;

const ECOSYSTEM: &str = r#"
[app]
name = "ecosystem"

[modules.wstd]
component = "{wstdserver}"
routes = ["/wstd"]

[modules.plain]
component = "{plainhttp}"
routes = ["/plain"]

[modules.hello]
component = "{hello}"
routes = ["/hello"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_made_for_wasmtime_serve_are_served_unchanged() {
    let deployment = TestDeployment::new(ECOSYSTEM);
    let host = Modhost::start(&deployment);
    let http = client(false);

    let hello = send(&http, "GET", &host.url("/wstd"), None).await;
    assert_eq!(hello.status, 200);
    assert_eq!(hello.text(), "Hello from a wstd server\n");

    // A body streamed back as the server reads it: every byte, in order.
    let sent: String = (0..200 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let echoed = send(&http, "POST", &host.url("/wstd/echo"), Some(&sent)).await;
    assert_eq!(echoed.status, 200, "{}", echoed.text());
    assert_eq!(echoed.body.len(), sent.len());
    assert!(echoed.body == sent.as_bytes(), "the echo differs");

    // A response the server generates chunk by chunk, of no declared length: 64
    // chunks of 16 KiB, each its own letter.
    let streamed = send(
        &http,
        "GET",
        &host.url("/wstd/stream?chunks=64&size=16384"),
        None,
    )
    .await;
    assert_eq!(streamed.status, 200);
    assert!(streamed.headers.get("content-length").is_none());
    assert_eq!(streamed.headers["transfer-encoding"], "chunked");
    assert_eq!(streamed.body.len(), 64 * 16384);
    for (i, chunk) in streamed.body.chunks(16384).enumerate() {
        let letter = b'a' + (i % 26) as u8;
        assert!(chunk.iter().all(|&b| b == letter), "chunk {i} is wrong");
    }

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

    // The SDK's module beside them.
    let ok = send(&http, "GET", &host.url("/hello"), None).await;
    assert_eq!((ok.status, ok.text().as_str()), (200, "ok"));
}

/// A component built for WASI 0.3 (P3) is refused when the deployment loads, naming
/// each import modhost does not serve and what to do; nothing is served. Both kinds:
/// one that compiles (only its imports are 0.3) and a real P3 handler, which does not.
#[test]
fn a_component_for_another_wasi_release_is_refused_at_load_by_name() {
    let wasm = wat::parse_str(
        r#"(component
            (import "wasi:cli/environment@0.3.0-rc-2025-09-16" (instance
                (export "get-arguments" (func (result (list string))))))
            (import "wasi:clocks/monotonic-clock@0.2.4" (instance
                (export "now" (func (result u64)))))
        )"#,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("p3.wasm");
    std::fs::write(&component, wasm).unwrap();
    let deployment = TestDeployment::new(&format!(
        "[app]\nname = \"p3\"\n\n[modules.next]\ncomponent = \"{}\"\n\n\
         [modules.hello]\ncomponent = \"{{hello}}\"\nroutes = [\"/hello\"]\n",
        component.display()
    ));
    let (code, stderr) = check(&deployment);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("imports wasi:cli/environment@0.3.0-rc-2025-09-16: modhost serves WASI 0.2 components (wasi:*@0.2.x) only"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("monotonic-clock"),
        "a 0.2 import is not named: {stderr}"
    );
    assert!(stderr.contains("module `next`"), "{stderr}");

    // A real one: a wasi:http handler built with the wasip3 bindings. It does not even
    // compile here (it uses the async features the engine has off); the refusal still
    // names its WASI 0.3 imports rather than the compiler's complaint.
    let real = TestDeployment::new(
        "[app]\nname = \"p3\"\n\n[modules.next]\ncomponent = \"{p3http}\"\nroutes = [\"/next\"]\n",
    );
    let (code, stderr) = check(&real);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("imports wasi:http/types@0.3.2"), "{stderr}");
    assert!(
        stderr.contains("modhost serves WASI 0.2 components (wasi:*@0.2.x) only"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("requires the component model async feature"),
        "{stderr}"
    );
}

/// A WASI 0.3 component swapped in at run time through the admin API — what a team
/// (or whoever holds the token) could try on a live node — is refused by name on both
/// paths (one that does not compile, one that compiles but imports 0.3), and the
/// module it was meant for, and its neighbours, keep serving their old versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasi_0_3_component_swapped_in_is_refused_and_the_module_keeps_serving() {
    const TOKEN: &str = "ecosystem-admin-token-0123456789";
    let deployment = TestDeployment::new(&format!("{ECOSYSTEM}\n[admin]\ntoken = \"{TOKEN}\"\n"));
    let host = Modhost::start_with(&deployment, "run", &["--admin-listen", "127.0.0.1:0"]);
    let admin = format!("http://{}", host.admin.expect("an admin listener"));
    let compiles = deployment.dir.path().join("imports-0.3.wasm");
    std::fs::write(
        &compiles,
        wat::parse_str(
            r#"(component
                (import "wasi:cli/environment@0.3.0-rc-2025-09-16" (instance
                    (export "get-arguments" (func (result (list string))))))
            )"#,
        )
        .unwrap(),
    )
    .unwrap();
    let before = get(&host.url("/plain")).await;
    assert_eq!(before.status, 200, "{}", before.text());
    let serving = before.headers["x-modhost-version"].clone();

    for (component, named) in [
        (guest("p3http"), "imports wasi:http/types@0.3.2"),
        (compiles, "imports wasi:cli/environment@0.3.0-rc-2025-09-16"),
    ] {
        let output = std::process::Command::new(modhost_bin())
            .args(["swap", "plain", component.to_str().unwrap()])
            .args(["--admin", &admin, "--token", TOKEN])
            .output()
            .expect("run modhost swap");
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{err}");
        assert!(err.contains(named), "{err}");
        assert!(
            err.contains("modhost serves WASI 0.2 components (wasi:*@0.2.x) only"),
            "{err}"
        );
        // Nothing changed: the old version serves, and so do the neighbours.
        let after = get(&host.url("/plain")).await;
        assert_eq!(after.status, 200, "{}", after.text());
        assert_eq!(after.headers["x-modhost-version"], serving);
        assert_eq!(get(&host.url("/hello")).await.text(), "ok");
        assert_eq!(
            get(&host.url("/wstd")).await.text(),
            "Hello from a wstd server\n"
        );
    }
}
