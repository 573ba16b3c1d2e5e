//! A module that traps, spins or hoards memory fails only its own request — with 500,
//! 504 and 500 and an error id that is also in the log — while a concurrent stream of
//! requests to another module all succeed.

mod common;
use common::*;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const DEPLOYMENT: &str = r#"
[app]
name = "faults"

[modules.users]
component = "{users}"
routes = ["/users"]
database = "sqlite"
migrations = "{repo}/modules/users/migrations"

[modules.faulty]
component = "{faulty}"
routes = ["/faulty"]
limits = { memory = "16MiB", timeout = "500ms", concurrency = 16 }
"#;

/// Asserts `reply` is the gateway's error answer with `status` and `code`, and that its
/// error id is in the host's log. Returns the error id.
fn assert_failure(host: &Modhost, reply: &Reply, status: u16, code: &str) -> String {
    let logged = host.failure_log(reply, status);
    assert!(logged.contains("request failed"), "{logged}");
    let body = reply.json();
    assert_eq!(body["error"]["code"], code, "{body}");
    body["error"]["error_id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_fault_fails_only_its_own_request() {
    let deployment = TestDeployment::new(DEPLOYMENT);
    let host = Modhost::start(&deployment);

    // A steady stream of requests to a healthy module, on four connections, for as
    // long as the faults are being provoked.
    let stop = Arc::new(AtomicBool::new(false));
    let streams: Vec<_> = (0..4)
        .map(|_| {
            let (stop, url) = (stop.clone(), host.url("/users/1"));
            tokio::spawn(async move {
                let http = client(false);
                let (mut ok, mut failed) = (0u32, Vec::new());
                while !stop.load(Ordering::SeqCst) {
                    let reply = send(&http, "GET", &url, None).await;
                    if reply.status == 200 {
                        ok += 1;
                    } else {
                        failed.push(reply.status);
                    }
                }
                (ok, failed)
            })
        })
        .collect();

    let http = client(false);
    for round in 0..3 {
        let trap = send(&http, "GET", &host.url("/faulty/trap"), None).await;
        assert_failure(&host, &trap, 500, "module_trapped");

        let spin = send(&http, "GET", &host.url("/faulty/loop"), None).await;
        assert_failure(&host, &spin, 504, "module_timeout");

        let oom = send(&http, "GET", &host.url("/faulty/oom"), None).await;
        assert_failure(&host, &oom, 500, "module_out_of_memory");

        // The faulty module itself recovers: the next instance is fresh.
        let ok = send(&http, "GET", &host.url("/faulty/ok"), None).await;
        assert_eq!(ok.status, 200, "round {round}: {}", ok.text());
    }

    // Faults at the same time as each other, too.
    let urls = ["/faulty/trap", "/faulty/loop", "/faulty/oom"].map(|path| host.url(path));
    let concurrent = join_all(
        urls.into_iter()
            .map(|url| async move { get(&url).await.status }),
    )
    .await;
    assert_eq!(concurrent, vec![500, 504, 500]);

    stop.store(true, Ordering::SeqCst);
    let mut total_ok = 0;
    for stream in streams {
        let (ok, failed) = stream.await.unwrap();
        assert!(
            failed.is_empty(),
            "healthy-module requests failed: {failed:?}"
        );
        total_ok += ok;
    }
    assert!(total_ok > 0, "the healthy stream sent nothing");

    assert_eq!(get(&host.url("/healthz")).await.status, 200);
    assert_eq!(get(&host.url("/readyz")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_is_logged_with_its_cause() {
    let deployment = TestDeployment::new(DEPLOYMENT);
    let host = Modhost::start(&deployment);
    let reply = get(&host.url("/faulty/trap")).await;
    let error_id = assert_failure(&host, &reply, 500, "module_trapped");
    let line = host.wait_for_log(&error_id);
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["span"]["module"], "faulty", "{event}");
    assert_eq!(event["span"]["error_id"], error_id.as_str(), "{event}");
    // The guest's panic message reaches the log, tagged with the module.
    let panic = host.wait_for_log("deliberate trap");
    let panic: serde_json::Value = serde_json::from_str(&panic).unwrap();
    assert_eq!(panic["target"], "modhost::guest", "{panic}");
    assert_eq!(panic["fields"]["module"], "faulty", "{panic}");
    // ...inside the span of the request that caused it.
    assert_eq!(panic["span"]["path"], "/faulty/trap", "{panic}");
}
