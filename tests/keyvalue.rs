//! `wasi:keyvalue` through real modules (`modules/testing/kvprobe`), on both stores: the
//! embedded one (a SQLite file per module) and a real Redis server started by the test.
//! Each module reaches only the buckets it was granted, under names only the host makes.

mod common;

use common::redis::Redis;
use common::*;
use serde_json::{json, Value};

/// Two probes: `a` may open `cache` and `counters`, `b` only `cache`. `store` is the
/// deployment's `[keyvalue]` section.
fn deployment(store: &str) -> TestDeployment {
    TestDeployment::new(&format!(
        r#"
[app]
name = "kv"

{store}

[modules.a]
component = "{{kvprobe}}"
routes = ["/a"]
keyvalue = ["cache", "counters"]

[modules.b]
component = "{{kvprobe}}"
routes = ["/b"]
keyvalue = ["cache"]
"#
    ))
}

/// Runs `steps` in module `module` (its route): each step's result.
async fn run(host: &Modhost, module: &str, steps: Value) -> Vec<Value> {
    let reply = send(
        &client(false),
        "POST",
        &host.url(&format!("/{module}/kv")),
        Some(&json!({ "steps": steps }).to_string()),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["results"].as_array().unwrap().clone()
}

/// Everything the store must do, the same on either backend.
async fn the_store_keeps_each_modules_buckets(host: &Modhost) {
    let results = run(
        host,
        "a",
        json!([
            { "op": "open", "bucket": "cache" },
            { "op": "set", "key": "k1", "value": "one" },
            { "op": "get", "key": "k1" },
            { "op": "exists", "key": "k1" },
            { "op": "exists", "key": "nope" },
            { "op": "get", "key": "nope" },
            { "op": "set-many", "pairs": [["k2", "two"], ["k3", "three"]] },
            { "op": "get-many", "keys": ["k1", "nope", "k3"] },
            { "op": "delete-many", "keys": ["k2", "k3"] },
            { "op": "delete", "key": "gone-already" },
            { "op": "list" },
        ]),
    )
    .await;
    assert_eq!(results[0], json!({ "ok": true }));
    assert_eq!(results[2], json!({ "value": "one" }));
    assert_eq!(results[3], json!({ "exists": true }));
    assert_eq!(results[4], json!({ "exists": false }));
    assert_eq!(results[5], json!({ "value": null }));
    assert_eq!(results[7], json!({ "values": ["one", null, "three"] }));
    assert_eq!(
        results[9],
        json!({ "ok": true }),
        "deleting nothing is fine"
    );
    assert_eq!(results[10]["keys"], json!(["k1"]));

    // The same bucket name in another module is another bucket; an ungranted one is
    // refused, and the module that holds it keeps working.
    let results = run(
        host,
        "b",
        json!([
            { "op": "open", "bucket": "cache" },
            { "op": "get", "key": "k1" },
            { "op": "open", "bucket": "counters" },
            { "op": "open", "bucket": "../a/cache" },
        ]),
    )
    .await;
    assert_eq!(results[1], json!({ "value": null }), "b sees a's value");
    assert_eq!(results[2]["error"]["kind"], "access-denied");
    assert_eq!(results[3]["error"]["kind"], "access-denied");
    let results = run(
        host,
        "a",
        json!([{ "op": "open", "bucket": "cache" }, { "op": "get", "key": "k1" }]),
    )
    .await;
    assert_eq!(results[1], json!({ "value": "one" }));

    // Counters: increments from many requests at once are never lost.
    let url = host.url("/a/kv");
    let increments = join_all((0..20).map(|_| {
        let url = url.clone();
        async move {
            let body = json!({ "steps": [
                { "op": "open", "bucket": "counters" },
                { "op": "increment", "key": "hits", "delta": 1 },
            ] });
            send(&client(false), "POST", &url, Some(&body.to_string())).await
        }
    }))
    .await;
    for reply in &increments {
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert!(
            reply.json()["results"][1]["count"].is_u64(),
            "{}",
            reply.text()
        );
    }
    let results = run(
        host,
        "a",
        json!([
            { "op": "open", "bucket": "counters" },
            { "op": "increment", "key": "hits", "delta": 0 },
            { "op": "set", "key": "word", "value": "not a number" },
            { "op": "increment", "key": "word", "delta": 1 },
        ]),
    )
    .await;
    assert_eq!(results[1], json!({ "count": 20 }));
    assert_eq!(results[3]["error"]["kind"], "other", "{}", results[3]);

    // Listing pages through every key, whatever the page size.
    let pairs: Vec<Value> = (0..1500)
        .map(|i| json!([format!("p{i:04}"), "v"]))
        .collect();
    run(
        host,
        "a",
        json!([
            { "op": "open", "bucket": "cache" },
            { "op": "set-many", "pairs": pairs[..1000] },
            { "op": "set-many", "pairs": pairs[1000..] },
        ]),
    )
    .await;
    let mut seen = std::collections::BTreeSet::new();
    let mut cursor = Value::Null;
    for _ in 0..10_000 {
        let results = run(
            host,
            "a",
            json!([{ "op": "open", "bucket": "cache" }, { "op": "list", "cursor": cursor }]),
        )
        .await;
        let page = &results[1];
        assert!(page["keys"].as_array().unwrap().len() <= 1000, "{page}");
        seen.extend(
            page["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap().to_string()),
        );
        cursor = page["cursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    assert_eq!(seen.len(), 1501, "every key once, k1 and the 1500");
}

/// What a module may not ask of the store: too large, too long, too many.
async fn the_store_bounds_what_a_module_asks(host: &Modhost) {
    let long_key = "k".repeat(1025);
    let many: Vec<String> = (0..1001).map(|i| format!("m{i}")).collect();
    let results = run(
        host,
        "a",
        json!([
            { "op": "open", "bucket": "cache" },
            { "op": "set", "key": "big", "bytes": 4097 },
            { "op": "set", "key": "fits", "bytes": 4096 },
            { "op": "set", "key": long_key, "value": "x" },
            { "op": "get-many", "keys": many },
        ]),
    )
    .await;
    assert!(
        results[1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 4096 bytes"),
        "{}",
        results[1]
    );
    assert_eq!(results[2], json!({ "ok": true }));
    assert!(
        results[3]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 1024 bytes"),
        "{}",
        results[3]
    );
    assert!(
        results[4]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 1000 keys"),
        "{}",
        results[4]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_on_the_embedded_store_are_each_modules_own_and_durable() {
    let deployment = deployment("[keyvalue]\nmax_value = \"4KiB\"");
    let host = Modhost::start(&deployment);
    the_store_keeps_each_modules_buckets(&host).await;
    the_store_bounds_what_a_module_asks(&host).await;

    // Each module has a file of its own, and what it keeps survives a restart.
    for module in ["a", "b"] {
        let file = deployment
            .data_dir()
            .join(format!("keyvalue/{module}.sqlite"));
        assert!(file.is_file(), "{} is missing", file.display());
    }
    drop(host);
    let host = Modhost::start(&deployment);
    let results = run(
        &host,
        "a",
        json!([{ "op": "open", "bucket": "cache" }, { "op": "get", "key": "k1" }]),
    )
    .await;
    assert_eq!(results[1], json!({ "value": "one" }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_on_redis_are_each_modules_own_under_host_made_names() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let deployment = deployment(&format!(
        "[keyvalue]\nbackend = \"redis\"\nurl = {:?}\nmax_value = \"4KiB\"",
        redis.url(0)
    ));
    let host = Modhost::start(&deployment);
    the_store_keeps_each_modules_buckets(&host).await;
    the_store_bounds_what_a_module_asks(&host).await;
    // Every key on the server is one the host named for a module's bucket.
    let keys = redis.keys();
    assert!(
        keys.contains(&"modhost:kv:a:cache:k1".to_string()),
        "{keys:?}"
    );
    assert!(
        keys.contains(&"modhost:kv:a:counters:hits".to_string()),
        "{keys:?}"
    );
    assert!(
        keys.iter().all(
            |k| k.starts_with("modhost:kv:a:cache:") || k.starts_with("modhost:kv:a:counters:")
        ),
        "{keys:?}"
    );
}

#[test]
fn a_module_that_imports_keyvalue_without_buckets_is_refused() {
    let deployment = TestDeployment::new(
        "[app]\nname = \"kv\"\n[modules.a]\ncomponent = \"{kvprobe}\"\nroutes = [\"/a\"]\n",
    );
    let (code, stderr) = check(&deployment);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr
            .contains("imports wasi:keyvalue/store@0.2.0-draft but the module may open no bucket"),
        "{stderr}"
    );
    assert!(stderr.contains("[modules.a]"), "{stderr}");
}

#[test]
fn bad_keyvalue_settings_are_named_before_anything_starts() {
    let deployment = TestDeployment::new(
        "[app]\nname = \"kv\"\n[keyvalue]\nbackend = \"memcached\"\n\
         [modules.a]\ncomponent = \"{kvprobe}\"\nroutes = [\"/a\"]\nkeyvalue = [\"Bad Name\"]\n",
    );
    let (code, stderr) = check(&deployment);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("keyvalue.backend"), "{stderr}");
    assert!(stderr.contains("modules.a.keyvalue[0]"), "{stderr}");
    assert!(stderr.contains("nothing was started"), "{stderr}");
}
