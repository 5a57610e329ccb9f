//! The `wasm-sup` binary as a user runs it: the CLI, graceful and abrupt
//! shutdown, and the kill -9 test.

use crate::util::{HostProcess, PluginDir, wasm_sup_bin};
use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use wasm_sup_tests::{COUNTER, MINIMAL, PROBE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_send_prints_the_reply_and_exit_codes_say_what_happened() {
    let dir = PluginDir::new();
    dir.plugin("counter", COUNTER)
        .plugin("probe", PROBE)
        .plugin("echo", MINIMAL);
    let host = HostProcess::start(dir.path(), &[]).await;
    assert_eq!(
        host.cli(&["send", "counter", "hi"]),
        (0, "1".into(), String::new())
    );
    // --file sends bytes as they are, and the reply is printed as it is.
    let bytes = dir.path().join("msg.bin");
    std::fs::write(&bytes, b"\x00\x01\xff\n").unwrap();
    let out = Command::new(wasm_sup_bin())
        .args([
            "send",
            "echo",
            "--file",
            bytes.to_str().unwrap(),
            "--admin",
            &host.admin.addr.to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"\x00\x01\xff\n");
    let (code, _, err) = host.cli(&["send", "probe", "err nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("422") && err.contains("nope"), "{err}");
    let (code, _, err) = host.cli(&["send", "counter", "crash"]);
    assert_eq!(code, 1);
    assert!(err.contains("dead-lettered"), "{err}");
    let (code, _, err) = host.cli(&["send", "ghost", "hi"]);
    assert_eq!(code, 1);
    assert!(err.contains("404"), "{err}");
    let (code, out, _) = host.cli(&["status"]);
    assert_eq!(code, 0);
    assert!(out.contains("counter") && out.contains("running"), "{out}");
    // Connection errors are exit 2 with a hint.
    let out = Command::new(wasm_sup_bin())
        .args([
            "send",
            "counter",
            "hi",
            "--admin",
            &crate::util::free_port().to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is `wasm-sup run` running?"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_graceful_and_a_second_signal_exits_at_once() {
    let dir = PluginDir::new();
    dir.plugin("probe", PROBE);
    let mut host = HostProcess::start(dir.path(), &[]).await;
    host.admin.send("probe", "set k v").await.ok();
    host.signal("TERM");
    assert_eq!(
        host.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        host.log_text()
    );
    assert!(host.log_text().contains("stopped"));

    let mut host = HostProcess::start(dir.path(), &[]).await;
    assert_eq!(host.admin.send("probe", "get k").await.ok(), "v");
    assert_eq!(host.admin.send("probe", "get shutdowns").await.ok(), "1");
    // A call in flight when the first signal arrives holds the shutdown up;
    // the second signal exits at once.
    let admin = host.admin.clone();
    let busy = tokio::spawn(async move { admin.try_send("probe", "sleep 4000").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    host.signal("INT");
    tokio::time::sleep(Duration::from_millis(200)).await;
    host.signal("INT");
    assert_eq!(host.wait_exit(Duration::from_secs(2)), Some(130));
    let _ = busy.await;
    let host = HostProcess::start(dir.path(), &[]).await;
    assert_eq!(
        host.admin.send("probe", "get k").await.ok(),
        "v",
        "committed state intact"
    );
}

/// Kills the host with SIGKILL at random moments under load, many times; after
/// each restart every acknowledged write is present and no write is partial.
/// Rounds: `WASM_SUP_KILL_ROUNDS` (default 12).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_write_and_leaves_no_partial_one() {
    let rounds: u64 = std::env::var("WASM_SUP_KILL_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    const CLIENTS: u64 = 4;
    let dir = PluginDir::new();
    dir.plugin("kv", PROBE);
    // Per client: highest acknowledged and highest sent sequence number.
    let mut acked: HashMap<u64, u64> = HashMap::new();
    let mut sent: HashMap<u64, u64> = HashMap::new();
    let (mut incr_acked, mut incr_sent) = (0u64, 0u64);
    let mut total_acked = 0;
    for round in 0..rounds {
        let host = HostProcess::start(dir.path(), &[]).await;
        // Check what the previous round left.
        for c in 0..CLIENTS {
            let got = host
                .admin
                .send("kv", format!("get-many a{c},b{c}"))
                .await
                .ok();
            let (a, b) = parse_pair(&got, c);
            assert_eq!(
                a, b,
                "round {round}: client {c}: a partial write survived: {got}"
            );
            let seq = a.unwrap_or(0);
            assert!(
                seq >= acked.get(&c).copied().unwrap_or(0),
                "round {round}: client {c}: acknowledged write {} lost, found {seq}",
                acked[&c]
            );
            assert!(
                seq <= sent.get(&c).copied().unwrap_or(0),
                "round {round}: client {c}: {seq} was never sent"
            );
        }
        let total: u64 = match host.admin.send("kv", "get total").await {
            a if a.status == 200 => a.text().parse().unwrap(),
            _ => 0,
        };
        assert!(
            total >= incr_acked && total <= incr_sent,
            "round {round}: total {total} not in {incr_acked}..={incr_sent}"
        );
        incr_acked = total;
        incr_sent = total;

        // Load, then SIGKILL at a random moment.
        let incr_ok = Arc::new(AtomicU64::new(0));
        let incr_tried = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let admin = host.admin.clone();
            let start = acked
                .get(&c)
                .copied()
                .unwrap_or(0)
                .max(sent.get(&c).copied().unwrap_or(0));
            let (ok, tried) = (incr_ok.clone(), incr_tried.clone());
            tasks.push(tokio::spawn(async move {
                let (mut last_acked, mut last_sent) = (None, start);
                for seq in start + 1.. {
                    last_sent = seq;
                    let msg = if seq % 3 == 0 {
                        "incr total".to_string()
                    } else {
                        format!("set-many a{c}={seq},b{c}={seq}")
                    };
                    if seq % 3 == 0 {
                        tried.fetch_add(1, Ordering::SeqCst);
                    }
                    match admin.try_send("kv", msg).await {
                        Ok(a) if a.status == 200 => {
                            if seq % 3 == 0 {
                                ok.fetch_add(1, Ordering::SeqCst);
                            } else {
                                last_acked = Some(seq);
                            }
                        }
                        _ => break,
                    }
                }
                (c, last_acked, last_sent)
            }));
        }
        let wait = 100 + (rand_u64(round) % 400);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let mut host = host;
        host.signal("KILL");
        host.wait_exit(Duration::from_secs(5));
        for t in tasks {
            let (c, last_acked, last_sent) = t.await.unwrap();
            if let Some(a) = last_acked {
                acked.insert(c, a);
                total_acked += 1;
            }
            sent.insert(c, last_sent);
        }
        incr_acked += incr_ok.load(Ordering::SeqCst);
        incr_sent += incr_tried.load(Ordering::SeqCst);
    }
    assert!(total_acked > 0, "no write was ever acknowledged");
    eprintln!(
        "kill -9: {rounds} rounds, {} acknowledged increments, last sequence numbers {acked:?}",
        incr_acked
    );
}

fn parse_pair(got: &str, c: u64) -> (Option<u64>, Option<u64>) {
    let mut it = got.split(',').map(|kv| {
        let v = kv.split_once('=').map(|x| x.1).unwrap_or("<none>");
        if v == "<none>" {
            None
        } else {
            Some(
                v.parse::<u64>()
                    .unwrap_or_else(|_| panic!("client {c}: bad value {kv}")),
            )
        }
    });
    (it.next().flatten(), it.next().flatten())
}

/// A cheap deterministic spread of kill moments per round.
fn rand_u64(round: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    (round.wrapping_mul(2654435761) ^ nanos).wrapping_mul(6364136223846793005) >> 33
}
