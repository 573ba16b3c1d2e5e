//! Instantiation and in-process request cost, with the `hello` guest:
//! - `instance/fresh`: a fresh store (WASI + HTTP state, limits, deadline) and an
//!   instance from the module's pre-instantiated component, on the pooling allocator;
//! - `request/in_process`: one whole `wasi:http` request through a fresh instance
//!   (what the gateway does per request, minus the network).
//!
//! Run: `cargo bench --bench instantiate` (after building the guests, see README).

mod support;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::{BodyExt, Full};
use modhost::capabilities::Hop;
use modhost::module::http as module_http;
use modhost::node::Node;
use modhost::telemetry::trace::TraceContext;

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::load(support::hello_deployment(dir.path())).expect("load hello");
    let module = node.registry().get("hello").expect("hello module").clone();
    // One thread: the bench measures the work, not cross-thread wake-ups.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    c.bench_function("instance/fresh", |b| {
        b.to_async(&runtime).iter(|| async {
            let mut store = module.new_store(Hop::start(TraceContext::new_root(), None, None));
            module
                .instance_pre
                .instantiate_async(&mut store)
                .await
                .unwrap();
        })
    });

    c.bench_function("request/in_process", |b| {
        b.to_async(&runtime).iter(|| async {
            let request = http::Request::builder()
                .uri("http://bench/hello")
                .body(Full::new(Bytes::new()))
                .unwrap();
            let response = module_http::handle(
                &module,
                request,
                Hop::start(TraceContext::new_root(), None, None),
                module_http::admit(&module).unwrap(),
            )
            .await
            .unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"ok");
        })
    });
}

criterion_group!(all, benches);
criterion_main!(all);
