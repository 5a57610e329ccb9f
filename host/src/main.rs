//! The `wasm-sup` command: `run` a plugin directory, talk to a running host,
//! or `check` a plugin file offline.
//!
//! Exit codes: 0 ok; 1 the operation failed (e.g. the plugin crashed or
//! rejected the message); 2 usage or connection error.
//!
//! `run` logs through a non-blocking writer: a reader of stderr that falls
//! behind costs dropped (and counted) log lines, never a stalled plugin.

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use wasm_sup::admin::client::Client;
use wasm_sup::cli;
use wasm_sup::config::{DEFAULT_ADMIN_ADDR, HostOverrides};
use wasm_sup::guest_text;
use wasm_sup::host::RunOptions;

#[derive(Parser, Debug)]
#[command(
    name = "wasm-sup",
    version,
    about = "Keeps sandboxed WebAssembly plugins alive"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How to reach a running host.
#[derive(Args, Debug)]
struct Remote {
    /// Admin API address.
    #[arg(long, env = "WASM_SUP_ADMIN", default_value = DEFAULT_ADMIN_ADDR, global = true)]
    admin: String,
    /// File holding the admin API's bearer token (or set WASM_SUP_ADMIN_TOKEN).
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    /// Print the API's JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

impl Remote {
    fn client(&self) -> Result<Client> {
        let token = read_token(self.token_file.as_deref())?;
        Client::new(&self.admin, token)
    }
}

/// The admin token: from a file, else from WASM_SUP_ADMIN_TOKEN.
fn read_token(file: Option<&std::path::Path>) -> Result<Option<String>> {
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
enum Command {
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
struct Target {
    /// The plugin.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    name: Option<String>,
    /// Every plugin.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    remote: Remote,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

/// Log lines held for a reader of stderr that falls behind; past them lines
/// are dropped and counted in `wasm_sup_log_lines_dropped_total`. A guest's
/// line is at most 4 KiB before escaping and 24 KiB after (an escaped control
/// character takes up to six bytes), so the queue holds at most about
/// 200 MiB, and much less in practice: guest output is also bounded by each
/// plugin's `output` budget.
const LOG_BUFFER_LINES: usize = 8 * 1024;

/// Sets up logging for `run`. The writer never blocks: lines go through a
/// bounded queue to a thread of their own that writes stderr, and are dropped
/// (and counted) when the queue is full. The guard flushes the queue when
/// dropped, so it must live until the end of `main`.
fn init_tracing(format: LogFormat) -> WorkerGuard {
    use tracing_subscriber::EnvFilter;
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_BUFFER_LINES)
        .thread_name("wasm-sup-log")
        .finish(std::io::stderr());
    wasm_sup::admin::metrics::count_dropped_log_lines(writer.error_counter());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.fmt_fields(EscapedFields::default()).init(),
        // JSON strings escape control characters by themselves.
        LogFormat::Json => builder.json().init(),
    }
    guard
}

/// The text format's fields, passed through [`guest_text::escape`]: guest
/// text in any event (a guest's log line, or its reason quoted in a host
/// message) cannot break the event's line.
#[derive(Default)]
struct EscapedFields(DefaultFields);

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut text = String::new();
        self.0.format_fields(Writer::new(&mut text), fields)?;
        writer.write_str(&guest_text::escape(&text))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = match &cli.command {
        Command::Run { log_format, .. } => Some(init_tracing(*log_format)),
        _ => None,
    };
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the tokio runtime")
        .and_then(|rt| rt.block_on(run(cli)));
    // Flush the queued log lines before the last word goes to stderr.
    drop(logs);
    match result {
        Ok(code) => ExitCode::from(code),
        // The host started and later gave up: exit 1, not 2.
        Err(e) if e.is::<wasm_sup::host::GaveUp>() => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Run {
            dir,
            admin,
            token_file,
            state,
            log_format: _,
        } => {
            let opts = RunOptions {
                overrides: HostOverrides { state, admin },
                admin_token: read_token(token_file.as_deref())?,
            };
            wasm_sup::host::run(&dir, opts).await.map(|()| 0)
        }
        Command::Send {
            name,
            message,
            file,
            remote,
        } => {
            let body = match (message, file) {
                (Some(m), _) => m.into_bytes(),
                (None, Some(p)) if p.as_os_str() == "-" => {
                    let mut buf = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                        .context("failed to read stdin")?;
                    buf
                }
                (None, Some(p)) => {
                    std::fs::read(&p).with_context(|| format!("failed to read {}", p.display()))?
                }
                (None, None) => unreachable!("clap requires a message or --file"),
            };
            cli::send(&remote.client()?, &name, body).await
        }
        Command::Status { remote } => cli::status(&remote.client()?, remote.json).await,
        Command::Restart(t) => operate("restart", t).await,
        Command::Stop(t) => operate("stop", t).await,
        Command::Start(t) => operate("start", t).await,
        Command::Crashes {
            name,
            limit,
            remote,
        } => cli::crashes(&remote.client()?, &name, limit, remote.json).await,
        Command::DeadLetters {
            name,
            action,
            id,
            remote,
        } => {
            let action = action.as_deref().zip(id);
            cli::dead_letters(&remote.client()?, &name, action, remote.json).await
        }
        Command::State {
            name,
            key,
            bucket,
            reset,
            yes,
            remote,
        } => {
            let client = remote.client()?;
            if reset {
                cli::state_reset(&client, &name, yes, remote.json).await
            } else {
                cli::state(&client, &name, key.as_deref(), &bucket, remote.json).await
            }
        }
        Command::Check { file, json } => cli::check(&file, json),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "wasm-sup",
                &mut std::io::stdout(),
            );
            Ok(0)
        }
    }
}

async fn operate(op: &str, t: Target) -> Result<u8> {
    let name = if t.all { None } else { t.name.as_deref() };
    cli::operate(&t.remote.client()?, op, name, t.remote.json).await
}
