//! The `wasm-sup` command line, part of the binary only: [`args`] (what clap
//! parses), [`commands`] (each subcommand, printing human text or, with
//! `--json`, the typed answer), [`status`] (`wasm-sup status`), [`events`]
//! (the event tail) and [`client`] (HTTP to the admin API, whose answers are
//! read as [`wasm_sup::admin::api`] types).
//!
//! The CLI talks to a running host only through the admin API (and `check`
//! reads a file offline); it never reaches into the host's modules.

pub mod args;
pub mod client;
pub mod commands;
pub mod events;
pub mod load;
pub mod status;
