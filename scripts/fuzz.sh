#!/usr/bin/env bash
# Fuzzes the host with cargo fuzz (libFuzzer) and keeps the minimised corpus.
#
#   scripts/fuzz.sh [SECONDS]     # SECONDS per target, default 600
#
# Targets (fuzz/fuzz_targets/, each a wasm_sup::fuzzing function; a
# libFuzzer dictionary in fuzz/dict/TARGET.dict is used when there is one):
#   config     the configuration loader on wasm-sup.toml (and NAME.toml)
#   component  `wasm-sup check`'s component loader on arbitrary bytes
#   admin      the admin API on raw HTTP/1.1 bytes, against a running host
#
# Each target runs for SECONDS from fuzz/corpus/TARGET (new inputs are added
# there) and the hand-made seeds in fuzz/seeds/TARGET (real configurations,
# tiny WAT-built components, a request for each route: kept as they are),
# then the corpus is minimised (libFuzzer's set-cover merge, which `cargo
# fuzz cmin` runs as a plain merge) to at most FUZZ_MAX_PER_TARGET (default
# 75) files, so seeds and corpora together stay within the ~300 inputs CI
# replays (DESIGN.md, "Baselines and noise"): the stable test
# tests/integration/fuzz_corpus.rs replays every kept input. A crash
# stops its target early; its input is in fuzz/artifacts/TARGET/. Prints,
# for each target, the seconds it ran, its executions, its corpus size after
# minimising and the crashes it found.
#
# Needs the nightly toolchain (the only use of nightly in the project) and
# cargo-fuzz, which is installed if missing. Safe to run again: each run
# starts from the kept corpus. The fuzz crate is outside the workspace and
# builds into fuzz/target (the first build compiles wasmtime: ~15-20 minutes
# on a 2-core machine).
set -euo pipefail

SECONDS_PER_TARGET="${1:-600}"
MAX_PER_TARGET="${FUZZ_MAX_PER_TARGET:-75}"
TARGETS=(config component admin)

cd "$(dirname "$0")/.."
ROOT="$PWD"

if ! [[ "$SECONDS_PER_TARGET" =~ ^[0-9]+$ ]] || [ "$SECONDS_PER_TARGET" -lt 1 ]; then
    echo "usage: scripts/fuzz.sh [SECONDS]   (seconds per target, default 600)" >&2
    exit 2
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# Build flags:
# -O: optimised, as the host ships; fuzz/Cargo.toml turns debug assertions
#        and overflow checks on for the host crate alone, so arithmetic
#        overflow in the host (durations, sizes) is a crash.
# --sanitizer none: the host is safe Rust (unsafe_code is denied), so
#        AddressSanitizer would guard only dependencies' unsafe code, which
#        wasmtime fuzzes itself; ASan makes the instrumented build of
#        wasmtime and cranelift much slower to compile and to run (the
#        component target compiles wasm, the admin target runs a host).
# The targets are then run and minimised as built, not through `cargo fuzz
# run` or `cmin`: those rebuild when a source changed meanwhile, and after a
# crash `run` rebuilds everything with another cfg to print the input.
FLAGS=(-O --sanitizer none)
# Per input: a hang longer than this is reported as a timeout (the admin
# harness gives each input 2 s, plus up to 5 s to start its plugin again).
LIBFUZZER=(-timeout=30 -rss_limit_mb=4096 -print_final_stats=1)

echo "== building the fuzz targets (cargo +nightly fuzz build ${FLAGS[*]})"
build_start=$(date +%s)
cargo +nightly fuzz build "${FLAGS[@]}"
echo "built in $(($(date +%s) - build_start)) s"
BIN="fuzz/target/$(rustc +nightly -vV | sed -n 's/^host: //p')/release"

count_files() { if [ -d "$1" ]; then find "$1" -maxdepth 1 -type f | wc -l; else echo 0; fi; }

# minimise TARGET LOG [LIBFUZZER ARGS]: merges the corpus of TARGET into the
# fewest inputs that keep its coverage (-set_cover_merge; plain -merge adds
# inputs smallest first and keeps several times as many). The set cover
# writes its picks in the order it chose them, most new coverage first.
minimise() {
    local t="$1" log="$2"
    shift 2
    local corpus="fuzz/corpus/$t" old="fuzz/target/corpus-$t.old"
    rm -rf "$old"
    mv "$corpus" "$old"
    mkdir -p "$corpus"
    if ! "$BIN/$t" -set_cover_merge=1 "${LIBFUZZER[@]}" "$@" "$corpus" "$old" >>"$log" 2>&1; then
        echo "minimising $t failed (see $log): the corpus is left as it was" >&2
        rm -rf "$corpus"
        mv "$old" "$corpus"
        return 1
    fi
    rm -rf "$old"
}

declare -A RAN EXECS CORPUS CRASHES
for t in "${TARGETS[@]}"; do
    corpus="fuzz/corpus/$t"
    artifacts="fuzz/artifacts/$t"
    mkdir -p "$corpus" "$artifacts"
    log="fuzz/target/fuzz-$t.log"
    cmin_log="fuzz/target/cmin-$t.log"
    before=$(count_files "$artifacts")
    dict=()
    if [ -f "fuzz/dict/$t.dict" ]; then dict=(-dict="fuzz/dict/$t.dict"); fi
    echo "== fuzzing $t for $SECONDS_PER_TARGET s (log: $log)"
    start=$(date +%s)
    # A crash ends the run with a non-zero status: reported below, not fatal.
    "$BIN/$t" -artifact_prefix="$artifacts/" -max_total_time="$SECONDS_PER_TARGET" \
        "${LIBFUZZER[@]}" "${dict[@]}" "$corpus" "fuzz/seeds/$t" >"$log" 2>&1 || true
    RAN[$t]=$(($(date +%s) - start))
    EXECS[$t]=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    CRASHES[$t]=$(($(count_files "$artifacts") - before))

    echo "== minimising the $t corpus ($(count_files "$corpus") files)"
    : >"$cmin_log"
    minimise "$t" "$cmin_log" || true
    if [ "$(count_files "$corpus")" -gt "$MAX_PER_TARGET" ]; then
        # Over the budget: keep edge coverage only, not hit counts.
        minimise "$t" "$cmin_log" -use_counters=0 || true
    fi
    n=$(count_files "$corpus")
    if [ "$n" -gt "$MAX_PER_TARGET" ]; then
        echo "the $t corpus has $n files after minimising: keeping the $MAX_PER_TARGET that cover most"
        find "$corpus" -maxdepth 1 -type f -printf '%T@ %p\n' | sort -n |
            tail -n +"$((MAX_PER_TARGET + 1))" | cut -d' ' -f2- | xargs -r rm --
    fi
    CORPUS[$t]=$(count_files "$corpus")
done

echo
printf '%-10s %8s %12s %8s %8s\n' TARGET SECONDS EXECUTIONS CORPUS CRASHES
for t in "${TARGETS[@]}"; do
    printf '%-10s %8s %12s %8s %8s\n' "$t" "${RAN[$t]}" "${EXECS[$t]:-?}" "${CORPUS[$t]}" "${CRASHES[$t]}"
done
total=0
for t in "${TARGETS[@]}"; do
    total=$((total + CORPUS[$t] + $(count_files "fuzz/seeds/$t") + $(count_files "fuzz/regressions/$t")))
done
echo "kept inputs (corpora, seeds, regressions): $total, replayed by" \
    "cargo test --release -p wasm-sup-tests --test integration fuzz_corpus"
for t in "${TARGETS[@]}"; do
    if [ "${CRASHES[$t]}" -gt 0 ]; then
        echo "crashes of $t (reproduce: $BIN/$t FILE):"
        ls -t "$ROOT/fuzz/artifacts/$t" | head -n "${CRASHES[$t]}" | sed "s|^|  fuzz/artifacts/$t/|"
    fi
done
