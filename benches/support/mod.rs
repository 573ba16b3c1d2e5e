//! Shared set-up for the benches: the `hello` guest and a one-module deployment.

#![allow(dead_code)] // each bench uses a different subset

use std::path::PathBuf;

use modhost::deployment::Deployment;
use modhost::module::crates;

/// The component of guest crate `package`, built first (cargo is incremental: an
/// up-to-date crate costs a fraction of a second; a missing guest target is added).
pub fn guest(package: &str) -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    crates::build(&[(workspace.clone(), package.to_string())])
        .unwrap_or_else(|e| panic!("building the {package} guest: {e:#}"));
    crates::artifact(&workspace, package)
}

/// The built `hello` component.
pub fn hello_wasm() -> PathBuf {
    guest("hello")
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
