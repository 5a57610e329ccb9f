//! Real `wasm-sup` nodes of a cluster for the figures that need them
//! (failover, durable messages across nodes): spawned on a folder and the
//! test setup's PostgreSQL with a 2 s lease, each logging to `NAME.log` in
//! the folder.

use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The lease the nodes run with.
pub const LEASE: Duration = Duration::from_secs(2);

/// One node process; killed when dropped.
pub struct Node {
    pub name: String,
    pub addr: String,
    pub child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Node `name` of the cluster on database `url`, running folder `dir`.
pub fn spawn(bin: &Path, dir: &Path, url: &str, name: &str) -> Result<Node> {
    start(bin, dir, &["--cluster", url, "--node", name], name)
}

/// `wasm-sup run DIR ARGS` on a free port, logging to `NAME.log` in `dir`.
pub fn start(bin: &Path, dir: &Path, args: &[&str], name: &str) -> Result<Node> {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .to_string();
    let child = Command::new(bin)
        .arg("run")
        .arg(dir)
        .args(args)
        .args(["--admin", &addr])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log")))?)
        .spawn()
        .context("spawn wasm-sup")?;
    Ok(Node {
        name: name.to_string(),
        addr,
        child,
    })
}

pub async fn ready(http: &reqwest::Client, node: &Node) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let url = format!("http://{}/readyz", node.addr);
        if http.get(url).send().await.is_ok_and(|r| r.status() == 200) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("node {} never became ready", node.name)
}

/// The node running `kv`, asked through `via`.
pub async fn owner(http: &reqwest::Client, via: &Node) -> Result<Option<String>> {
    let r = http
        .get(format!("http://{}/v1/plugins/kv", via.addr))
        .send()
        .await?;
    if r.status() != 200 {
        return Ok(None);
    }
    let v: serde_json::Value = r.json().await?;
    Ok(v["owner"].as_str().map(str::to_string))
}
