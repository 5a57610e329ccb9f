#!/usr/bin/env bash
# Builds what the demo needs and runs wasm-sup on the example plugins.
#
# Usage: scripts/demo.sh [wasm-sup run options, e.g. --admin 127.0.0.1:9070]
#
# Builds the example plugins of every language into guest-examples/plugins/
# (scripts/build-examples.sh installs the wasm32-wasip2 target and the
# Python, JavaScript, C and Go toolchains the first time, and skips, with the
# reason, a language whose toolchain cannot be installed), builds the host in
# release mode, then runs `wasm-sup run guest-examples/plugins`. Stop it with
# Ctrl-C. Idempotent.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/build-examples.sh
cargo build --release --locked --workspace --bins
echo
echo "wasm-sup is starting; in another terminal try:"
echo "  target/release/wasm-sup send counter hello"
echo "  target/release/wasm-sup send counter crash"
echo "  target/release/wasm-sup status"
echo
exec target/release/wasm-sup run guest-examples/plugins "$@"
