#!/usr/bin/env bash
# Host start time with many plugins, with a cold and a warm compile cache.
#
# Usage: scripts/bench-startup.sh [PLUGINS] [ROUNDS]   (defaults: 200 plugins, 3 rounds)
#
# Builds the host and the Rust counter example, fills a temporary folder with
# PLUGINS distinct versions of the counter (the same code, each with its own
# custom section, so each has its own hash and cache entry), and times
# `wasm-sup run` from spawn until GET /readyz answers 200 (every plugin
# running): once with an empty compile cache, then ROUNDS times with a warm
# one. Prints a markdown table and writes target/bench/startup.json.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/build-examples.sh rust >/dev/null
cargo build --release --locked --workspace --bins
mkdir -p target/bench
exec python3 scripts/bench_startup.py "${1:-200}" "${2:-3}"
