//! The admin API on arbitrary bytes as one HTTP/1.1 connection to a running
//! host (see `wasm_sup::fuzzing::admin`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = wasm_sup::fuzzing::admin(data);
});
