//! A plugin's WASI context from its configuration: deny by default.
//!
//! No preopened directory, no environment, no arguments, no network unless the
//! plugin's config grants them; stdin is empty; stdout and stderr go to the
//! instance's [`GuestOutput`] budget. The `inherit_*` builder methods are never used.

use super::output::GuestOutput;
use crate::config::{DirMode, NetworkGrant, PluginConfig};
use anyhow::{Context, Result};
use std::sync::Arc;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

/// Builds the WASI context of one instance, writing stdout and stderr into `output`.
pub fn wasi_ctx(config: &PluginConfig, output: &GuestOutput) -> Result<WasiCtx> {
    let mut b = WasiCtxBuilder::new();
    b.stdout(output.stream("stdout"));
    b.stderr(output.stream("stderr"));
    for (k, v) in &config.env {
        b.env(k, v);
    }
    for d in &config.dirs {
        let perms = match d.mode {
            DirMode::Ro => FsPerms::ReadOnly,
            DirMode::Rw => FsPerms::ReadWrite,
        };
        b.preopened_dir(&d.host, &d.guest, perms)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!(
                    "failed to open directory {} granted as {} (config key `dirs`): does it exist?",
                    d.host.display(),
                    d.guest
                )
            })?;
    }
    match &config.network {
        NetworkGrant::Denied => {
            b.allow_tcp(false)
                .allow_udp(false)
                .allow_ip_name_lookup(false);
        }
        grant => {
            let grant = Arc::new(grant.clone());
            b.allow_tcp(true).allow_udp(true).allow_ip_name_lookup(true);
            b.socket_addr_check(move |addr, use_| {
                // Connecting binds the socket implicitly to the unspecified
                // address and an ephemeral port first: that is always allowed
                // once network is granted; every other address must match.
                let implicit = matches!(use_, SocketAddrUse::TcpBind | SocketAddrUse::UdpBind)
                    && addr.ip().is_unspecified()
                    && addr.port() == 0;
                let ok = implicit || grant.allows(&addr);
                Box::pin(async move { ok })
            });
        }
    }
    Ok(b.build())
}
