//! Crash reports and dead letters in the state backend: the one place that
//! turns a [`CrashReport`] or a [`DeadLetter`] into a [`Record`] and back.
//!
//! The child writes both ([`write_report`], off the restart path, with the
//! crash's coredump; [`write_dead_letter`] into the commit it sends through
//! the plugin's state view, so that a timer the letter completes goes in the
//! same commit). The admin API lists them ([`crash_reports`],
//! [`dead_letters`]), reads one dead letter ([`dead_letter`]) and removes it
//! ([`remove_dead_letter`], which also keeps the dead-letter gauge right).
//! Records a later version cannot read are skipped in listings.
//!
//! This module may not touch a plugin's keys or its instance, and knows the
//! backend only through [`StateBackend`].

use super::{CrashReport, DeadLetter, coredumps};
use crate::metrics::Metrics;
use crate::state::{Commit, Record, RecordKind, StateBackend};
use anyhow::{Context, Result, anyhow};
use serde::de::DeserializeOwned;
use std::path::PathBuf;

/// At most this many bytes of a plugin's crash reports are kept (its newest
/// report is kept whatever its size).
pub const REPORT_KEEP_BYTES: u64 = 16 << 20;

/// A crash's wasm coredump, to be stored beside its report.
#[derive(Debug)]
pub struct Coredump {
    /// The coredump folder (`[host] coredump_dir`).
    pub dir: PathBuf,
    /// The folder's budget, bytes (`[host] coredumps`).
    pub budget: u64,
    /// The dump.
    pub bytes: Vec<u8>,
}

/// Stores `report`, and first its coredump if there is one (the report then
/// names the file), keeping the plugin's newest `keep` reports within
/// [`REPORT_KEEP_BYTES`]. A coredump that cannot be stored is logged and the
/// report stored without it. Meant to run on a task of its own: a restart
/// never waits for it.
pub async fn write_report(
    backend: &dyn StateBackend,
    mut report: CrashReport,
    coredump: Option<Coredump>,
    keep: usize,
) -> Result<()> {
    let id = report.id;
    if let Some(Coredump { dir, budget, bytes }) = coredump {
        let plugin = report.plugin.clone();
        let stored = tokio::task::spawn_blocking(move || {
            coredumps::store(&dir, budget, &plugin, id, &bytes)
        })
        .await;
        match stored {
            Ok(Ok(path)) => report.coredump = path.map(|p| p.display().to_string()),
            Ok(Err(e)) => tracing::error!("failed to store coredump of crash {id}: {e:#}"),
            Err(e) => tracing::error!("coredump task of crash {id} failed: {e}"),
        }
    }
    let mut commit = Commit::new(&report.plugin);
    commit.records.push(Record {
        kind: RecordKind::Crash,
        id,
        body: serde_json::to_vec(&report).expect("a crash report serializes"),
        keep,
        keep_bytes: REPORT_KEEP_BYTES,
    });
    backend
        .commit(commit)
        .await
        .with_context(|| format!("failed to store crash report {id}"))
}

/// Adds `letter` to `commit` (the commit of the plugin's state view that
/// also completes the letter's timer, if it came from one), keeping the
/// plugin's newest `keep` dead letters within `keep_bytes`.
pub fn write_dead_letter(commit: &mut Commit, letter: &DeadLetter, keep: usize, keep_bytes: u64) {
    commit.records.push(Record {
        kind: RecordKind::DeadLetter,
        id: letter.id,
        body: serde_json::to_vec(letter).expect("a dead letter serializes"),
        keep,
        keep_bytes,
    });
}

/// One page of a plugin's records, newest first.
#[derive(Debug)]
pub struct Listed<T> {
    /// The records of the page that could be read.
    pub items: Vec<T>,
    /// Whether there are records after the page.
    pub more: bool,
}

/// A page of `plugin`'s crash reports: at most `limit` after skipping
/// `offset`, newest first.
pub async fn crash_reports(
    backend: &dyn StateBackend,
    plugin: &str,
    offset: usize,
    limit: usize,
) -> Result<Listed<CrashReport>> {
    list(backend, plugin, RecordKind::Crash, offset, limit)
        .await
        .context("failed to read crash reports")
}

/// A page of `plugin`'s dead letters: at most `limit` after skipping
/// `offset`, newest first.
pub async fn dead_letters(
    backend: &dyn StateBackend,
    plugin: &str,
    offset: usize,
    limit: usize,
) -> Result<Listed<DeadLetter>> {
    list(backend, plugin, RecordKind::DeadLetter, offset, limit)
        .await
        .context("failed to read dead letters")
}

async fn list<T: DeserializeOwned>(
    backend: &dyn StateBackend,
    plugin: &str,
    kind: RecordKind,
    offset: usize,
    limit: usize,
) -> Result<Listed<T>> {
    let mut rows = backend.records(plugin, kind, offset, limit + 1).await?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let items = rows
        .iter()
        .filter_map(|(_, body)| serde_json::from_slice(body).ok())
        .collect();
    Ok(Listed { items, more })
}

/// Dead letter `id` of `plugin`, if it has one.
pub async fn dead_letter(
    backend: &dyn StateBackend,
    plugin: &str,
    id: u64,
) -> Result<Option<DeadLetter>> {
    let Some(body) = backend
        .record(plugin, RecordKind::DeadLetter, id)
        .await
        .context("failed to read dead letter")?
    else {
        return Ok(None);
    };
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| anyhow!("dead letter {id} is unreadable: {e}"))
}

/// Deletes dead letter `id` of `plugin` (replayed or dropped) and counts it
/// out of the `wasm_sup_dead_letters` gauge.
pub async fn remove_dead_letter(
    backend: &dyn StateBackend,
    metrics: &Metrics,
    plugin: &str,
    id: u64,
) -> Result<()> {
    let mut commit = Commit::new(plugin);
    commit.remove_records.push((RecordKind::DeadLetter, id));
    backend
        .commit(commit)
        .await
        .context("failed to remove dead letter")?;
    metrics
        .dead_letters
        .get_or_create(&Metrics::plugin(plugin))
        .dec();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crash::{Cause, MessageInfo};
    use crate::state::memory::MemoryBackend;

    fn report(id: u64) -> CrashReport {
        CrashReport {
            id,
            plugin: "p".into(),
            generation: 1,
            cause: Cause::Trap,
            call: "handle".into(),
            message: "boom".into(),
            backtrace: vec!["f".into()],
            fuel_used: 1,
            memory_bytes: 2,
            handling: Some(MessageInfo::of(b"hi", 1)),
            time_ms: 3,
            decision: "failed".into(),
            coredump: None,
        }
    }

    #[tokio::test]
    async fn reports_and_dead_letters_go_in_and_come_back() {
        let backend = MemoryBackend::new();
        let metrics = Metrics::new();
        for id in 1..=3 {
            write_report(&backend, report(id), None, 2).await.unwrap();
        }
        let page = crash_reports(&backend, "p", 0, 1).await.unwrap();
        assert_eq!(page.items, vec![report(3)], "newest first");
        assert!(page.more);
        let page = crash_reports(&backend, "p", 1, 5).await.unwrap();
        assert_eq!(page.items, vec![report(2)], "keep 2");
        assert!(!page.more);

        let letter = DeadLetter {
            id: 7,
            plugin: "p".into(),
            message: b"m".to_vec(),
            causes: vec!["trap".into()],
            reports: vec![3],
            time_ms: 4,
        };
        let mut commit = Commit::new("p");
        write_dead_letter(&mut commit, &letter, 10, 1 << 20);
        backend.commit(commit).await.unwrap();
        metrics
            .dead_letters
            .get_or_create(&Metrics::plugin("p"))
            .inc();
        assert_eq!(
            dead_letters(&backend, "p", 0, 5).await.unwrap().items,
            vec![letter.clone()]
        );
        assert_eq!(dead_letter(&backend, "p", 7).await.unwrap(), Some(letter));
        remove_dead_letter(&backend, &metrics, "p", 7)
            .await
            .unwrap();
        assert_eq!(dead_letter(&backend, "p", 7).await.unwrap(), None);
        assert_eq!(
            metrics
                .dead_letters
                .get_or_create(&Metrics::plugin("p"))
                .get(),
            0
        );
    }
}
