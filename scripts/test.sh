#!/usr/bin/env bash
# Runs the whole test suite, as CI does (.ci/run calls this).
#
# Usage: scripts/test.sh [--long] [CARGO TEST FILTER...]
#   --long   the slow suites at full size: a 200,000-restart soak and
#            100 kill -9 rounds (CI runs 10,000 restarts and 12 rounds).
#
# Installs what it needs (the wasm32-wasip2 target, and through
# scripts/build-examples.sh the Python, JavaScript, C and Go toolchains),
# builds the example plugins of every language, builds once in release mode
# for both the binary and the tests, then checks formatting, runs clippy with
# warnings as errors, and runs every test. Idempotent. A language whose
# toolchain cannot be installed is skipped with the reason, except in CI
# (CI=true), where every language must build and pass.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ "${1:-}" == "--long" ]]; then
    shift
    export WASM_SUP_SOAK_CRASHES="${WASM_SUP_SOAK_CRASHES:-200000}"
    export WASM_SUP_KILL_ROUNDS="${WASM_SUP_KILL_ROUNDS:-100}"
fi

if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
if command -v rustup >/dev/null; then
    rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
    rustup component list --installed | grep -q '^clippy' || rustup component add clippy
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== example plugins in every language (for the conformance suite)"
scripts/build-examples.sh
echo "== build (release: one build for the binary and the tests)"
cargo build --release --locked --workspace --bins
echo "== tests"
cargo test --release --locked --workspace "$@"
echo "== benchmark harness, smoke size (checks that it runs, not how fast)"
target/release/wasm-sup-bench --smoke
echo "== clippy (warnings are errors)"
cargo clippy --release --locked --workspace --all-targets -- -D warnings
