#!/usr/bin/env bash
# Per-language figures for the counter example: build time, component size,
# cold start (spawn of `wasm-sup run` to the first reply, compile included),
# warm start (the same with the compile cache warm), and message latency
# through the admin API: `greet` (a config read, no state write) and a count
# (one durable redb write), median and p99.
#
# Usage: scripts/bench-languages.sh [MESSAGES] [LANGUAGE...]
#   MESSAGES   messages per latency figure (default 500)
#
# Rebuilds each language from scratch once to time its build (toolchains
# already installed are reused), builds the host, then measures. Prints a
# markdown table and writes target/bench/languages.json.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
messages="${1:-500}"
shift || true
languages=("$@")
if [[ ${#languages[@]} -eq 0 ]]; then
    languages=(rust python javascript c go)
fi

cargo build --release --locked --workspace --bins
build_times="{"
for language in "${languages[@]}"; do
    scripts/build-examples.sh "$language" >/dev/null 2>&1 || true # toolchain installs are not timed
    if [[ $language == rust ]]; then
        touch guest-examples/rust/counter/src/lib.rs
    fi
    started=$(date +%s.%N)
    if WASM_SUP_REBUILD=1 scripts/build-examples.sh "$language" >/dev/null; then
        seconds=$(python3 -c "import sys; print(round($(date +%s.%N) - $started, 1))")
        build_times+="\"$language\": $seconds, "
    fi
done
build_times="${build_times%, }}"
exec python3 scripts/bench_languages.py "$messages" "$build_times"
