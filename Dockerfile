# Skald server image: build with the full toolchain, run on a slim base as
# an unprivileged user whose only writable place is the data volume.
#
# docker build -t skald .
# docker run -p 8080:8080 -e SKALD_JWT_SECRET=... skald

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so that a change to Skald's code reuses their layer.
COPY Cargo.toml Cargo.lock ./
COPY protocol/Cargo.toml protocol/Cargo.toml
COPY actors/Cargo.toml actors/Cargo.toml
COPY loadtest/Cargo.toml loadtest/Cargo.toml
RUN mkdir -p src protocol/src actors/src loadtest/src \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && touch protocol/src/lib.rs actors/src/lib.rs loadtest/src/lib.rs \
 && echo 'fn main() {}' > loadtest/src/main.rs \
 && cargo build --release --locked -p skald \
 && rm -rf src protocol/src actors/src loadtest/src
COPY . .
# Make cargo see the real sources as newer than the placeholders.
RUN touch src/main.rs src/lib.rs protocol/src/lib.rs actors/src/lib.rs loadtest/src/lib.rs \
 && cargo build --release --locked -p skald \
 && cp target/release/skald /usr/local/bin/skald

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/skald skald \
 && mkdir -p /var/lib/skald && chown skald /var/lib/skald
COPY --from=build /usr/local/bin/skald /usr/local/bin/skald
USER skald
ENV SKALD_LISTEN=0.0.0.0:8080 \
    SKALD_DATA_DIR=/var/lib/skald \
    SKALD_LOG_FORMAT=json
VOLUME /var/lib/skald
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s \
  CMD ["/usr/local/bin/skald", "healthcheck"]
# SIGTERM drains: live streams get drain_timeout_ms (30 s) to finish.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/skald"]
