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

step "PostgreSQL server binaries (the data tests start their own clusters)"
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  ls -d /usr/lib/postgresql/*/bin
elif [ "${CI:-}" = "true" ]; then
  echo "no PostgreSQL server under /usr/lib/postgresql: .ci/run installs it; CI may not skip" >&2
  exit 1
else
  echo "no PostgreSQL server: the Postgres halves of the data tests will be skipped" >&2
  echo "(install it with: apt-get install postgresql)" >&2
fi

step "format"
cargo fmt --all -- --check

step "guest modules (wasm32-wasip2, guest profile)"
GUESTS=(-p users -p catalog -p inventory -p payments -p orders -p hello -p faulty -p callee -p caller -p sqlprobe)
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
