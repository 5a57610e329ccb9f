//! The command line, as clap reads it: every subcommand and its flags. Only
//! parsing lives here; [`super::commands`] carries the commands out.

use super::client::Client;
use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use wasm_sup::config::DEFAULT_ADMIN_ADDR;

#[derive(Parser, Debug)]
#[command(
    name = "wasm-sup",
    version,
    about = "Keeps sandboxed WebAssembly plugins alive"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach a running host.
#[derive(Args, Debug)]
pub struct Remote {
    /// Admin API address.
    #[arg(long, env = "WASM_SUP_ADMIN", default_value = DEFAULT_ADMIN_ADDR, global = true)]
    pub admin: String,
    /// File holding the admin API's bearer token (or set WASM_SUP_ADMIN_TOKEN).
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// Print the answer as JSON (the admin API's types) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

impl Remote {
    pub fn client(&self) -> Result<Client> {
        let token = read_token(self.token_file.as_deref())?;
        Client::new(&self.admin, token)
    }
}

/// The admin token: from a file, else from WASM_SUP_ADMIN_TOKEN.
pub fn read_token(file: Option<&std::path::Path>) -> Result<Option<String>> {
    if let Some(f) = file {
        let t = std::fs::read_to_string(f)
            .with_context(|| format!("failed to read the token file {}", f.display()))?;
        let t = t.trim().to_string();
        anyhow::ensure!(!t.is_empty(), "the token file {} is empty", f.display());
        return Ok(Some(t));
    }
    Ok(std::env::var("WASM_SUP_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty()))
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run every plugin in DIR and serve the admin API.
    Run {
        /// The plugin directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Admin API address (loopback by default; any other address needs a token).
        #[arg(long, env = "WASM_SUP_ADMIN")]
        admin: Option<SocketAddr>,
        /// File holding the bearer token the admin API requires (or set WASM_SUP_ADMIN_TOKEN).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// State location: a redb file path, or `memory` (not durable).
        /// Default: DIR/.wasm-sup/state.redb.
        #[arg(long)]
        state: Option<String>,
        /// Join a cluster whose state and ownership live in this PostgreSQL
        /// database (postgres://USER@HOST:PORT/DB); see docs/operations.md.
        #[arg(long, value_name = "URL")]
        cluster: Option<String>,
        /// This node's name in the cluster (default: the machine's hostname).
        #[arg(long, value_name = "NAME", requires = "cluster")]
        node: Option<String>,
        /// The address other nodes forward requests to (default: --admin).
        #[arg(long, value_name = "ADDR", requires = "cluster")]
        advertise: Option<String>,
        /// Log format.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Send a message to a plugin and print its reply.
    Send {
        /// The plugin.
        name: String,
        /// The message (UTF-8); use --file for bytes.
        #[arg(required_unless_present = "file")]
        message: Option<String>,
        /// Read the message from a file (`-` for stdin).
        #[arg(long, conflicts_with = "message")]
        file: Option<PathBuf>,
        /// Send with this `Idempotency-Key`: a retry with the same key gets
        /// the first answer instead of a second delivery.
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show every plugin's status.
    Status {
        #[command(flatten)]
        remote: Remote,
    },
    /// Restart a plugin (or --all), with a fresh restart history.
    Restart(Target),
    /// Stop a plugin (or --all) gracefully; it stays stopped.
    Stop(Target),
    /// Start a failed or stopped plugin (or --all).
    Start(Target),
    /// Follow what happens to the plugins (started, crashed, restarting, …) as it happens.
    Events {
        /// Only this plugin's events.
        #[arg(long)]
        plugin: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Cluster mode: move a plugin to another node (a graceful handoff).
    Move {
        /// The plugin (its whole top-level group moves with it).
        name: String,
        /// The node to move it to.
        node: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show a plugin's crash reports, newest first.
    Crashes {
        /// The plugin.
        name: String,
        /// How many.
        #[arg(long, default_value_t = 10)]
        limit: usize,
        #[command(flatten)]
        remote: Remote,
    },
    /// List a plugin's dead letters, or replay or drop one.
    DeadLetters {
        /// The plugin.
        name: String,
        /// `replay` or `drop`.
        #[arg(value_parser = ["replay", "drop"], requires = "id")]
        action: Option<String>,
        /// The dead letter's id.
        id: Option<u64>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List a plugin's state, print one value, or reset it.
    State {
        /// The plugin.
        name: String,
        /// A key to print (its value's bytes).
        key: Option<String>,
        /// The bucket of KEY.
        #[arg(long, default_value = "default")]
        bucket: String,
        /// Delete all of the plugin's state and start it fresh (asks first).
        #[arg(long, conflicts_with = "key")]
        reset: bool,
        /// Do not ask before --reset.
        #[arg(long, requires = "reset")]
        yes: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Check a plugin file offline: is it valid, which world, what it imports and exports.
    Check {
        /// The .wasm file.
        file: PathBuf,
        /// Use the compile cache of this plugin folder (its `.wasm-sup/cache`,
        /// or where its wasm-sup.toml puts state) instead of your own
        /// (`$XDG_CACHE_HOME/wasm-sup`, else `~/.cache/wasm-sup`).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// A plugin, or every plugin.
#[derive(Args, Debug)]
pub struct Target {
    /// The plugin.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub name: Option<String>,
    /// Every plugin.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub remote: Remote,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum LogFormat {
    Text,
    Json,
}
