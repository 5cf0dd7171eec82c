# syntax=docker/dockerfile:1
#
# OPD Token Engine container image.
#
# A cargo-chef multi-stage build (as in zero-to-production's Dockerfile):
# "planner" turns the manifests into a recipe, "cacher" builds only the
# dependencies from it (a layer Docker reuses until Cargo.toml/Cargo.lock
# change), and "builder" compiles the project on top of those artefacts.
# The runtime image is debian:bookworm-slim with the one binary, run as a
# non-root user.
#
#   docker build -t opd-token-engine .
#   docker run -p 8080:8080 -v opd-data:/data \
#     -v "$PWD/api-keys:/run/secrets/opd-api-keys:ro" \
#     -e OPD_API_KEYS_FILE=/run/secrets/opd-api-keys opd-token-engine
#
# scripts/check-dockerfile.sh runs this file's build command, ENV,
# ENTRYPOINT and HEALTHCHECK on the host, for machines without a Docker engine.

# The toolchain image is pinned to the exact Rust release the project builds
# with, and cargo-chef to an exact version.
ARG RUST_IMAGE=rust:1.95.0-slim-bookworm
ARG CARGO_CHEF_VERSION=0.1.78

FROM ${RUST_IMAGE} AS chef
ARG CARGO_CHEF_VERSION
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS cacher
COPY --from=planner /app/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin opd-token-engine

FROM chef AS builder
COPY . .
# Dependencies built by "cacher": the target directory and the registry cache.
COPY --from=cacher /app/target target
COPY --from=cacher /usr/local/cargo /usr/local/cargo
RUN cargo build --release --locked --bin opd-token-engine

FROM debian:bookworm-slim AS runtime
# HEALTHCHECK needs an HTTP client and the slim image has none. curl is
# installed rather than giving the server a "health check" client mode:
# the binary has no such mode, and a check that runs the binary itself would
# test a second code path instead of the server's real /healthz answer.
# curl costs a few MB; nothing else is needed at run time (jiff bundles the
# time-zone database, SQLite is compiled in).
RUN apt-get update \
    && apt-get install --yes --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin opd \
    && mkdir --mode=700 /data \
    && chown opd:opd /data
COPY --from=builder /app/target/release/opd-token-engine /usr/local/bin/opd-token-engine

USER opd
# Listen on all interfaces so the published port reaches the server; keep the
# store on the /data volume.
#
# Exposing the server this way needs API keys: the server refuses to bind a
# non-loopback address without any (it exits with OpenOnPublicAddress), so
# provide OPD_API_KEYS_FILE (preferred: a mounted secret) or OPD_API_KEYS when
# running the image, e.g. -e OPD_API_KEYS_FILE=/run/secrets/opd-api-keys
# (key line format: see `opd-token-engine --help`, --api-keys-file).
ENV OPD_LISTEN=0.0.0.0:8080 \
    OPD_DATA_DIR=/data
EXPOSE 8080
VOLUME /data
# The port is read from OPD_LISTEN, so the check follows an overridden
# listen address; -f makes any non-2xx answer a failure.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD curl --fail --silent --show-error --max-time 4 "http://127.0.0.1:${OPD_LISTEN##*:}/healthz" || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/opd-token-engine"]
