# hashtale: one image, one binary; the command picks the role (scheduler, worker, serve, run).
# Multi-stage: build with the full toolchain, run on a slim base with the model assets.
#   docker build -t hashtale .                      # CPU
#   docker build --build-arg FEATURES=cuda --build-arg BUILDER=nvidia/cuda:12.4.1-devel-ubuntu22.04 \
#                --build-arg RUNTIME=nvidia/cuda:12.4.1-runtime-ubuntu22.04 -t hashtale:cuda .
ARG BUILDER=rust:1-bookworm
ARG RUNTIME=debian:bookworm-slim

FROM ${BUILDER} AS build
ARG FEATURES=""
# The CUDA builder image has no Rust: install it there (a no-op on the rust image).
RUN command -v cargo >/dev/null 2>&1 || (apt-get update && apt-get install -y --no-install-recommends curl ca-certificates build-essential \
      && curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal)
ENV PATH=/root/.cargo/bin:$PATH
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin hashtale ${FEATURES:+--features $FEATURES} \
    && cp target/release/hashtale /usr/local/bin/hashtale

FROM ${RUNTIME}
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /app hashtale
WORKDIR /app
COPY --from=build /usr/local/bin/hashtale /usr/local/bin/hashtale
# The binary resolves every model path under HASHTALE_ASSETS (the [models] config section can
# point any of them elsewhere, e.g. to a mounted volume).
COPY --from=build /src/assets /app/assets
ENV HASHTALE_ASSETS=/app/assets
USER hashtale
# tini forwards SIGTERM so the worker can finish its batch (graceful shutdown).
ENTRYPOINT ["/usr/bin/tini", "--", "hashtale"]
CMD ["run", "--listen", "0.0.0.0:8080"]
