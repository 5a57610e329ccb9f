//! The `wasm-sup` command: `run` a plugin directory, talk to a running host,
//! or `check` a plugin file offline.
//!
//! Exit codes: 0 ok; 1 the operation failed (e.g. the plugin crashed or
//! rejected the message); 2 usage or connection error.
//!
//! `run` logs through a non-blocking writer: a reader of stderr that falls
//! behind costs dropped (and counted) log lines, never a stalled plugin.

mod cli;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser};
use cli::args::{Cli, Command, LogFormat, Target, read_token};
use cli::commands;
use std::fmt;
use std::process::ExitCode;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use wasm_sup::config::HostOverrides;
use wasm_sup::guest_text;
use wasm_sup::host::RunOptions;

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
    wasm_sup::metrics::count_dropped_log_lines(writer.error_counter());
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

/// A reader that went away (`wasm-sup crashes NAME | head`) ends the command
/// quietly, as it would a C program killed by SIGPIPE (exit 141), instead of
/// a panic with a backtrace: Rust ignores SIGPIPE, so `println!` panics.
fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if text.starts_with("failed printing to stdout") && text.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run { .. }) {
        quiet_broken_pipe();
    }
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
            cluster,
            node,
            advertise,
            log_format: _,
        } => {
            let opts = RunOptions {
                overrides: HostOverrides {
                    state,
                    admin,
                    cluster,
                    node,
                    advertise,
                },
                admin_token: read_token(token_file.as_deref())?,
            };
            wasm_sup::host::run(&dir, opts).await.map(|()| 0)
        }
        Command::Send {
            name,
            message,
            file,
            idempotency_key,
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
            commands::send(&remote.client()?, &name, body, idempotency_key.as_deref()).await
        }
        Command::Status { remote } => cli::status::status(&remote.client()?, remote.json).await,
        Command::Events { plugin, remote } => {
            cli::events::events(&remote.client()?, plugin.as_deref(), remote.json).await
        }
        Command::Restart(t) => operate("restart", t).await,
        Command::Stop(t) => operate("stop", t).await,
        Command::Start(t) => operate("start", t).await,
        Command::Move { name, node, remote } => {
            commands::move_plugin(&remote.client()?, &name, &node, remote.json).await
        }
        Command::Crashes {
            name,
            limit,
            remote,
        } => commands::crashes(&remote.client()?, &name, limit, remote.json).await,
        Command::DeadLetters {
            name,
            action,
            id,
            remote,
        } => {
            let action = action.as_deref().zip(id);
            commands::dead_letters(&remote.client()?, &name, action, remote.json).await
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
                commands::state_reset(&client, &name, yes, remote.json).await
            } else {
                commands::state(&client, &name, key.as_deref(), &bucket, remote.json).await
            }
        }
        Command::Check { file, dir, json } => commands::check(&file, dir.as_deref(), json),
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
    commands::operate(&t.remote.client()?, op, name, t.remote.json).await
}
