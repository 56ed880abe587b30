#!/usr/bin/env bash
# Builds the release gateway and the load generator, then runs the benchmarks (one table).
# Extra arguments go to the benchmark (e.g. --only ingress,e2e --duration 20 --postgres postgres://...).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/omnigate-target}"
cargo build --release --locked -p omnigate -p omnigate-bench
exec "$CARGO_TARGET_DIR/release/omnigate-bench" --gateway "$CARGO_TARGET_DIR/release/omnigate" "$@"
