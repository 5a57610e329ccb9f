#!/usr/bin/env bash
# Runs the whole test suite, as CI does (.ci/run calls this).
#
# Usage: scripts/test.sh [--long] [CARGO TEST FILTER...]
#   --long   the slow suites at full size: a 200,000-restart soak and
#            100 kill -9 rounds (CI runs 10,000 restarts and 12 rounds;
#            scripts/kill9.sh runs 1,000 rounds on demand, scripts/chaos.sh
#            the full chaos soak).
#
# Installs what it needs (the wasm32-wasip2 target, and through
# scripts/build-examples.sh the Python, JavaScript, C and Go toolchains),
# builds the example plugins of every language, builds once in release mode
# for both the binary and the tests, then checks formatting, runs every test,
# the benchmark harness and the chaos soak at their CI sizes, and clippy with
# warnings as errors. Idempotent. A language whose toolchain cannot be
# installed is skipped with the reason, except in CI (CI=true), where every
# language must build and pass. Each phase's wall time is printed when it
# ends, and all of them with the total at exit, on failure too.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Phase timings: `phase NAME` ends the phase before it (printing its time)
# and starts NAME; the EXIT trap ends the last one and prints them all.
phase_name=""
phase_start=$SECONDS
phase_times=()
phase() {
    end_phase
    phase_name="$1"
    phase_start=$SECONDS
    echo "== $1"
}
end_phase() {
    if [[ -n "$phase_name" ]]; then
        local took=$((SECONDS - phase_start))
        echo "   ($phase_name: $took s)"
        phase_times+=("$(printf '%6d s  %s' "$took" "$phase_name")")
        phase_name=""
    fi
}
report_phases() {
    local status=$?
    local failed="$phase_name"
    end_phase
    echo "== phase times"
    local line
    for line in "${phase_times[@]}"; do
        echo "$line"
    done
    printf '%6d s  total' "$SECONDS"
    if [[ $status -ne 0 ]]; then
        printf ' (failed%s, exit %d)' "${failed:+ in $failed}" "$status"
    fi
    echo
}
trap report_phases EXIT

if [[ "${1:-}" == "--long" ]]; then
    shift
    export WASM_SUP_SOAK_CRASHES="${WASM_SUP_SOAK_CRASHES:-200000}"
    export WASM_SUP_KILL_ROUNDS="${WASM_SUP_KILL_ROUNDS:-100}"
fi

phase "toolchain (wasm32-wasip2, rustfmt, clippy, systemd-analyze, promtool, PostgreSQL, Erlang)"
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
if command -v rustup >/dev/null; then
    rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
    rustup component list --installed | grep -q '^clippy' || rustup component add clippy
fi
# systemd-analyze, for the service unit's checks (tests/integration/systemd.rs).
if ! command -v systemd-analyze >/dev/null; then
    # shellcheck source=toolchains.sh
    source scripts/toolchains.sh
    ensure_apt systemd || [[ "${CI:-}" != "true" ]]
fi
# promtool, for the alerting rules in dist/ and the scrape's format
# (tests/integration/events.rs).
if ! command -v promtool >/dev/null; then
    # shellcheck source=toolchains.sh
    source scripts/toolchains.sh
    ensure_apt prometheus || [[ "${CI:-}" != "true" ]]
fi

# PostgreSQL 15 or later, for the PostgreSQL backend's tests: the test setup
# starts a private server of its own (tests/postgres.rs). Never skipped: the
# tests fail with the command that installs it.
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    # shellcheck source=toolchains.sh
    source scripts/toolchains.sh
    ensure_apt postgresql-15
fi

# Erlang/OTP, the benchmark's comparator (the smoke run below includes it).
if ! command -v erl >/dev/null; then
    # shellcheck source=toolchains.sh
    source scripts/toolchains.sh
    ensure_apt erlang-nox || [[ "${CI:-}" != "true" ]]
fi

phase "cargo fmt --check"
cargo fmt --all -- --check
phase "example plugins in every language (for the conformance suite)"
scripts/build-examples.sh
phase "build (release: one build for the binary and the tests)"
cargo build --release --locked --workspace --bins
phase "tests"
cargo test --release --locked --workspace "$@"
phase "benchmark harness, smoke size (checks that it runs, not how fast)"
target/release/wasm-sup-bench --smoke
phase "chaos soak, CI size (life, acknowledged writes, quiet checkpoints)"
target/release/wasm-sup-chaos --ci
phase "clippy (warnings are errors)"
cargo clippy --release --locked --workspace --all-targets -- -D warnings
