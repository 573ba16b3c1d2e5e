//! Module-to-module calls, next to the host→guest floor, in one run.
//!
//! The `caller` test module exports `bounce-back(n)`, which calls the `callee`
//! module's `bounce(n - 1)` through the dispatcher until n = 0. Called from the host
//! on a warm `caller` instance:
//! - `call/host_to_guest_floor`: `bounce-back(0)`, a typed host→guest call, no call
//!   between modules;
//! - `call/module_to_module_fresh`: `bounce-back(1)`, the floor plus exactly one local
//!   call into a fresh `callee` instance (store, instantiation, call, teardown).
//!
//! Run: `cargo bench --bench calls` (after building the guests, see README).

use criterion::{criterion_group, criterion_main, Criterion};
use modhost::capabilities::InstanceState;
use modhost::deployment::Deployment;
use modhost::node::Node;
use std::path::PathBuf;
use wasmtime::Store;

const INTERFACE: &str = "modhost-testing:kinds/bounce-back@1.0.0";

fn guest(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/wasm32-wasip2/guest")
        .join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: cargo build --profile guest --target wasm32-wasip2 -p {name}",
        path.display()
    );
    path.display().to_string()
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[app]\nname = \"bench\"\ndata_dir = \"data\"\n\
         [modules.caller]\ncomponent = {:?}\ncalls = [\"callee\"]\n\
         [modules.callee]\ncomponent = {:?}\ncalls = [\"caller\"]\nlimits = {{ concurrency = 1000 }}\n",
        guest("caller"),
        guest("callee"),
    );
    let deployment = Deployment::parse(&dir.path().join("bench.toml"), &text).unwrap();
    let node = Node::load(deployment).expect("load caller and callee");
    let caller = node.registry().get("caller").unwrap().clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // One warm caller instance serves every iteration, for longer than the module's
    // timeout: give its store no practical deadline (callee stores get theirs).
    let mut store = Store::new(
        caller.instance_pre.engine(),
        InstanceState::new("caller", 64 << 20),
    );
    store.set_epoch_deadline(u64::MAX / 2);
    let bounce_back = runtime.block_on(async {
        let instance = caller
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

    let mut group = c.benchmark_group("call");
    for (name, n) in [("host_to_guest_floor", 0), ("module_to_module_fresh", 1)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let (hops,) = bounce_back.call_async(&mut store, (n,)).await.unwrap();
                    assert_eq!(hops, n);
                })
            })
        });
    }
    group.finish();
}

criterion_group!(all, benches);
criterion_main!(all);
