//! Compile: a `.wasm` file into a [`Compiled`] plugin, checked against the
//! contract, ready to instantiate many times.
//!
//! Each plugin is compiled once and held as an `InstancePre`: a restart is a new
//! `Store` and an instantiation, never a compile. The checks, in order, each
//! give one line naming what is wrong: empty file, not wasm, a core module, a
//! component over a per-module limit of the instance pool ([`PoolMisfit`],
//! naming the limit, see [`crate::engine::pool_misfit`]), an invalid or
//! truncated component, no `handler` export (or one of the wrong
//! type), imports the host cannot satisfy.
//!
//! [`Loader`] puts the on-disk [`cache`] in front of compilation: a file whose
//! hash is in the cache is deserialized and checked, not compiled. With the
//! instance pool on, a component over one of the pool's per-module limits is
//! not refused: the loader compiles it for the host's on-demand engine, where
//! it runs outside the pool, and says which limit sent it there
//! ([`Loaded::on_demand`]).

pub mod cache;
pub mod rollback;

use crate::bindings::exports;
pub use crate::host_api::linker;
pub use crate::instance::Compiled;
use crate::instance::HostState;
use crate::instance::limits::MAX_INSTANCES;
use anyhow::{Context, Result, anyhow, bail};
use parking_lot::Mutex;
use sha2::Digest;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Weak};
use wasmtime::Engine;
use wasmtime::component::types::{ComponentFunc, ComponentItem};
use wasmtime::component::{Component, ComponentExportIndex, Linker, Type};

/// A component refused by the instance pool's per-module limits: which limit
/// (see [`crate::engine::pool_misfit`]). A [`Loader`] with a fallback engine
/// runs it there; without one, the error names the fix.
#[derive(Debug, thiserror::Error)]
#[error(
    "{0}: set `[host] instance-pool = 0` in wasm-sup.toml to allocate instances on demand, which has no per-module limits"
)]
pub struct PoolMisfit(pub String);

/// Reads and compiles the plugin at `path`. The error is one line naming the
/// file, what is wrong and how to fix it.
pub fn compile_file(
    engine: &Engine,
    linker: &Linker<HostState>,
    path: &Path,
) -> Result<Arc<Compiled>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("{}: cannot read the file", path.display()))?;
    compile(engine, linker, &bytes).map_err(|e| anyhow!("{}: {e:#}", path.display()))
}

/// Compiles and checks a component from bytes.
pub fn compile(engine: &Engine, linker: &Linker<HostState>, bytes: &[u8]) -> Result<Arc<Compiled>> {
    let component = compile_component(engine, bytes)?;
    check(engine, linker, component, sha256_hex(bytes))
}

/// The SHA-256 of `bytes`, hex: a plugin version's identity.
pub fn sha256_hex(bytes: &[u8]) -> String {
    crate::crash::hex(&sha2::Sha256::digest(bytes))
}

/// Compiles a component, with one line saying why bytes are not one.
fn compile_component(engine: &Engine, bytes: &[u8]) -> Result<Component> {
    if bytes.is_empty() {
        bail!("the file is empty (0 bytes): build the plugin again, or remove the file");
    }
    if !bytes.starts_with(b"\0asm") {
        bail!(
            "not a WebAssembly file (no \\0asm header): a plugin is a component built for wasm32-wasip2"
        );
    }
    if wasmparser::Parser::is_core_wasm(bytes) {
        bail!(
            "is a core wasm module, not a component: build for wasm32-wasip2 (cargo build --target wasm32-wasip2) or wrap it with `wasm-tools component new`"
        );
    }
    if !wasmparser::Parser::is_component(bytes) {
        bail!("unsupported WebAssembly version or layer: a plugin is a WASI 0.2 component");
    }
    refuse_too_many_instances(bytes)?;
    Component::new(engine, bytes).map_err(|e| {
        let e = anyhow::Error::from(e);
        match crate::engine::pool_misfit(&e) {
            Some(why) => anyhow::Error::new(PoolMisfit(why)),
            None => e.context("is not a valid component (truncated or corrupt?)"),
        }
    })
}

/// Refuses a component that declares more core instances than a plugin may
/// hold ([`MAX_INSTANCES`]): every instantiation of it would fail, so it is a
/// bad file, not a crash loop. The count is of the core module
/// instantiations in the whole binary (nested components included), a lower
/// bound of what an instantiation makes; a nested component instantiated
/// twice is still caught when the store refuses the instance past the bound.
fn refuse_too_many_instances(bytes: &[u8]) -> Result<()> {
    let mut declared = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        // A parse error is left to the compiler, which names it better.
        let Ok(payload) = payload else { return Ok(()) };
        // Only instantiations count: an instance made of exports is a
        // bundle of names, not an instance the store holds.
        if let wasmparser::Payload::InstanceSection(section) = payload {
            let made = section
                .into_iter()
                .filter(|i| matches!(i, Ok(wasmparser::Instance::Instantiate { .. })))
                .count();
            declared = declared.saturating_add(made);
        }
    }
    if declared > MAX_INSTANCES {
        bail!(
            "declares {declared} core instances, and a plugin may hold at most {MAX_INSTANCES}: merge its modules (e.g. build it as one component with fewer core modules)"
        );
    }
    Ok(())
}

/// Checks a compiled component against the contract and pre-links it.
fn check(
    engine: &Engine,
    linker: &Linker<HostState>,
    component: Component,
    sha256: String,
) -> Result<Arc<Compiled>> {
    let ty = component.component_type();
    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    let exports_list: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();

    let pre = linker.instantiate_pre(&component).map_err(|e| {
        anyhow!(
            "imports something the host does not provide ({:#}): a plugin may import WASI 0.2 and the interfaces of the `worker` world in wit/plugin.wit",
            anyhow::Error::from(e)
        )
    })?;
    let handle = export_func(&component, engine, exports::HANDLER, "handle")?.ok_or_else(|| {
        anyhow!(
            "exports no `{}` interface: a plugin must export `handler` (world `worker` of wit/plugin.wit); it exports [{}]",
            exports::HANDLER,
            exports_list.join(", ")
        )
    })?;
    check_handle_type(&handle.1).context("its `handler.handle` has the wrong type")?;
    let init = export_func(&component, engine, exports::LIFECYCLE, "init")?;
    let shutdown = export_func(&component, engine, exports::LIFECYCLE, "shutdown")?;
    let check = export_func(&component, engine, exports::HEALTH, "check")?;

    Ok(Arc::new(Compiled {
        handle: handle.0,
        init: init.map(|f| f.0),
        shutdown: shutdown.map(|f| f.0),
        check: check.map(|f| f.0),
        pre,
        component,
        sha256,
        imports,
        exports: exports_list,
    }))
}

/// Where a loaded component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Already loaded for another plugin (or version) with the same bytes:
    /// shared, code and all.
    Memory,
    /// Deserialized from the compile cache.
    Cache,
    /// Compiled now.
    Compiled,
}

impl Origin {
    /// `"memory"`, `"cache"` or `"compiled"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Memory => "memory",
            Origin::Cache => "cache",
            Origin::Compiled => "compiled",
        }
    }
}

/// A component loaded through the [`Loader`].
#[derive(Debug)]
pub struct Loaded {
    /// The checked plugin.
    pub compiled: Arc<Compiled>,
    /// Cache or compiler.
    pub origin: Origin,
    /// A cache entry that was found invalid and rebuilt, and why.
    pub rebuilt: Option<String>,
    /// Why it runs on the on-demand engine, outside the instance pool, if it
    /// does: the pool limit it exceeds.
    pub on_demand: Option<String>,
}

/// One engine to compile for: its linker and its compile cache.
#[derive(Clone)]
struct Target {
    engine: Engine,
    linker: Linker<HostState>,
    cache: Option<Arc<cache::CompileCache>>,
}

impl Target {
    /// `variant` tells its compile-cache entries from other targets' (see
    /// [`cache::CompileCache::open_variant`]).
    fn new(engine: &Engine, cache: Option<(&Path, u64)>, variant: &str) -> Result<Target> {
        let cache = match cache {
            Some((dir, budget)) => Some(Arc::new(cache::CompileCache::open_variant(
                dir, budget, engine, variant,
            )?)),
            None => None,
        };
        Ok(Target {
            engine: engine.clone(),
            linker: linker(engine)?,
            cache,
        })
    }

    /// The cache's entry for these bytes: `Ok(None)` on a miss, the reason
    /// on an invalid entry (deleted, to be compiled again).
    fn cached(&self, sha256: &str) -> Result<Result<Option<Arc<Compiled>>, String>> {
        let Some(cache) = &self.cache else {
            return Ok(Ok(None));
        };
        match cache.get(&self.engine, sha256) {
            cache::Lookup::Hit(component) => Ok(Ok(Some(check(
                &self.engine,
                &self.linker,
                component,
                sha256.to_string(),
            )?))),
            cache::Lookup::Miss => Ok(Ok(None)),
            cache::Lookup::Invalid(why) => Ok(Err(why)),
        }
    }

    /// Compiles and checks `bytes`, and stores them in the cache.
    fn compile(&self, bytes: &[u8], sha256: String) -> Result<Arc<Compiled>> {
        let component = compile_component(&self.engine, bytes)?;
        let compiled = check(&self.engine, &self.linker, component, sha256)?;
        if let Some(cache) = &self.cache
            && let Err(e) = cache.put(&compiled.sha256, &compiled.component)
        {
            tracing::warn!("compile cache: {e:#}");
        }
        Ok(compiled)
    }
}

/// Why a component found in the on-demand engine's cache runs there (the
/// limit it exceeds was named when it was compiled).
const ON_DEMAND_CACHED: &str =
    "it exceeds a per-module limit of the instance pool (named when it was first compiled)";

/// Compiles plugins, through the compile cache when it is on: for the host's
/// engine, and components over the instance pool's per-module limits for its
/// on-demand fallback engine when there is one.
///
/// Plugins with the same bytes share one [`Compiled`]: its code is mapped
/// once however many plugins run it (a loaded component is kept while any
/// plugin holds it).
#[derive(Clone)]
pub struct Loader {
    main: Target,
    fallback: Option<Target>,
    loaded: Arc<Mutex<HashMap<String, Weak<Compiled>>>>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("cache", &self.main.cache)
            .field("on_demand_fallback", &self.fallback.is_some())
            .finish_non_exhaustive()
    }
}

impl Loader {
    /// A loader for `engine`, and for `fallback` (an engine that allocates
    /// on demand) when `engine` pools instances; `cache` is the cache folder
    /// and its budget, or `None` to compile every time.
    pub fn new(
        engine: &Engine,
        fallback: Option<&Engine>,
        cache: Option<(&Path, u64)>,
    ) -> Result<Loader> {
        Ok(Loader {
            main: Target::new(engine, cache, "")?,
            fallback: fallback
                .map(|e| Target::new(e, cache, "on-demand-fallback"))
                .transpose()?,
            loaded: Arc::default(),
        })
    }

    /// The component with this SHA-256 if a plugin still holds it.
    fn shared(&self, sha256: &str) -> Option<Arc<Compiled>> {
        self.loaded.lock().get(sha256).and_then(Weak::upgrade)
    }

    /// Remembers `compiled` for [`Loader::shared`], forgetting components no
    /// plugin holds any more. Only a compile or a cache hit gets here, not a
    /// shared load, so a folder of copies is not scanned once per copy.
    fn share(&self, compiled: &Arc<Compiled>) {
        let mut loaded = self.loaded.lock();
        loaded.retain(|_, c| c.strong_count() > 0);
        loaded.insert(compiled.sha256.clone(), Arc::downgrade(compiled));
    }

    /// Loads a plugin from its file's bytes: from the cache when an entry for
    /// these bytes is there and valid, else compiled (and stored); a
    /// component over the pool's per-module limits for the fallback engine.
    /// Blocking: call it from a blocking thread.
    pub fn load(&self, bytes: &[u8]) -> Result<Loaded> {
        let sha256 = sha256_hex(bytes);
        if let Some(compiled) = self.shared(&sha256) {
            return Ok(Loaded {
                compiled,
                origin: Origin::Memory,
                rebuilt: None,
                on_demand: None,
            });
        }
        let loaded = |compiled: Arc<Compiled>, origin, rebuilt, on_demand| {
            self.share(&compiled);
            Ok(Loaded {
                compiled,
                origin,
                rebuilt,
                on_demand,
            })
        };
        let rebuilt = match self.main.cached(&sha256)? {
            Ok(Some(c)) => return loaded(c, Origin::Cache, None, None),
            Ok(None) => None,
            Err(why) => Some(why),
        };
        // A component over the pool's limits was stored by the fallback.
        if let Some(fallback) = &self.fallback
            && let Ok(Some(c)) = fallback.cached(&sha256)?
        {
            return loaded(c, Origin::Cache, None, Some(ON_DEMAND_CACHED.into()));
        }
        match self.main.compile(bytes, sha256.clone()) {
            Ok(c) => loaded(c, Origin::Compiled, rebuilt, None),
            Err(e) => match (e.downcast_ref::<PoolMisfit>(), &self.fallback) {
                (Some(PoolMisfit(why)), Some(fallback)) => {
                    let why = why.clone();
                    let c = fallback.compile(bytes, sha256)?;
                    loaded(c, Origin::Compiled, rebuilt, Some(why))
                }
                _ => Err(e),
            },
        }
    }

    /// Loads the version with this SHA-256 from the cache alone (the file may
    /// hold another version by now): for rolling back across a host restart.
    pub fn load_cached(&self, sha256: &str) -> Option<Arc<Compiled>> {
        if let Some(compiled) = self.shared(sha256) {
            return Some(compiled);
        }
        [Some(&self.main), self.fallback.as_ref()]
            .into_iter()
            .flatten()
            .find_map(|t| t.cached(sha256).ok()?.ok()?)
    }
}

/// Finds function `func` in exported interface `iface`.
fn export_func(
    component: &Component,
    engine: &Engine,
    iface: &str,
    func: &str,
) -> Result<Option<(ComponentExportIndex, ComponentFunc)>> {
    let Some((item, iface_idx)) = component.get_export(None, iface) else {
        return Ok(None);
    };
    let ComponentItem::ComponentInstance(inst) = item else {
        bail!("export `{iface}` is not an interface");
    };
    let Some(ComponentItem::ComponentFunc(fty)) = inst.get_export(engine, func).map(|e| e.ty)
    else {
        bail!("interface `{iface}` has no function `{func}`");
    };
    let (_, idx) = component
        .get_export(Some(&iface_idx), func)
        .ok_or_else(|| anyhow!("interface `{iface}` has no function `{func}`"))?;
    Ok(Some((idx, fty)))
}

/// `handle: func(message: list<u8>) -> result<list<u8>, string>`.
fn check_handle_type(f: &ComponentFunc) -> Result<()> {
    let params: Vec<Type> = f.params().map(|(_, t)| t).collect();
    let results: Vec<Type> = f.results().collect();
    let is_bytes = |t: &Type| matches!(t, Type::List(l) if matches!(l.ty(), Type::U8));
    let ok_params = params.len() == 1 && is_bytes(&params[0]);
    let ok_results = results.len() == 1
        && matches!(&results[0], Type::Result(r)
            if r.ok().as_ref().is_some_and(is_bytes) && matches!(r.err(), Some(Type::String)));
    if !ok_params || !ok_results {
        bail!("expected func(message: list<u8>) -> result<list<u8>, string>");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A core module in a component with `extra` beside its one memory.
    fn component_with(extra: &str) -> Vec<u8> {
        wat::parse_str(format!(
            "(component (core module (memory 1) {extra}) (core instance (instantiate 0)))"
        ))
        .unwrap()
    }

    /// Issue 13, hole 13: a component over the pool's per-module limits was
    /// refused as "not a valid component (truncated or corrupt?)".
    #[test]
    fn hole13_the_pool_limit_exceeded_is_named_with_its_fix() {
        let pooled = crate::engine::engine(false, 1).unwrap();
        let on_demand = crate::engine::engine(false, 0).unwrap();
        for (extra, limit) in [
            (
                "(memory 1) (memory 1)",
                "limit of 2 memories per core module",
            ),
            (
                "(table 200000 funcref)",
                "limit of 131072 initial elements per table",
            ),
            (
                "(table 1 funcref) (table 1 funcref) (table 1 funcref) (table 1 funcref) (table 1 funcref)",
                "limit of 4 tables per core module",
            ),
        ] {
            let bytes = component_with(extra);
            let e = format!("{:#}", compile_component(&pooled, &bytes).unwrap_err());
            assert!(e.starts_with("exceeds the instance pool's "), "{e}");
            assert!(e.contains(limit), "{e}");
            assert!(
                e.ends_with("set `[host] instance-pool = 0` in wasm-sup.toml to allocate instances on demand, which has no per-module limits"),
                "{e}"
            );
            assert!(!e.contains("truncated or corrupt"), "{e}");
            compile_component(&on_demand, &bytes).expect("on demand, it compiles");
        }
        // A truly corrupt component still says so.
        let mut bytes = component_with("");
        bytes.truncate(bytes.len() - 3);
        let e = format!("{:#}", compile_component(&pooled, &bytes).unwrap_err());
        assert!(e.contains("truncated or corrupt"), "{e}");
    }
}
