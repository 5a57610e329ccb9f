//! The plugin folder the chaos run drives: which plugins there are and what
//! each one is for ([`Kind`]), their settings (`wasm-sup.toml`), the messages
//! each kind is sent ([`Fleet::message`]), and the chaos done to the folder
//! while the host runs: live upgrades (the file replaced by the other of two
//! builds) and removals (the file deleted, put back a few seconds later).

use anyhow::{Context, Result};
use rand::Rng;
use rand::rngs::StdRng;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a plugin is in the run. All run the probe guest; the kind decides
/// its settings and its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `incr c` only; never removed. Its latency is the figure judged.
    Counter,
    /// `incr c`, and a quarter of its messages `crash`.
    Looper,
    /// `incr c`, and half its messages `grow 64` past a 16 MiB `memory`.
    Bomb,
    /// `incr c`, `print`, `log-many` and `send-many` at another flood.
    Flood,
    /// `spin` with a 100 ms `timeout`, from one sender at a time.
    Spinner,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Looper => "looper",
            Kind::Bomb => "bomb",
            Kind::Flood => "flood",
            Kind::Spinner => "spinner",
        }
    }
}

#[derive(Debug)]
pub struct Plugin {
    pub name: String,
    pub kind: Kind,
}

/// What the chaos did to the folder.
#[derive(Debug, Default, Clone, Copy)]
pub struct Done {
    /// Files replaced with the other build, renamed into place.
    pub upgrades_renamed: u64,
    /// Files replaced with the other build, overwritten in place.
    pub upgrades_in_place: u64,
    pub removals: u64,
    pub readds: u64,
}

struct Folder {
    /// Which of the two builds each plugin's file holds.
    build: Vec<usize>,
    /// Removed plugins and when to put each back.
    removed: Vec<(usize, Instant)>,
    done: Done,
}

/// The plugins, their folder and the two builds their files alternate between.
pub struct Fleet {
    pub dir: PathBuf,
    pub plugins: Vec<Plugin>,
    builds: [Vec<u8>; 2],
    folder: Mutex<Folder>,
}

impl Fleet {
    /// Lays out `n` plugins in a new folder `dir` (an old one is removed):
    /// about 70% counters, 10% crash-loopers, 9% memory bombs, 10% floods
    /// and one spinner.
    pub fn create(dir: &Path, probe: &Path, n: usize) -> Result<Fleet> {
        anyhow::ensure!(
            n >= 6,
            "at least 6 plugins (one of each kind and two floods)"
        );
        let loopers = (n / 10).max(1);
        let floods = (n / 10).max(2);
        let bombs = (n * 9 / 100).max(1);
        let counters = n - loopers - floods - bombs - 1;
        let mut plugins = Vec::with_capacity(n);
        for (kind, count) in [
            (Kind::Counter, counters),
            (Kind::Looper, loopers),
            (Kind::Bomb, bombs),
            (Kind::Flood, floods),
            (Kind::Spinner, 1),
        ] {
            for i in 0..count {
                plugins.push(Plugin {
                    name: format!("{}-{i:02}", kind.label()),
                    kind,
                });
            }
        }
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir)?;
        let probe = std::fs::read(probe).with_context(|| format!("read {}", probe.display()))?;
        let builds = [probe.clone(), wasm_sup_tests::variant(&probe, "chaos-b")];
        for p in &plugins {
            std::fs::write(dir.join(format!("{}.wasm", p.name)), &builds[0])?;
        }
        std::fs::write(dir.join("wasm-sup.toml"), config(&plugins))?;
        Ok(Fleet {
            dir: dir.to_path_buf(),
            folder: Mutex::new(Folder {
                build: vec![0; plugins.len()],
                removed: Vec::new(),
                done: Done::default(),
            }),
            plugins,
            builds,
        })
    }

    pub fn count(&self, kind: Kind) -> usize {
        self.plugins.iter().filter(|p| p.kind == kind).count()
    }

    /// Indexes of the plugins of one kind.
    pub fn of(&self, kind: Kind) -> Vec<usize> {
        (0..self.plugins.len())
            .filter(|&i| self.plugins[i].kind == kind)
            .collect()
    }

    /// A message for plugin `i` of the load (the spinner has a sender of its
    /// own). `incr c` is the only increment the run verifies.
    pub fn message(&self, i: usize, floods: &[usize], rng: &mut StdRng) -> String {
        let roll = rng.random_range(0..100);
        match self.plugins[i].kind {
            Kind::Counter | Kind::Spinner => INCR.to_string(),
            Kind::Looper if roll < 25 => "crash".to_string(),
            Kind::Bomb if roll < 50 => "grow 64".to_string(),
            Kind::Flood if roll < 25 => "print 20000".to_string(),
            Kind::Flood if roll < 50 => "log-many 200 flooding".to_string(),
            Kind::Flood if roll < 75 => {
                let peer = floods[rng.random_range(0..floods.len())];
                format!("send-many {} 300 16", self.plugins[peer].name)
            }
            Kind::Looper | Kind::Bomb | Kind::Flood => INCR.to_string(),
        }
    }

    /// One act of chaos: puts back the removed files that are due, then
    /// either upgrades a random plugin (60%) or removes a random plugin that
    /// is not a counter (40%). Returns what it did, for the log.
    pub fn act(&self, rng: &mut StdRng) -> Result<String> {
        let mut did = self.readd_due(Instant::now())?;
        let mut folder = self.folder.lock().expect("folder lock");
        let upgrade = rng.random_bool(0.6);
        let candidates: Vec<usize> = (0..self.plugins.len())
            .filter(|&i| upgrade || self.plugins[i].kind != Kind::Counter)
            .filter(|&i| !folder.removed.iter().any(|r| r.0 == i))
            .collect();
        let Some(&i) = candidates.get(rng.random_range(0..candidates.len().max(1))) else {
            return Ok(did);
        };
        let name = &self.plugins[i].name;
        let path = self.dir.join(format!("{name}.wasm"));
        if upgrade {
            let next = 1 - folder.build[i];
            if rng.random_bool(0.5) {
                // The recommended way: written beside it, renamed over it.
                let tmp = self.dir.join(format!(".{name}.wasm.tmp"));
                std::fs::write(&tmp, &self.builds[next])?;
                std::fs::rename(&tmp, &path)?;
                folder.done.upgrades_renamed += 1;
            } else {
                // Overwritten in place: the host must wait for it to settle.
                std::fs::write(&path, &self.builds[next])?;
                folder.done.upgrades_in_place += 1;
            }
            folder.build[i] = next;
            let _ = write!(did, " upgrade {name} to build {next};");
        } else {
            std::fs::remove_file(&path)?;
            let back = Instant::now() + Duration::from_millis(rng.random_range(1000..5000));
            folder.removed.push((i, back));
            folder.done.removals += 1;
            let _ = write!(did, " remove {name};");
        }
        Ok(did)
    }

    /// Puts every removed file back (before a checkpoint and at the end).
    pub fn readd_all(&self) -> Result<String> {
        self.readd_due(Instant::now() + Duration::from_secs(3600))
    }

    fn readd_due(&self, now: Instant) -> Result<String> {
        let mut folder = self.folder.lock().expect("folder lock");
        let mut did = String::new();
        let mut k = 0;
        while k < folder.removed.len() {
            let (i, at) = folder.removed[k];
            if at > now {
                k += 1;
                continue;
            }
            folder.removed.swap_remove(k);
            let name = &self.plugins[i].name;
            let tmp = self.dir.join(format!(".{name}.wasm.tmp"));
            std::fs::write(&tmp, &self.builds[folder.build[i]])?;
            std::fs::rename(&tmp, self.dir.join(format!("{name}.wasm")))?;
            folder.done.readds += 1;
            let _ = write!(did, " re-add {name};");
        }
        Ok(did)
    }

    pub fn done(&self) -> Done {
        self.folder.lock().expect("folder lock").done
    }
}

/// The message whose acknowledgements the run counts.
pub const INCR: &str = "incr c";

/// `wasm-sup.toml`: fast restarts, and restart budgets (the plugins' and the
/// host's) that never run out, so crash-loopers keep restarting for the
/// whole run and no plugin is ever `failed`: the run checks that every
/// plugin is `running` again at each quiet checkpoint. Few crash reports and
/// dead letters are kept per plugin, so that what the host stores of them
/// reaches its bound within the warm-up and the checkpoints after it compare
/// steady states.
fn config(plugins: &[Plugin]) -> String {
    let mut toml = String::from(
        r#"# Written by wasm-sup-chaos.
[host]
max-restarts = 4_000_000_000
window = "1s"
crash-reports = 20
dead-letters = 50

[defaults]
reply-timeout = "20s"

[defaults.restart]
backoff = "exponential"
initial = "5ms"
max = "100ms"
reset-after = "1s"
max-restarts = 4_000_000_000
window = "1s"
cooldown = "1s"
"#,
    );
    for p in plugins {
        let settings = match p.kind {
            Kind::Counter | Kind::Looper => continue,
            Kind::Bomb => "memory = \"16MiB\"\nrestart = { max-attempts = 1 }\n",
            Kind::Flood => "output = \"1KiB\"\nmailbox = 256\nrestart = { max-attempts = 1 }\n",
            Kind::Spinner => "timeout = \"100ms\"\nrestart = { max-attempts = 1 }\n",
        };
        let _ = write!(toml, "\n[plugins.{}]\n{settings}", p.name);
    }
    toml
}
