//! The startup load ([`Folder::load_all`]): every plugin in DIR, compiled (or
//! taken from the compile cache) on half the cores, started in the
//! supervision tree's order, with a progress line per plugin and one summary.
//!
//! Owns only the order and pace of the first load and its summary; each
//! plugin goes through [`Folder::admit`] as it does later, and its refusal is
//! remembered by [`Folder::refuse`] as the later scans would log it.

use super::Folder;
use super::load::{FileLoad, blocking, load_file};
use super::progress::Progress;
use crate::compile::Origin;
use crate::config::Config;
use crate::discovery::{self, Refused};
use anyhow::{Context, Result};
use futures::StreamExt;
use std::time::{Duration, Instant};

impl Folder {
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
        let mut progress = Progress::new(total);
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
        // A terminal gets its bar after a moment, a log a line every few
        // seconds, even while one long compile is all that runs.
        let first_tick = tokio::time::Instant::now() + Duration::from_millis(600);
        let mut ticks = tokio::time::interval_at(first_tick, super::progress::LOG_EVERY);
        loop {
            let next = tokio::select! {
                next = loads.next() => next,
                _ = ticks.tick() => {
                    progress.tick();
                    continue;
                }
            };
            let Some((spec, (found, result), took)) = next else {
                break;
            };
            match result {
                Ok(FileLoad::Ready(ready)) => {
                    let admitted = self.admit(&spec, &found, ready, |origin| {
                        match origin {
                            Origin::Memory => shared += 1,
                            Origin::Cache => cached += 1,
                            Origin::Compiled => compiled += 1,
                        }
                        progress.step(|at| {
                            tracing::info!(
                                plugin = %spec.name,
                                progress = at,
                                from = origin.as_str(),
                                ms = took.as_millis() as u64,
                                "loaded"
                            )
                        });
                    });
                    if let Err(why) = admitted {
                        progress.step(|_| {});
                        refused.push(Refused {
                            path: spec.path.clone(),
                            reason: why,
                        });
                    }
                }
                Ok(FileLoad::Unchanged) => unreachable!("nothing was loaded before"),
                Err(e) => {
                    progress.step(|_| {});
                    refused.push(Refused {
                        path: spec.path.clone(),
                        reason: format!("{e:#}"),
                    });
                    self.known
                        .insert(spec.name.clone(), super::unloaded(found.signature));
                }
            }
            self.supervisor.loaded_one(&spec.name);
        }
        self.supervisor.end_loading();
        let took = progress.elapsed();
        drop(progress);
        // Logged after the loads, and remembered as the very line the
        // folder's later scans would log about each file, so it is not
        // logged a second time.
        for r in &refused {
            self.refuse(&r.path, r.reason.clone());
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
}
