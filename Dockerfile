# portcullis: multi-stage build of a static (musl) binary into a distroless,
# non-root runtime image.
#
#   docker build -t portcullis .
#   docker run --rm -p 8080:8080 -p 127.0.0.1:9090:9090 \
#     -v $PWD/portcullis.toml:/etc/portcullis/portcullis.toml:ro \
#     -e PORTCULLIS__OIDC__CLIENT_SECRET=... portcullis
#
# See docs/deploy.md.

FROM rust:1-bookworm AS build
# The builder's own architecture: aarch64-unknown-linux-musl on an arm64 host.
ARG TARGET=x86_64-unknown-linux-musl
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "$TARGET"
WORKDIR /src
# e.g. --build-arg FEATURES=otel for OpenTelemetry export
ARG FEATURES=""

# Dependencies in a layer of their own: it is rebuilt only when a manifest or
# Cargo.lock changes, not on every source change. Empty stand-ins replace the
# workspace's own crates; their artifacts are then cleaned so that the real
# sources are always compiled (COPY keeps the context's mtimes, which may be
# older than the stand-ins' build).
COPY Cargo.toml Cargo.lock ./
COPY crates/portcullis/Cargo.toml crates/portcullis/build.rs crates/portcullis/
COPY crates/portcullis-demo/Cargo.toml crates/portcullis-demo/
COPY crates/portcullis-cli/Cargo.toml crates/portcullis-cli/
RUN mkdir -p crates/portcullis/src crates/portcullis-demo/src crates/portcullis-cli/src \
 && touch crates/portcullis/src/lib.rs crates/portcullis-demo/src/lib.rs \
 && echo 'fn main() {}' > crates/portcullis-cli/src/main.rs \
 && cargo build --release --locked --target "$TARGET" -p portcullis-cli --features "$FEATURES" \
 && cargo clean --release --target "$TARGET" -p portcullis -p portcullis-demo -p portcullis-cli \
 && rm -rf crates/portcullis/src crates/portcullis-demo/src crates/portcullis-cli/src

COPY crates ./crates
RUN cargo build --release --locked --target "$TARGET" -p portcullis-cli --features "$FEATURES" \
 && cp "target/$TARGET/release/portcullis" /portcullis

# distroless/static: no shell, no libc; CA certificates and /etc/passwd with
# the `nonroot` user (65532) are included.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /portcullis /usr/local/bin/portcullis
USER 65532:65532
# A config mounted at /etc/portcullis/portcullis.toml is read (the working
# directory's portcullis.toml); without one the gateway runs from the
# PORTCULLIS__... variables alone.
WORKDIR /etc/portcullis
# Inside a container loopback is unreachable from outside, so both listeners
# bind every interface. These variables override the config file's
# server.listen / admin.listen; pass other values with `docker run -e` to change them.
# The admin port (/healthz, /readyz, /metrics) must still not be published
# beyond the host or cluster network.
ENV PORTCULLIS__SERVER__LISTEN=0.0.0.0:8080 \
    PORTCULLIS__ADMIN__LISTEN=0.0.0.0:9090
EXPOSE 8080 9090
# No curl in distroless: the binary asks its own admin listener's /healthz
# (the address from PORTCULLIS__ADMIN__LISTEN, on loopback) and exits 1
# unless it answers 200 within the timeout.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/portcullis", "health", "--timeout", "3s"]
# SIGTERM starts a graceful drain (server.drain_timeout); exit code 0 after it.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["serve"]
