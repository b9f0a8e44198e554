# syntax=docker/dockerfile:1.7
#
# Images for the six orderflow binaries, one build target per binary:
#
#   docker build --target order        -t orderflow/order:0.1.0 .
#   docker build --target inventory    -t orderflow/inventory:0.1.0 .
#   docker build --target payment      -t orderflow/payment:0.1.0 .
#   docker build --target notification -t orderflow/notification:0.1.0 .
#   docker build --target catalog      -t orderflow/catalog:0.1.0 .
#   docker build --target outbox-relay -t orderflow/outbox-relay:0.1.0 .
#
# (`docker build .` with no target gives `all`: every binary in one image.)
#
# Stages: chef (toolchain + cargo-chef) -> planner (the dependency recipe)
# -> builder (dependencies cooked in their own layer, which stays cached
# until Cargo.toml/Cargo.lock change; then the workspace) -> runtime
# (Debian slim, non-root) -> one small stage per binary. The six targets
# share the builder stage, so building all six compiles the workspace once.
#
# No protoc is needed: proto/build.rs compiles the .proto files with protox
# (pure Rust). No libpq or OpenSSL either: diesel-async runs on
# tokio-postgres and lapin uses rustls, so the runtime needs only glibc,
# libgcc and CA certificates (for amqps:// or TLS to PostgreSQL).
#
# Base images are pinned by tag; pin them by digest too (FROM image:tag@sha256:...)
# where the registry is reachable when you bump them.

ARG RUST_IMAGE=rust:1.95.0-slim-bookworm
ARG RUNTIME_IMAGE=debian:12.11-slim

FROM ${RUST_IMAGE} AS chef
ARG CARGO_CHEF_VERSION=0.1.78
RUN cargo install cargo-chef --version "${CARGO_CHEF_VERSION}" --locked \
    && rm -rf "${CARGO_HOME}/registry" "${CARGO_HOME}/git"
WORKDIR /src

# The recipe is a skeleton of every manifest and the lock file: it changes
# only when dependencies change, which is what keeps the next layer cached.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
ENV CARGO_TERM_COLOR=never
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json \
    -p orderflow-order -p orderflow-inventory -p orderflow-payment \
    -p orderflow-notification -p orderflow-catalog -p orderflow-outbox-relay
COPY . .
# The migrations are embedded at compile time (diesel embed_migrations!),
# so migrations/ must be in the build context (.dockerignore keeps it).
RUN cargo build --release --locked \
    -p orderflow-order -p orderflow-inventory -p orderflow-payment \
    -p orderflow-notification -p orderflow-catalog -p orderflow-outbox-relay \
    && mkdir -p /out \
    && for bin in order inventory payment notification catalog outbox-relay; do \
         cp "target/release/${bin}" /out/; \
       done

FROM ${RUNTIME_IMAGE} AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 orderflow \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
         --home-dir /nonexistent --shell /usr/sbin/nologin orderflow
# Numeric, so Kubernetes can verify runAsNonRoot without a passwd lookup.
USER 10001:10001
# Containers log JSON lines; everything else is configured by the environment
# (see README.md and k8s/base/config/*.env).
ENV LOG_FORMAT=json
WORKDIR /

FROM runtime AS order
COPY --from=builder /out/order /usr/local/bin/order
ENV GRPC_LISTEN_ADDR=0.0.0.0:50051
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/order"]
CMD ["serve"]

FROM runtime AS inventory
COPY --from=builder /out/inventory /usr/local/bin/inventory
ENV GRPC_LISTEN_ADDR=0.0.0.0:50051
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/inventory"]
CMD ["serve"]

FROM runtime AS payment
COPY --from=builder /out/payment /usr/local/bin/payment
ENV GRPC_LISTEN_ADDR=0.0.0.0:50051
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/payment"]
CMD ["serve"]

FROM runtime AS notification
COPY --from=builder /out/notification /usr/local/bin/notification
ENV GRPC_LISTEN_ADDR=0.0.0.0:50051
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/notification"]
CMD ["serve"]

# Its local default is 127.0.0.1:50055; in a container it listens on 50051
# like the other services (metrics: METRICS_LISTEN_ADDR, 9090 in k8s).
FROM runtime AS catalog
COPY --from=builder /out/catalog /usr/local/bin/catalog
ENV GRPC_LISTEN_ADDR=0.0.0.0:50051
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/catalog"]
CMD ["serve"]

# The relay keeps its loopback default here: it will refuse a non-loopback
# RELAY_HTTP_ADDR without RELAY_ADMIN_TOKEN, so the address is set where the
# token is (k8s/base/outbox-relay.yaml).
FROM runtime AS outbox-relay
COPY --from=builder /out/outbox-relay /usr/local/bin/outbox-relay
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/outbox-relay"]
CMD ["serve"]

FROM runtime AS all
COPY --from=builder /out/ /usr/local/bin/
