//! Supervision groups (DESIGN.md, "Supervision tree"): strategies, order,
//! escalation, restart types inside groups, and auto-shutdown.

use crate::util::{PluginDir, TestHost};
use std::time::Duration;
use wasm_sup_tests::PROBE;

const WITHIN: Duration = Duration::from_secs(15);

const FAST: &str = r#"
[defaults.restart]
backoff = "immediate"
max-restarts = 100
max-attempts = 1
"#;

fn folder(plugins: &[&str], groups: &str) -> PluginDir {
    let dir = PluginDir::new();
    for p in plugins {
        dir.plugin(p, PROBE);
    }
    dir.config(&format!("{FAST}\n{groups}"));
    dir
}

/// Waits until every plugin runs with the given generation; returns their
/// infos.
async fn wait_generations(h: &TestHost, want: &[(&str, u64)]) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for (name, generation) in want {
        out.push(
            h.admin
                .wait_info(name, WITHIN, &format!("generation {generation}"), |i| {
                    i["generation"] == *generation && i["status"] == "running"
                })
                .await,
        );
    }
    // Nothing else moves meanwhile.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (name, generation) in want {
        let i = h.admin.info(name).await;
        assert_eq!(i["generation"], *generation, "{name}: {i}");
    }
    out
}

fn started(i: &serde_json::Value) -> u64 {
    i["started_at_us"].as_u64().expect("running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_strategy_restarts_exactly_its_members_in_start_order() {
    for (strategy, gens) in [
        ("one-for-one", [1, 2, 1]),
        ("one-for-all", [2, 2, 2]),
        ("rest-for-one", [1, 2, 2]),
    ] {
        let dir = folder(
            &["a", "b", "c", "z"],
            &format!("[groups.g]\nstrategy = \"{strategy}\"\nmembers = [\"c\", \"a\", \"b\"]\n"),
        );
        let h = TestHost::start(dir).await;
        wait_generations(&h, &[("c", 1), ("a", 1), ("b", 1), ("z", 1)]).await;
        // Declared order, not name order: c, a, b.
        let names = h.admin.plugin_names().await;
        assert_eq!(names, ["c", "a", "b", "z"], "{strategy}");

        assert_eq!(h.send("a", "crash").await.status, 500, "{strategy}");
        let infos = wait_generations(
            &h,
            &[("c", gens[0]), ("a", gens[1]), ("b", gens[2]), ("z", 1)],
        )
        .await;
        // Restarted members started in declared order, each after the one
        // before it.
        let restarted: Vec<&serde_json::Value> =
            infos[..3].iter().filter(|i| i["generation"] == 2).collect();
        for pair in restarted.windows(2) {
            assert!(
                started(pair[0]) < started(pair[1]),
                "{strategy}: {} started after {}",
                pair[0]["name"],
                pair[1]["name"]
            );
        }
        // Members stopped by their group ran lifecycle.shutdown.
        for i in &restarted {
            let name = i["name"].as_str().unwrap();
            if name != "a" {
                assert_eq!(h.send(name, "get shutdowns").await.ok(), "1", "{strategy}");
            }
        }
        let groups = h.admin.get("/v1/plugins").await.json()["groups"].clone();
        assert_eq!(groups[0]["name"], "g");
        assert_eq!(groups[0]["strategy"], strategy);
        assert_eq!(groups[0]["used"], 1, "{groups}");
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_past_its_intensity_escalates_through_two_levels() {
    let dir = folder(
        &["a", "b", "x", "z"],
        r#"
[groups.outer]
strategy = "one-for-one"
members = ["x", "inner"]
max-restarts = 1
[groups.inner]
strategy = "one-for-one"
members = ["a", "b"]
max-restarts = 1
"#,
    );
    let h = TestHost::start(dir).await;
    wait_generations(&h, &[("x", 1), ("a", 1), ("b", 1), ("z", 1)]).await;
    assert_eq!(h.send("a", "crash").await.status, 500);
    wait_generations(&h, &[("x", 1), ("a", 2), ("b", 1)]).await;
    // The second crash is one too many for inner: outer restarts inner whole.
    assert_eq!(h.send("a", "crash").await.status, 500);
    wait_generations(&h, &[("x", 1), ("a", 3), ("b", 2)]).await;
    // inner starts afresh; two more crashes exceed inner and then outer,
    // and the root restarts outer whole.
    assert_eq!(h.send("b", "crash").await.status, 500);
    wait_generations(&h, &[("x", 1), ("a", 3), ("b", 3)]).await;
    assert_eq!(h.send("b", "crash").await.status, 500);
    let infos = wait_generations(&h, &[("x", 2), ("a", 4), ("b", 4), ("z", 1)]).await;
    assert!(started(&infos[0]) < started(&infos[1]) && started(&infos[1]) < started(&infos[2]));
    let metrics = crate::util::scrape(&h.admin.get("/metrics").await.text());
    assert_eq!(metrics["wasm_sup_escalations_total{group=inner}"], 2.0);
    assert_eq!(metrics["wasm_sup_escalations_total{group=outer}"], 1.0);
    assert_eq!(metrics["wasm_sup_group_restarts_total{group=outer}"], 1.0);
    assert_eq!(metrics["wasm_sup_group_restarts_total{group=root}"], 1.0);
    let budget = h.admin.get("/v1/plugins").await.json()["budget"].clone();
    assert_eq!(
        budget["used"], 5,
        "4 plugin restarts and 1 escalation into the root: {budget}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_types_inside_a_group_and_auto_shutdown() {
    let dir = folder(
        &["t", "a", "worker", "helper"],
        r#"
[groups.all]
strategy = "one-for-all"
members = ["t", "a"]
[groups.job]
members = ["worker", "helper"]
auto-shutdown = "any-significant"
significant = ["worker"]
[plugins.t.restart]
type = "temporary"
[plugins.worker.restart]
type = "transient"
"#,
    );
    let h = TestHost::start(dir).await;
    wait_generations(&h, &[("t", 1), ("a", 1), ("worker", 1), ("helper", 1)]).await;

    // A temporary member that crashes is not restarted, and so restarts
    // nobody else.
    assert_eq!(h.send("t", "crash").await.status, 500);
    h.admin.wait_status("t", "stopped", WITHIN).await;
    wait_generations(&h, &[("a", 1)]).await;
    // A permanent one restarts the group: t stays stopped.
    assert_eq!(h.send("a", "crash").await.status, 500);
    wait_generations(&h, &[("a", 2)]).await;
    assert_eq!(h.admin.info("t").await["status"], "stopped");

    // A transient member that crashes is restarted (one-for-one)...
    assert_eq!(h.send("worker", "crash").await.status, 500);
    wait_generations(&h, &[("worker", 2), ("helper", 1)]).await;
    // ...and one that exits normally is not, and as the significant member
    // it shuts its group down.
    let _ = h.send("worker", "exit 0").await;
    h.admin.wait_status("worker", "stopped", WITHIN).await;
    let helper = h.admin.wait_status("helper", "stopped", WITHIN).await;
    assert!(
        helper["reason"].as_str().unwrap().contains("auto-shutdown"),
        "{helper}"
    );
    h.stop().await;
}
