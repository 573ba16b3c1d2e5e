//! Shared set-up for the benches: the `hello` guest and a one-module deployment.

#![allow(dead_code)] // each bench uses a different subset

use std::path::PathBuf;

use modhost::deployment::Deployment;

/// The built `hello` component; benches need `./test.sh` (or the guest build) first.
pub fn hello_wasm() -> PathBuf {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/wasm32-wasip2/guest/hello.wasm");
    assert!(
        path.is_file(),
        "{} is missing: cargo build --profile guest --target wasm32-wasip2 -p hello",
        path.display()
    );
    path
}

/// A deployment serving `hello` at `/hello`, with its data dir in `dir`.
pub fn hello_deployment(dir: &std::path::Path) -> Deployment {
    let text = format!(
        "[app]\nname = \"bench\"\ndata_dir = \"data\"\n[gateway]\nlisten = \"127.0.0.1:0\"\n\
         [modules.hello]\ncomponent = {:?}\nroutes = [\"/hello\"]\n\
         limits = {{ concurrency = 1000 }}\n",
        hello_wasm().display().to_string()
    );
    Deployment::parse(&dir.join("bench.toml"), &text).expect("bench deployment")
}
