//! Host implementations of the plugin's WIT imports, one file per interface.
//!
//! Each implements the generated `Host` trait of [`crate::bindings`] on
//! [`HostState`] and converts to domain types at once; every size or cursor a
//! guest supplies is clamped.

pub mod config;
pub mod keyvalue;
pub mod logging;
pub mod mailbox;

use crate::instance::HostState;
use anyhow::{Context, Result};
use wasmtime::Engine;
use wasmtime::component::{HasSelf, Linker};

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

/// Adds every wasm-sup import (not WASI) to `linker`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    type Me = HasSelf<HostState>;
    crate::bindings::keyvalue::add_to_linker::<_, Me>(linker, me)?;
    crate::bindings::atomics::add_to_linker::<_, Me>(linker, me)?;
    crate::bindings::batch::add_to_linker::<_, Me>(linker, me)?;
    crate::bindings::config::add_to_linker::<_, Me>(linker, me)?;
    crate::bindings::logging::add_to_linker::<_, Me>(linker, me)?;
    crate::bindings::mailbox::add_to_linker::<_, Me>(linker, me)?;
    Ok(())
}

fn me(s: &mut HostState) -> &mut HostState {
    s
}
