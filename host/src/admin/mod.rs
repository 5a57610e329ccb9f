//! The admin HTTP API (axum) and the client the CLI uses to talk to it.

pub mod client;
pub mod metrics;
mod ops;
mod router;

pub use router::{require_token, router};
