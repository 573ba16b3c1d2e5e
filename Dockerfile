# The modhost image: the modhost binary and the application it serves, laid out as
# `modhost manifests` expects (the application at /app, run as user 10001, the
# deployment file and the node's certificates mounted from Kubernetes):
#
#   docker build -t registry.example/shop:1.0 .
#
# docs/scale-out.md ("On Kubernetes") has the whole path to a cluster.

# Build: Rust stable on Debian 12, the same Debian as the runtime below.
FROM rust:1-bookworm AS build
# OpenSSL's headers for the Kafka client's TLS; venv for componentize-py, which
# `modhost build` installs to build the Python module.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl-dev pkg-config python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The host, then every module of the shop from source (the Rust crates for
# wasm32-wasip2, the Python module with componentize-py).
RUN rustup target add wasm32-wasip2 \
 && cargo build --locked --release -p modhost --bin modhost \
 && MODHOST_TOOLS=/tmp/modhost-tools target/release/modhost build config/single-node.toml
# The application as a node reads it: the deployment files, the modules' directories
# (migrations; the manifests that say each module's language), the WIT the Python and
# JavaScript modules' manifests name, the workspace marker, and the built components
# where modhost looks for them (target/). tests/manifests.rs lays out its copy of the
# application from the first line's list.
RUN mkdir /app \
 && cp -r Cargo.toml config modules wit /app/ \
 && cp --parents target/wasm32-wasip2/guest/*.wasm /app/ \
 && for built in target/python target/javascript; do \
      if [ -d "$built" ]; then cp -r --parents "$built" /app/; fi; \
    done

# Runtime: Debian 12 slim, OpenSSL (the Kafka client) and the CA roots (TLS to managed
# Postgres and Kafka), a user of its own.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 modhost \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin modhost
COPY --from=build /src/target/release/modhost /usr/local/bin/modhost
COPY --from=build /app /app
USER 10001:10001
WORKDIR /app
# The gateway, the mesh and the admin API of config/three-node.toml's node a; each
# node's own ports are the deployment file's (the manifests name them).
EXPOSE 8080 7001 9191
ENTRYPOINT ["modhost"]
CMD ["run", "/etc/modhost/deployment/deployment.toml"]
