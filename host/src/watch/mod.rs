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
//!
//! This file owns [`Folder`]'s state, the notify plumbing and the loop; the
//! rest is split by part:
//!
//! - `boot`: the startup load, [`Folder::load_all`];
//! - `reconcile`: one look at the folder, [`Folder::reconcile`];
//! - `load`: a file's way to a running plugin, shared by both (read,
//!   compile, then `Folder::admit`: pool check, count, start);
//! - `notes`: what was logged, so that each trouble is logged once;
//! - `progress`: the startup progress lines and bar.
//!
//! Nothing here runs a plugin: starting, upgrading and stopping are
//! [`crate::supervisor`]'s, compiling is [`crate::compile`]'s.

mod boot;
mod load;
mod notes;
mod progress;
mod reconcile;

use crate::compile::Loader;
use crate::config::{Config, HostConfig, HostOverrides, PluginConfig};
use crate::discovery::{PluginDir, Signature};
use crate::supervisor::SupervisorHandle;
use notes::{Notes, Topic};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    notes: Notes,
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
            notes: Notes::default(),
            refused: BTreeMap::new(),
        }
    }

    /// `path` is refused now, for `reason`: logged once as
    /// `refused PATH: REASON` and counted by the next
    /// [`Folder::publish_refused`].
    fn refuse(&mut self, path: &Path, reason: String) {
        let shown = path.display().to_string();
        let line = format!(
            "refused {shown}: {}",
            reason.trim_start_matches(&format!("{shown}: "))
        );
        self.notes.error_once(Topic::File(path.to_path_buf()), line);
        self.refused.insert(path.to_path_buf(), reason);
    }

    /// `path` is no longer refused; a later refusal is logged again.
    fn clear_refusal(&mut self, path: &Path) {
        self.refused.remove(path);
        self.notes.resolved(&Topic::File(path.to_path_buf()));
    }

    /// Sets the `plugins_refused` gauge to the files refused now.
    fn publish_refused(&self) {
        self.supervisor
            .metrics()
            .plugins_refused
            .set(self.refused.len() as i64);
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
