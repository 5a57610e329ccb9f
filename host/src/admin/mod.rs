//! The admin HTTP API (axum) and the client the CLI uses to talk to it.

pub mod client;
pub mod metrics;
mod ops;
mod router;
mod serve;

pub use router::{require_token, router};
pub use serve::{BODY_TIMEOUT, HEADER_TIMEOUT, MAX_CONNECTIONS, WRITE_TIMEOUT, http1, serve};
