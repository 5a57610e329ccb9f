//! The compile cache: compiled components on disk, so that a host restart, a
//! rollback or a re-added file does not compile again.
//!
//! An entry is `SHA256-ENGINE.cwasm` in the cache folder, where `SHA256` is the
//! `.wasm` file's hash and `ENGINE` a hash of wasmtime's version and engine
//! settings ([`wasmtime::Engine::precompile_compatibility_hash`]): an entry
//! made by another wasmtime or another configuration is never looked up. An
//! entry holds a header (a magic line and the SHA-256 of the payload) and the
//! payload, `Component::serialize`. A lookup checks the header and the hash
//! before `Component::deserialize` sees a byte, so a truncated or corrupt entry
//! is detected, deleted and compiled again, never loaded; an entry wasmtime
//! refuses (stale) is treated the same way.
//!
//! The cache is bounded: after each store, the least recently used entries
//! (by modification time, refreshed on every hit) are deleted until the folder
//! fits its budget. Rollback markers live beside the entries
//! (see [`crate::compile::rollback`]). The folder and its entries are
//! owner-only ([`crate::private_files`]).
//!
//! Why not wasmtime's own cache (`Config::cache`): it does not check an entry's
//! contents before loading the machine code in it, its size bound is enforced
//! by a background worker after the fact, and it cannot tell the host whether
//! a component came from the cache, which the log and the metrics report.

use crate::private_files;
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8] = b"wasm-sup compiled component v1\n";
const HEADER: usize = MAGIC.len() + 32;
const EXT: &str = "cwasm";

/// What a lookup found.
pub enum Lookup {
    /// A valid entry.
    Hit(Component),
    /// No entry.
    Miss,
    /// An entry that failed its checks, and why; it has been deleted.
    Invalid(String),
}

/// The on-disk compile cache of one engine.
#[derive(Debug)]
pub struct CompileCache {
    dir: PathBuf,
    budget: u64,
    engine_key: String,
}

impl CompileCache {
    /// Opens (creating) the cache folder `dir`, bounded to `budget` bytes,
    /// for `engine`.
    pub fn open(dir: &Path, budget: u64, engine: &Engine) -> Result<CompileCache> {
        Self::open_variant(dir, budget, engine, "")
    }

    /// [`CompileCache::open`] for one of several engines whose compiled code
    /// is the same (wasmtime's compatibility hash does not see how instances
    /// are allocated): `variant` keeps their entries apart, so the host's
    /// on-demand fallback engine never reads, or deletes, the pooled
    /// engine's entries, nor they its.
    pub fn open_variant(
        dir: &Path,
        budget: u64,
        engine: &Engine,
        variant: &str,
    ) -> Result<CompileCache> {
        private_files::create_dir(dir)
            .with_context(|| format!("failed to create the compile cache {}", dir.display()))?;
        let mut hasher = HashWriter(Sha256::new());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
        if !variant.is_empty() {
            std::hash::Hash::hash(variant, &mut hasher);
        }
        let engine_key = crate::crash::hex(&hasher.0.finalize()[..8]);
        Ok(CompileCache {
            dir: dir.to_path_buf(),
            budget,
            engine_key,
        })
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.{EXT}", self.engine_key))
    }

    /// Looks up the component compiled from the file with this SHA-256.
    pub fn get(&self, engine: &Engine, sha256: &str) -> Lookup {
        let path = self.path(sha256);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Lookup::Miss,
            Err(e) => return self.invalid(&path, format!("cannot read it: {e}")),
        };
        if let Err(why) = verify(&bytes) {
            return self.invalid(&path, why);
        }
        match deserialize(engine, &bytes[HEADER..]) {
            Ok(c) => {
                // Refresh the entry's age for the least-recently-used bound.
                if let Ok(f) = std::fs::File::options().append(true).open(&path) {
                    let _ = f.set_modified(SystemTime::now());
                }
                Lookup::Hit(c)
            }
            Err(e) => self.invalid(&path, format!("wasmtime refused it: {e:#}")),
        }
    }

    fn invalid(&self, path: &Path, why: String) -> Lookup {
        let _ = std::fs::remove_file(path);
        Lookup::Invalid(format!("{}: {why}", path.display()))
    }

    /// Stores `component`, compiled from the file with this SHA-256, then
    /// trims the cache to its budget. Written to a temporary file and renamed,
    /// so a reader never sees half an entry.
    pub fn put(&self, sha256: &str, component: &Component) -> Result<()> {
        let payload = component
            .serialize()
            .map_err(anyhow::Error::from)
            .context("failed to serialize the component")?;
        let path = self.path(sha256);
        let tmp = self
            .dir
            .join(format!(".{sha256}.{}.tmp", std::process::id()));
        let digest = Sha256::digest(&payload);
        private_files::write(&path, &tmp, &[MAGIC, &digest, &payload])
            .with_context(|| format!("failed to write {}", path.display()))?;
        self.trim();
        Ok(())
    }

    /// Deletes the least recently used entries until the cache fits its budget.
    fn trim(&self) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut entries: Vec<(SystemTime, u64, PathBuf)> = dir
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == EXT))
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().ok()?, m.len(), e.path()))
            })
            .collect();
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        entries.sort();
        for (_, len, path) in entries {
            if total <= self.budget {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                tracing::debug!(entry = %path.display(), "compile cache over its budget: entry deleted");
                total -= len;
            }
        }
    }
}

/// Checks an entry's header and payload hash.
fn verify(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < HEADER || !bytes.starts_with(MAGIC) {
        return Err("not a wasm-sup cache entry (bad header)".into());
    }
    let (want, payload) = bytes[MAGIC.len()..].split_at(32);
    if Sha256::digest(payload).as_slice() != want {
        return Err("its contents do not match their hash (corrupt)".into());
    }
    Ok(())
}

#[expect(
    unsafe_code,
    reason = "Component::deserialize loads machine code; the bytes were checked against the hash written with them"
)]
fn deserialize(engine: &Engine, payload: &[u8]) -> Result<Component> {
    // SAFETY: `payload` is what `Component::serialize` wrote into this host's
    // cache folder (created private to the user running wasm-sup), and it
    // matches the SHA-256 stored with it, so it is not truncated or corrupted.
    // wasmtime itself checks that it was made by this version and engine
    // configuration. As with the state file, anyone who can write the cache
    // folder is trusted.
    unsafe { Component::deserialize(engine, payload) }.map_err(anyhow::Error::from)
}

/// Feeds a `Hash` value into SHA-256: a stable key, unlike `DefaultHasher`.
struct HashWriter(Sha256);

impl std::hash::Hasher for HashWriter {
    fn finish(&self) -> u64 {
        unreachable!("only the digest is used")
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(engine: &Engine, tag: u32) -> Component {
        let wat = format!("(component (core module (func (export \"f{tag}\"))))");
        Component::new(engine, wat::parse_str(&wat).unwrap()).unwrap()
    }

    fn entries(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == EXT))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_stored_entry_is_hit_and_a_damaged_one_is_deleted() {
        let engine = crate::engine::engine(false, 0).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::open(dir.path(), 1 << 30, &engine).unwrap();
        assert!(matches!(cache.get(&engine, "aa"), Lookup::Miss));
        cache.put("aa", &component(&engine, 1)).unwrap();
        assert!(matches!(cache.get(&engine, "aa"), Lookup::Hit(_)));

        let path = entries(dir.path()).pop().unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        match cache.get(&engine, "aa") {
            Lookup::Invalid(why) => assert!(why.contains("corrupt"), "{why}"),
            _ => panic!("a flipped bit was not detected"),
        }
        assert!(!path.exists(), "an invalid entry is deleted");

        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(cache.get(&engine, "aa"), Lookup::Invalid(_)));
    }

    #[test]
    fn hole12_the_folder_and_its_entries_are_owner_only() {
        let engine = crate::engine::engine(false, 0).unwrap();
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(".wasm-sup/cache");
        let cache = CompileCache::open(&dir, 1 << 30, &engine).unwrap();
        cache.put("aa", &component(&engine, 1)).unwrap();
        for d in [root.path().join(".wasm-sup"), dir.clone()] {
            assert_eq!(private_files::mode(&d).unwrap(), private_files::DIR_MODE);
        }
        for e in entries(&dir) {
            assert_eq!(private_files::mode(&e).unwrap(), private_files::FILE_MODE);
        }
    }

    #[test]
    fn another_engine_configuration_does_not_see_the_entry() {
        let plain = crate::engine::engine(false, 0).unwrap();
        // Without fuel metering the machine code differs.
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let unmetered = Engine::new(&config).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let a = CompileCache::open(dir.path(), 1 << 30, &plain).unwrap();
        let b = CompileCache::open(dir.path(), 1 << 30, &unmetered).unwrap();
        a.put("aa", &component(&plain, 1)).unwrap();
        assert!(matches!(b.get(&unmetered, "aa"), Lookup::Miss));
        assert!(matches!(a.get(&plain, "aa"), Lookup::Hit(_)));
    }

    #[test]
    fn the_least_recently_used_entries_go_past_the_budget() {
        let engine = crate::engine::engine(false, 0).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let probe = CompileCache::open(dir.path(), u64::MAX, &engine).unwrap();
        probe.put("size", &component(&engine, 0)).unwrap();
        let one = std::fs::metadata(&entries(dir.path())[0]).unwrap().len();
        std::fs::remove_file(&entries(dir.path())[0]).unwrap();

        // Room for two entries, not three.
        let cache = CompileCache::open(dir.path(), one * 2 + one / 2, &engine).unwrap();
        let old = SystemTime::now() - std::time::Duration::from_secs(60);
        for (i, sha) in ["aa", "bb"].iter().enumerate() {
            cache.put(sha, &component(&engine, i as u32)).unwrap();
            let f = std::fs::File::options()
                .append(true)
                .open(cache.path(sha))
                .unwrap();
            f.set_modified(old + std::time::Duration::from_secs(i as u64))
                .unwrap();
        }
        // A hit makes "aa" the most recently used.
        assert!(matches!(cache.get(&engine, "aa"), Lookup::Hit(_)));
        cache.put("cc", &component(&engine, 2)).unwrap();
        assert!(
            matches!(cache.get(&engine, "bb"), Lookup::Miss),
            "bb was evicted"
        );
        assert!(matches!(cache.get(&engine, "aa"), Lookup::Hit(_)));
        assert!(matches!(cache.get(&engine, "cc"), Lookup::Hit(_)));
    }
}
