# portcullis: multi-stage build of a static (musl) binary into a distroless,
# non-root runtime image.
#
#   docker build -t portcullis .
#   docker run --rm -p 8080:8080 -p 9090:9090 \
#     -v $PWD/portcullis.toml:/etc/portcullis/portcullis.toml:ro \
#     -e PORTCULLIS__OIDC__CLIENT_SECRET=... portcullis

FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
# e.g. --build-arg FEATURES=otel for OpenTelemetry export
ARG FEATURES=""
RUN cargo build --release --locked --target x86_64-unknown-linux-musl -p portcullis-cli \
      --features "$FEATURES" \
 && cp target/x86_64-unknown-linux-musl/release/portcullis /portcullis

# distroless/static: no shell, no libc; CA certificates and /etc/passwd with
# the `nonroot` user (65532) are included.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /portcullis /usr/local/bin/portcullis
USER 65532:65532
ENV PORTCULLIS_CONFIG=/etc/portcullis/portcullis.toml
# Public listener and admin listener (/healthz, /readyz, /metrics). Set
# server.listen = "0.0.0.0:8080" and admin.listen = "0.0.0.0:9090" in the config.
EXPOSE 8080 9090
# SIGTERM starts a graceful drain (server.drain_timeout); exit code 0 after it.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["serve"]
