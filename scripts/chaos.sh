#!/usr/bin/env bash
# The chaos soak: 100 probe plugins in the real wasm-sup binary (healthy
# counters beside crash-loopers, memory bombs, floods and one spinner), a
# steady load from loopback clients, and plugin files upgraded and removed at
# random. Checks that the host never dies, that every acknowledged increment
# is in the final count, and that resident memory and file descriptors at
# quiet checkpoints stay within +10% of the first; reports the healthy
# counters' latency (p99 judged, ≤ 10 ms, in the full run only).
#
# Usage: scripts/chaos.sh [SECONDS | --ci] [wasm-sup-chaos options]
#   (none)     the full run: 1,000,000 messages over about 600 s of load
#   SECONDS    the same rate over SECONDS of load (e.g. 60)
#   --ci       the size CI runs: 60,000 messages over about 60 s
#   other options: --messages N, --plugins N, --checkpoints N
#
# Builds the host and the harness (tests/chaos/, the wasm-sup-chaos binary;
# the tests crate's build script builds the probe guest) in release mode,
# then runs it. Prints a summary and writes target/chaos/chaos.json
# (chaos-ci.json for a short run) and the host's JSON log beside it. Exits
# non-zero if a check fails. When the machine cannot keep the rate, the run
# takes longer and says so (the rate it reached is in the summary).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

args=()
if [[ "${1:-}" =~ ^[0-9]+$ ]]; then
    args+=(--seconds "$1")
    shift
fi
cargo build --release --locked --workspace --bins
probe=target/wasm-guests/wasm32-wasip2/release/probe.wasm
if [[ ! -f "$probe" ]]; then
    echo "error: $probe was not built (the tests crate's build script builds it)" >&2
    exit 1
fi
exec target/release/wasm-sup-chaos "${args[@]}" "$@"
