#!/usr/bin/env bash
# Every performance figure of wasm-sup beside its comparator, in one run:
# crash → ready against the raw instance layer and a process restart; echo
# throughput against raw `handle` calls; durable writes against raw redb;
# idle density; cold start; host start with 1,000 plugins; fuel and epoch
# overhead; crash-storm isolation; durable writes on PostgreSQL, single host
# and across three cluster nodes, against raw PostgreSQL; cluster failover.
# About 6 to 9 minutes on 2 cores.
#
# Usage: scripts/bench.sh [--smoke] [--only FIGURE,...] [--density PLUGINS]
#   --smoke    every figure at a tiny size, to check the harness (CI runs it)
#   --only     some figures: restart, echo, durable, durable-pg, density,
#              cold, start, limits, storm, failover, durable-cluster
#
# Builds the host and the harness (tests/bench/, the wasm-sup-bench binary)
# in release mode, then runs it. Prints a markdown table and writes
# target/bench/bench.md and bench.json (bench-smoke.* for --smoke).
#
# The density figure runs 10,000 plugins in one process, which needs about
# 70,000 memory mappings: more than Linux allows by default
# (vm.max_map_count = 65530). The script raises the limit when it can
# (as root) and says so when it cannot.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ " $* " != *" --smoke "* ]]; then
    want=262144
    have="$(cat /proc/sys/vm/max_map_count 2>/dev/null || echo 0)"
    if [[ "$have" -lt "$want" ]]; then
        if sysctl -q -w "vm.max_map_count=$want" 2>/dev/null; then
            echo "raised vm.max_map_count from $have to $want for the density figure"
        else
            echo "warning: vm.max_map_count is $have; the density figure needs about 70,000 (run: sysctl -w vm.max_map_count=$want)" >&2
        fi
    fi
fi
# Erlang/OTP, the comparator of the restart, echo and density figures
# (tests/bench/otp/): Debian's erlang-nox.
if ! command -v erl >/dev/null; then
    # shellcheck source=toolchains.sh
    source scripts/toolchains.sh
    ensure_apt erlang-nox || echo "warning: no Erlang/OTP: the OTP columns stay empty" >&2
fi
cargo build --release --locked --workspace --bins
exec target/release/wasm-sup-bench "$@"
