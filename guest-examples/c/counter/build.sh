#!/usr/bin/env bash
# Builds the C counter into a WASI 0.2 component.
#
# Usage: guest-examples/c/counter/build.sh OUT_WASM
#
# clang-19 compiles counter.c and the committed bindings in gen/ (from
# scripts/regenerate-bindings.sh; the wit-bindgen CLI is not needed here)
# against wasi-libc into a WASI preview1 reactor module, and
# `wasm-tools component new` wraps it, with the preview1 adapter, into a
# component. Intermediate files go to <target dir>/wasm-guests/c/.
#
# Exit status 3, after one line on stderr saying why, when the toolchain
# cannot be installed (the caller reports C as skipped); any other failure is
# another non-zero status.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"

# shellcheck source=../../../scripts/toolchains.sh
source "$root/scripts/toolchains.sh"
example_build_setup c "$@"

toolchain_or_skip c "$build_dir/install.log" ensure_clang
toolchain_or_skip c "$build_dir/install.log" ensure_wasm_tools
adapter="$(toolchain_or_skip c "$build_dir/install.log" ensure_adapter)"

core="$build_dir/counter.core.wasm"
clang-19 --target=wasm32-wasi -mexec-model=reactor -Os -std=gnu11 \
    -Wall -Wextra -Werror -Wno-unused-parameter \
    -I "$here/gen" \
    -o "$core" \
    "$here/counter.c" "$here/gen/supervised_worker.c" "$here/gen/supervised_worker_component_type.o" \
    -Wl,--strip-debug
wasm-tools component new "$core" \
    --adapt "wasi_snapshot_preview1=$adapter" \
    -o "$build_dir/counter.wasm"
wasm-tools validate "$build_dir/counter.wasm"
deliver "$build_dir/counter.wasm" "$out"
