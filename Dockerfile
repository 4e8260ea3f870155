# twinlink container image: built from this checkout with the official Rust image, run on Debian
# slim as an unprivileged user. Configuration is by environment (TWINLINK_*, see README.md) or a
# mounted TOML file (TWINLINK_CONFIG).
#
#   docker build -t twinlink .
#   docker run -p 1026:1026 -v twinlink-data:/var/lib/twinlink twinlink

# ---- build ---------------------------------------------------------------------------------
FROM rust:1.95-trixie AS builder
WORKDIR /src
COPY . .
# The registry and the build directory are cache mounts (BuildKit): a rebuild after a source
# change compiles twinlink only.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin twinlink \
    && install -m 0755 target/release/twinlink /usr/local/bin/twinlink

# ---- run -----------------------------------------------------------------------------------
FROM debian:trixie-slim
# curl for the HEALTHCHECK; ca-certificates for https contexts, sources and JWKS. Their versions
# are those of the trixie release the base image names (pinning one would break the build at the
# next security update, when the archive drops the pinned version).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 twinlink \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/twinlink --create-home \
       --shell /usr/sbin/nologin twinlink
COPY --from=builder /usr/local/bin/twinlink /usr/local/bin/twinlink

# Production defaults: listen on every interface, JSON logs, the embedded store in the volume,
# and no outbound requests to loopback or private addresses (notification endpoints, context
# URLs, context sources, the JWKS); open exceptions with TWINLINK_OUTBOUND_ALLOW.
ENV TWINLINK_BIND=0.0.0.0 \
    TWINLINK_PORT=1026 \
    TWINLINK_DATA_DIR=/var/lib/twinlink \
    TWINLINK_LOG_FORMAT=json \
    TWINLINK_OUTBOUND=private=deny

# Numeric, so that Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
USER 10001:10001
WORKDIR /var/lib/twinlink
VOLUME ["/var/lib/twinlink"]
EXPOSE 1026
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/bin/sh", "-c", "curl -fsS \"http://127.0.0.1:${TWINLINK_PORT}/health\" || exit 1"]
ENTRYPOINT ["/usr/local/bin/twinlink"]
