//! Cluster mode's side of the plugin table: every plugin the folder loaded
//! is held here compiled and ready ([`Standby`]), and only those of the
//! units this node owns have a child (DESIGN.md, "Cluster, precisely":
//! every node compiles every plugin and instantiates only what it owns).
//! The cluster ([`crate::cluster`]) moves plugins in with
//! [`SupervisorHandle::activate`] and out with
//! [`SupervisorHandle::deactivate`]; the folder watcher's adds, upgrades,
//! reconfigurations and removals reach the catalog whether the plugin runs
//! here or not.

use super::SupervisorHandle;
use crate::compile::Compiled;
use crate::compile::rollback::Rollback;
use crate::discovery::PluginSpec;
use crate::supervisor::child;
use crate::supervisor::{PluginInfo, Status};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// What it takes to start a plugin here.
#[derive(Clone)]
pub(super) struct Entry {
    pub(super) spec: PluginSpec,
    pub(super) compiled: Arc<Compiled>,
    pub(super) rolled_back: Option<Rollback>,
    /// [`config_hash`] of `spec.config`, kept with it (placement reads it
    /// every round).
    pub(super) config_hash: String,
}

/// See the module doc.
#[derive(Default)]
pub(super) struct Standby {
    /// Every plugin the folder loaded, by name.
    pub(super) catalog: Mutex<BTreeMap<String, Entry>>,
    /// The plugins this node owns: they run here.
    pub(super) owned: Mutex<BTreeSet<String>>,
}

/// A plugin the cluster may place: its name, unit and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeable {
    /// The plugin.
    pub name: String,
    /// Its unit of ownership (see [`super::tree::Tree::unit_of`]).
    pub unit: String,
    /// SHA-256 of its component.
    pub sha256: String,
    /// A hash of its resolved configuration (nodes compare them).
    pub config: String,
}

/// The first 16 hex digits of the SHA-256 of a resolved configuration as
/// this build prints it (`Debug`): nodes of one version compare them.
fn config_hash(config: &crate::config::PluginConfig) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{config:?}").as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl SupervisorHandle {
    /// Whether this supervisor runs only what its node owns (cluster mode).
    pub fn clustered(&self) -> bool {
        self.shared.standby.is_some()
    }

    /// Every plugin loaded from the folder, running here or not, with its
    /// unit (cluster mode; empty on a single host).
    pub fn placeable(&self) -> Vec<Placeable> {
        let Some(standby) = &self.shared.standby else {
            return Vec::new();
        };
        let catalog = standby.catalog.lock();
        catalog
            .values()
            .map(|e| Placeable {
                name: e.spec.name.clone(),
                unit: self.shared.groups.unit_of(&e.spec.name),
                sha256: e.compiled.sha256.clone(),
                config: e.config_hash.clone(),
            })
            .collect()
    }

    /// The unit of ownership `plugin` belongs to: its top-level group
    /// (`group:NAME`), or itself.
    pub fn unit_of(&self, plugin: &str) -> String {
        self.shared.groups.unit_of(plugin)
    }

    /// Whether the folder loaded a plugin of that name (running here or not).
    pub fn knows(&self, name: &str) -> bool {
        match &self.shared.standby {
            Some(standby) => standby.catalog.lock().contains_key(name),
            None => self.contains(name),
        }
    }

    /// Cluster mode: another node's commit put messages in `plugin`'s
    /// inbox; they are taken and delivered if this node runs it.
    pub fn take_inbox(&self, plugin: &str) {
        self.shared.timers.take(plugin);
    }

    /// Starts `names` here: this node now owns them. Names the folder has
    /// not loaded are remembered, and start when they load.
    pub fn activate(&self, names: &[String]) {
        let Some(standby) = &self.shared.standby else {
            return;
        };
        let mut starting = Vec::new();
        {
            let mut owned = standby.owned.lock();
            let catalog = standby.catalog.lock();
            for name in names {
                owned.insert(name.clone());
                if let Some(entry) = catalog.get(name)
                    && !self.contains(name)
                {
                    starting.push(entry.clone());
                }
            }
        }
        let order: Vec<String> = starting.iter().map(|e| e.spec.name.clone()).collect();
        for name in self.start_order_of(&order) {
            if let Some(e) = starting.iter().find(|e| e.spec.name == name) {
                self.start_child(&e.spec, e.compiled.clone(), e.rolled_back.clone());
            }
        }
    }

    /// Stops `names` here: this node no longer owns them. Their queued
    /// messages are answered 503 with `status` and `reason`; each finishes
    /// its call in flight (within its `shutdown-timeout`) and runs
    /// `lifecycle.shutdown`. On a drain the call commits; when ownership
    /// was lost the backend refuses the commit, and the call's sender gets
    /// 503 `owner-lost` (see `Child::owner_lost`).
    pub async fn deactivate(&self, names: &[String], status: &str, reason: &str) {
        let Some(standby) = &self.shared.standby else {
            return;
        };
        {
            let mut owned = standby.owned.lock();
            for name in names {
                owned.remove(name);
            }
        }
        let mut order = self.start_order_of(names);
        order.reverse();
        for name in order {
            let Some(slot) = self.shared.plugins.write().remove(&name) else {
                continue;
            };
            self.shared.order.write().retain(|n| n != &name);
            self.shared.directory.remove(&name);
            child::close_mailbox(
                &slot.mailbox,
                status,
                reason,
                None,
                &self.shared.timers,
                &name,
            );
            self.stop_worker(&name, &slot, reason).await;
            // Its durable timers fire on its next owner, which loads them.
            self.shared.timers.release(&name);
            self.shared.metrics.forget(&name);
        }
    }

    /// The plugins running here.
    pub fn owned(&self) -> BTreeSet<String> {
        match &self.shared.standby {
            Some(standby) => standby.owned.lock().clone(),
            None => self.shared.plugins.read().keys().cloned().collect(),
        }
    }

    /// Cluster mode: the status of a plugin this node holds ready but does
    /// not run: `stopped`, as no node runs it.
    pub fn standby_info(&self, name: &str) -> Option<PluginInfo> {
        let standby = self.shared.standby.as_ref()?;
        let catalog = standby.catalog.lock();
        let e = catalog.get(name)?;
        let mut info = PluginInfo::fresh(
            name,
            &e.spec.config,
            &e.compiled.sha256,
            e.rolled_back.clone(),
        );
        info.status = Status::Stopped;
        info.reason = Some("unowned: no live node runs it; a node claims it within a lease".into());
        Some(info)
    }

    /// A plugin's `reply-timeout`, running here or held ready (the
    /// default's when the folder has no such plugin).
    pub fn reply_timeout_of(&self, name: &str) -> std::time::Duration {
        if let Some(slot) = self.slot(name) {
            return slot.config.lock().reply_timeout;
        }
        self.shared
            .standby
            .as_ref()
            .and_then(|s| {
                s.catalog
                    .lock()
                    .get(name)
                    .map(|e| e.spec.config.reply_timeout)
            })
            .unwrap_or_else(crate::config::defaults::default_reply_timeout)
    }

    /// Cluster mode: records a loaded plugin; whether it starts here now
    /// (this node owns it).
    pub(super) fn catalog_add(
        &self,
        spec: &PluginSpec,
        compiled: &Arc<Compiled>,
        rolled_back: &Option<Rollback>,
    ) -> bool {
        let Some(standby) = &self.shared.standby else {
            return true;
        };
        self.shared
            .directory
            .know(&spec.name, spec.config.max_message);
        standby.catalog.lock().insert(
            spec.name.clone(),
            Entry {
                spec: spec.clone(),
                compiled: compiled.clone(),
                rolled_back: rolled_back.clone(),
                config_hash: config_hash(&spec.config),
            },
        );
        standby.owned.lock().contains(&spec.name)
    }

    /// Cluster mode: a new version of a plugin, running here or not.
    pub(super) fn catalog_upgrade(&self, name: &str, compiled: &Arc<Compiled>) {
        if let Some(standby) = &self.shared.standby
            && let Some(e) = standby.catalog.lock().get_mut(name)
        {
            e.compiled = compiled.clone();
            e.rolled_back = None;
        }
    }

    /// Cluster mode: a new configuration of a plugin, running here or not.
    pub(super) fn catalog_reconfigure(&self, name: &str, config: &crate::config::PluginConfig) {
        if let Some(standby) = &self.shared.standby
            && let Some(e) = standby.catalog.lock().get_mut(name)
        {
            e.spec.config = config.clone();
            e.config_hash = config_hash(config);
            self.shared.directory.know(name, config.max_message);
        }
    }

    /// Cluster mode: a plugin whose file was removed; whether it was known.
    pub(super) fn catalog_remove(&self, name: &str) -> bool {
        self.shared.directory.unknow(name);
        self.shared
            .standby
            .as_ref()
            .is_some_and(|s| s.catalog.lock().remove(name).is_some())
    }
}
