#!/usr/bin/env bash
# Every figure of the benchmark against an earlier commit's: REV's harness and
# this tree's take turns, round by round (5 rounds by default), and each figure
# is printed with both sides' range, their medians and the ratio. Slower means
# more than 5% the wrong way with the two ranges apart. See
# scripts/bench_against.py. The first run for a commit builds it in its own
# worktree and target directory (a clean build: about 15 minutes on 2 cores).
#
# Usage: scripts/bench-against.sh REV [--rounds N] [--only FIGURE,...] [--smoke]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
want=262144
if [[ "$(cat /proc/sys/vm/max_map_count 2>/dev/null || echo 0)" -lt "$want" ]]; then
    sysctl -q -w "vm.max_map_count=$want" 2>/dev/null ||
        echo "warning: vm.max_map_count is below $want; the density figure may fail" >&2
fi
cargo build --release --locked --workspace --bins
exec python3 scripts/bench_against.py "$@"
