//! Minimal: a `worker` that exports only `handler`, to prove the host loads
//! plugins without `lifecycle` or `health`.
//!
//! Protocol: the reply is the message, byte for byte.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "worker",
    generate_all,
});

use exports::wasm_sup::plugin::handler;

struct Minimal;

impl handler::Guest for Minimal {
    fn handle(message: Vec<u8>) -> Result<Vec<u8>, String> {
        Ok(message)
    }
}

export!(Minimal);
