//! The Erlang/OTP comparator: `otp/wsbench.erl`, compiled with `erlc` into
//! a temporary folder and run with `erl`: the figures that take turns with
//! ours in one VM kept for the run, fed a figure per line; idle density in a
//! fresh VM. Each figure prints one JSON object. Its figures are defined as
//! ours are (see the module doc of the Erlang file): crash → ready of a
//! `gen_server` under a `one_for_one` supervisor with its state in ETS, a
//! 64-byte echo, counters whose writes go to mnesia through a batching
//! committer that replies after fsync, and the memory of an idle
//! `gen_server`.
//!
//! Erlang is Debian's `erlang-nox` (scripts/bench.sh and scripts/test.sh
//! install it). Where it is missing the OTP columns say so, except in CI
//! (`CI=true`), where that is an error.

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;

/// The comparator's source, beside this file.
const SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/otp/wsbench.erl");

/// A compiled comparator, and the VM that takes its turns.
pub struct Otp {
    // Declared first, so dropped first: the VM ends before its folder goes.
    session: Mutex<Option<Session>>,
    dir: tempfile::TempDir,
}

/// One `erl` serving figures read from its standard input (`wsbench:serve`).
struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
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
        Ok(Some(Otp {
            dir,
            session: Mutex::new(None),
        }))
    }

    /// Runs one figure (`density N`) in a fresh VM and returns what it
    /// printed.
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

    /// Runs one turn of a figure (`restart ROUNDS`, `echo TOTAL SENDERS`,
    /// `durable TOTAL PLUGINS SENDERS`) in the VM kept for the run, started
    /// at the first turn, and returns what it printed. Turns of one figure
    /// share what the first set up, as our turns share one host.
    pub fn turn(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut session = self.session.lock().expect("the OTP session");
        if session.is_none() {
            *session = Some(self.serve()?);
        }
        let s = session.as_mut().expect("started above");
        let command = args.join(" ");
        writeln!(s.stdin, "{command}").context("write to erl")?;
        s.stdin.flush()?;
        let mut line = String::new();
        loop {
            line.clear();
            if s.stdout.read_line(&mut line)? == 0 {
                let log =
                    std::fs::read_to_string(self.dir.path().join("erl.log")).unwrap_or_default();
                *session = None;
                bail!("the OTP comparator ended during `{command}`: {log}");
            }
            if line.starts_with('{') {
                return Ok(serde_json::from_str(&line)?);
            }
        }
    }

    fn serve(&self) -> Result<Session> {
        let mnesia = self.dir.path().join("mnesia");
        let mut child = Command::new("erl")
            .arg("-noshell")
            .arg("-pa")
            .arg(self.dir.path())
            .arg("-eval")
            .arg(format!("wsbench:serve({:?})", mnesia.display().to_string()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(self.dir.path().join("erl.log"))?)
            .spawn()
            .context("run erl")?;
        let stdin = child.stdin.take().context("erl's stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("erl's stdout")?);
        Ok(Session {
            child,
            stdin,
            stdout,
        })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Its mnesia files are in the comparator's folder, removed next.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `run` on an optional comparator: `None` when there is none.
pub fn figure(otp: Option<&Otp>, args: &[&str]) -> Result<Option<serde_json::Value>> {
    otp.map(|o| o.run(args)).transpose()
}

/// `turn` on an optional comparator: `None` when there is none.
pub fn turn(otp: Option<&Otp>, args: &[&str]) -> Result<Option<serde_json::Value>> {
    otp.map(|o| o.turn(args)).transpose()
}
