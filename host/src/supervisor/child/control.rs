//! What a child does with the requests it takes between calls
//! ([`Control`]): shutdown, an operator's stop/start/restart/state reset, a
//! group's hold and resume, a live upgrade, a new configuration, and the
//! rollback of an upgrade that crash-loops.

use super::{Child, Flow, Status};
use crate::compile::Compiled;
use crate::compile::rollback::{self, Rollback};
use crate::config::PluginConfig;
use crate::instance::PluginEnv;
use crate::mailbox::Address;
use crate::state::now_ms;
use crate::supervisor::control::Control;
use std::sync::Arc;
use std::time::Instant;

impl Child {
    pub(super) async fn on_control(&mut self, c: Option<Control>) -> Flow {
        self.settle_all().await;
        let Some(c) = c else { return Flow::Exit };
        match c {
            Control::Shutdown(deadline, why, done) => {
                self.runner.stop(deadline).await;
                self.set_status(Status::Stopped, Some(why));
                let _ = done.send(());
                return Flow::Exit;
            }
            Control::Stop(done) => {
                self.stop_for("stopped by an operator".into()).await;
                let _ = done.send(Ok(()));
            }
            Control::StopFor(reason, done) => {
                if !self.parked {
                    self.stop_for(reason).await;
                }
                let _ = done.send(Ok(()));
            }
            Control::Hold(done) => {
                if !self.parked {
                    self.runner.stop(self.shutdown_deadline()).await;
                    self.held = true;
                    self.set_status(Status::Starting, Some("restarting with its group".into()));
                    tracing::info!("stopped by its group, to be started again");
                }
                let _ = done.send(Ok(()));
            }
            Control::Resume(done) => {
                if self.held && !self.parked {
                    self.held = false;
                    let started = self.try_start().await;
                    let _ = done.send(Ok(()));
                    // Applied by the next step: the group goes on meanwhile.
                    self.failed_start = started.err();
                } else {
                    let _ = done.send(Ok(()));
                }
            }
            Control::Start(done) => {
                if self.parked || self.held {
                    self.restarts.breaker.reset();
                    self.unpark();
                    tracing::info!("plugin started by an operator");
                }
                let _ = done.send(Ok(()));
            }
            Control::Restart(done) => {
                self.runner.stop(self.shutdown_deadline()).await;
                self.restarts.breaker.reset();
                self.unpark();
                tracing::info!("plugin restarted by an operator");
                let _ = done.send(Ok(()));
            }
            Control::ResetState(done) => {
                // The state may be what makes the plugin crash: drop the
                // instance without calling it again, then wipe and start.
                self.runner.drop_instance();
                self.runner.running_since = None;
                let r = self.runner.env.state.reset().await;
                if r.is_ok() {
                    self.timers.forget(self.name());
                    tracing::warn!("plugin state reset by an operator");
                    self.restarts.breaker.reset();
                    self.unpark();
                }
                let _ = done.send(r.map_err(|e| format!("{e:#}")));
            }
            Control::Upgrade(compiled, done) => {
                self.upgrade(compiled).await;
                let _ = done.send(Ok(()));
            }
            Control::Reconfigure(config) => {
                tracing::info!(
                    "configuration changed: it takes effect at the plugin's next start (`wasm-sup restart {}` applies it now)",
                    self.name()
                );
                self.pending_config = Some(config);
            }
        }
        Flow::Continue
    }

    /// When a graceful stop begun now must end.
    fn shutdown_deadline(&self) -> Instant {
        crate::config::instant_after(Instant::now(), self.runner.env.config.shutdown_timeout)
    }

    /// Stops gracefully and parks as `stopped` for `reason`.
    async fn stop_for(&mut self, reason: String) {
        self.runner.stop(self.shutdown_deadline()).await;
        tracing::info!("plugin stopped: {reason}");
        self.close(Status::Stopped, reason);
    }

    /// Switches to a new version (see [`super::version`]).
    async fn upgrade(&mut self, compiled: Arc<Compiled>) {
        if compiled.sha256 == self.versions.current.sha256 {
            // The file is back to the version running (after a rollback).
            self.board.clear_rollback();
            tracing::info!("the file holds the version running: nothing to upgrade");
            return;
        }
        self.runner.stop(self.shutdown_deadline()).await;
        let failed = self.board.read(|i| i.status == Status::Failed);
        let probation = self.runner.env.config.upgrade_probation;
        let from = self
            .versions
            .upgrade(compiled, failed, probation, Instant::now());
        self.restarts.tracker.reset();
        self.board.version(&self.versions.current.sha256, None);
        self.metrics.upgrade(self.name(), "upgraded");
        tracing::info!(
            from = rollback::short(&from.sha256),
            to = rollback::short(&self.versions.current.sha256),
            "plugin upgraded"
        );
        if failed {
            self.restarts.breaker.reset();
            self.unpark();
        } else if !self.parked {
            self.set_status(Status::Starting, None);
        }
    }

    /// Goes back to the last good version, keeping the state, and records
    /// why (`last`: how the last instance ended).
    pub(super) fn roll_back(&mut self, last: &str) {
        let bad = self.versions.roll_back();
        let good = &self.versions.current;
        let reason = format!(
            "version {} exceeded max-restarts ({}) within upgrade-probation ({:?}); last: {last}",
            rollback::short(&bad.sha256),
            self.restarts.tracker.policy().max_restarts,
            self.runner.env.config.upgrade_probation,
        );
        let marker = Rollback {
            bad_sha256: bad.sha256.clone(),
            good_sha256: good.sha256.clone(),
            reason: reason.clone(),
            time_ms: now_ms(),
        };
        tracing::error!(
            from = rollback::short(&bad.sha256),
            to = rollback::short(&good.sha256),
            "upgrade rolled back: {reason}; the file is not tried again until it changes"
        );
        if let Err(e) = rollback::write(&self.cache_dir, self.name(), &marker) {
            tracing::error!("failed to record the rollback: {e}");
        }
        self.metrics.upgrade(self.name(), "rolled-back");
        self.board
            .version(&self.versions.current.sha256, Some(marker));
    }

    /// Takes a configuration that was waiting for this start.
    pub(super) fn apply_config(&mut self, config: Arc<PluginConfig>) {
        let old = &self.runner.env;
        self.runner.env = Arc::new(PluginEnv {
            name: old.name.clone(),
            config: config.clone(),
            state: old.state.clone(),
            directory: old.directory.clone(),
            output_dropped: old.output_dropped.clone(),
        });
        self.restarts.tracker.set_policy(config.restart.clone());
        self.restarts.breaker.set_policy(&config.restart);
        let (env, mailbox) = (&self.runner.env, &self.runner.mailbox);
        mailbox.set_capacity(config.mailbox);
        // Only while the plugin is in the directory (not removed meanwhile).
        let listed = env
            .directory
            .get(&env.name)
            .is_some_and(|a| Arc::ptr_eq(&a.mailbox, mailbox));
        if listed {
            env.directory.insert(
                &env.name,
                Address {
                    mailbox: mailbox.clone(),
                    max_message: config.max_message,
                },
            );
        }
        self.board.configured(&config);
        *self.config.lock() = config;
        tracing::info!("new configuration in force");
    }
}
