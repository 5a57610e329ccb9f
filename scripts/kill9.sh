#!/usr/bin/env bash
# kill -9 at scale: the test that SIGKILLs the real wasm-sup binary under
# load and checks that no acknowledged write is lost and no partial write
# survives (kill_9_under_load_loses_no_acknowledged_write_and_leaves_no_partial_one
# in tests/integration/process.rs), for ROUNDS rounds. CI runs 12 rounds and
# `scripts/test.sh --long` 100; this is the on-demand run at 1,000.
#
# Usage: scripts/kill9.sh [ROUNDS]   (default 1000)
#
# Builds in release mode first (the binary the test drives and the test
# itself), then prints the test's own figures (rounds, acknowledged
# increments, last sequence numbers) and the run's duration. On 2 cores a
# round takes about half a second: 1,000 rounds take about 8 minutes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

rounds="${1:-1000}"
if ! [[ "$rounds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: scripts/kill9.sh [ROUNDS]" >&2
    exit 2
fi
test=process::kill_9_under_load_loses_no_acknowledged_write_and_leaves_no_partial_one
cargo build --release --locked --workspace --bins
cargo test --release --locked -p wasm-sup-tests --test integration --no-run
echo "== kill -9: $rounds rounds"
start=$SECONDS
WASM_SUP_KILL_ROUNDS="$rounds" cargo test --release --locked -p wasm-sup-tests \
    --test integration -- "$test" --exact --nocapture
took=$((SECONDS - start))
echo "kill -9: $rounds rounds passed in ${took} s ($(awk "BEGIN { printf \"%.2f\", $took / $rounds }") s a round)"
