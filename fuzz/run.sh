#!/usr/bin/env bash
# Runs each fuzz target for a set time (default 300 s each): `fuzz/run.sh [SECONDS]`.
# Needs a nightly toolchain (`rustup toolchain install nightly`) and cargo-fuzz
# (`cargo install cargo-fuzz --locked`). Not part of CI. Crashes land in
# fuzz/artifacts/<target>/; each one found becomes a regression test beside the code.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-300}"
# The call-frame target reads the callee test module's signatures.
cargo build --profile guest --target wasm32-wasip2 -p callee
cd fuzz
for target in call_frame deployment_file sql_values; do
  echo "==> $target for ${seconds}s"
  cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" -rss_limit_mb=4096 2>&1 \
    | grep -E "^#[0-9]+ *(DONE|pulse)|ERROR|panicked|Done|stat::" || true
done
