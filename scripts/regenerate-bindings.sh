#!/usr/bin/env bash
# Regenerates the committed WIT bindings of the example plugins whose
# languages need a code generator at build time (C and Go), from wit/, with
# the wit-bindgen CLI. Run it after changing anything under wit/; commit what
# it changes. The per-language build scripts use the committed bindings and
# never need the CLI, which takes about 11 minutes to install.
#
# Usage: scripts/regenerate-bindings.sh [c] [go]    (default: both)
#
# Writes:
#   guest-examples/c/counter/gen/          wit-bindgen c  (world supervised-worker)
#   guest-examples/c/counter/WIT-SHA256
#   guest-examples/go/counter/gen/         wit-bindgen go (--pkg-name counter/gen
#                                          --export-pkg-name counter), gofmt'ed
#   guest-examples/go/counter/WIT-SHA256
#   guest-examples/go/counter/third_party/go-pkg/
#                                          go.bytecodealliance.org/pkg, the
#                                          generated Go code's runtime support,
#                                          copied from the crates.io crate
#                                          wit-bindgen-go (scripts/wit-bindgen-go/)
#
# WIT-SHA256 is a text file of two lines, next to each gen/ directory:
#   line 1: the hash of wit/ the bindings were generated from, 64 lowercase
#           hex digits, and nothing else: the first field of the output of
#             cd <repo> && find wit -type f | LC_ALL=C sort | xargs sha256sum | sha256sum
#           That is: take every regular file under wit/ (symlinks and
#           directories not included), named by its path relative to the repo
#           root with `/` separators ("wit/plugin.wit",
#           "wit/deps/config/store.wit", ...); sort the paths bytewise; for
#           each, the line "<sha256 of the file's bytes, lowercase hex>  <path>\n"
#           (two spaces); the hash is the sha256 of all those lines
#           concatenated. (Paths must not contain spaces, backslashes or
#           newlines, which sha256sum would escape.)
#   line 2: the generator, as `wit-bindgen --version` prints it, e.g.
#           "wit-bindgen-cli 0.61.1".
# A test recomputes line 1 and fails when wit/ has changed since.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=toolchains.sh
source "$root/scripts/toolchains.sh"

languages=("$@")
if [[ ${#languages[@]} -eq 0 ]]; then
    languages=(c go)
fi
for language in "${languages[@]}"; do
    case "$language" in
        c | go) ;;
        *)
            echo "error: no generated bindings for language '$language' (known: c go)" >&2
            exit 2
            ;;
    esac
done

cd "$root"
wit_bindgen="$(ensure_wit_bindgen)"
generator="$("$wit_bindgen" --version)"
wit_hash="$(find wit -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# replace_dir NEW DEST: DEST becomes NEW.
replace_dir() {
    rm -rf "$2"
    mkdir -p "$(dirname "$2")"
    mv "$1" "$2"
}

write_hash() {
    printf '%s\n%s\n' "$wit_hash" "$generator" >"$1/WIT-SHA256"
    echo "wrote ${1#"$root"/}/WIT-SHA256 ($wit_hash)"
}

regenerate_c() {
    local dir="$root/guest-examples/c/counter"
    # The C bindings: supervised_worker.{c,h} and
    # supervised_worker_component_type.o (the world's type, which the linker
    # puts in a custom section for `wasm-tools component new`).
    "$wit_bindgen" c wit --world supervised-worker --out-dir "$scratch/c" >/dev/null
    replace_dir "$scratch/c" "$dir/gen"
    write_hash "$dir"
}

regenerate_go() {
    local dir="$root/guest-examples/go/counter" pkg_source pkg_version
    # wit-bindgen formats Go code with gofmt when it finds it on PATH; the Go
    # toolchain's gofmt keeps the output the same from run to run.
    ensure_go
    PATH="$(go env GOROOT)/bin:$PATH"
    # Generated in a scratch directory used as the working directory: some
    # options of `wit-bindgen go` write into the current directory.
    mkdir -p "$scratch/go"
    (cd "$scratch/go" && "$wit_bindgen" go "$root/wit" --world supervised-worker \
        --pkg-name counter/gen --export-pkg-name counter --out-dir gen >/dev/null)
    replace_dir "$scratch/go/gen" "$dir/gen"

    # go.bytecodealliance.org/pkg, at the version the generator wants.
    pkg_version="$(cd "$scratch/go" && "$wit_bindgen" go "$root/wit" --world supervised-worker \
        --pkg-name counter/gen --print-remote-pkg-version 2>/dev/null | sed -n 's/^go\.bytecodealliance\.org\/pkg //p')"
    if [[ -z "$pkg_version" ]]; then
        echo "error: wit-bindgen go did not print the version of go.bytecodealliance.org/pkg" >&2
        exit 1
    fi
    local manifest="$root/scripts/wit-bindgen-go/Cargo.toml"
    if ! grep -q "^wit-bindgen-go = \"=${generator##* }\"" "$manifest"; then
        echo "error: $manifest does not pin wit-bindgen-go =${generator##* } (the CLI's version)" >&2
        exit 1
    fi
    pkg_source="$(crate_source "$manifest" wit-bindgen-go)/src/pkg"
    mkdir -p "$scratch/go-pkg"
    cp -R "$pkg_source/go.mod" "$pkg_source/LICENSE" "$pkg_source/README.md" "$pkg_source/wit" "$scratch/go-pkg/"
    chmod -R u+w "$scratch/go-pkg"
    replace_dir "$scratch/go-pkg" "$dir/third_party/go-pkg"
    sed -i "s|^require go\.bytecodealliance\.org/pkg .*|require go.bytecodealliance.org/pkg $pkg_version|" "$dir/go.mod"
    write_hash "$dir"
}

for language in "${languages[@]}"; do
    "regenerate_$language"
    echo "regenerated guest-examples/$language/counter/gen"
done
