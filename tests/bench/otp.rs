//! The Erlang/OTP comparator: `otp/wsbench.erl`, compiled with `erlc` into
//! a temporary folder and run with `erl`, one figure per run, printing one
//! JSON object. Its figures are defined as ours are (see the module doc of
//! the Erlang file): crash → ready of a `gen_server` under a `one_for_one`
//! supervisor with its state in ETS, a 64-byte echo, counters whose writes
//! go to mnesia through a batching committer that replies after fsync, and
//! the memory of an idle `gen_server`.
//!
//! Erlang is Debian's `erlang-nox` (scripts/bench.sh and scripts/test.sh
//! install it). Where it is missing the OTP columns say so, except in CI
//! (`CI=true`), where that is an error.

use anyhow::{Context, Result, bail};
use std::process::Command;

/// The comparator's source, beside this file.
const SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/otp/wsbench.erl");

/// A compiled comparator.
pub struct Otp {
    dir: tempfile::TempDir,
}

impl Otp {
    /// Compiles the comparator; `None` (with the reason on stderr) when
    /// Erlang is not installed outside CI.
    pub fn new() -> Result<Option<Otp>> {
        if Command::new("erl").arg("-version").output().is_err() {
            let why =
                "Erlang/OTP is not installed (apt-get install erlang-nox; scripts/bench.sh does)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                bail!("{why}");
            }
            eprintln!("   no OTP comparator: {why}");
            return Ok(None);
        }
        let dir = tempfile::tempdir()?;
        let out = Command::new("erlc")
            .arg("-o")
            .arg(dir.path())
            .arg(SOURCE)
            .output()
            .context("run erlc")?;
        if !out.status.success() {
            bail!(
                "erlc {SOURCE} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(Some(Otp { dir }))
    }

    /// Runs one figure (`restart ROUNDS`, `echo TOTAL SENDERS`, `durable
    /// TOTAL PLUGINS SENDERS`, `density N`) and returns what it printed.
    pub fn run(&self, args: &[&str]) -> Result<serde_json::Value> {
        let list: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
        let out = Command::new("erl")
            .arg("-noshell")
            .arg("-pa")
            .arg(self.dir.path())
            .arg("-eval")
            .arg(format!("wsbench:main([{}])", list.join(",")))
            .output()
            .context("run erl")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().rev().find(|l| l.starts_with('{'));
        match (out.status.success(), line) {
            (true, Some(line)) => Ok(serde_json::from_str(line)?),
            _ => bail!(
                "the OTP comparator `{}` failed: {text}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
}

/// `run` on an optional comparator: `None` when there is none.
pub fn figure(otp: Option<&Otp>, args: &[&str]) -> Result<Option<serde_json::Value>> {
    otp.map(|o| o.run(args)).transpose()
}
