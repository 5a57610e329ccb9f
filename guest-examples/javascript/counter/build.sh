#!/usr/bin/env bash
# Builds the JavaScript counter plugin into a WASI 0.2 component with
# componentize-js.
#
# Usage: build.sh OUT_WASM
#
# Works in ${CARGO_TARGET_DIR:-<repo>/target}/wasm-guests/javascript/ and
# copies the component to OUT_WASM. Installs componentize-js into
# ./node_modules with `npm ci` (pinned by package-lock.json) the first time.
# Exit status 3: the toolchain could not be installed (one line on stderr says
# why). A build whose inputs (sources, lockfile, wit/) are unchanged is not
# redone: the previous component is copied.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"

# shellcheck source=../../../scripts/toolchains.sh
source "$root/scripts/toolchains.sh"
example_build_setup javascript "$@"

world=supervised-worker
# wasi:http is not linked by wasm-sup: leave out the fetch() and fetch-event
# support that would import it. stdio (console.log), clocks (Date, setTimeout)
# and random (Math.random, crypto) stay.
disable=(http fetch-event)
component="$build_dir/counter.wasm"
stamp="$build_dir/counter.stamp"

# Everything the component depends on, hashed.
inputs_hash() {
    {
        echo "world $world disable ${disable[*]}"
        (cd "$here" && sha256sum counter.js build.sh package-lock.json)
        wit_listing
    } | sha256sum | cut -d' ' -f1
}

hash="$(inputs_hash)"
if up_to_date "$stamp" "$hash" "$component"; then
    deliver "$component" "$out"
    exit 0
fi

toolchain_or_skip javascript "$build_dir/install.log" ensure_npm_ci "$here"

rm -f "$stamp"
(cd "$here" && ./node_modules/.bin/componentize-js counter.js \
    --wit "$root/wit" --world-name "$world" --disable "${disable[@]}" \
    --out "$component.tmp")
mv -f "$component.tmp" "$component"
echo "$hash" >"$stamp"
deliver "$component" "$out"
