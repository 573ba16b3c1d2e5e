//! Module-to-module calls, next to the host→guest floor, in one run.
//!
//! The `caller` test module exports `bounce-back(n)`, which calls the `callee`
//! module's `bounce(n - 1)` through the dispatcher until n = 0. Called from the host
//! on a warm `caller` instance:
//! - `call/host_to_guest_floor`: `bounce-back(0)`, a typed host→guest call, no call
//!   between modules;
//! - `call/module_to_module_fresh`: `bounce-back(1)`, the floor plus exactly one local
//!   call into a fresh `callee` instance (store, instantiation, call, teardown);
//! - `call/module_to_module_reused`: the same call into a `callee` deployed with
//!   `instances = "reuse"` (a warm instance taken from and given back to its pool);
//! - `call/module_to_module_reused_policies`: the reused call again, with every call
//!   policy layer at work (`[policies.callee]` with a timeout, retries of `bounce`, a
//!   breaker with a failure-rate window, a bulkhead): what the policy layers cost, next
//!   to the same call without a policy (whose layers pass the call straight through);
//! - `call/module_to_module_remote`: the same call into a fresh `callee` placed on
//!   another node — a second node in this process, with its own runtime thread and
//!   mesh listener — over HTTP/2 and mutual TLS on loopback (encode, send, the
//!   callee node's local path, answer, decode).
//!
//! Under `cargo bench` it then times 20,000 single calls of each kind and prints their
//! p50 and p99 (criterion reports means and medians of batches, not tail latency).
//!
//! Run: `env -u RUST_BACKTRACE cargo bench --bench calls` (it builds the guests; with
//! RUST_BACKTRACE set, wasmtime captures a backtrace each time a store
//! is dropped, which doubles the fresh call's cost).

mod support;

use criterion::{criterion_group, criterion_main, Criterion};
use modhost::capabilities::{Hop, InstanceState};
use modhost::deployment::Deployment;
use modhost::node::Node;
use modhost::telemetry::trace::TraceContext;
use std::path::Path;
use std::sync::LazyLock;
use std::time::{Duration, Instant};
use wasmtime::component::TypedFunc;
use wasmtime::Store;

const INTERFACE: &str = "modhost-testing:kinds/bounce-back@1.0.0";

/// Every policy layer on the call into `callee`.
const POLICIES: &str = r#"
[policies.callee]
timeout = "1s"
retries = { attempts = 2, idempotent = ["bounce"] }
breaker = { failures = 5, failure_rate = 0.5, open_for = "5s" }
bulkhead = { concurrency = 1000, queue = 100 }
"#;

/// A warm `caller` instance whose `bounce-back` export the host calls directly.
struct Caller {
    _node: Node,
    store: Store<InstanceState>,
    bounce_back: TypedFunc<(u32,), (u32,)>,
}

/// The deployment of `caller` and `callee` (with `callee_instances` as its instance
/// strategy), `extra` appended.
fn deployment(dir: &Path, callee_instances: &str, extra: &str) -> Deployment {
    // Built once per run: the three deployments share them.
    static GUESTS: LazyLock<(String, String)> = LazyLock::new(|| {
        (
            support::guest("caller").display().to_string(),
            support::guest("callee").display().to_string(),
        )
    });
    let (caller, callee) = &*GUESTS;
    let text = format!(
        "[app]\nname = \"bench\"\ndata_dir = \"data\"\n\
         [modules.caller]\ncomponent = {:?}\ncalls = [\"callee\"]\n\
         [modules.callee]\ncomponent = {:?}\ncalls = [\"caller\"]\n\
         instances = {callee_instances:?}\nlimits = {{ concurrency = 1000 }}\n{extra}",
        caller, callee,
    );
    Deployment::parse(&dir.join("bench.toml"), &text).unwrap()
}

/// `caller` and `callee` on two nodes of one process: node `b` serves `callee` on its
/// own runtime (returned: it must live as long as the caller), node `a` runs `caller`.
fn remote_caller(
    runtime: &tokio::runtime::Runtime,
    dir: &Path,
) -> (Caller, tokio::runtime::Runtime) {
    let port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let split = format!(
        "[nodes.a]\nlisten = \"127.0.0.1:{}\"\nmesh = \"127.0.0.1:{}\"\n\
         [nodes.b]\nlisten = \"127.0.0.1:{}\"\nmesh = \"127.0.0.1:{}\"\n\
         [placement]\ncaller = [\"a\"]\ncallee = [\"b\"]\n\
         [mesh]\nca = \"certs/ca.pem\"\ncert = \"certs/{{node}}.pem\"\nkey = \"certs/{{node}}.key\"\n",
        port(),
        port(),
        port(),
        port()
    );
    let whole = deployment(dir, "fresh", &split);
    modhost::mesh::certs::generate(&whole, &[], 1, false).expect("certificates");

    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut b = whole.clone();
    b.select_node(Some("b")).unwrap();
    let node_b = Node::load(b).expect("load node b");
    let listeners = server.block_on(node_b.bind()).expect("bind node b");
    server.spawn(node_b.serve(listeners, std::future::pending()));

    let mut a = whole;
    a.select_node(Some("a")).unwrap();
    (caller(runtime, a), server)
}

/// Loads `deployment` and instantiates one long-lived `caller`.
fn caller(runtime: &tokio::runtime::Runtime, deployment: Deployment) -> Caller {
    let node = Node::load(deployment).expect("load caller and callee");
    let module = node.registry().get("caller").unwrap().clone();

    // The caller instance serves every iteration, for longer than the module's
    // timeout: give its store no practical deadline (callee stores get theirs).
    let mut store = module.new_store(Hop::start(TraceContext::new_root(), None, None));
    store.set_epoch_deadline(u64::MAX / 2);
    let bounce_back = runtime.block_on(async {
        let instance = module
            .instance_pre
            .instantiate_async(&mut store)
            .await
            .unwrap();
        let interface = instance
            .get_export_index(&mut store, None, INTERFACE)
            .unwrap();
        let func = instance
            .get_export_index(&mut store, Some(&interface), "bounce-back")
            .unwrap();
        instance
            .get_typed_func::<(u32,), (u32,)>(&mut store, func)
            .unwrap()
    });
    Caller {
        _node: node,
        store,
        bounce_back,
    }
}

impl Caller {
    /// `bounce-back(n)`: n = 0 stays in the caller, n = 1 makes one call to `callee`.
    fn call(&mut self, runtime: &tokio::runtime::Runtime, n: u32) {
        runtime.block_on(async {
            let (hops,) = self
                .bounce_back
                .call_async(&mut self.store, (n,))
                .await
                .unwrap();
            assert_eq!(hops, n);
        })
    }
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut fresh = caller(&runtime, deployment(dir.path(), "fresh", ""));
    let mut reused = caller(&runtime, deployment(dir.path(), "reuse", ""));
    let mut policed = caller(&runtime, deployment(dir.path(), "reuse", POLICIES));
    let remote_dir = tempfile::tempdir().unwrap();
    let (mut remote, _node_b) = remote_caller(&runtime, remote_dir.path());

    let mut group = c.benchmark_group("call");
    group.bench_function("host_to_guest_floor", |b| {
        b.iter(|| fresh.call(&runtime, 0))
    });
    group.bench_function("module_to_module_fresh", |b| {
        b.iter(|| fresh.call(&runtime, 1))
    });
    group.bench_function("module_to_module_reused", |b| {
        b.iter(|| reused.call(&runtime, 1))
    });
    group.bench_function("module_to_module_reused_policies", |b| {
        b.iter(|| policed.call(&runtime, 1))
    });
    group.bench_function("module_to_module_remote", |b| {
        b.iter(|| remote.call(&runtime, 1))
    });
    group.finish();

    // Tail latency: only when benchmarking, not in `cargo test`'s quick run.
    if std::env::args().any(|arg| arg == "--bench") {
        println!("\nsingle-call latency, 20,000 calls each (after 2,000 warm-up):");
        let report = |name: &str, (p50, p99): (f64, f64)| {
            println!("  call/{name:<26} p50 {p50:>8.2} µs   p99 {p99:>8.2} µs");
        };
        report(
            "host_to_guest_floor",
            percentiles(|| fresh.call(&runtime, 0)),
        );
        report(
            "module_to_module_fresh",
            percentiles(|| fresh.call(&runtime, 1)),
        );
        report(
            "module_to_module_reused",
            percentiles(|| reused.call(&runtime, 1)),
        );
        report(
            "module_to_module_reused_policies",
            percentiles(|| policed.call(&runtime, 1)),
        );
        report(
            "module_to_module_remote",
            percentiles(|| remote.call(&runtime, 1)),
        );
    }
}

/// p50 and p99, in microseconds, of 20,000 timed runs of `f`.
fn percentiles(mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..2_000 {
        f();
    }
    let mut samples: Vec<Duration> = (0..20_000)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed()
        })
        .collect();
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    (at(0.50), at(0.99))
}

criterion_group!(all, benches);
criterion_main!(all);
