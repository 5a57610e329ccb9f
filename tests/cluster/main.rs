//! Cluster mode with real processes: three `wasm-sup run --cluster` nodes on
//! loopback sharing one plugin folder and the test setup's own PostgreSQL,
//! with leases of 2 s (DESIGN.md, "Cluster mode" and "Cluster, precisely").
//! The tests run one at a time (each holds [`ONE_AT_A_TIME`]): they kill,
//! pause and drain nodes and restart the database.
//!
//! The invariant every fault test checks: four clients do increments, each
//! with an `Idempotency-Key` and retried (through any node) until
//! acknowledged; at the end the counter equals the number of acknowledged
//! increments (none lost) and no acknowledged value repeats (none applied
//! twice).

#[allow(
    dead_code,
    unused_imports,
    reason = "the integration suite's helpers; this binary uses some of them"
)]
#[path = "../integration/util.rs"]
mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use util::{Admin, Answer, HostProcess, PluginDir};
use wasm_sup_tests::PROBE;
use wasm_sup_tests::postgres::Postgres;

mod life;

/// The lease every test runs with.
const LEASE: Duration = Duration::from_secs(2);

/// Held by each test for its whole run.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Three nodes (`n0`, `n1`, `n2`) on one database and one folder.
struct Cluster {
    /// Dropped before the folder, after the nodes.
    nodes: Vec<Option<HostProcess>>,
    dir: PluginDir,
    /// When each node has a folder of its own (a rolling deploy), node
    /// `i`'s; otherwise every node runs `dir`.
    apart: Vec<PluginDir>,
    url: String,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Cluster {
    async fn start(plugins: &[&str]) -> Cluster {
        Cluster::start_with(plugins, "").await
    }

    /// [`Cluster::start`] with more of `wasm-sup.toml` (e.g. groups).
    async fn start_with(plugins: &[&str], config: &str) -> Cluster {
        let mut c = Cluster::without_nodes(plugins, config).await;
        for i in 0..3 {
            let node = c.spawn(i).await;
            c.nodes.push(Some(node));
        }
        c.settled(plugins).await;
        c
    }

    /// The folder and the database of a cluster, no node started yet.
    async fn without_nodes(plugins: &[&str], config: &str) -> Cluster {
        let turn = ONE_AT_A_TIME.lock().await;
        let dir = PluginDir::new();
        // A call may outlive a pause of a few leases (the paused-node test).
        dir.config(&format!(
            "[host]\nlease = \"{}ms\"\n[defaults]\ntimeout = \"30s\"\n{config}",
            LEASE.as_millis()
        ));
        for p in plugins {
            dir.plugin(p, PROBE);
        }
        let url = Postgres::shared().database().await;
        Cluster {
            _turn: turn,
            dir,
            apart: Vec::new(),
            url,
            nodes: Vec::new(),
        }
    }

    /// Waits until placement settles: two leases after the last node
    /// joined (when rebalancing may begin), until no plugin has moved for
    /// a lease and a second (a node hands over at most one unit a lease).
    async fn settled(&self, plugins: &[&str]) -> BTreeMap<String, String> {
        tokio::time::sleep(LEASE * 2).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = self.wait_owned(plugins, Duration::from_secs(30)).await;
        let mut since = Instant::now();
        while since.elapsed() < LEASE + Duration::from_secs(1) {
            assert!(
                Instant::now() < deadline,
                "placement never settled: {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = self.wait_owned(plugins, Duration::from_secs(30)).await;
            if now != last {
                last = now;
                since = Instant::now();
            }
        }
        last
    }

    async fn spawn(&self, i: usize) -> HostProcess {
        let name = format!("n{i}");
        let dir = self.apart.get(i).unwrap_or(&self.dir);
        HostProcess::start(dir.path(), &["--cluster", &self.url, "--node", &name]).await
    }

    fn node(&self, i: usize) -> &HostProcess {
        self.nodes[i].as_ref().expect("node running")
    }

    fn admins(&self) -> Vec<Admin> {
        self.nodes
            .iter()
            .flatten()
            .map(|n| n.admin.clone())
            .collect()
    }

    /// `GET /v1/cluster` through node `i`.
    async fn nodes_of(&self, i: usize) -> serde_json::Value {
        self.node(i).admin.get("/v1/cluster").await.json()
    }

    /// The name of the node that runs `plugin`, asked through each node in
    /// turn (one that does not answer within a second, e.g. a paused one,
    /// is skipped).
    async fn owner(&self, plugin: &str) -> Option<String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .expect("an HTTP client");
        for a in self.admins() {
            let url = format!("http://{}/v1/plugins/{plugin}", a.addr);
            let Ok(r) = http.get(url).send().await else {
                continue;
            };
            if r.status() == 200 {
                let v: serde_json::Value = r.json().await.ok()?;
                return v["owner"].as_str().map(str::to_string);
            }
        }
        None
    }

    fn index_of(&self, node: &str) -> usize {
        node.trim_start_matches('n').parse().expect("node name nI")
    }

    /// Waits until every plugin of `plugins` runs on exactly one live node.
    async fn wait_owned(&self, plugins: &[&str], within: Duration) -> BTreeMap<String, String> {
        let deadline = Instant::now() + within;
        loop {
            let mut owners: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let mut live = 0;
            for (i, n) in self.nodes.iter().enumerate() {
                let Some(n) = n else { continue };
                live += 1;
                let list = n.admin.get("/v1/plugins").await;
                if list.status != 200 {
                    continue;
                }
                for p in list.json()["plugins"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                {
                    // This node's own plugins: those it lists as its own.
                    if p["owner"] == format!("n{i}") && p["status"] == "running" {
                        owners
                            .entry(p["name"].as_str().unwrap().to_string())
                            .or_default()
                            .push(format!("n{i}"));
                    }
                }
            }
            let done = live > 0
                && plugins.iter().all(|p| {
                    owners.get(*p).is_some_and(|o| {
                        // Each node's list shows every plugin once; count
                        // distinct owners.
                        o.iter().collect::<BTreeSet<_>>().len() == 1
                    })
                });
            if done {
                return owners.into_iter().map(|(p, o)| (p, o[0].clone())).collect();
            }
            assert!(
                Instant::now() < deadline,
                "plugins {plugins:?} never each ran on one node: {owners:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    /// Every acknowledged value of the counter.
    values: Vec<u64>,
    /// When each acknowledged attempt was sent, and when it was answered.
    times: Vec<(Instant, Instant)>,
    /// Answers other than 200, by status and body.
    errors: Vec<String>,
}

/// Four clients doing keyed increments of `key` on plugin `plugin` through
/// the nodes' admin addresses, until `stop`; each increment retried with
/// its key until acknowledged.
fn clients(
    admins: Vec<Admin>,
    plugin: &'static str,
    key: &'static str,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Tally>> {
    (0..4)
        .map(|c| {
            let admins = admins.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut turn = c;
                for seq in 0u64.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let idem = format!("client{c}-{seq}-{}", std::process::id());
                    loop {
                        turn += 1;
                        let admin = &admins[turn % admins.len()];
                        let sent = Instant::now();
                        match keyed(admin, plugin, &idem, format!("incr {key}")).await {
                            Ok(a) if a.status == 200 => {
                                tally.values.push(a.text().parse().expect("a count"));
                                tally.times.push((sent, Instant::now()));
                                break;
                            }
                            Ok(a) => tally.errors.push(format!("{} {}", a.status, a.text())),
                            Err(e) => tally.errors.push(format!("connection: {e}")),
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                tally
            })
        })
        .collect()
}

/// A keyed send that reports a connection failure instead of panicking.
async fn keyed(
    admin: &Admin,
    plugin: &str,
    key: &str,
    message: String,
) -> Result<Answer, reqwest::Error> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(40))
        .build()?;
    let r = http
        .post(format!(
            "http://{}/v1/plugins/{plugin}/messages",
            admin.addr
        ))
        .header("idempotency-key", key)
        .body(message)
        .send()
        .await?;
    let status = r.status().as_u16();
    let body = r.bytes().await?.to_vec();
    Ok(Answer { status, body })
}

/// Stops the clients and checks the invariant against the counter's value
/// read through `admin`; returns every acknowledgement's time.
async fn settle(
    admin: &Admin,
    plugin: &str,
    key: &str,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Tally>>,
) -> (Vec<(Instant, Instant)>, Vec<String>) {
    stop.store(true, Ordering::SeqCst);
    let mut values = Vec::new();
    let mut times = Vec::new();
    let mut errors = Vec::new();
    for t in tasks {
        let tally = t.await.expect("client");
        values.extend(tally.values);
        times.extend(tally.times);
        errors.extend(tally.errors);
    }
    let total = admin.send(plugin, format!("get {key}")).await.ok();
    let total: u64 = total.parse().expect("a count");
    let distinct: BTreeSet<u64> = values.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        values.len(),
        "an acknowledged value repeats (an increment applied twice)"
    );
    assert_eq!(
        total,
        values.len() as u64,
        "the counter is {total}, but {} increments were acknowledged",
        values.len()
    );
    assert_eq!(
        distinct,
        (1..=total).collect::<BTreeSet<u64>>(),
        "the acknowledged values are not 1..={total}"
    );
    assert!(total > 0, "no increment was acknowledged");
    (times, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_unit_has_one_owner_and_any_node_serves_any_plugin() {
    let plugins = ["a", "b", "c", "d", "e", "f"];
    // A top-level group (with a nested one) is one unit: its plugins run
    // on one node.
    let groups =
        "[groups.g]\nmembers = [\"e\"]\n[groups.inner]\nparent = \"g\"\nmembers = [\"f\"]\n";
    let c = Cluster::start_with(&plugins, groups).await;
    let owners = c.settled(&plugins).await;
    assert_eq!(
        owners["e"], owners["f"],
        "a group's plugins on one node: {owners:?}"
    );
    // Spread: rendezvous hashing gives six units to more than one node
    // (the first node up claims them all; rebalancing hands them over).
    let used: BTreeSet<&String> = owners.values().collect();
    assert!(used.len() > 1, "every unit on one node: {owners:?}");

    // `/v1/cluster` agrees with the plugin lists, from any node.
    for i in 0..3 {
        let nodes = c.nodes_of(i).await;
        let nodes = nodes["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 3, "{nodes:?}");
        for n in nodes {
            let name = n["name"].as_str().unwrap();
            assert_eq!(n["self"], name == format!("n{i}"));
            assert!(n["address"].as_str().unwrap().starts_with("127.0.0.1:"));
            assert!(n["lease_expires_at"].as_str().unwrap().ends_with('Z'));
            let listed: BTreeSet<String> = n["plugins"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_string())
                .collect();
            let expected: BTreeSet<String> = owners
                .iter()
                .filter(|(_, o)| *o == name)
                .map(|(p, _)| p.clone())
                .collect();
            assert_eq!(listed, expected, "node {name}");
        }
    }

    // Every plugin answers through every node, and its state is one.
    for p in plugins {
        for (i, a) in c.admins().iter().enumerate() {
            assert_eq!(
                a.send(p, "incr n").await.ok(),
                (i + 1).to_string(),
                "{p} via n{i}"
            );
            let info = a.info(p).await;
            assert_eq!(info["owner"], owners[p].as_str(), "{p} via n{i}");
        }
    }
    // The cluster-wide list, from each node: every plugin once, with its owner.
    for a in c.admins() {
        let list = a.get("/v1/plugins").await.json();
        let got: BTreeMap<String, String> = list["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["owner"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(got, owners);
    }
    // A plugin no node has: 404 through any node.
    let r = c.node(0).admin.send("nope", "x").await;
    assert_eq!(r.status, 404, "{}", r.text());

    // `wasm-sup status` shows the owners and the nodes.
    let (code, out, err) = c.node(1).cli(&["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("OWNER") && out.contains("NODE"), "{out}");
    for (p, o) in &owners {
        assert!(
            out.lines()
                .any(|l| l.starts_with(p.as_str()) && l.contains(o.as_str())),
            "{p} on {o}:\n{out}"
        );
    }
    assert!(out.contains("n1 (this)"), "{out}");

    // Readiness per node: each holds its lease and runs what it owns.
    for a in c.admins() {
        assert_eq!(a.get("/readyz").await.status, 200);
    }

    // `wasm-sup move`, asked of a node that neither runs the plugin nor
    // receives it: the owner hands it over, its state goes with it, and
    // rebalancing leaves it where it was moved.
    let from = c.index_of(&owners["a"]);
    let to = (from + 1) % 3;
    let via = (from + 2) % 3;
    // The node it goes to says so on its event stream.
    let mut events = reqwest::Client::new()
        .get(format!(
            "http://{}/v1/events?plugin=a",
            c.node(to).admin.addr
        ))
        .send()
        .await
        .expect("event stream");
    let (code, out, err) = c.node(via).cli(&["move", "a", &format!("n{to}")]);
    assert_eq!(code, 0, "{out}{err}");
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.contains("owner-changed") {
        let chunk = tokio::time::timeout_at(deadline.into(), events.chunk())
            .await
            .unwrap_or_else(|_| panic!("no owner-changed event: {seen}"))
            .expect("event stream")
            .expect("event stream open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let expected = format!("\"node\":\"n{to}\"");
    assert!(
        seen.contains(&expected) && seen.contains(&format!("\"from\":\"n{from}\"")),
        "{seen}"
    );
    drop(events);
    assert!(out.contains(&format!("a: runs on n{to}")), "{out}");
    assert_eq!(
        c.owner("a").await.as_deref(),
        Some(format!("n{to}").as_str())
    );
    assert_eq!(c.node(from).admin.send("a", "incr n").await.ok(), "4");
    tokio::time::sleep(LEASE * 2).await;
    assert_eq!(
        c.owner("a").await.as_deref(),
        Some(format!("n{to}").as_str())
    );
    let (code, _, err) = c.node(via).cli(&["move", "a", "nowhere"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no live node named \"nowhere\""), "{err}");

    // A second process with a live node's name waits a lease and exits 2.
    let started = Instant::now();
    let out = std::process::Command::new(util::wasm_sup_bin())
        .args(["run"])
        .arg(c.dir.path())
        .args(["--cluster", &c.url, "--node", "n0", "--admin"])
        .arg(util::free_port().to_string())
        .output()
        .expect("run wasm-sup");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("n0") && err.contains(&c.node(0).admin.addr.to_string()),
        "{err}"
    );
    assert!(started.elapsed() < LEASE * 3, "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_owner_under_load_fails_over_within_lease_plus_2s_losing_nothing() {
    let mut c = Cluster::start(&["kv"]).await;
    let owner = c.owner("kv").await.expect("an owner");
    let victim = c.index_of(&owner);
    // The clients talk to the two nodes that survive.
    let survivors: Vec<Admin> = (0..3)
        .filter(|&i| i != victim)
        .map(|i| c.node(i).admin.clone())
        .collect();
    // A durable timer set on the owner fires on the next one.
    let r = survivors[0].send("kv", "send-after 2500 incr fired").await;
    assert_eq!(r.ok(), "scheduled");
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = clients(survivors.clone(), "kv", "total", stop.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed = Instant::now();
    let mut node = c.nodes[victim].take().unwrap();
    node.signal("KILL");
    node.wait_exit(Duration::from_secs(5));
    tokio::time::sleep(LEASE + Duration::from_secs(4)).await;
    let (times, errors) = settle(&survivors[0], "kv", "total", stop, tasks).await;
    // The first answer to a request sent after the kill (answers already
    // on their way at the kill do not count).
    let first = times
        .iter()
        .filter(|(sent, _)| *sent > killed)
        .map(|(_, answered)| *answered)
        .min()
        .expect("acknowledged after the kill");
    let failover = first.duration_since(killed);
    eprintln!(
        "failover: {failover:?} after kill -9 (lease {LEASE:?}); {} increments; errors seen: {}",
        times.len(),
        errors.len()
    );
    assert!(
        failover <= LEASE + Duration::from_secs(2),
        "failover took {failover:?}"
    );
    let now = c.owner("kv").await.expect("a new owner");
    assert_ne!(now, owner);
    assert_eq!(survivors[1].send("kv", "get fired").await.ok(), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_paused_past_its_lease_comes_back_owning_nothing_and_its_late_commit_is_refused() {
    let c = Cluster::start(&["kv"]).await;
    let owner = c.owner("kv").await.expect("an owner");
    let victim = c.index_of(&owner);
    let paused = c.node(victim).admin.clone();
    let others: Vec<Admin> = (0..3)
        .filter(|&i| i != victim)
        .map(|i| c.node(i).admin.clone())
        .collect();
    // A call whose write is still uncommitted when the node is paused.
    let slow =
        tokio::spawn(
            async move { keyed(&paused, "kv", "slow-1", "incr-slow total 800".into()).await },
        );
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.node(victim).signal("STOP");
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = clients(others.clone(), "kv", "total", stop.clone());
    // Another node takes over while this one sleeps.
    tokio::time::sleep(LEASE * 3).await;
    let now = c.owner("kv").await.expect("a new owner");
    assert_ne!(now, owner, "kv still on the paused node");
    c.node(victim).signal("CONT");
    let late = slow.await.unwrap().expect("the paused node answers");
    assert_eq!(late.status, 503, "{}", late.text());
    assert_eq!(late.json()["status"], "owner-lost", "{}", late.text());
    // It comes back as a new incarnation owning nothing.
    let back = c
        .node(victim)
        .wait_log("a new incarnation", |l| l.contains("new incarnation"))
        .await;
    assert!(
        back.contains("owner-lost") || back.contains("lapsed"),
        "{back}"
    );
    tokio::time::sleep(LEASE).await;
    let nodes = c.nodes_of(victim).await;
    let me = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["self"] == true)
        .cloned()
        .unwrap();
    assert_eq!(me["plugins"], serde_json::json!([]), "{nodes}");
    let metrics = c.node(victim).admin.get("/metrics").await.text();
    let lost = util::scrape(&metrics);
    assert!(
        lost.iter()
            .any(|(k, v)| k.starts_with("wasm_sup_owner_lost_total") && *v >= 1.0),
        "{metrics}"
    );
    // The refused increment is not in the count.
    tokio::time::sleep(Duration::from_millis(500)).await;
    settle(&others[0], "kv", "total", stop, tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_node_and_no_caller_sees_an_error() {
    let mut c = Cluster::start(&["kv", "other"]).await;
    let owner = c.owner("kv").await.expect("an owner");
    let victim = c.index_of(&owner);
    let others: Vec<Admin> = (0..3)
        .filter(|&i| i != victim)
        .map(|i| c.node(i).admin.clone())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = clients(others.clone(), "kv", "total", stop.clone());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut node = c.nodes[victim].take().unwrap();
    let drained = Instant::now();
    node.signal("TERM");
    assert_eq!(
        node.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        node.log_text()
    );
    assert!(node.log_text().contains("drained"), "{}", node.log_text());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (times, errors) = settle(&others[0], "kv", "total", stop, tasks).await;
    assert!(
        errors.is_empty(),
        "callers saw errors during the drain: {errors:?}"
    );
    assert!(
        times.iter().any(|(sent, _)| *sent > drained),
        "nothing acknowledged after the drain"
    );
    let now = c.owner("kv").await.expect("a new owner");
    assert_ne!(now, owner);
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load_loses_nothing_and_the_cluster_resumes() {
    let c = Cluster::start(&["kv"]).await;
    let admins = c.admins();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = clients(admins.clone(), "kv", "total", stop.clone());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let pg = Postgres::shared();
    pg.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.restart();
    let back = Instant::now();
    // The cluster resumes by itself: kv answers again.
    let deadline = back + Duration::from_secs(30);
    loop {
        if c.owner("kv").await.is_some()
            && admins[0]
                .try_send("kv", "get total")
                .await
                .is_ok_and(|a| a.status == 200)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the cluster did not resume");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("resumed {:?} after PostgreSQL came back", back.elapsed());
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle(&admins[0], "kv", "total", stop, tasks).await;
}
