module counter

go 1.25

require go.bytecodealliance.org/pkg v0.2.3

// The bindings' runtime support, which only the Go module proxy serves; a
// copy ships in the crates.io crate wit-bindgen-go (scripts/regenerate-bindings.sh
// refreshes it), so that the build needs no network.
replace go.bytecodealliance.org/pkg => ./third_party/go-pkg
