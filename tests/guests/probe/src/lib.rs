//! Probe: the integration tests' swiss-army guest. Each message is one
//! command that exercises one host feature or failure mode.
//!
//! Protocol: the message is UTF-8 text `COMMAND ARGS`. The first word is the
//! command and the rest (after one space) its argument string; a command that
//! takes two arguments splits that string at its first space, so the last
//! argument may contain spaces. Replies are UTF-8 text unless noted; errors
//! are `Err(reason)`. "Bucket" means bucket `default` unless named.
//!
//! | command                     | effect and reply                                        |
//! |-----------------------------|---------------------------------------------------------|
//! | `count`                     | get + set key `count` (decimal ASCII) → new count       |
//! | `incr KEY`                  | `atomics::increment` by 1 → new value                   |
//! | `incr-slow KEY MS`          | `incr KEY`, then hold the call MS ms → new value        |
//! | `tick`                      | (what the host's `tick` delivers) `incr ticks`          |
//! | `get KEY`                   | value bytes, or `Err("missing")`                        |
//! | `set KEY VALUE`             | `ok`; a store error comes back as `Err("{error:?}")`    |
//! | `set-then-trap KEY VALUE`   | set, then panic ("trap after write")                    |
//! | `set-then-err KEY VALUE`    | set, then `Err("failed after write")`                   |
//! | `delete KEY`                | `ok`                                                    |
//! | `exists KEY`                | `true` / `false`                                        |
//! | `list-keys`                 | every key (all cursor pages), sorted, joined with `,`   |
//! | `bucket NAME KEY VALUE`     | open bucket NAME (`Err("{error:?}")` if that fails), set → `ok` |
//! | `bucket-get NAME KEY`       | value bytes, or `Err("missing")`                        |
//! | `set-many k1=v1,k2=v2`      | `batch::set-many` → `ok`                                |
//! | `get-many k1,k2`            | `k1=v1,k2=<none>` (missing keys as `<none>`)             |
//! | `delete-many k1,k2`         | `batch::delete-many` → `ok`                             |
//! | `echo REST`                 | REST, byte for byte                                     |
//! | `err REASON`                | `Err(REASON)`                                           |
//! | `crash`                     | panic ("crash requested")                               |
//! | `unreachable`               | executes the wasm `unreachable` instruction             |
//! | `spin`                      | loops forever                                           |
//! | `burn N`                    | N iterations of trivial work → `burned`                 |
//! | `primes N`                  | sieve of Eratosthenes up to N → how many primes         |
//! | `sort N`                    | sorts N pseudo-random numbers (std's sort) → a checksum |
//! | `grow MIB`                  | allocates MIB MiB, touching every 64 KiB → `grew MIB`   |
//! | `recurse N`                 | recurses N levels, 1 KiB of stack each → `recursed`     |
//! | `sleep MS`                  | sleeps MS milliseconds → `slept`                        |
//! | `exit CODE`                 | `std::process::exit(CODE)`                              |
//! | `reply-bytes N`             | N bytes of `x`                                          |
//! | `print N`                   | N `a`s on stdout in lines of 100, one stderr line → `printed` |
//! | `read-file PATH`            | the file's text, or `Err(io error)`                     |
//! | `write-file PATH CONTENT`   | `ok`, or `Err(io error)`                                |
//! | `env NAME`                  | the variable's value, or `Err("not set")`              |
//! | `env-count` / `args-count`  | number of environment variables / arguments             |
//! | `connect ADDR`              | TCP connect → `connected`, or `Err(io error)`           |
//! | `rename FROM TO`            | `std::fs::rename` → `ok`, or `Err(io error)`            |
//! | `symlink TARGET LINK`       | creates LINK pointing at TARGET → `ok`, or `Err(io error)` |
//! | `list-dir PATH`             | the entries' names, sorted, joined with `,`, or `Err(io error)` |
//! | `listen ADDR`               | TCP bind + listen → `listening LOCAL_ADDR`, or `Err(io error)` |
//! | `udp-send ADDR MESSAGE`     | UDP bind to the unspecified address, port 0, then `send_to` ADDR → `sent N`, or `Err(io error)` |
//! | `print-text TEXT`           | TEXT and a line break on stdout → `printed`             |
//! | `send TO MESSAGE`           | `mailbox::send` → `sent`, or `Err("no-such-plugin" \| "mailbox-full" \| "too-large")` |
//! | `send-after MS MESSAGE`     | `mailbox::send-after` to itself → `scheduled`, or `Err` as for `send` |
//! | `send-then-trap TO MESSAGE` | send, then panic ("trap after send")                    |
//! | `loop`                      | `incr loops`, then `send`s `loop` to itself: a loop that never ends → the new count, or `Err` as for `send` |
//! | `self-info`                 | `NAME GENERATION RESTARTS`                              |
//! | `config KEY`                | wasi:config value, or `Err("missing")`                  |
//! | `config-all`                | every `k=v`, sorted, joined with `,`                    |
//! | `log LEVEL MESSAGE`         | wasi:logging at LEVEL (`trace` … `critical`), context `probe` → `logged` |
//! | `log-many N MESSAGE`        | `log info MESSAGE` N times → `logged N`                 |
//!
//! Anything else is `Err("unknown command \"…\"")`.
//!
//! Lifecycle and health are steered by wasi:config:
//! - `init`: config key `init` = `fail` → `Err("init failed on purpose")`,
//!   `trap` → panic, `sleep` → sleeps 10 s then `Ok`, `spin` → loops
//!   forever; otherwise increments key `inits` (atomics) and returns `Ok`.
//! - `shutdown`: config key `shutdown` = `trap` → panic, `spin` → loops
//!   forever; otherwise increments key `shutdowns` (atomics).
//! - `health.check`: config key `health`, or else key `health` of the
//!   default bucket (so `set health unhealthy` changes it at run time):
//!   `unhealthy` / `degraded` → that status with reason "told to", `trap` →
//!   panic, `hang` → sleeps 10 s; `unhealthy N` / `degraded N` → that status
//!   with a reason of N bytes ("told to", a line break, then `x`s); otherwise
//!   healthy.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "supervised-worker",
    generate_all,
});

use core::fmt::Debug;
use core::hint::black_box;
use core::str::FromStr;
use std::time::Duration;

use exports::wasm_sup::plugin::{handler, health, lifecycle};
use wasi::config::store as config;
use wasi::keyvalue::{atomics, batch, store};
use wasi::logging::logging::{Level, log};
use wasm_sup::plugin::mailbox;

/// What `handle` returns.
type Reply = Result<Vec<u8>, String>;

const DEFAULT_BUCKET: &str = "default";
const MIB: usize = 1 << 20;
const TOUCH_STRIDE: usize = 64 * 1024;
const PRINT_LINE: usize = 100;
const INIT_SLEEP: Duration = Duration::from_secs(10);

struct Probe;

impl handler::Guest for Probe {
    fn handle(message: Vec<u8>) -> Reply {
        let message =
            String::from_utf8(message).map_err(|e| format!("message is not UTF-8: {e}"))?;
        let (command, args) = message.split_once(' ').unwrap_or((&message, ""));
        run(command, args)
    }
}

fn run(command: &str, args: &str) -> Reply {
    match command {
        // Key-value store.
        "count" => count(),
        "incr" => text(atomics::increment(&default_bucket()?, args, 1).map_err(debug)?),
        "tick" => text(atomics::increment(&default_bucket()?, "ticks", 1).map_err(debug)?),
        // `incr-slow KEY MS`: increments, then holds the call (and its
        // uncommitted write) for MS milliseconds.
        "incr-slow" => {
            let (key, ms) = two(args)?;
            let n = atomics::increment(&default_bucket()?, key, 1).map_err(debug)?;
            std::thread::sleep(Duration::from_millis(number(ms)?));
            text(n)
        }
        "get" => get(&default_bucket()?, args),
        "set" => {
            let (key, value) = two(args)?;
            set(&default_bucket()?, key, value)?;
            text("ok")
        }
        "set-then-trap" => {
            let (key, value) = two(args)?;
            set(&default_bucket()?, key, value)?;
            panic!("trap after write");
        }
        "set-then-err" => {
            let (key, value) = two(args)?;
            set(&default_bucket()?, key, value)?;
            Err("failed after write".to_string())
        }
        "delete" => {
            default_bucket()?.delete(args).map_err(debug)?;
            text("ok")
        }
        "exists" => text(default_bucket()?.exists(args).map_err(debug)?),
        "list-keys" => list_keys(),
        "bucket" => {
            let (name, rest) = two(args)?;
            let (key, value) = two(rest)?;
            set(&store::open(name).map_err(debug)?, key, value)?;
            text("ok")
        }
        "bucket-get" => {
            let (name, key) = two(args)?;
            get(&store::open(name).map_err(debug)?, key)
        }
        "set-many" => {
            let pairs = items(args)
                .map(|pair| {
                    let (key, value) = pair
                        .split_once('=')
                        .ok_or_else(|| format!("expected KEY=VALUE, got {pair:?}"))?;
                    Ok((key.to_string(), value.as_bytes().to_vec()))
                })
                .collect::<Result<Vec<_>, String>>()?;
            batch::set_many(&default_bucket()?, &pairs).map_err(debug)?;
            text("ok")
        }
        "get-many" => get_many(args),
        "delete-many" => {
            let keys: Vec<String> = items(args).map(str::to_string).collect();
            batch::delete_many(&default_bucket()?, &keys).map_err(debug)?;
            text("ok")
        }

        // Replies and failures.
        "echo" => Ok(args.as_bytes().to_vec()),
        "err" => Err(args.to_string()),
        "crash" => panic!("crash requested"),
        "unreachable" => core::arch::wasm32::unreachable(),
        "exit" => std::process::exit(number(args)?),
        "reply-bytes" => Ok(vec![b'x'; number(args)?]),

        // Resource use.
        "spin" => spin(),
        "primes" => {
            // A sieve of Eratosthenes up to N: loops, loads and stores, the
            // shape of real CPU-bound work (unlike `burn`'s empty loop).
            let n = number::<usize>(args)?;
            let mut composite = vec![false; n + 1];
            let mut count = 0u64;
            for i in 2..=n {
                if !composite[i] {
                    count += 1;
                    let mut j = i.saturating_mul(i);
                    while j <= n {
                        composite[j] = true;
                        j += i;
                    }
                }
            }
            text(black_box(count))
        }
        "sort" => {
            // N xorshift numbers through std's unstable sort: branches,
            // calls, comparisons and swaps, as library code does.
            let n = number::<usize>(args)?;
            let mut x = 0x9e37_79b9_u32;
            let mut numbers: Vec<u32> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x
                })
                .collect();
            numbers.sort_unstable();
            let checksum = numbers
                .iter()
                .enumerate()
                .fold(0u64, |acc, (i, v)| acc.wrapping_add(i as u64 * u64::from(*v)));
            text(black_box(checksum))
        }
        "burn" => {
            for turn in 0..number::<u64>(args)? {
                black_box(turn);
            }
            text("burned")
        }
        "grow" => {
            let mib: usize = number(args)?;
            let len = mib
                .checked_mul(MIB)
                .ok_or_else(|| format!("{mib} MiB is too much"))?;
            let mut buffer = vec![0u8; len];
            for byte in buffer.iter_mut().step_by(TOUCH_STRIDE) {
                *byte = 1;
            }
            black_box(&buffer);
            text(format!("grew {mib}"))
        }
        "recurse" => {
            recurse(number(args)?);
            text("recursed")
        }
        "sleep" => {
            std::thread::sleep(Duration::from_millis(number(args)?));
            text("slept")
        }

        // WASI from Rust std.
        "print" => {
            let line = "a".repeat(PRINT_LINE);
            let mut left: usize = number(args)?;
            while left > 0 {
                let len = left.min(PRINT_LINE);
                println!("{}", &line[..len]);
                left -= len;
            }
            eprintln!("stderr line");
            text("printed")
        }
        "read-file" => std::fs::read_to_string(args)
            .map(String::into_bytes)
            .map_err(|e| e.to_string()),
        "write-file" => {
            let (path, content) = two(args)?;
            std::fs::write(path, content).map_err(|e| e.to_string())?;
            text("ok")
        }
        "env" => match std::env::var(args) {
            Ok(value) => text(value),
            Err(std::env::VarError::NotPresent) => Err("not set".to_string()),
            Err(std::env::VarError::NotUnicode(_)) => Err("not unicode".to_string()),
        },
        "env-count" => text(std::env::vars_os().count()),
        "args-count" => text(std::env::args_os().count()),
        "connect" => {
            std::net::TcpStream::connect(args).map_err(|e| e.to_string())?;
            text("connected")
        }

        // Sandbox escapes (hostile suite).
        "rename" => {
            let (from, to) = two(args)?;
            std::fs::rename(from, to).map_err(|e| e.to_string())?;
            text("ok")
        }
        "symlink" => {
            let (target, link) = two(args)?;
            // `std::os::wasi::fs::symlink_path` is unstable on wasip2; the
            // deprecated `soft_link` is the stable way to the same call.
            #[allow(deprecated, reason = "the only stable symlink call on wasi")]
            std::fs::soft_link(target, link).map_err(|e| e.to_string())?;
            text("ok")
        }
        "list-dir" => {
            let mut names = std::fs::read_dir(args)
                .map_err(|e| e.to_string())?
                .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            names.sort();
            text(names.join(","))
        }
        "listen" => {
            let listener = std::net::TcpListener::bind(args).map_err(|e| e.to_string())?;
            text(format!(
                "listening {}",
                listener.local_addr().map_err(|e| e.to_string())?
            ))
        }
        "udp-send" => {
            let (to, message) = two(args)?;
            let to: std::net::SocketAddr = to.parse().map_err(debug)?;
            let any = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            let socket = std::net::UdpSocket::bind(any).map_err(|e| e.to_string())?;
            let sent = socket
                .send_to(message.as_bytes(), to)
                .map_err(|e| e.to_string())?;
            text(format!("sent {sent}"))
        }
        "print-text" => {
            println!("{args}");
            text("printed")
        }

        // Mailbox.
        "send" => {
            let (to, message) = two(args)?;
            mailbox::send(to, message.as_bytes()).map_err(send_error)?;
            text("sent")
        }
        "send-after" => {
            let (delay_ms, message) = two(args)?;
            mailbox::send_after(number(delay_ms)?, message.as_bytes()).map_err(send_error)?;
            text("scheduled")
        }
        // Floods: `send-many TO N BYTES` / `send-after-many DELAY_MS N BYTES`
        // send N messages of BYTES bytes; the reply is how many were
        // accepted and the first refusal ("1024 mailbox-full"). A trailing
        // ` trap` traps after sending.
        "send-many" | "send-after-many" => {
            let words: Vec<&str> = args.split(' ').collect();
            let [target, n, bytes, rest @ ..] = words.as_slice() else {
                return Err(format!("usage: {command} TO|DELAY_MS N BYTES [trap]"));
            };
            let message = vec![b'm'; number(bytes)?];
            let mut accepted = 0u32;
            let mut refused = String::from("none");
            for _ in 0..number::<u32>(n)? {
                let sent = if command == "send-many" {
                    mailbox::send(target, &message)
                } else {
                    mailbox::send_after(number(target)?, &message)
                };
                match sent {
                    Ok(()) => accepted += 1,
                    Err(e) => {
                        refused = send_error(e);
                        break;
                    }
                }
            }
            if rest == ["trap"] {
                panic!("trap after {accepted} sends");
            }
            text(format!("{accepted} {refused}"))
        }
        "send-then-trap" => {
            let (to, message) = two(args)?;
            mailbox::send(to, message.as_bytes()).map_err(send_error)?;
            panic!("trap after send");
        }
        // Peers (hostile suite).
        "loop" => {
            let loops = atomics::increment(&default_bucket()?, "loops", 1).map_err(debug)?;
            mailbox::send(&mailbox::self_info().name, b"loop").map_err(send_error)?;
            text(loops)
        }
        "self-info" => {
            let info = mailbox::self_info();
            text(format!(
                "{} {} {}",
                info.name, info.generation, info.restarts
            ))
        }

        // Config and logging.
        "config" => config::get(args)
            .map_err(debug)?
            .map(String::into_bytes)
            .ok_or_else(|| "missing".to_string()),
        "config-all" => {
            let mut pairs = config::get_all().map_err(debug)?;
            pairs.sort();
            let pairs: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            text(pairs.join(","))
        }
        "log" => {
            let (level, message) = two(args)?;
            log(parse_level(level)?, "probe", message);
            text("logged")
        }

        "log-many" => {
            let (times, message) = two(args)?;
            let times: u32 = number(times)?;
            for _ in 0..times {
                log(Level::Info, "probe", message);
            }
            text(format!("logged {times}"))
        }

        _ => Err(format!("unknown command {command:?}")),
    }
}

/// Increments key `count` with a plain get + set (not atomics).
fn count() -> Reply {
    let bucket = default_bucket()?;
    let current: u64 = match bucket.get("count").map_err(debug)? {
        Some(bytes) => number(
            std::str::from_utf8(&bytes).map_err(|_| format!("count is not text: {bytes:?}"))?,
        )?,
        None => 0,
    };
    let next = (current + 1).to_string();
    bucket.set("count", next.as_bytes()).map_err(debug)?;
    text(next)
}

fn get(bucket: &store::Bucket, key: &str) -> Reply {
    bucket
        .get(key)
        .map_err(debug)?
        .ok_or_else(|| "missing".to_string())
}

/// Sets a key; a store error (say, a quota refusal) becomes the reply's error.
fn set(bucket: &store::Bucket, key: &str, value: &str) -> Result<(), String> {
    bucket.set(key, value.as_bytes()).map_err(debug)
}

fn list_keys() -> Reply {
    let bucket = default_bucket()?;
    let mut keys = Vec::new();
    let mut cursor = None;
    loop {
        let page = bucket.list_keys(cursor).map_err(debug)?;
        keys.extend(page.keys);
        cursor = page.cursor;
        if cursor.is_none() {
            break;
        }
    }
    keys.sort();
    text(keys.join(","))
}

fn get_many(args: &str) -> Reply {
    let keys: Vec<String> = items(args).map(str::to_string).collect();
    let entries = batch::get_many(&default_bucket()?, &keys).map_err(debug)?;
    if entries.len() != keys.len() {
        return Err(format!(
            "asked for {} keys, got {} entries",
            keys.len(),
            entries.len()
        ));
    }
    let shown: Vec<String> = keys
        .iter()
        .zip(entries)
        .map(|(key, entry)| match entry {
            Some((_, value)) => format!("{key}={}", String::from_utf8_lossy(&value)),
            None => format!("{key}=<none>"),
        })
        .collect();
    text(shown.join(","))
}

/// Burns CPU until the host interrupts it.
fn spin() -> ! {
    let mut turns = 0u64;
    loop {
        turns = black_box(turns.wrapping_add(1));
    }
}

/// Recurses `depth` levels. Each frame keeps a 1 KiB array alive across the
/// call, so it can be neither turned into a loop nor shrunk.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let frame = [depth.to_le_bytes()[0]; 1024];
    black_box(&frame);
    if depth == 0 {
        return 0;
    }
    let below = recurse(black_box(depth - 1));
    below.wrapping_add(u64::from(black_box(&frame)[0]))
}

fn default_bucket() -> Result<store::Bucket, String> {
    store::open(DEFAULT_BUCKET).map_err(debug)
}

/// Splits `FIRST REST` at the first space.
fn two(args: &str) -> Result<(&str, &str), String> {
    args.split_once(' ')
        .ok_or_else(|| format!("expected two arguments, got {args:?}"))
}

/// The non-empty items of a comma-separated list.
fn items(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').filter(|item| !item.is_empty())
}

fn number<T: FromStr>(text: &str) -> Result<T, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("expected a number, got {text:?}"))
}

fn text(value: impl ToString) -> Reply {
    Ok(value.to_string().into_bytes())
}

fn debug(error: impl Debug) -> String {
    format!("{error:?}")
}

fn send_error(error: mailbox::SendError) -> String {
    match error {
        mailbox::SendError::NoSuchPlugin => "no-such-plugin",
        mailbox::SendError::MailboxFull => "mailbox-full",
        mailbox::SendError::TooLarge => "too-large",
    }
    .to_string()
}

fn parse_level(level: &str) -> Result<Level, String> {
    Ok(match level {
        "trace" => Level::Trace,
        "debug" => Level::Debug,
        "info" => Level::Info,
        "warn" => Level::Warn,
        "error" => Level::Error,
        "critical" => Level::Critical,
        _ => return Err(format!("unknown log level {level:?}")),
    })
}

/// A wasi:config value; `None` if unset.
fn config_value(key: &str) -> Result<Option<String>, String> {
    config::get(key).map_err(debug)
}

impl lifecycle::Guest for Probe {
    fn init() -> Result<(), String> {
        match config_value("init")?.as_deref() {
            Some("fail") => Err("init failed on purpose".to_string()),
            Some("trap") => panic!("init trap"),
            Some("spin") => spin(),
            Some("sleep") => {
                std::thread::sleep(INIT_SLEEP);
                Ok(())
            }
            _ => {
                atomics::increment(&default_bucket()?, "inits", 1).map_err(debug)?;
                Ok(())
            }
        }
    }

    fn shutdown() {
        match config_value("shutdown").ok().flatten().as_deref() {
            Some("trap") => panic!("shutdown trap"),
            Some("spin") => spin(),
            _ => {}
        }
        let counted = default_bucket()
            .and_then(|bucket| atomics::increment(&bucket, "shutdowns", 1).map_err(debug));
        if let Err(error) = counted {
            log(
                Level::Error,
                "probe",
                &format!("counting shutdown: {error}"),
            );
        }
    }
}

impl health::Guest for Probe {
    fn check() -> health::Status {
        // Config key `health` wins; else key `health` of the default bucket,
        // so a test can change the answer while the instance runs.
        let told = match config_value("health") {
            Ok(Some(value)) => Some(value),
            Ok(None) => default_bucket()
                .and_then(|b| b.get("health").map_err(debug))
                .ok()
                .flatten()
                .map(|v| String::from_utf8_lossy(&v).into_owned()),
            Err(error) => return health::Status::Unhealthy(format!("reading config: {error}")),
        };
        match told.as_deref() {
            Some("unhealthy") => health::Status::Unhealthy("told to".to_string()),
            Some("degraded") => health::Status::Degraded("told to".to_string()),
            Some("trap") => panic!("health trap"),
            Some("hang") => {
                std::thread::sleep(std::time::Duration::from_secs(10));
                health::Status::Healthy
            }
            Some(told) => sized_health(told).unwrap_or(health::Status::Healthy),
            None => health::Status::Healthy,
        }
    }
}

/// `unhealthy N` / `degraded N`: that status with a reason of N bytes.
fn sized_health(told: &str) -> Option<health::Status> {
    let (status, size) = told.split_once(' ')?;
    let size: usize = size.parse().ok()?;
    let mut reason = String::from("told to\n");
    reason.extend(std::iter::repeat_n('x', size.saturating_sub(reason.len())));
    match status {
        "unhealthy" => Some(health::Status::Unhealthy(reason)),
        "degraded" => Some(health::Status::Degraded(reason)),
        _ => None,
    }
}

export!(Probe);
