//! The admin HTTP API (axum) and the client the CLI uses to talk to it.

pub mod client;
mod router;

pub use router::router;
