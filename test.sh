#!/usr/bin/env bash
# The whole test suite, from a fresh clone on a machine with only rustup and the OS.
#
# It does its own set-up: the wasm32-wasip2 target, the guest modules, the modhost
# binary the end-to-end tests start. Then: formatting, lints, every test.
# CI (.ci/run) calls exactly this script.
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n==> %s\n' "$*"; }

step "toolchain: wasm32-wasip2 target"
rustup target add wasm32-wasip2

step "format"
cargo fmt --all -- --check

step "guest modules (wasm32-wasip2, guest profile)"
GUESTS=(-p users -p catalog -p inventory -p payments -p orders -p hello -p faulty -p callee -p caller)
cargo build --profile guest --target wasm32-wasip2 "${GUESTS[@]}"
cargo clippy --profile guest --target wasm32-wasip2 "${GUESTS[@]}" -- -D warnings

step "guest modules: unit tests (their pure logic, on the host target)"
cargo test -p payments

step "host: lints"
cargo clippy --all-targets -- -D warnings

step "host: the modhost binary the end-to-end tests start"
cargo build -p modhost --bin modhost

step "tests"
cargo test --all-targets
