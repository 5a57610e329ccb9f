//! Cold start: a new `.wasm` to its first reply, uncached (compiled) and
//! cached (from the compile cache), through the loader and the instance
//! layer; and the start of the real binary with many plugins and a warm
//! compile cache.

use crate::density::Process;
use crate::harness::{Row, Spread, host_engine, plugin_env, show, start_instance, us};
use anyhow::{Result, anyhow};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use wasm_sup::compile::Loader;
use wasm_sup::instance::PluginEnv;

/// Load (compile or cache hit), instantiate, `init`, one message.
async fn first_reply(loader: &Loader, env: &Arc<PluginEnv>, bytes: &[u8]) -> Result<()> {
    let mut i = start_instance(loader.load(bytes)?.compiled, env).await?;
    i.handle(b"hello")
        .await
        .map_err(|e| anyhow!("{e:?}"))?
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

pub async fn cold(counter: &Path, rounds: usize) -> Result<Vec<Row>> {
    let component = std::fs::read(counter)?;
    let dir = tempfile::tempdir()?;
    let engine = host_engine()?;
    let env = plugin_env("counter", "")?;
    let cache = dir.path().join("cache");
    let loader = Loader::new(&engine, None, Some((&cache, 1 << 30)))?;
    let mut uncached = Vec::new();
    let mut cached = Vec::new();
    for round in 0..rounds {
        let bytes = wasm_sup_tests::variant(&component, &format!("cold-{round}"));
        let t = Instant::now();
        first_reply(&loader, &env, &bytes).await?;
        uncached.push(t.elapsed());
        // A new loader: nothing of this component is in memory, only on disk.
        let loader = Loader::new(&engine, None, Some((&cache, 1 << 30)))?;
        let t = Instant::now();
        first_reply(&loader, &env, &bytes).await?;
        cached.push(t.elapsed());
    }
    let (u, c) = (Spread::of(uncached), Spread::of(cached));
    Ok(vec![
        Row::new(
            format!(
                "cold start: new `.wasm` ({} KB Rust counter) → first reply, p50 (load, instantiate, `init`, one message)",
                component.len() / 1000
            ),
            format!("uncached {}; cached {}", show(u.p50), show(c.p50)),
        )
        .target(
            "≤ 100 ms uncached, ≤ 5 ms cached",
            us(u.p50) <= 100_000.0 && us(c.p50) <= 5_000.0,
        )
        .json(json!({
            "rounds": rounds,
            "uncached_us": {"p50": us(u.p50), "p99": us(u.p99)},
            "cached_us": {"p50": us(c.p50), "p99": us(c.p99)},
        })),
    ])
}

pub async fn host_start(bin: &Path, counter: &Path, plugins: usize) -> Result<Vec<Row>> {
    let component = std::fs::read(counter)?;
    let dir = tempfile::tempdir()?;
    for i in 0..plugins {
        let bytes = wasm_sup_tests::variant(&component, &format!("start-{i}"));
        std::fs::write(dir.path().join(format!("p{i:05}.wasm")), bytes)?;
    }
    crate::density::pool_for(dir.path(), plugins)?;
    let t = Instant::now();
    let p = Process::start(bin, dir.path()).await?;
    let cold = t.elapsed();
    p.stop()?;
    let t = Instant::now();
    let p = Process::start(bin, dir.path()).await?;
    let warm = t.elapsed();
    p.stop()?;
    Ok(vec![
        Row::new(
            format!("host start, {plugins} distinct plugins, spawn → /readyz 200"),
            format!(
                "warm compile cache {:.2} s (cold {:.1} s)",
                warm.as_secs_f64(),
                cold.as_secs_f64()
            ),
        )
        .target(
            "1,000 plugins, warm cache ≤ 3 s",
            plugins >= 1000 && warm.as_secs_f64() <= 3.0,
        )
        .json(json!({
            "plugins": plugins,
            "cold_seconds": cold.as_secs_f64(),
            "warm_seconds": warm.as_secs_f64(),
        })),
    ])
}
