//! [`Compiled`]: what the compile stage hands to the instance stage, a checked
//! component pre-linked against the host's imports, with the exports an
//! instance calls. Instances are made from it many times; it is never changed.

use super::HostState;
use wasmtime::component::{Component, ComponentExportIndex, InstancePre};

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
