#!/usr/bin/env bash
# Builds the example plugins in guest-examples/<language>/ and copies the
# components to guest-examples/plugins/<name>.wasm.
#
# Usage: scripts/build-examples.sh [LANGUAGE...]
# With no argument, every language is built. Languages: rust.
#
# Rust examples build into <target dir>/wasm-guests, the directory
# tests/build.rs builds the guests in, so neither rebuilds the other's work.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
plugins_dir="$root/guest-examples/plugins"
# As tests/build.rs: CARGO_TARGET_DIR if set, else <repo>/target.
guests_dir="${CARGO_TARGET_DIR:-$root/target}/wasm-guests"
wasm_target=wasm32-wasip2
languages=(rust)

ensure_wasm_target() {
    if ! command -v rustup >/dev/null; then
        return # not a rustup toolchain: cargo reports a missing target itself
    fi
    if ! rustup target list --installed | grep -qx "$wasm_target"; then
        rustup target add "$wasm_target"
    fi
}

build_rust() {
    local workspace="$root/guest-examples/rust"
    ensure_wasm_target
    cargo build --release --locked --target "$wasm_target" \
        --manifest-path "$workspace/Cargo.toml" --target-dir "$guests_dir"
    local manifest name
    for manifest in "$workspace"/*/Cargo.toml; do
        name="$(basename "$(dirname "$manifest")")"
        # Copied under a hidden name and renamed into place, so that a running
        # `wasm-sup run guest-examples/plugins` sees each file whole.
        cp "$guests_dir/$wasm_target/release/${name//-/_}.wasm" "$plugins_dir/.$name.wasm.tmp"
        mv -f "$plugins_dir/.$name.wasm.tmp" "$plugins_dir/$name.wasm"
        echo "built guest-examples/plugins/$name.wasm"
    done
}

selected=("$@")
if [[ ${#selected[@]} -eq 0 ]]; then
    selected=("${languages[@]}")
fi
for language in "${selected[@]}"; do
    if [[ " ${languages[*]} " != *" $language "* ]]; then
        echo "error: no examples for language '$language' (known: ${languages[*]})" >&2
        exit 2
    fi
done

mkdir -p "$plugins_dir"
for language in "${selected[@]}"; do
    "build_$language"
done
