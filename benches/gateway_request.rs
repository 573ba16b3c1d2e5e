//! One HTTP request through the whole gateway over loopback: accept, limits, routing,
//! a fresh `hello` instance, the response. The client keeps its connection alive, as a
//! load balancer would.
//!
//! Run: `cargo bench --bench gateway_request` (after building the guests, see README).

mod support;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use modhost::node::Node;

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let node = Node::load(support::hello_deployment(dir.path())).expect("load hello");
    let (addr, stop) = runtime.block_on(async {
        let listener = node.bind().await.unwrap();
        let addr = listener.gateway.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(node.serve(listener, async {
            let _ = stopped.await;
        }));
        (addr, stop)
    });
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let url: http::Uri = format!("http://{addr}/hello").parse().unwrap();

    c.bench_function("gateway/hello_keepalive", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = client
                .request(
                    http::Request::get(url.clone())
                        .body(Full::new(Bytes::new()))
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"ok");
        })
    });
    let _ = stop.send(());
}

criterion_group!(all, benches);
criterion_main!(all);
