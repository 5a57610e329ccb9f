//! One behaviour test run against every backend: [`check`] and
//! [`group_commit`] run on the memory and redb backends in the unit tests,
//! and on a real PostgreSQL in the integration tests.

use super::*;
use std::sync::Arc;

fn set(bucket: &str, key: &str, value: &str) -> Write {
    Write {
        bucket: bucket.into(),
        key: key.into(),
        value: Some(value.as_bytes().to_vec()),
    }
}

fn answer(key: &str, body: &str, time_ms: u64) -> StoredAnswer {
    StoredAnswer {
        key: key.into(),
        body_sha256: "ab".repeat(32),
        status: 200,
        body: body.as_bytes().to_vec(),
        time_ms,
    }
}

/// The backend contract of the module doc, on an empty store.
pub async fn check(b: Arc<dyn StateBackend>) {
    let mut c = Commit::new("a");
    c.writes = vec![
        set("default", "k1", "v1"),
        set("default", "k2", "v22"),
        set("other", "k", "x"),
    ];
    b.commit(c).await.unwrap();
    let mut c = Commit::new("b");
    c.writes = vec![set("default", "k1", "from-b")];
    b.commit(c).await.unwrap();

    // Plugins are namespaces.
    assert_eq!(
        b.get("a", "default", "k1").await.unwrap(),
        Some(b"v1".to_vec())
    );
    assert_eq!(
        b.get("b", "default", "k1").await.unwrap(),
        Some(b"from-b".to_vec())
    );
    assert_eq!(b.get("a", "nope", "k1").await.unwrap(), None);
    assert_eq!(
        b.list_keys("a", "default", None, 10).await.unwrap(),
        ["k1", "k2"]
    );
    assert_eq!(
        b.list_keys("a", "default", Some("k1"), 10).await.unwrap(),
        ["k2"]
    );
    assert_eq!(b.list_keys("a", "default", None, 1).await.unwrap(), ["k1"]);
    assert_eq!(
        b.usage("a").await.unwrap(),
        Usage {
            keys: 3,
            bytes: 4 + 5 + 2,
            timers: 0,
        }
    );

    // Deletes and usage follow commits.
    let mut c = Commit::new("a");
    c.writes = vec![Write {
        bucket: "default".into(),
        key: "k2".into(),
        value: None,
    }];
    b.commit(c).await.unwrap();
    assert_eq!(
        b.usage("a").await.unwrap(),
        Usage {
            keys: 2,
            bytes: 4 + 2,
            timers: 0,
        }
    );

    // Timers.
    let mut c = Commit::new("a");
    c.add_timers = vec![TimerRecord {
        id: 7,
        plugin: "a".into(),
        due_ms: 5,
        message: b"m".to_vec(),
    }];
    b.commit(c).await.unwrap();
    assert_eq!(b.timers("a").await.unwrap().len(), 1);
    // Timers are read per plugin.
    assert!(b.timers("b").await.unwrap().is_empty());
    // A timer counts in usage: one timer, its message's bytes.
    assert_eq!(
        b.usage("a").await.unwrap(),
        Usage {
            keys: 2,
            bytes: 4 + 2 + 1,
            timers: 1,
        }
    );
    let mut c = Commit::new("a");
    c.remove_timers = vec![7];
    b.commit(c).await.unwrap();
    assert!(b.timers("a").await.unwrap().is_empty());
    assert_eq!(b.usage("a").await.unwrap().timers, 0);
    assert_eq!(b.usage("a").await.unwrap().bytes, 4 + 2);

    // Bounded records, newest first.
    for id in 1..=5u64 {
        let mut c = Commit::new("a");
        c.records = vec![Record {
            kind: RecordKind::Crash,
            id,
            body: vec![id as u8],
            keep: 3,
            keep_bytes: 1 << 20,
        }];
        b.commit(c).await.unwrap();
    }
    let ids: Vec<u64> = b
        .records("a", RecordKind::Crash, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(ids, [5, 4, 3]);
    assert_eq!(b.record_count("a", RecordKind::Crash).await.unwrap(), 3);
    assert_eq!(
        b.record_count("a", RecordKind::DeadLetter).await.unwrap(),
        0
    );
    assert_eq!(b.record_count("b", RecordKind::Crash).await.unwrap(), 0);
    assert_eq!(
        b.record("a", RecordKind::Crash, 4).await.unwrap(),
        Some(vec![4])
    );
    assert_eq!(
        b.record("a", RecordKind::Crash, 1).await.unwrap(),
        None,
        "pruned"
    );
    assert_eq!(
        b.record("a", RecordKind::DeadLetter, 4).await.unwrap(),
        None
    );
    assert!(
        b.records("b", RecordKind::Crash, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Records are bounded in bytes too; the newest is always kept.
    for id in 1..=4u64 {
        let mut c = Commit::new("a");
        c.records = vec![Record {
            kind: RecordKind::DeadLetter,
            id,
            body: vec![0; 40],
            keep: 100,
            keep_bytes: 100,
        }];
        b.commit(c).await.unwrap();
    }
    let ids: Vec<u64> = b
        .records("a", RecordKind::DeadLetter, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(ids, [4, 3]);
    assert_eq!(
        b.record_count("a", RecordKind::DeadLetter).await.unwrap(),
        2
    );
    // A record removed (a dead letter redelivered) leaves room: the next
    // fits beside the one left.
    let mut c = Commit::new("a");
    c.remove_records = vec![(RecordKind::DeadLetter, 3)];
    c.records = vec![Record {
        kind: RecordKind::DeadLetter,
        id: 5,
        body: vec![0; 40],
        keep: 100,
        keep_bytes: 100,
    }];
    b.commit(c).await.unwrap();
    let ids: Vec<u64> = b
        .records("a", RecordKind::DeadLetter, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(ids, [5, 4]);

    // Fencing: an older token is refused and changes nothing.
    let mut c = Commit::new("a");
    c.fence = Some(10);
    b.commit(c).await.unwrap();
    let mut c = Commit::new("a");
    c.fence = Some(9);
    c.writes = vec![set("default", "fenced", "no")];
    assert!(
        b.commit(c)
            .await
            .unwrap_err()
            .to_string()
            .contains("fencing")
    );
    assert_eq!(b.get("a", "default", "fenced").await.unwrap(), None);

    // Chains: a commit that may have read from a failed one is refused, in the
    // same group or a later one; one made after the failure is not.
    let chained = |seq, after, key: &str| {
        let mut c = Commit::new("a");
        c.chain = Some(Chain { seq, after });
        c.writes = vec![set("default", key, "v")];
        c
    };
    let mut failed = chained(100, 100, "lost");
    failed.fence = Some(9);
    let (first, second) = (b.commit(failed), b.commit(chained(101, 100, "after-lost")));
    assert!(first.await.is_err());
    let refused = second.await.unwrap_err().to_string();
    assert!(refused.contains("earlier commit"), "{refused}");
    assert!(b.commit(chained(102, 101, "still")).await.is_err());
    b.commit(chained(103, 103, "fresh")).await.unwrap();
    assert_eq!(b.get("a", "default", "after-lost").await.unwrap(), None);
    assert_eq!(
        b.get("a", "default", "fresh").await.unwrap(),
        Some(b"v".to_vec())
    );
    // Chains are per plugin.
    let mut other = chained(104, 100, "other");
    other.plugin = "b".into();
    b.commit(other).await.unwrap();
    // The same within one group: a backlog of another plugin's commits
    // keeps the committer busy while both wait, so they are taken together.
    let backlog: Vec<_> = (0..100)
        .map(|i| {
            let mut c = Commit::new("z");
            c.writes = vec![set("default", &format!("k{i}"), "v")];
            b.commit(c)
        })
        .collect();
    let mut failed = chained(200, 200, "lost-2");
    failed.fence = Some(9);
    let (first, second) = (
        b.commit(failed),
        b.commit(chained(201, 200, "after-lost-2")),
    );
    for c in backlog {
        c.await.unwrap();
    }
    assert!(first.await.is_err());
    let refused = second.await.unwrap_err().to_string();
    assert!(refused.contains("earlier commit"), "{refused}");
    assert_eq!(b.get("a", "default", "after-lost-2").await.unwrap(), None);
    // A commit refused in a group fails only its own plugin's commit.
    let mut stale = Commit::new("a");
    stale.fence = Some(1);
    stale.writes = vec![set("default", "stale", "x")];
    let mut fine = Commit::new("c");
    fine.writes = vec![set("default", "k", "v")];
    let (stale, fine) = (b.commit(stale), b.commit(fine));
    assert!(stale.await.is_err());
    fine.await.unwrap();
    assert_eq!(
        b.get("c", "default", "k").await.unwrap(),
        Some(b"v".to_vec())
    );

    // Kept answers: per plugin and key, replaced under the same key,
    // counted in usage, dropped past their window.
    let before = b.usage("a").await.unwrap();
    let mut c = Commit::new("a");
    c.answers = vec![answer("k1", "one", 1_000), answer("k2", "two", 5_000)];
    b.commit(c).await.unwrap();
    assert_eq!(
        b.answer("a", "k1").await.unwrap(),
        Some(answer("k1", "one", 1_000))
    );
    assert_eq!(b.answer("b", "k1").await.unwrap(), None);
    assert_eq!(b.answer("a", "k3").await.unwrap(), None);
    assert_eq!(b.usage("a").await.unwrap().bytes, before.bytes + 5 + 5);
    let mut c = Commit::new("a");
    c.answers = vec![answer("k1", "uno!", 2_000)];
    b.commit(c).await.unwrap();
    assert_eq!(
        b.answer("a", "k1").await.unwrap(),
        Some(answer("k1", "uno!", 2_000))
    );
    assert_eq!(b.usage("a").await.unwrap().bytes, before.bytes + 6 + 5);
    let mut c = Commit::new("a");
    c.prune_answers_before = Some(3_000);
    b.commit(c).await.unwrap();
    assert_eq!(b.answer("a", "k1").await.unwrap(), None);
    assert!(b.answer("a", "k2").await.unwrap().is_some());
    assert_eq!(b.usage("a").await.unwrap().bytes, before.bytes + 5);

    // Ids increase.
    let (x, y) = (b.next_id(), b.next_id());
    assert!(y > x, "{x} then {y}");

    // Reset wipes one plugin's keys and timers, and only its.
    for (id, plugin) in [(8, "a"), (9, "b")] {
        let mut c = Commit::new(plugin);
        c.add_timers = vec![TimerRecord {
            id,
            plugin: plugin.into(),
            due_ms: 5,
            message: b"m".to_vec(),
        }];
        b.commit(c).await.unwrap();
    }
    b.reset("a").await.unwrap();
    assert!(b.timers("a").await.unwrap().is_empty());
    let left: Vec<u64> = b.timers("b").await.unwrap().iter().map(|t| t.id).collect();
    assert_eq!(left, [9]);
    assert!(b.list_all("a").await.unwrap().is_empty());
    // Kept answers outlive a reset, and still count.
    assert!(b.answer("a", "k2").await.unwrap().is_some());
    assert_eq!(
        b.usage("a").await.unwrap(),
        Usage {
            keys: 0,
            bytes: 5,
            timers: 0
        }
    );
    assert_eq!(
        b.get("b", "default", "k1").await.unwrap(),
        Some(b"from-b".to_vec())
    );
}

/// Many plugins' commits at once: every waiter is answered and every
/// write lands.
pub async fn group_commit(b: Arc<dyn StateBackend>) {
    let commits = (0..200).map(|i| {
        let mut c = Commit::new(&format!("p{}", i % 7));
        c.writes = vec![set("default", &format!("k{i}"), "v")];
        b.commit(c)
    });
    for r in futures::future::join_all(commits).await {
        r.unwrap();
    }
    let mut total = 0;
    for p in 0..7 {
        total += b.list_all(&format!("p{p}")).await.unwrap().len();
    }
    assert_eq!(total, 200);
}

#[cfg(test)]
#[tokio::test]
async fn memory_backend() {
    check(Arc::new(memory::MemoryBackend::new())).await;
}

#[cfg(test)]
#[tokio::test]
async fn redb_backend_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s/state.redb");
    check(Arc::new(redb::RedbBackend::open(&path).unwrap())).await;
    let b = redb::RedbBackend::open(&path).unwrap();
    assert_eq!(
        b.get("b", "default", "k1").await.unwrap(),
        Some(b"from-b".to_vec())
    );
}

#[cfg(test)]
#[tokio::test]
async fn redb_group_commit_answers_every_waiter() {
    let dir = tempfile::tempdir().unwrap();
    group_commit(Arc::new(
        redb::RedbBackend::open(&dir.path().join("g.redb")).unwrap(),
    ))
    .await;
}

/// A storm of large commits from one plugin and one small commit from
/// another: all are applied (`state::queues::tests::hole03_…` checks that the small
/// one goes in with the first group).
#[cfg(test)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_commits_and_a_calm_one_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let b: Arc<dyn StateBackend> =
        Arc::new(redb::RedbBackend::open(&dir.path().join("storm.redb")).unwrap());
    let big = "x".repeat(64 << 10);
    let storm: Vec<_> = (0..1000)
        .map(|i| {
            let mut c = Commit::new("storm");
            c.writes = vec![set("default", &format!("k{i:04}"), &big)];
            b.commit(c)
        })
        .collect();
    let mut calm = Commit::new("calm");
    calm.writes = vec![set("default", "k", "v")];
    b.commit(calm).await.unwrap();
    for c in storm {
        c.await.unwrap();
    }
    assert_eq!(b.list_all("storm").await.unwrap().len(), 1000);
    assert_eq!(
        b.get("calm", "default", "k").await.unwrap(),
        Some(b"v".to_vec())
    );
}
