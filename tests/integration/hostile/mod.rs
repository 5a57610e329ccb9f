//! The hostile suite (issue 14): what a plugin or a client can do to the
//! host, one case per test, each checked the same way by [`Arena`]:
//!
//! - the host is alive (`/healthz` answers; a host process has not exited);
//! - a canary plugin beside the hostile one still answers, with its count
//!   exactly one more than at the last check;
//! - committed state is intact: a key planted before the attack, in the
//!   canary and in every probe plugin named to [`Arena::plant`], still reads
//!   back;
//! - the hostile call got the right status and crash cause
//!   ([`expect_crash`], [`expect_error`]);
//! - nothing escaped the sandbox (each case checks what it could have
//!   touched: a sentinel file, a listener that must see no connection).
//!
//! The cases are grouped by what they attack: the guest's view of the world
//! ([`world`]: files, environment, network), its limits ([`limits`]: fuel,
//! time, memory, tables, stack, replies, output, quotas), other plugins and
//! its own lifecycle ([`peers`]: buckets, mailboxes, timers, exit, `init`,
//! `health.check`, `shutdown`), and what an operator or client hands the host
//! ([`inputs`]: plugin files, configs, admin API requests).

mod inputs;
mod limits;
mod peers;
mod world;

use crate::util::{Admin, Answer, HostProcess, PluginDir, TestHost};
use wasm_sup_tests::PROBE;

/// The canary's name.
pub const CANARY: &str = "canary";
/// The key [`Arena::plant`] commits, and its value.
pub const PLANTED_KEY: &str = "planted";
pub const PLANTED_VALUE: &str = "before-the-attack";

/// The host under attack: in this process, or the `wasm-sup` binary.
enum Target {
    InProcess(TestHost),
    Process(HostProcess),
}

/// A host with a canary beside the hostile plugins; see the module doc.
pub struct Arena {
    target: Target,
    /// The canary's count at the last check.
    canary: u64,
    /// Plugins whose planted key must stay intact.
    planted: Vec<String>,
}

impl Arena {
    /// Runs DIR in this process (memory backend) with a canary added.
    pub async fn start(dir: PluginDir) -> Arena {
        dir.plugin(CANARY, PROBE);
        Self::begin(Target::InProcess(TestHost::start(dir).await)).await
    }

    /// Runs DIR with the `wasm-sup` binary (and `extra` arguments) with a
    /// canary added. The caller keeps DIR alive.
    pub async fn start_process(dir: &PluginDir, extra: &[&str]) -> Arena {
        dir.plugin(CANARY, PROBE);
        Self::begin(Target::Process(HostProcess::start(dir.path(), extra).await)).await
    }

    async fn begin(target: Target) -> Arena {
        let mut arena = Arena {
            target,
            canary: 0,
            planted: Vec::new(),
        };
        arena.plant(CANARY).await;
        arena.assert_contained().await;
        arena
    }

    pub fn admin(&self) -> &Admin {
        match &self.target {
            Target::InProcess(h) => &h.admin,
            Target::Process(p) => &p.admin,
        }
    }

    /// The host process, for its log and CLI (None in process).
    pub fn process(&mut self) -> Option<&mut HostProcess> {
        match &mut self.target {
            Target::InProcess(_) => None,
            Target::Process(p) => Some(p),
        }
    }

    /// The plugin directory of an in-process host.
    pub fn dir(&self) -> Option<&PluginDir> {
        match &self.target {
            Target::InProcess(h) => Some(&h.dir),
            Target::Process(_) => None,
        }
    }

    pub async fn send(&self, plugin: &str, message: impl Into<Vec<u8>>) -> Answer {
        self.admin().send(plugin, message).await
    }

    /// Commits the planted key in `plugin` (a probe) and checks it from then on.
    pub async fn plant(&mut self, plugin: &str) {
        let a = self
            .send(plugin, format!("set {PLANTED_KEY} {PLANTED_VALUE}"))
            .await;
        assert_eq!(a.ok(), "ok", "planting state in {plugin}");
        self.planted.push(plugin.to_string());
    }

    /// The containment check (see the module doc).
    pub async fn assert_contained(&mut self) {
        if let Target::Process(p) = &mut self.target {
            let exited = p.child.try_wait().expect("try_wait");
            assert!(
                exited.is_none(),
                "the host died ({exited:?}):\n{}",
                p.log_text()
            );
        }
        let live = self.admin().get("/healthz").await;
        assert_eq!(live.status, 200, "/healthz: {}", live.text());
        self.canary += 1;
        let a = self.send(CANARY, "count").await;
        assert_eq!(a.ok(), self.canary.to_string(), "the canary's count moved");
        for plugin in &self.planted {
            let a = self.send(plugin, format!("get {PLANTED_KEY}")).await;
            assert_eq!(a.ok(), PLANTED_VALUE, "{plugin}'s committed state changed");
        }
    }

    /// Stops the host gracefully (in process) or with SIGTERM, and checks it
    /// exits 0.
    pub async fn stop(self) {
        match self.target {
            Target::InProcess(h) => {
                h.stop().await;
            }
            Target::Process(mut p) => {
                p.signal("TERM");
                let code = p.wait_exit(std::time::Duration::from_secs(60));
                assert_eq!(code, Some(0), "exit code:\n{}", p.log_text());
            }
        }
    }
}

/// `a` is a crash answered with `status` whose causes are all `cause`.
pub fn expect_crash(a: &Answer, status: u16, cause: &str) {
    assert_eq!(a.status, status, "{}", a.text());
    let causes = a.json()["causes"].clone();
    let list = causes
        .as_array()
        .unwrap_or_else(|| panic!("no causes: {}", a.text()));
    assert!(
        !list.is_empty() && list.iter().all(|c| c == cause),
        "want every cause {cause}, got {causes}"
    );
}

/// `a` is the guest's `Err` (HTTP 422) whose reason contains `needle`.
pub fn expect_error(a: &Answer, needle: &str) {
    assert_eq!(a.status, 422, "{}", a.text());
    assert!(a.text().contains(needle), "want {needle:?} in {}", a.text());
}
