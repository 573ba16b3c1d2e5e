#!/usr/bin/env bash
# The whole test suite, from a fresh clone on a machine with only rustup and the OS.
#
# It does its own set-up: the wasm32-wasip2 target, a Kafka-protocol broker for the
# event tests (tansu, built once and cached), the guest modules, the modhost binary the
# end-to-end tests start. Then: formatting, lints, every test.
# CI (.ci/run) calls exactly this script.
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n==> %s\n' "$*"; }

# need COMMAND PACKAGE WHAT: where COMMAND is. Without it CI stops (.ci/run installs
# PACKAGE, and nothing may skip there); a local run says WHAT is skipped, and the
# function fails (callers that go on anyway write `|| true`).
need() {
  if command -v "$1" >/dev/null 2>&1; then
    command -v "$1"
  elif [ "${CI:-}" = "true" ]; then
    echo "no $1: .ci/run installs $2; CI may not skip" >&2
    exit 1
  else
    echo "no $1: $3 will be skipped (install it with: apt-get install $2)" >&2
    return 1
  fi
}

step "toolchain: wasm32-wasip2 target, and aarch64 Linux for the edge build"
rustup target add wasm32-wasip2 aarch64-unknown-linux-gnu

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

step "Redis server binary (the key-value tests start their own servers)"
need redis-server redis-server "the Redis halves of the key-value tests" || true

step "Prometheus server binary (the metrics test starts its own server)"
need prometheus prometheus "the Prometheus test" || true

step "Kafka-protocol broker for the event tests (tansu, cached in \$MODHOST_TOOLS)"
# tansu speaks the Kafka protocol; the tests start it themselves. Its default build has
# no storage engine, and without --locked it does not compile. ~10 minutes, once.
TOOLS="${MODHOST_TOOLS:-$HOME/.cache/modhost/tools}"
TANSU_VERSION=0.6.0
if ! "$TOOLS/bin/tansu" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,postgres --root "$TOOLS"
fi
export MODHOST_TANSU="$TOOLS/bin/tansu"
"$MODHOST_TANSU" --version

step "browser tests: playwright-core (drives Debian's Chromium; cached in \$MODHOST_TOOLS)"
# Only the driver: Playwright's own browser download is never used (it cannot reach
# its servers here, and the tests drive the machine's /usr/bin/chromium).
PLAYWRIGHT_VERSION=1.65.2
NODE_TOOLS="$TOOLS/node"
if ! grep -qs "\"version\": \"$PLAYWRIGHT_VERSION\"" "$NODE_TOOLS/node_modules/playwright-core/package.json"; then
  if need npm npm "the browser test" >/dev/null; then
    mkdir -p "$NODE_TOOLS"
    npm install --prefix "$NODE_TOOLS" --no-audit --no-fund --silent "playwright-core@$PLAYWRIGHT_VERSION"
  fi
fi
export MODHOST_NODE_MODULES="$NODE_TOOLS/node_modules"
need chromium chromium "the browser test" || true

step "Python modules: componentize-py (cached in \$MODHOST_TOOLS/python)"
# The version modhost builds with (host/src/module/python.rs); modhost would install it
# by itself on first use, this step only makes it visible in the log.
COMPONENTIZE_PY_VERSION=0.25.1
PYTHON_TOOLS="$TOOLS/python"
if ! "$PYTHON_TOOLS/bin/componentize-py" --version 2>/dev/null | grep -q "$COMPONENTIZE_PY_VERSION"; then
  python3 -m venv "$PYTHON_TOOLS"
  "$PYTHON_TOOLS/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
fi
export MODHOST_TOOLS="$TOOLS"
export MODHOST_COMPONENTIZE_PY="$PYTHON_TOOLS/bin/componentize-py"
"$MODHOST_COMPONENTIZE_PY" --version

step "Kubernetes manifests: kubernetes-validate (the schema check tests/manifests.rs runs)"
KUBERNETES_VALIDATE_VERSION=1.37.0
if ! "$PYTHON_TOOLS/bin/kubernetes-validate" --version 2>/dev/null | grep -q "$KUBERNETES_VALIDATE_VERSION"; then
  "$PYTHON_TOOLS/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
export MODHOST_KUBERNETES_VALIDATE="$PYTHON_TOOLS/bin/kubernetes-validate"
"$MODHOST_KUBERNETES_VALIDATE" --version

step "JavaScript modules: componentize-js (cached in \$MODHOST_TOOLS/componentize-js)"
# The version modhost builds with (host/src/module/javascript.rs), in a prefix of its own.
COMPONENTIZE_JS_VERSION=0.23.0
JS_TOOLS="$TOOLS/componentize-js"
if ! "$JS_TOOLS/node_modules/.bin/componentize-js" --version 2>/dev/null | grep -q "$COMPONENTIZE_JS_VERSION"; then
  need npm npm "building JavaScript modules" >/dev/null
  mkdir -p "$JS_TOOLS"
  npm install --prefix "$JS_TOOLS" --no-audit --no-fund --silent "@bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION"
fi
export MODHOST_COMPONENTIZE_JS="$JS_TOOLS/node_modules/.bin/componentize-js"
"$MODHOST_COMPONENTIZE_JS" --version

step "format"
cargo fmt --all -- --check

step "guest modules (wasm32-wasip2, guest profile)"
GUESTS=(-p users -p catalog -p inventory -p payments -p orders -p notifications -p hello -p faulty -p callee -p caller -p sqlprobe -p eventprobe -p kvprobe -p configprobe -p plainhttp -p wstdserver -p p3http)
cargo build --profile guest --target wasm32-wasip2 "${GUESTS[@]}"
cargo clippy --profile guest --target wasm32-wasip2 "${GUESTS[@]}" -- -D warnings

step "guest modules: unit tests (their pure logic, on the host target and CPython)"
cargo test -p payments
"$PYTHON_TOOLS/bin/python" -m unittest discover -s modules/fraud/tests

step "host: lints (the default build; the edge build and each optional part alone)"
cargo clippy --all-targets -- -D warnings
cargo clippy -p modhost --no-default-features -- -D warnings
for part in compiler kafka postgres mesh; do
  cargo check -p modhost --no-default-features --features "$part"
done

step "host: the modhost binary the end-to-end tests start"
cargo build -p modhost --bin modhost

step "edge: modhost for aarch64 Linux without default features (tests/edge.rs runs it under qemu)"
# Linked by Debian's gcc-aarch64-linux-gnu (.cargo/config.toml); the test builds it
# again, a no-op once it is up to date. Built here so its time shows in the log.
if need qemu-aarch64 qemu-user "the aarch64 edge test" >/dev/null &&
  need aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu "the aarch64 edge test" >/dev/null; then
  cargo build -p modhost --bin modhost --no-default-features --target aarch64-unknown-linux-gnu
fi

step "Python modules (componentize-py, into target/python)"
target/debug/modhost build config/single-node.toml

step "tests"
cargo test --all-targets
