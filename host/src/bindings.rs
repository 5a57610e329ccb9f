//! The only `bindgen!` of the host: typed bindings for the imports of the
//! `worker` world (`wasi:keyvalue`, `wasi:config`, `wasi:logging`, `mailbox`).
//!
//! Exports (`handler`, and the optional `lifecycle` and `health`) are not bound
//! through the generated world type, which would refuse a guest that exports
//! only `handler`: [`crate::compile`] looks them up by interface name.
//! Generated types do not leave this module and [`crate::host_api`].
//!
//! Every import that reads plugin state is generated `async` (all of
//! `wasi:keyvalue`, and `mailbox.send-after`, which reads the plugin's usage),
//! so a state backend that waits never holds a runtime thread; to the guest
//! they still block. The rest are plain functions.

#![allow(missing_docs, reason = "generated code")]

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "wasm-sup:plugin/worker",
        imports: {
            "wasi:keyvalue": async | trappable,
            "wasm-sup:plugin/mailbox.send-after": async | trappable,
            default: trappable,
        },
        with: {
            "wasi:keyvalue/store.bucket": crate::host_api::keyvalue::Bucket,
        },
        trappable_error_type: {
            "wasi:keyvalue/store.error" => crate::host_api::keyvalue::KvError,
        },
    });
}

pub use generated::wasi::config::store as config;
pub use generated::wasi::keyvalue::{atomics, batch, store as keyvalue};
pub use generated::wasi::logging::logging;
pub use generated::wasm_sup::plugin::mailbox;

/// The answer of `health.check`.
#[derive(
    wasmtime::component::ComponentType, wasmtime::component::Lift, Debug, Clone, PartialEq, Eq,
)]
#[component(variant)]
pub enum Health {
    /// Healthy.
    #[component(name = "healthy")]
    Healthy,
    /// Working, with a problem worth reporting.
    #[component(name = "degraded")]
    Degraded(String),
    /// Not working.
    #[component(name = "unhealthy")]
    Unhealthy(String),
}

/// Export interface names, as a component names them.
pub mod exports {
    /// `handler` (required).
    pub const HANDLER: &str = "wasm-sup:plugin/handler@0.1.0";
    /// `lifecycle` (optional).
    pub const LIFECYCLE: &str = "wasm-sup:plugin/lifecycle@0.1.0";
    /// `health` (optional).
    pub const HEALTH: &str = "wasm-sup:plugin/health@0.1.0";
}
