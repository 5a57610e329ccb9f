//! The configuration loader on arbitrary text: `wasm-sup.toml`, and after a
//! NUL byte `p.toml` (see `wasm_sup::fuzzing::config`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = wasm_sup::fuzzing::config(data);
});
