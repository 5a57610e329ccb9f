#!/usr/bin/env bash
# Builds the Python counter plugin into a WASI 0.2 component with componentize-py.
#
# Usage: build.sh OUT_WASM
#
# Works in ${CARGO_TARGET_DIR:-<repo>/target}/wasm-guests/python/ and copies the
# component to OUT_WASM. Installs componentize-py into the shared toolchain
# virtualenv the first time (scripts/toolchains.sh). Exit status 3: the
# toolchain could not be installed (one line on stderr says why).
# A build whose inputs (sources, wit/, componentize-py version) are unchanged
# is not redone: the previous component is copied.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"

# shellcheck source=../../../scripts/toolchains.sh
source "$root/scripts/toolchains.sh"
example_build_setup python "$@"

world=supervised-worker
component="$build_dir/counter.wasm"
stamp="$build_dir/counter.stamp"

# Everything the component depends on, hashed.
inputs_hash() {
    {
        echo "componentize-py $COMPONENTIZE_PY_VERSION world $world"
        (cd "$here" && sha256sum app.py build.sh)
        wit_listing
    } | sha256sum | cut -d' ' -f1
}

hash="$(inputs_hash)"
if up_to_date "$stamp" "$hash" "$component"; then
    deliver "$component" "$out"
    exit 0
fi

toolchain_or_skip python "$build_dir/install.log" ensure_componentize_py

rm -f "$stamp"
rm -rf "$build_dir/bindings" "$build_dir/src"
mkdir -p "$build_dir/src" "$build_dir/no-site-packages/lib/python3/site-packages"
cp "$here/app.py" "$build_dir/src/"
componentize-py -d "$root/wit" -w "$world" bindings "$build_dir/bindings"
# VIRTUAL_ENV points at an empty environment: componentize-py would otherwise
# add the site-packages of whatever Python is on PATH to the component.
VIRTUAL_ENV="$build_dir/no-site-packages" componentize-py --quiet \
    -d "$root/wit" -w "$world" componentize \
    -p "$build_dir/src" -p "$build_dir/bindings" app -o "$component.tmp"
mv -f "$component.tmp" "$component"
echo "$hash" >"$stamp"
deliver "$component" "$out"
