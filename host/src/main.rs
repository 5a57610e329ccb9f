//! The `wasm-sup` command: `run` a plugin directory, or talk to a running host.
//!
//! Exit codes: 0 ok; 1 the operation failed (e.g. the plugin crashed or
//! rejected the message); 2 usage or connection error.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use wasm_sup::admin::client::Client;
use wasm_sup::config::{DEFAULT_ADMIN_ADDR, HostOverrides};
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

#[derive(Subcommand, Debug)]
enum Command {
    /// Run every plugin in DIR and serve the admin API.
    Run {
        /// The plugin directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Admin API address (loopback by default).
        #[arg(long, env = "WASM_SUP_ADMIN")]
        admin: Option<SocketAddr>,
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
        /// Admin API address.
        #[arg(long, env = "WASM_SUP_ADMIN", default_value = DEFAULT_ADMIN_ADDR)]
        admin: String,
    },
    /// Show every plugin's status.
    Status {
        /// Admin API address.
        #[arg(long, env = "WASM_SUP_ADMIN", default_value = DEFAULT_ADMIN_ADDR)]
        admin: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: failed to start the tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run {
            dir,
            admin,
            state,
            log_format,
        } => {
            init_tracing(log_format);
            let opts = RunOptions {
                overrides: HostOverrides { state, admin },
            };
            wasm_sup::host::run(&dir, opts).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Send {
            name,
            message,
            file,
            admin,
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
            let client = Client::new(&admin)?;
            let resp = client
                .post(&format!("/v1/plugins/{name}/messages"), body)
                .await?;
            if resp.status == 200 {
                let mut out = std::io::stdout();
                out.write_all(&resp.body)?;
                if !resp.body.ends_with(b"\n") && std::io::IsTerminal::is_terminal(&out) {
                    out.write_all(b"\n")?;
                }
                return Ok(ExitCode::SUCCESS);
            }
            let text = String::from_utf8_lossy(&resp.body);
            let what = match resp.status {
                422 => "the plugin rejected the message",
                500 => "the plugin crashed on every delivery; the message was dead-lettered",
                503 => "the plugin is not taking messages",
                429 => "the plugin's mailbox is full",
                404 => "no such plugin",
                400 => "bad plugin name",
                413 => "the message is too large",
                504 => "no reply within reply-timeout; the message stays queued",
                _ => "unexpected answer",
            };
            eprintln!("error: {what} (HTTP {}): {}", resp.status, text.trim());
            Ok(ExitCode::from(1))
        }
        Command::Status { admin, json } => {
            let client = Client::new(&admin)?;
            let resp = client.get("/v1/plugins").await?;
            if json {
                std::io::stdout().write_all(&resp.body)?;
                println!();
                return Ok(ExitCode::SUCCESS);
            }
            let v: serde_json::Value =
                serde_json::from_slice(&resp.body).context("the admin API sent bad JSON")?;
            println!(
                "{:<24} {:<9} {:>10} {:>8}  {:<16} {:>10}",
                "PLUGIN", "STATUS", "GENERATION", "RESTARTS", "LAST CRASH", "UPTIME"
            );
            for p in v["plugins"].as_array().into_iter().flatten() {
                let uptime = p["uptime_secs"]
                    .as_f64()
                    .map(|s| format!("{s:.0}s"))
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:<24} {:<9} {:>10} {:>8}  {:<16} {:>10}",
                    p["name"].as_str().unwrap_or("?"),
                    p["status"].as_str().unwrap_or("?"),
                    p["generation"],
                    p["restarts"],
                    p["last_crash"].as_str().unwrap_or("-"),
                    uptime
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
