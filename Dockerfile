# syntax=docker/dockerfile:1
#
# pgpilot container image: a static-ish binary on distroless, running as a non-root user.
#   docker build -t pgpilot .
#   docker run -p 6432:6432 -p 9930:9930 -v ./pgpilot.toml:/etc/pgpilot/pgpilot.toml:ro pgpilot
# The config must listen on 0.0.0.0 (listen = "0.0.0.0:6432", http = "0.0.0.0:9930") to be
# reachable from outside the container. Other commands: docker run --rm pgpilot convert /x/pgbouncer.ini
# No HEALTHCHECK: orchestrators probe GET /health on the http port (see deploy/kubernetes).

FROM rust:1-bookworm AS build
# libclang: bindgen for pg_query (the PostgreSQL parser). Versions come from the pinned base image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libclang-dev clang \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p pgpilot \
    && install -D -m 0755 target/release/pgpilot /out/pgpilot

# glibc and libgcc, nothing else: no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/pgpilot /usr/bin/pgpilot
# uid/gid 65532 ("nonroot"); the root filesystem can be mounted read-only.
USER 65532:65532
ENV PGPILOT_LOG=info
# 6432: PostgreSQL clients. 9930: /metrics, /health, API, dashboard.
EXPOSE 6432 9930
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/pgpilot"]
CMD ["serve", "--config", "/etc/pgpilot/pgpilot.toml"]
