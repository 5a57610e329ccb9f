//! The component loader of `wasm-sup check` on arbitrary bytes (see
//! `wasm_sup::fuzzing::component`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = wasm_sup::fuzzing::component(data);
});
