//! Watch: keeps the running plugins in step with the plugin folder
//! (DESIGN.md, "Drop-in").
//!
//! [`Folder`] owns what was loaded from DIR: for each plugin the file's
//! signature and hash and the configuration it was given. [`Folder::load_all`]
//! is the startup load; [`Folder::watch`] then runs for the life of the host.
//! Each look at the folder ([`Folder::reconcile`]) compares it with what is
//! loaded:
//!
//! - a new `NAME.wasm` is loaded and started, a changed one is compiled and
//!   checked and, if valid, upgraded live (see [`crate::supervisor`]); if not,
//!   the running version stays and the refusal is logged once;
//! - a removed one is stopped gracefully and forgotten; its state stays;
//! - a changed `wasm-sup.toml` or `NAME.toml` is loaded and checked: a bad one
//!   is refused (logged once) and the previous configuration stays; a good one
//!   reaches each plugin whose settings changed, for its next start.
//!
//! A file is read only once it is stable: its modification time is at least
//! [`SETTLE`] old, or its size, time and inode stayed the same for [`SETTLE`].
//! A file that is still invalid then (a writer that paused) is refused once and
//! tried again when it changes, so a slow copy never starts a half-written
//! component. Renaming a finished file into DIR is still the best way in.
//!
//! Events come from `notify` (inotify here). They only say "look again soon":
//! the loop waits for [`DEBOUNCE`] of quiet (at most [`MAX_DELAY`]) and then
//! looks at the whole folder, so lost or merged events cost nothing; a look
//! every [`RESCAN`] catches what no event reported. That is why this module
//! debounces with a deadline of its own instead of a debouncer crate: the
//! rescan, not the event, carries the information.

mod load;
mod progress;

use crate::compile::{Loader, Origin};
use crate::config::{Config, HostConfig, HostOverrides, PluginConfig};
use crate::discovery::{self, Found, PluginDir, PluginSpec, Refused, Signature};
use crate::supervisor::SupervisorHandle;
use crate::supervisor::rollback;
use anyhow::{Context, Result};
use futures::StreamExt;
use load::{FileLoad, load_file};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How old a file's last change must be before it is read.
pub const SETTLE: Duration = Duration::from_millis(500);
/// Quiet time after an event before the folder is looked at.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// Longest wait after the first of a stream of events.
pub const MAX_DELAY: Duration = Duration::from_secs(2);
/// A look at the folder at least this often, events or not.
pub const RESCAN: Duration = Duration::from_secs(10);

/// The folder's events, from [`Folder::events`].
pub struct Events {
    _watcher: Option<notify::RecommendedWatcher>,
    rx: tokio::sync::mpsc::UnboundedReceiver<()>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

/// What was loaded from one plugin file.
struct Known {
    signature: Signature,
    /// SHA-256 of the file's bytes when it was last read (empty: unreadable).
    sha256: String,
    /// Whether a plugin runs from it (false: it was refused).
    loaded: bool,
    /// The configuration the plugin was last given.
    config: Option<PluginConfig>,
}

/// The plugin folder as loaded. See the module doc.
pub struct Folder {
    dir: Arc<PluginDir>,
    loader: Loader,
    supervisor: SupervisorHandle,
    overrides: HostOverrides,
    host: HostConfig,
    groups: BTreeMap<String, crate::config::GroupConfig>,
    known: BTreeMap<String, Known>,
    /// Changed files waiting to be stable: the signature seen, and since when.
    settling: BTreeMap<String, (Signature, Instant)>,
    /// Refusals and errors logged, by what they are about, so that each is
    /// logged once (and again only if it changes after being resolved).
    logged: BTreeMap<String, String>,
    /// Files refused now.
    refused: BTreeMap<PathBuf, String>,
}

impl std::fmt::Debug for Folder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Folder")
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl Folder {
    /// A folder with nothing loaded yet.
    pub fn new(
        dir: PluginDir,
        loader: Loader,
        supervisor: SupervisorHandle,
        config: &Config,
        overrides: HostOverrides,
    ) -> Folder {
        Folder {
            dir: Arc::new(dir),
            loader,
            supervisor,
            overrides,
            host: config.host.clone(),
            groups: config.groups.clone(),
            known: BTreeMap::new(),
            settling: BTreeMap::new(),
            logged: BTreeMap::new(),
            refused: BTreeMap::new(),
        }
    }

    /// The startup load: every plugin in DIR, compiled (or taken from the
    /// cache) on half the cores and started in name order; the supervisor
    /// tells senders and `/readyz` how far it got. An invalid `NAME.toml`
    /// is an error; an invalid component is refused and the others start.
    pub async fn load_all(&mut self, config: &Config) -> Result<Vec<Refused>> {
        let discovery::Discovered {
            mut specs,
            mut refused,
        } = discovery::discover(config, &self.dir)
            .with_context(|| format!("failed to read plugin directory {}", config.dir.display()))?;
        for name in config.configured_plugins() {
            if !specs.iter().any(|s| s.0.name == name) {
                tracing::warn!(
                    plugin = name,
                    "[plugins.{name}] is configured but there is no {name}.wasm"
                );
            }
        }
        // Start order: the supervision tree's (groups in declared order).
        let names: Vec<String> = specs.iter().map(|s| s.0.name.clone()).collect();
        self.supervisor.loading_found(names.iter().cloned());
        let rank: std::collections::HashMap<String, usize> = self
            .supervisor
            .start_order_of(&names)
            .into_iter()
            .enumerate()
            .map(|(i, n)| (n, i))
            .collect();
        specs.sort_by_key(|s| rank.get(&s.0.name).copied());
        // Half the cores compile (each compile is parallel itself), so a
        // start burst leaves room for the admin API and the plugins that run.
        let parallel = std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1));
        let total = specs.len();
        let mut progress = progress::Progress::new(total);
        let (mut shared, mut cached, mut compiled) = (0, 0, 0);
        let (dir, loader) = (self.dir.clone(), self.loader.clone());
        let cache_dir = self.host.cache_dir.clone();
        let mut loads = futures::stream::iter(specs)
            .map(|(spec, found)| {
                let (dir, loader, cache_dir) = (dir.clone(), loader.clone(), cache_dir.clone());
                async move {
                    let started = Instant::now();
                    let f = found.clone();
                    let r = blocking(move || load_file(&dir, &loader, &cache_dir, &f, None)).await;
                    (spec, (found, r), started.elapsed())
                }
            })
            .buffered(parallel);
        while let Some((spec, (found, result), took)) = loads.next().await {
            match result {
                Ok(FileLoad::Ready {
                    loaded,
                    file_sha256,
                    rolled_back,
                }) => {
                    if let Some(why) = self.pool_full() {
                        progress.step(|_| {});
                        refused.push(Refused {
                            path: spec.path.clone(),
                            reason: why,
                        });
                        self.supervisor.loaded_one(&spec.name);
                        continue;
                    }
                    self.note_load(&spec.name, &loaded);
                    match loaded.origin {
                        Origin::Memory => shared += 1,
                        Origin::Cache => cached += 1,
                        Origin::Compiled => compiled += 1,
                    }
                    progress.step(|at| {
                        tracing::info!(
                            plugin = %spec.name,
                            progress = at,
                            from = loaded.origin.as_str(),
                            ms = took.as_millis() as u64,
                            "loaded"
                        )
                    });
                    self.start(&spec, &found, loaded.compiled, file_sha256, rolled_back);
                }
                Ok(FileLoad::Unchanged) => unreachable!("nothing was loaded before"),
                Err(e) => {
                    progress.step(|_| {});
                    refused.push(Refused {
                        path: spec.path.clone(),
                        reason: format!("{e:#}"),
                    });
                    self.known
                        .insert(spec.name.clone(), unloaded(found.signature));
                }
            }
            self.supervisor.loaded_one(&spec.name);
        }
        self.supervisor.end_loading();
        let took = progress.elapsed();
        drop(progress);
        for r in &refused {
            let reason = r
                .reason
                .trim_start_matches(&format!("{}: ", r.path.display()));
            // Remembered as the very line the folder's later scans would log
            // about this file, so it is not logged a second time.
            let line = format!("refused {}: {reason}", r.path.display());
            tracing::error!("{line}");
            self.logged.insert(r.path.display().to_string(), line);
            self.refused.insert(r.path.clone(), r.reason.clone());
        }
        self.publish_refused();
        if total == 0 && refused.is_empty() {
            tracing::warn!(
                "no plugins in {}: drop NAME.wasm components there",
                config.dir.display()
            );
        } else {
            tracing::info!(
                "loaded {} plugins in {:.2}s: {cached} from the compile cache, {compiled} compiled, {shared} sharing the code of another with the same bytes, {} refused",
                shared + cached + compiled,
                took.as_secs_f64(),
                refused.len()
            );
        }
        Ok(refused)
    }

    /// Why one more plugin cannot start: every slot of the instance pool is
    /// taken (each plugin holds one instance).
    fn pool_full(&self) -> Option<String> {
        let pool = self.host.instance_pool;
        (pool > 0 && self.supervisor.plugin_count() >= pool as usize).then(|| {
            format!(
                "not started: the instance pool is full ({pool} plugins running; [host] instance-pool = {pool}): raise instance-pool in wasm-sup.toml and restart the host, or remove a plugin"
            )
        })
    }

    fn start(
        &mut self,
        spec: &PluginSpec,
        found: &Found,
        compiled: Arc<crate::compile::Compiled>,
        file_sha256: String,
        rolled_back: Option<rollback::Rollback>,
    ) {
        self.supervisor.start_plugin(spec, compiled, rolled_back);
        self.known.insert(
            spec.name.clone(),
            Known {
                signature: found.signature,
                sha256: file_sha256,
                loaded: true,
                config: Some(spec.config.clone()),
            },
        );
    }

    /// Counts a load in the compile cache metric; logs a rebuilt entry.
    fn note_load(&self, plugin: &str, loaded: &crate::compile::Loaded) {
        if let Some(why) = &loaded.rebuilt {
            tracing::warn!(plugin, "compile cache entry rebuilt: {why}");
        }
        if let Some(why) = &loaded.on_demand {
            tracing::warn!(
                plugin,
                "runs outside the instance pool, on the on-demand engine (slower restarts): {why}"
            );
        }
        let result = match (loaded.origin, &loaded.rebuilt) {
            (Origin::Memory, _) => "shared",
            (Origin::Cache, _) => "hit",
            (Origin::Compiled, Some(_)) => "rebuilt",
            (Origin::Compiled, None) => "miss",
        };
        self.supervisor
            .metrics()
            .compile_cache
            .get_or_create(&crate::admin::metrics::CacheLabels { result })
            .inc();
    }

    fn publish_refused(&self) {
        self.supervisor
            .metrics()
            .plugins_refused
            .set(self.refused.len() as i64);
    }

    /// Logs `line` at error level unless it is what was last logged about `key`.
    fn error_once(&mut self, key: String, line: String) {
        if self.logged.get(&key) != Some(&line) {
            tracing::error!("{line}");
            self.logged.insert(key, line);
        }
    }

    /// `key`'s trouble is over: the next one is logged again. Returns whether
    /// there was one.
    fn resolved(&mut self, key: &str) -> bool {
        self.logged.remove(key).is_some()
    }

    /// Starts receiving the folder's events. Called before the startup load,
    /// so that nothing written while it runs is missed; [`Folder::watch`]
    /// then acts on them.
    pub fn events(&self) -> Events {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let watcher = start_watcher(self.dir.path(), tx);
        if let Err(e) = &watcher {
            tracing::warn!(
                "cannot watch {} ({e:#}): looking at it every {RESCAN:?} instead",
                self.dir.path().display()
            );
        }
        Events {
            _watcher: watcher.ok(),
            rx,
        }
    }

    /// Watches the folder until the task is aborted.
    pub async fn watch(mut self, events: Events) {
        let Events {
            _watcher: watcher,
            rx: mut events,
        } = events;
        let mut rescan = tokio::time::interval(RESCAN);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        rescan.reset();
        // When to look next, and when the current burst of events began.
        let mut due: Option<Instant> = None;
        let mut burst: Option<Instant> = None;
        loop {
            let wake = due.unwrap_or_else(|| Instant::now() + RESCAN);
            tokio::select! {
                ev = events.recv() => {
                    if ev.is_none() { break }
                    let now = Instant::now();
                    let first = *burst.get_or_insert(now);
                    due = Some((now + DEBOUNCE).min(first + MAX_DELAY));
                    continue;
                }
                _ = tokio::time::sleep_until(wake.into()), if due.is_some() => {}
                _ = rescan.tick() => {}
            }
            due = None;
            burst = None;
            if let Some(wait) = self.reconcile().await {
                due = Some(Instant::now() + wait);
            }
        }
        drop(watcher);
    }

    /// Brings the running plugins in step with the folder. Returns when to
    /// look again if a file is still settling.
    pub async fn reconcile(&mut self) -> Option<Duration> {
        let config = match Config::load(self.dir.path(), &self.overrides) {
            Ok(c) => {
                if self.resolved("config") {
                    tracing::info!("configuration accepted");
                }
                if c.host == self.host && c.groups == self.groups {
                    self.resolved("host");
                } else if !self.logged.contains_key("host") {
                    let line = "[host] or [groups] settings changed: they take effect when the host restarts";
                    tracing::warn!("{line}");
                    self.logged.insert("host".into(), line.into());
                }
                Some(c)
            }
            Err(e) => {
                self.error_once(
                    "config".into(),
                    format!("configuration refused, the previous one stays in force: {e:#}"),
                );
                None
            }
        };
        let scan = match self.dir.scan() {
            Ok(s) => s,
            Err(e) => {
                let line = format!(
                    "cannot read the plugin folder {}: {e}",
                    self.dir.path().display()
                );
                self.error_once("folder".into(), line);
                return None;
            }
        };
        self.resolved("folder");
        // Refusals of the scan itself (names, symlinks, folders).
        let now_refused: BTreeSet<&PathBuf> = scan.refused.iter().map(|r| &r.path).collect();
        let found: BTreeSet<&PathBuf> = scan.found.iter().map(|f| &f.path).collect();
        let stale: Vec<PathBuf> = self
            .refused
            .keys()
            .filter(|p| !now_refused.contains(p) && !found.contains(p))
            .cloned()
            .collect();
        for path in stale {
            self.refused.remove(&path);
            self.resolved(&path.display().to_string());
        }
        for r in &scan.refused {
            let key = r.path.display().to_string();
            self.error_once(key, format!("refused {}: {}", r.path.display(), r.reason));
            self.refused.insert(r.path.clone(), r.reason.clone());
        }
        let present: BTreeSet<&str> = scan.found.iter().map(|f| f.name.as_str()).collect();
        let gone: Vec<String> = self
            .known
            .keys()
            .filter(|n| !present.contains(n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            self.remove(&name).await;
        }
        self.settling.retain(|n, _| present.contains(n.as_str()));
        let mut settling = false;
        for found in &scan.found {
            if let Some(config) = &config {
                self.reconfigure(found, config);
            }
            let changed = self
                .known
                .get(&found.name)
                .is_none_or(|k| k.signature != found.signature);
            if !changed {
                continue;
            }
            if !self.stable(found) {
                settling = true;
                continue;
            }
            self.settling.remove(&found.name);
            self.apply(found, config.as_ref()).await;
        }
        self.publish_refused();
        settling.then_some(SETTLE)
    }

    /// Whether a changed file has stopped changing (see the module doc).
    fn stable(&mut self, found: &Found) -> bool {
        let age = found
            .signature
            .modified
            .and_then(|m| SystemTime::now().duration_since(m).ok());
        if age.is_some_and(|a| a >= SETTLE) {
            return true;
        }
        match self.settling.get(&found.name) {
            Some((sig, since)) if *sig == found.signature => since.elapsed() >= SETTLE,
            _ => {
                self.settling
                    .insert(found.name.clone(), (found.signature, Instant::now()));
                false
            }
        }
    }

    /// A removed file: stop its plugin, keep its state.
    async fn remove(&mut self, name: &str) {
        let Some(known) = self.known.remove(name) else {
            return;
        };
        let path = self.dir.path().join(format!("{name}.wasm"));
        self.refused.remove(&path);
        self.resolved(&path.display().to_string());
        if !known.loaded {
            return;
        }
        let reason = format!("{name}.wasm was removed from the plugin folder");
        if self.supervisor.remove(name, &reason).await {
            tracing::info!(
                plugin = name,
                "{reason}: plugin stopped; its state is kept, put the file back to resume it"
            );
        }
    }

    /// Gives a running plugin its configuration if it changed.
    fn reconfigure(&mut self, found: &Found, config: &Config) {
        let Some(known) = self.known.get(&found.name) else {
            return;
        };
        if !known.loaded {
            return;
        }
        match config.plugin(&found.name) {
            Ok(pc) => {
                self.resolved(&format!("config:{}", found.name));
                let known = self.known.get(&found.name).expect("checked above");
                if known.config.as_ref() != Some(&pc)
                    && self.supervisor.reconfigure(&found.name, pc.clone()).is_ok()
                    && let Some(k) = self.known.get_mut(&found.name)
                {
                    k.config = Some(pc);
                }
            }
            Err(e) => self.error_once(
                format!("config:{}", found.name),
                format!(
                    "configuration of {} refused, the previous one stays in force: {e:#}",
                    found.name
                ),
            ),
        }
    }

    /// A new or changed, stable file: start or upgrade its plugin, or refuse it.
    async fn apply(&mut self, found: &Found, config: Option<&Config>) {
        let name = found.name.clone();
        let running = self.known.get(&name).is_some_and(|k| k.loaded);
        let current = self.known.get(&name).map(|k| k.sha256.clone());
        let plugin_config = if running {
            None
        } else {
            let key = found.path.display().to_string();
            let Some(config) = config else {
                let line = format!("{key} is not started while the configuration is invalid");
                self.error_once(key, line);
                return;
            };
            match config.plugin(&name) {
                Ok(pc) => Some(pc),
                Err(e) => {
                    let line = format!("{key} is not started: its configuration is invalid: {e:#}");
                    self.error_once(key, line);
                    return;
                }
            }
        };
        let (dir, loader, cache_dir) = (
            self.dir.clone(),
            self.loader.clone(),
            self.host.cache_dir.clone(),
        );
        let f = found.clone();
        let result =
            blocking(move || load_file(&dir, &loader, &cache_dir, &f, current.as_deref())).await;
        match result {
            Ok(FileLoad::Unchanged) => {
                if let Some(k) = self.known.get_mut(&name) {
                    k.signature = found.signature;
                }
            }
            Ok(FileLoad::Ready {
                loaded,
                file_sha256,
                rolled_back,
            }) => {
                if plugin_config.is_some()
                    && let Some(why) = self.pool_full()
                {
                    let key = found.path.display().to_string();
                    self.error_once(key, format!("refused {}: {why}", found.path.display()));
                    self.refused.insert(found.path.clone(), why);
                    self.publish_refused();
                    return;
                }
                self.note_load(&name, &loaded);
                self.refused.remove(&found.path);
                self.resolved(&found.path.display().to_string());
                self.publish_refused();
                if let Some(pc) = plugin_config {
                    let spec = PluginSpec {
                        name: name.clone(),
                        path: found.path.clone(),
                        config: pc,
                    };
                    tracing::info!(plugin = %name, from = loaded.origin.as_str(), "new plugin file: starting it");
                    self.start(&spec, found, loaded.compiled, file_sha256, rolled_back);
                    return;
                }
                if let Some(k) = self.known.get_mut(&name) {
                    k.signature = found.signature;
                    k.sha256 = file_sha256;
                }
                if rolled_back.is_some() {
                    // The file is back to the version that was rolled back;
                    // load_file logged it, and the good version keeps running.
                    return;
                }
                if let Err(e) = self.supervisor.upgrade(&name, loaded.compiled).await {
                    tracing::error!(plugin = %name, "upgrade failed: {e}");
                }
            }
            Err(e) => {
                let why = format!("{e:#}");
                let key = found.path.display().to_string();
                if running {
                    self.supervisor.metrics().upgrade(&name, "refused");
                    self.error_once(
                        key,
                        format!("not upgraded, the running version stays: {why}"),
                    );
                } else {
                    self.error_once(key, format!("refused {why}"));
                }
                self.refused.insert(found.path.clone(), why);
                self.publish_refused();
                let k = self
                    .known
                    .entry(name)
                    .or_insert_with(|| unloaded(found.signature));
                k.signature = found.signature;
            }
        }
    }
}

/// Runs a load on tokio's blocking pool; a panic in it is an error of that
/// file, not the end of the watcher.
async fn blocking(load: impl FnOnce() -> Result<FileLoad> + Send + 'static) -> Result<FileLoad> {
    tokio::task::spawn_blocking(load)
        .await
        .unwrap_or_else(|e| Err(anyhow::anyhow!("loading it failed: {e}")))
}

/// What is known of a file that was refused.
fn unloaded(signature: Signature) -> Known {
    Known {
        signature,
        sha256: String::new(),
        loaded: false,
        config: None,
    }
}

/// Starts a `notify` watcher on `dir` that sends a unit for each event that
/// may matter: a change to a `.wasm` or `.toml` file that is not hidden.
fn start_watcher(
    dir: &std::path::Path,
    tx: tokio::sync::mpsc::UnboundedSender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::event::{AccessKind, AccessMode, EventKind};
    use notify::{RecursiveMode, Watcher};
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let relevant = match ev {
            Ok(ev) => {
                let kind_matters = match ev.kind {
                    EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
                    EventKind::Access(_) => false,
                    _ => true,
                };
                kind_matters && ev.paths.iter().any(|p| relevant_path(p))
            }
            // An error (say, an event queue overflow): look again.
            Err(_) => true,
        };
        if relevant {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

fn relevant_path(p: &std::path::Path) -> bool {
    let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if name.starts_with('.') {
        return false;
    }
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".wasm") || lower.ends_with(".toml")
}

#[cfg(test)]
mod tests {
    #[test]
    fn relevant_paths() {
        use std::path::Path;
        for p in ["d/a.wasm", "d/wasm-sup.toml", "d/a.toml", "d/A.WASM"] {
            assert!(super::relevant_path(Path::new(p)), "{p}");
        }
        for p in [
            "d/.a.wasm.tmp",
            "d/.wasm-sup",
            "d/notes.txt",
            "d/a.wasm.part",
        ] {
            assert!(!super::relevant_path(Path::new(p)), "{p}");
        }
    }
}
