//! wasm-sup: a WebAssembly component host that keeps sandboxed plugins alive.
//!
//! The code reads in the order data flows through the host:
//!
//! ```text
//! plugin dir --discovery/watch--> specs (file + config)
//!    --compile (cache by hash)--> component + InstancePre
//!    --instance (Store: limits, WASI ctx, state txn)--> running child (tokio task, mailbox)
//!    --supervisor (policy, backoff, tree)--> restart / give up / escalate
//!    --state backend (redb | memory | PostgreSQL)
//!    --admin (HTTP API) and CLI
//!    --cluster (leases, ownership, forwarding) when nodes share PostgreSQL
//! ```
//!
//! `docs/design.md` is the contract these modules implement; README.md and
//! `docs/` are the user's guide.

#![warn(missing_docs)]

pub mod admin;
pub mod bindings;
pub mod cluster;
pub mod compile;
pub mod config;
pub mod crash;
pub mod discovery;
pub mod engine;
pub mod events;
#[doc(hidden)]
pub mod fuzzing;
pub mod guest_text;
pub mod host;
pub mod host_api;
pub mod idempotency;
pub mod instance;
pub mod mailbox;
pub mod metrics;
pub mod name;
pub mod private_files;
pub mod state;
pub mod supervisor;
pub mod systemd;
pub mod watch;
