//! Compile: a `.wasm` file into a [`Compiled`] plugin, checked against the
//! contract, ready to instantiate many times.
//!
//! Each plugin is compiled once and held as an `InstancePre`: a restart is a new
//! `Store` and an instantiation, never a compile. The checks, in order, each
//! give one line naming what is wrong: empty file, not wasm, a core module, a
//! component over a per-module limit of the instance pool (naming the limit
//! and `[host] instance-pool = 0`, see [`crate::engine::pool_misfit`]), an
//! invalid or truncated component, no `handler` export (or one of the wrong
//! type), imports the host cannot satisfy.
//!
//! [`Loader`] puts the on-disk [`cache`] in front of compilation: a file whose
//! hash is in the cache is deserialized and checked, not compiled.

pub mod cache;

use crate::bindings::exports;
use crate::instance::HostState;
use anyhow::{Context, Result, anyhow, bail};
use sha2::Digest;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use wasmtime::Engine;
use wasmtime::component::types::{ComponentFunc, ComponentItem};
use wasmtime::component::{Component, ComponentExportIndex, InstancePre, Linker, Type};

/// A compiled, checked plugin.
pub struct Compiled {
    /// The component.
    pub component: Component,
    /// Pre-linked against the host's imports.
    pub pre: InstancePre<HostState>,
    /// `handler.handle`.
    pub handle: ComponentExportIndex,
    /// `lifecycle.init`, if exported.
    pub init: Option<ComponentExportIndex>,
    /// `lifecycle.shutdown`, if exported.
    pub shutdown: Option<ComponentExportIndex>,
    /// `health.check`, if exported.
    pub check: Option<ComponentExportIndex>,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    /// Interface names the component imports.
    pub imports: Vec<String>,
    /// Interface names the component exports.
    pub exports: Vec<String>,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("sha256", &self.sha256)
            .finish()
    }
}

/// The linker every plugin is instantiated with: full WASI 0.2 (capabilities
/// denied by the context, see [`crate::instance::wasi`]) plus the plugin imports.
pub fn linker(engine: &Engine) -> Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(anyhow::Error::from)
        .context("failed to link WASI")?;
    crate::host_api::add_to_linker(&mut linker)?;
    Ok(linker)
}

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
    Component::new(engine, bytes).map_err(|e| {
        let e = anyhow::Error::from(e);
        match crate::engine::pool_misfit(&e) {
            Some(why) => anyhow!(why),
            None => e.context("is not a valid component (truncated or corrupt?)"),
        }
    })
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
}

/// Compiles plugins for one engine, through the compile cache when it is on.
///
/// Plugins with the same bytes share one [`Compiled`]: its code is mapped
/// once however many plugins run it (a loaded component is kept while any
/// plugin holds it).
#[derive(Clone)]
pub struct Loader {
    engine: Engine,
    linker: Linker<HostState>,
    cache: Option<Arc<cache::CompileCache>>,
    loaded: Arc<Mutex<HashMap<String, Weak<Compiled>>>>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl Loader {
    /// A loader for `engine`; `cache` is the cache folder and its budget, or
    /// `None` to compile every time.
    pub fn new(engine: &Engine, cache: Option<(&Path, u64)>) -> Result<Loader> {
        let cache = match cache {
            Some((dir, budget)) => Some(Arc::new(cache::CompileCache::open(dir, budget, engine)?)),
            None => None,
        };
        Ok(Loader {
            engine: engine.clone(),
            linker: linker(engine)?,
            cache,
            loaded: Arc::default(),
        })
    }

    /// The component with this SHA-256 if a plugin still holds it.
    fn shared(&self, sha256: &str) -> Option<Arc<Compiled>> {
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sha256)
            .and_then(Weak::upgrade)
    }

    /// Remembers `compiled` for [`Loader::shared`], forgetting components no
    /// plugin holds any more. Only a compile or a cache hit gets here, not a
    /// shared load, so a folder of copies is not scanned once per copy.
    fn share(&self, compiled: &Arc<Compiled>) {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        loaded.retain(|_, c| c.strong_count() > 0);
        loaded.insert(compiled.sha256.clone(), Arc::downgrade(compiled));
    }

    /// Loads a plugin from its file's bytes: from the cache when an entry for
    /// these bytes is there and valid, else compiled (and stored). Blocking:
    /// call it from a blocking thread.
    pub fn load(&self, bytes: &[u8]) -> Result<Loaded> {
        let sha256 = sha256_hex(bytes);
        if let Some(compiled) = self.shared(&sha256) {
            return Ok(Loaded {
                compiled,
                origin: Origin::Memory,
                rebuilt: None,
            });
        }
        let mut rebuilt = None;
        if let Some(cache) = &self.cache {
            match cache.get(&self.engine, &sha256) {
                cache::Lookup::Hit(component) => {
                    let compiled = check(&self.engine, &self.linker, component, sha256)?;
                    self.share(&compiled);
                    return Ok(Loaded {
                        compiled,
                        origin: Origin::Cache,
                        rebuilt: None,
                    });
                }
                cache::Lookup::Miss => {}
                cache::Lookup::Invalid(why) => rebuilt = Some(why),
            }
        }
        let component = compile_component(&self.engine, bytes)?;
        let compiled = check(&self.engine, &self.linker, component, sha256)?;
        self.share(&compiled);
        if let Some(cache) = &self.cache
            && let Err(e) = cache.put(&compiled.sha256, &compiled.component)
        {
            tracing::warn!("compile cache: {e:#}");
        }
        Ok(Loaded {
            compiled,
            origin: Origin::Compiled,
            rebuilt,
        })
    }

    /// Loads the version with this SHA-256 from the cache alone (the file may
    /// hold another version by now): for rolling back across a host restart.
    pub fn load_cached(&self, sha256: &str) -> Option<Arc<Compiled>> {
        if let Some(compiled) = self.shared(sha256) {
            return Some(compiled);
        }
        let cache = self.cache.as_ref()?;
        match cache.get(&self.engine, sha256) {
            cache::Lookup::Hit(component) => {
                check(&self.engine, &self.linker, component, sha256.to_string()).ok()
            }
            _ => None,
        }
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
