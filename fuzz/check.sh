#!/bin/sh
# Type-checks the cargo-fuzz targets on the stable toolchain (no nightly, no
# sanitizer, nothing run), so a change in `webhooks` or `channels` that breaks them
# fails CI. Also checks their formatting: the workspace's `cargo fmt --all` does not
# reach this crate. Uses $CARGO_TARGET_DIR like any cargo command.
set -eu
cd "$(dirname "$0")"
cargo fmt --check
cargo check --locked --bins
