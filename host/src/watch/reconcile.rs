//! The reconcile loop's one step ([`Folder::reconcile`]): one look at the
//! folder and its configuration, compared with what is loaded (see the
//! module doc of [`super`]). A removed file's plugin is stopped
//! ([`Folder::remove`]), a changed configuration reaches the running plugins
//! ([`Folder::reconfigure`]), and a new or changed file, once stable
//! ([`Folder::stable`]), is started, upgraded or refused ([`Folder::apply`]).
//!
//! Owns the decisions of a rescan; loading a file and starting a new plugin
//! go through [`super::load`] as at startup, and each trouble is logged once
//! through [`super::notes`].

use super::load::{FileLoad, Ready, blocking, load_file};
use super::notes::Topic;
use super::{Folder, SETTLE};
use crate::config::Config;
use crate::discovery::{Found, PluginSpec};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

impl Folder {
    /// Brings the running plugins in step with the folder. Returns when to
    /// look again if a file is still settling.
    pub async fn reconcile(&mut self) -> Option<Duration> {
        let config = match Config::load(self.dir.path(), &self.overrides) {
            Ok(c) => {
                if self.notes.resolved(&Topic::Config) {
                    tracing::info!("configuration accepted");
                }
                if c.host == self.host && c.groups == self.groups {
                    self.notes.resolved(&Topic::Host);
                } else {
                    self.notes.warn_once(
                        Topic::Host,
                        "[host] or [groups] settings changed: they take effect when the host restarts",
                    );
                }
                Some(c)
            }
            Err(e) => {
                self.notes.error_once(
                    Topic::Config,
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
                self.notes.error_once(Topic::Folder, line);
                return None;
            }
        };
        self.notes.resolved(&Topic::Folder);
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
            self.clear_refusal(&path);
        }
        for r in &scan.refused {
            self.refuse(&r.path, r.reason.clone());
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
        // New files (or refused ones replaced) are `loading` to senders
        // until they are started or refused (not 404).
        // (A file tried and not started, for its configuration say, is not.)
        let arriving = |known: &BTreeMap<String, super::Known>, tried: &BTreeSet<String>| {
            scan.found
                .iter()
                .filter(|f| {
                    !tried.contains(&f.name)
                        && known
                            .get(&f.name)
                            .is_none_or(|k| !k.loaded && k.signature != f.signature)
                })
                .map(|f| f.name.clone())
                .collect::<BTreeSet<String>>()
        };
        let mut tried = BTreeSet::new();
        self.supervisor.arriving(arriving(&self.known, &tried));
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
            tried.insert(found.name.clone());
        }
        self.supervisor.arriving(arriving(&self.known, &tried));
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
        self.clear_refusal(&path);
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
                self.notes
                    .resolved(&Topic::PluginConfig(found.name.clone()));
                let known = self.known.get(&found.name).expect("checked above");
                if known.config.as_ref() != Some(&pc)
                    && self.supervisor.reconfigure(&found.name, pc.clone()).is_ok()
                    && let Some(k) = self.known.get_mut(&found.name)
                {
                    k.config = Some(pc);
                }
            }
            Err(e) => self.notes.error_once(
                Topic::PluginConfig(found.name.clone()),
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
            let shown = found.path.display();
            let topic = Topic::File(found.path.clone());
            let Some(config) = config else {
                let line = format!("{shown} is not started while the configuration is invalid");
                self.notes.error_once(topic, line);
                return;
            };
            match config.plugin(&name) {
                Ok(pc) => Some(pc),
                Err(e) => {
                    let line =
                        format!("{shown} is not started: its configuration is invalid: {e:#}");
                    self.notes.error_once(topic, line);
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
            Ok(FileLoad::Ready(ready)) => {
                if let Some(pc) = plugin_config {
                    let spec = PluginSpec {
                        name: name.clone(),
                        path: found.path.clone(),
                        config: pc,
                    };
                    let admitted = self.admit(&spec, found, ready, |origin| {
                        tracing::info!(plugin = %name, from = origin.as_str(), "new plugin file: starting it");
                    });
                    if let Err(why) = admitted {
                        self.refuse(&found.path, why);
                        self.publish_refused();
                    }
                    return;
                }
                let Ready {
                    loaded,
                    file_sha256,
                    rolled_back,
                } = ready;
                self.accept_load(&name, found, &loaded);
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
                let topic = Topic::File(found.path.clone());
                if running {
                    self.supervisor.metrics().upgrade(&name, "refused");
                    self.notes.error_once(
                        topic,
                        format!("not upgraded, the running version stays: {why}"),
                    );
                } else {
                    self.notes.error_once(topic, format!("refused {why}"));
                }
                self.refused.insert(found.path.clone(), why);
                self.publish_refused();
                let k = self
                    .known
                    .entry(name)
                    .or_insert_with(|| super::unloaded(found.signature));
                k.signature = found.signature;
            }
        }
    }
}
