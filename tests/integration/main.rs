//! Integration tests: the real host (in-process, or the `wasm-sup` binary)
//! with real guest components built from source by `tests/build.rs`, and small
//! WAT components inline for fault cases.

mod admin;
mod bad_input;
mod conformance;
mod containment;
mod crashes;
mod dropin;
mod events;
mod fuzz_corpus;
mod groups;
mod guest_text;
mod hardening;
mod hostile;
mod idempotency;
mod limits;
mod postgres;
mod process;
mod sandbox;
mod state;
mod supervision;
mod systemd;
mod util;

use wasm_sup_tests::*;

/// Every guest built by `tests/build.rs` must be used by some test.
#[test]
fn every_guest_has_a_test() {
    let sources: String = [
        "admin.rs",
        "crashes.rs",
        "dropin.rs",
        "groups.rs",
        "limits.rs",
        "state.rs",
        "supervision.rs",
        "sandbox.rs",
        "bad_input.rs",
        "process.rs",
        "soak.rs",
    ]
    .iter()
    .map(|f| {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("integration")
                .join(f),
        )
        .expect("test source")
    })
    .collect();
    macro_rules! assert_used {
        ($guest:ident) => {
            assert!(
                sources.contains(concat!("(", stringify!($guest)))
                    || sources.contains(concat!(" ", stringify!($guest), ")"))
                    || sources.contains(concat!(" ", stringify!($guest), ",")),
                "guest {} is built but no test uses it",
                stringify!($guest)
            );
        };
    }
    foreach_guest!(assert_used);
}
