# Multi-stage build: compile with the Rust toolchain, run on a small Debian image as a
# non-root user.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p omnigate && cp target/release/omnigate /omnigate

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /var/lib/omnigate --create-home omnigate
COPY --from=build /omnigate /usr/local/bin/omnigate
USER omnigate
WORKDIR /var/lib/omnigate
EXPOSE 8080
ENV OMNIGATE_LISTEN=0.0.0.0:8080
ENTRYPOINT ["omnigate"]
CMD ["serve"]
