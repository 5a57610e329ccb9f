//! How `wasm-sup check` loads a file: through a compile cache, so checking
//! the same file again (or starting a host on it later, with `--dir`) does
//! not compile it again, with a spinner on a terminal while a compile runs.
//!
//! The cache is the user's own (`$XDG_CACHE_HOME/wasm-sup`, else
//! `~/.cache/wasm-sup`), or with `--dir DIR` the cache of that plugin folder
//! (where its `wasm-sup.toml` puts state). Entries are per engine settings,
//! so a folder's cache is shared safely with the host's own entries. When no
//! cache can be opened, the file is compiled without one.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasm_sup::compile::{Compiled, Loader, Origin};
use wasm_sup::config::{Config, HostOverrides};

/// The budget of the user's own cache.
const USER_CACHE_BYTES: u64 = 1 << 30;

/// The cache folder and budget for `check`, if there is one; an error
/// when `dir`'s configuration cannot be read.
pub fn cache_for(dir: Option<&Path>) -> Result<Option<(PathBuf, u64)>> {
    if let Some(dir) = dir {
        let config = Config::load(dir, &HostOverrides::default())
            .with_context(|| format!("--dir {}", dir.display()))?;
        return Ok(config
            .host
            .compile_cache
            .map(|budget| (config.host.cache_dir.clone(), budget)));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    Ok(base.map(|b| (b.join("wasm-sup"), USER_CACHE_BYTES)))
}

/// Loads `path` for `check` through `cache` ([`cache_for`]): the component
/// and a line saying how (compiled in how long, or from which cache).
pub fn check_load(path: &Path, cache: Option<(PathBuf, u64)>) -> Result<(Arc<Compiled>, String)> {
    let bytes =
        std::fs::read(path).with_context(|| format!("{}: cannot read the file", path.display()))?;
    let engine = wasm_sup::engine::engine(false, 0)?;
    let (loader, cache) = match Loader::new(
        &engine,
        None,
        cache.as_ref().map(|(p, b)| (p.as_path(), *b)),
    ) {
        Ok(l) => (l, cache),
        // An unwritable home: compile without a cache rather than fail.
        Err(_) => (Loader::new(&engine, None, None)?, None),
    };
    let spinner = (std::io::stderr().is_terminal()).then(|| {
        let s = ProgressBar::new_spinner().with_message(format!(
            "compiling {} ({:.1} MB)",
            path.display(),
            bytes.len() as f64 / 1e6
        ));
        s.set_style(
            ProgressStyle::with_template("{spinner} {msg}, {elapsed}")
                .expect("the template is valid"),
        );
        s
    });
    // Drawn only if the load takes a moment (a cache hit is instant).
    let started = Instant::now();
    let load = std::thread::scope(|scope| {
        let job = scope.spawn(|| loader.load(&bytes));
        while !job.is_finished() {
            if let Some(s) = &spinner
                && started.elapsed() >= Duration::from_millis(300)
            {
                s.tick();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        job.join()
    });
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    let loaded = match load {
        Ok(r) => r.map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))?,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let took = started.elapsed().as_secs_f64();
    let where_ = cache.map_or("no compile cache".to_string(), |(p, _)| {
        format!("compile cache {}", p.display())
    });
    let how = match loaded.origin {
        Origin::Cache | Origin::Memory => format!("(loaded from the {where_} in {took:.2}s)"),
        Origin::Compiled => format!("(compiled in {took:.2}s; {where_})"),
    };
    Ok((loaded.compiled, how))
}
