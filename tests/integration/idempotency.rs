//! Idempotency keys on `POST …/messages` (DESIGN.md, "Idempotency keys,
//! precisely"), on both durable backends: kept answers, retries in flight,
//! 409 for another body, the window, the CLI, and a host killed with
//! SIGKILL between a commit and its reply.

use crate::on_both_backends;
use crate::util::{Backend, HostProcess, ONE_ATTEMPT, PluginDir, TestHost};
use std::io::Write;
use std::time::Duration;
use wasm_sup_tests::{COUNTER, PROBE};

fn dir() -> PluginDir {
    let dir = PluginDir::new();
    dir.plugin("counter", COUNTER)
        .plugin("probe", PROBE)
        .config(ONE_ATTEMPT);
    dir
}

async fn answers_are_kept_and_a_retry_is_not_handled_again(backend: Backend) {
    let state = backend.state().await;
    let h = TestHost::start_with(dir(), state.as_deref()).await;
    let a = &h.admin;
    assert_eq!(a.send_keyed("counter", "order-1", "hello").await.ok(), "1");
    assert_eq!(a.send_keyed("counter", "order-1", "hello").await.ok(), "1");
    assert_eq!(a.send_keyed("counter", "order-2", "hello").await.ok(), "2");
    // Without a key every message is handled.
    assert_eq!(h.send("counter", "hello").await.ok(), "3");
    // The same key with another body is refused; keys are per plugin.
    let conflict = a.send_keyed("counter", "order-1", "other").await;
    assert_eq!(conflict.status, 409, "{}", conflict.text());
    assert!(
        conflict.json()["error"]
            .as_str()
            .unwrap()
            .contains("order-1")
    );
    assert_eq!(a.send_keyed("probe", "order-1", "incr n").await.ok(), "1");
    // A 422 is kept as it was.
    let err = a.send_keyed("probe", "e-1", "set-then-err k v").await;
    assert_eq!(
        (err.status, err.text().as_str()),
        (422, "failed after write")
    );
    let again = a.send_keyed("probe", "e-1", "set-then-err k v").await;
    assert_eq!((again.status, again.body), (422, err.body));
    // A dead-lettered message is kept with its dead letter: the retry gets
    // the same one and makes no other.
    let dead = a.send_keyed("probe", "d-1", "crash").await;
    assert_eq!(dead.status, 500, "{}", dead.text());
    let again = a.send_keyed("probe", "d-1", "crash").await;
    assert_eq!((again.status, again.json()), (500, dead.json()));
    let letters = a.get("/v1/plugins/probe/dead-letters").await.json();
    assert_eq!(
        letters["dead_letters"].as_array().map(Vec::len),
        Some(1),
        "{letters}"
    );
    // Bad keys are 400.
    for bad in ["", "with space", &"k".repeat(256)] {
        let r = a.send_keyed("counter", bad, "hello").await;
        assert_eq!(r.status, 400, "{bad:?}: {}", r.text());
    }
    // A state reset keeps the kept answers.
    let reset = a
        .post(
            "/v1/plugins/counter/state/reset?confirm=counter",
            Vec::new(),
        )
        .await;
    assert_eq!(reset.status, 200, "{}", reset.text());
    assert_eq!(a.send_keyed("counter", "order-2", "hello").await.ok(), "2");
    assert_eq!(h.send("counter", "hello").await.ok(), "1");
    h.stop().await;
}

async fn a_retry_while_the_message_runs_waits_for_its_outcome(backend: Backend) {
    let state = backend.state().await;
    let h = TestHost::start_with(dir(), state.as_deref()).await;
    let a = h.admin.clone();
    let first = tokio::spawn(async move { a.send_keyed("probe", "slow", "sleep 700").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // In flight: the retry waits for the same outcome, another body is 409.
    let conflict = h.admin.send_keyed("probe", "slow", "sleep 1").await;
    assert_eq!(conflict.status, 409, "{}", conflict.text());
    let retry = h.admin.send_keyed("probe", "slow", "sleep 700").await;
    let first = first.await.unwrap();
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!((retry.status, retry.body), (first.status, first.body));
    h.stop().await;
}

async fn an_answer_older_than_the_window_is_forgotten(backend: Backend) {
    let state = backend.state().await;
    let dir = dir();
    dir.plugin_config("counter", "idempotency-window = \"1s\"\n");
    let h = TestHost::start_with(dir, state.as_deref()).await;
    assert_eq!(h.admin.send_keyed("counter", "k", "hello").await.ok(), "1");
    assert_eq!(h.admin.send_keyed("counter", "k", "hello").await.ok(), "1");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(h.admin.send_keyed("counter", "k", "hello").await.ok(), "2");
    h.stop().await;
}

/// SIGKILL after the message's commit and before the client read its
/// reply: the retry after the restart gets the kept answer, and the count
/// advanced once.
async fn a_host_killed_between_commit_and_reply_answers_the_retry_from_the_store(backend: Backend) {
    let dir = dir();
    let args = backend.args().await;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut host = HostProcess::start(dir.path(), &args).await;
    assert_eq!(host.admin.send("counter", "hello").await.ok(), "1");
    // Send the keyed message and never read the reply.
    let mut conn = std::net::TcpStream::connect(host.admin.addr).unwrap();
    write!(
        conn,
        "POST /v1/plugins/counter/messages HTTP/1.1\r\nhost: x\r\nidempotency-key: pay-42\r\ncontent-length: 5\r\n\r\nhello"
    )
    .unwrap();
    // Its commit is in once the committed count shows it.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let v = host
            .admin
            .get("/v1/plugins/counter/state/default/count")
            .await;
        if v.status == 200 && v.text().contains('2') {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never committed: {}",
            v.text()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    host.signal("KILL");
    host.wait_exit(Duration::from_secs(10));
    drop(conn);
    let host = HostProcess::start(dir.path(), &args).await;
    let retry = host.admin.send_keyed("counter", "pay-42", "hello").await;
    assert_eq!(retry.ok(), "2", "the kept answer");
    assert_eq!(
        host.admin.send("counter", "hello").await.ok(),
        "3",
        "advanced once"
    );
    // The CLI sends with a key too.
    let (code, out, err) = host.cli(&["send", "counter", "hello", "--idempotency-key", "pay-42"]);
    assert_eq!((code, out.trim()), (0, "2"), "{err}");
    let (code, _, err) = host.cli(&["send", "counter", "bye", "--idempotency-key", "pay-42"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("another body"), "{err}");
}

on_both_backends!(
    answers_are_kept_and_a_retry_is_not_handled_again,
    a_retry_while_the_message_runs_waits_for_its_outcome,
    an_answer_older_than_the_window_is_forgotten,
    a_host_killed_between_commit_and_reply_answers_the_retry_from_the_store,
);
