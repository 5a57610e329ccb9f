//! PostgreSQL as the state backend (`--state postgres://…`), against a real
//! server the test setup starts (`wasm_sup_tests::postgres`): the backend
//! conformance suite, the schema version, the advisory lock, one clear line
//! for each way of failing to connect, and a server restarted under load.
//! The state and idempotency tests run on PostgreSQL too (`state.rs`,
//! `idempotency.rs`).

use crate::util::{HostProcess, PluginDir, TestHost, config_error, free_port};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasm_sup::state::StateBackend;
use wasm_sup::state::postgres::PostgresBackend;
use wasm_sup_tests::COUNTER;
use wasm_sup_tests::postgres::{PASSWORD, Postgres};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_conformance_suite_passes_on_postgres() {
    let pg = Postgres::shared();
    let url = pg.database().await;
    let b = Arc::new(PostgresBackend::open(&url).await.unwrap());
    wasm_sup::state::conformance::check(b.clone()).await;
    b.close().await;
    // Reopened (the schema is there already): the state is too.
    let b = Arc::new(PostgresBackend::open(&url).await.unwrap());
    assert_eq!(
        b.get("b", "default", "k1").await.unwrap(),
        Some(b"from-b".to_vec())
    );
    assert!(!b.describe().contains(PASSWORD), "{}", b.describe());
    b.close().await;
    let url = pg.database().await;
    let b = Arc::new(PostgresBackend::open(&url).await.unwrap());
    wasm_sup::state::conformance::group_commit(b.clone()).await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_newer_than_the_binary_is_refused_with_one_line() {
    let pg = Postgres::shared();
    let url = pg.database().await;
    PostgresBackend::open(&url).await.unwrap().close().await;
    let db = url.rsplit('/').next().unwrap();
    pg.execute(db, "UPDATE wasm_sup_schema SET version = 99")
        .await;
    let dir = PluginDir::new();
    dir.plugin("counter", COUNTER);
    let line = config_error(&dir, &["--state", &url]);
    assert!(
        line.contains("schema version 99, newer than this wasm-sup knows (3)"),
        "{line}"
    );
    assert!(!line.contains(PASSWORD), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_host_on_the_same_database_exits_2() {
    let url = Postgres::shared().database().await;
    let first_dir = PluginDir::new();
    first_dir.plugin("counter", COUNTER);
    let first = HostProcess::start(first_dir.path(), &["--state", &url]).await;
    assert_eq!(first.admin.send("counter", "hello").await.ok(), "1");
    let second_dir = PluginDir::new();
    second_dir.plugin("counter", COUNTER);
    let line = config_error(&second_dir, &["--state", &url]);
    assert!(line.contains("in use by another wasm-sup"), "{line}");
    // The first host is untouched.
    assert_eq!(first.admin.send("counter", "hello").await.ok(), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_url_a_wrong_password_and_an_unreachable_server_are_one_line_each() {
    let pg = Postgres::shared();
    let url = pg.database().await;
    let dir = PluginDir::new();
    dir.plugin("counter", COUNTER);
    let line = config_error(
        &dir,
        &["--state", "postgres://postgres@127.0.0.1:notaport/db"],
    );
    assert!(line.contains("invalid PostgreSQL URL"), "{line}");
    let wrong = url.replace(PASSWORD, "not-the-password");
    let line = config_error(&dir, &["--state", &wrong]);
    assert!(line.contains("password authentication failed"), "{line}");
    assert!(line.contains("check the user and password"), "{line}");
    assert!(!line.contains("not-the-password"), "{line}");
    let nowhere = format!("postgres://postgres@127.0.0.1:{}/x", free_port().port());
    let line = config_error(&dir, &["--state", &nowhere]);
    assert!(line.contains("cannot connect to PostgreSQL at"), "{line}");
    assert!(line.contains("is the server running"), "{line}");
    let missing = pg.url("no_such_database");
    let line = config_error(&dir, &["--state", &missing]);
    assert!(line.contains("does not exist"), "{line}");
    let tls = format!("{url}?sslmode=require");
    let line = config_error(&dir, &["--state", &tls]);
    assert!(line.contains("TLS"), "{line}");
}

/// The server is stopped (as by a crash) and started again while
/// messages flow: calls wait or fail with 503/504, nothing acknowledged is
/// lost, and the host carries on by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load_loses_nothing_acknowledged() {
    let pg = Postgres::start();
    let url = pg.database().await;
    let dir = PluginDir::new();
    dir.plugin("counter", COUNTER);
    let h = TestHost::start_with(dir, Some(&url)).await;
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let admin = h.admin.clone();
            tokio::spawn(async move {
                let mut acked = 0u64;
                let mut statuses = Vec::new();
                let until = Instant::now() + Duration::from_secs(8);
                while Instant::now() < until {
                    match admin.try_send("counter", "hello").await {
                        Ok(a) if a.status == 200 => {
                            acked = acked.max(a.text().parse().unwrap());
                        }
                        Ok(a) => statuses.push((a.status, a.text())),
                        Err(_) => statuses.push((0, "connection".into())),
                    }
                }
                (acked, statuses)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    pg.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.restart();
    let mut acked = 0;
    for s in senders {
        let (a, statuses) = s.await.unwrap();
        acked = acked.max(a);
        for (status, text) in statuses {
            assert!(matches!(status, 503 | 504), "{status}: {text}");
        }
    }
    assert!(acked > 0);
    // Back by itself, and every acknowledged increment is there.
    let deadline = Instant::now() + Duration::from_secs(30);
    let now = loop {
        let a = h.send("counter", "hello").await;
        if a.status == 200 {
            break a.text().parse::<u64>().unwrap();
        }
        assert!(Instant::now() < deadline, "{}: {}", a.status, a.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(now > acked, "count {now} after {acked} acknowledged");
    h.stop().await;
}

/// A key PostgreSQL cannot hold (a NUL byte, or over 2 KiB) is an error to
/// the guest that wrote it, at `set`: it never reaches a group commit, where
/// it would fail every other plugin's commit beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_postgres_cannot_hold_is_an_error_to_its_guest_only() {
    let url = Postgres::shared().database().await;
    let dir = PluginDir::new();
    dir.plugin("a", wasm_sup_tests::PROBE)
        .plugin("b", wasm_sup_tests::PROBE);
    let h = TestHost::start_with(dir, Some(&url)).await;
    let long = format!("set {} v", "k".repeat(3000));
    for bad in ["set a\0b v", long.as_str()] {
        let r = h.send("a", bad).await;
        assert_eq!(r.status, 422, "{}", r.text());
        assert!(
            r.text().contains("PostgreSQL state backend"),
            "{}",
            r.text()
        );
    }
    h.send("a", "set fine v").await.ok();
    assert_eq!(h.send("a", "get fine").await.ok(), "v");
    assert_eq!(h.send("b", "incr n").await.ok(), "1");
    h.stop().await;
}
