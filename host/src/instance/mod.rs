//! A running instance of a plugin: one wasmtime `Store` and the calls into it.
//!
//! Invariants:
//! - Every call (`init`, `handle`, `check`, `shutdown`, and instantiation
//!   itself) gets fresh fuel and a wall-clock deadline. The epoch callback
//!   yields to tokio at every tick (so a spinning guest never holds a worker
//!   thread) and traps once the deadline has passed; a tokio timeout around the
//!   call's future catches time blocked inside host calls, which epochs cannot
//!   interrupt.
//! - A call that does not return (trap, timeout, exit, host panic) yields an
//!   [`Exit`]; the caller must then drop the instance: a trapped instance is
//!   never re-entered. Dropping it discards the call's transaction.
//! - A panic in host code while serving a call is caught here and reported as
//!   [`Cause::HostError`]; it never unwinds into the supervisor.

mod classify;
mod compiled;
pub mod limits;
pub mod output;
mod state;
pub mod txn;
pub mod wasi;

pub use crate::bindings::Health;
pub use compiled::Compiled;
pub use state::{HostState, PluginEnv};

use crate::crash::{Cause, Crash, Exit};
use futures::FutureExt;
use limits::Limits;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use txn::Txn;
use wasmtime::component::{ComponentNamedList, Instance, Lift, Lower, ResourceTable};
use wasmtime::{Store, UpdateDeadline};

/// Extra time the tokio timeout allows past the deadline, so that a guest
/// running wasm code is stopped by its epoch callback (which yields a
/// backtrace) and only a guest blocked in a host call by the tokio timeout.
const TIMEOUT_GRACE: Duration = Duration::from_millis(100);

/// The error the epoch callback traps with once a call's deadline has passed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DeadlinePassed(pub Duration);

impl std::fmt::Display for DeadlinePassed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "call ran past its timeout of {:?} (config key `timeout`)",
            self.0
        )
    }
}

impl std::error::Error for DeadlinePassed {}

/// A live instance. See the module doc.
pub struct PluginInstance {
    store: Store<HostState>,
    instance: Instance,
    compiled: Arc<Compiled>,
    last_fuel_used: u64,
}

impl PluginInstance {
    /// Creates a store and instantiates `compiled` in it (never compiles).
    pub async fn start(
        compiled: Arc<Compiled>,
        env: Arc<PluginEnv>,
        generation: u64,
        restarts: u32,
    ) -> Result<PluginInstance, Exit> {
        let config = env.config.clone();
        let output = output::GuestOutput::new(config.output, env.output_dropped.clone());
        let wasi = wasi::wasi_ctx(&config, &output).map_err(|e| host_error(format!("{e:#}")))?;
        let engine = compiled.component.engine().clone();
        let mut store = Store::new(
            &engine,
            HostState {
                wasi,
                output,
                table: ResourceTable::new(),
                limits: Limits::new(config.memory),
                deadline: crate::config::instant_after(Instant::now(), config.timeout),
                env,
                txn: Txn::default(),
                generation,
                restarts,
                open_buckets: 0,
            },
        );
        store.limiter(|s| &mut s.limits);
        let timeout = config.timeout;
        store.epoch_deadline_callback(move |ctx| {
            if Instant::now() >= ctx.data().deadline {
                Err(wasmtime::Error::new(DeadlinePassed(timeout)))
            } else {
                // tokio's yield_now, not a self-wake: a self-woken task can be
                // polled again at once and starve the worker's other tasks.
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ))
            }
        });
        let fuel = config.fuel.unwrap_or(u64::MAX);
        refuel(&mut store, fuel)?;
        store.set_epoch_deadline(1);
        store.data_mut().deadline = crate::config::instant_after(Instant::now(), timeout);
        let pre = compiled.pre.clone();
        let fut = AssertUnwindSafe(pre.instantiate_async(&mut store)).catch_unwind();
        let result = tokio::time::timeout(timeout.saturating_add(TIMEOUT_GRACE), fut).await;
        let instance = match result {
            Ok(Ok(Ok(i))) => i,
            other => {
                let used = fuel.saturating_sub(store.get_fuel().unwrap_or(0));
                let mem = store.data().limits.memory_bytes;
                return Err(match other {
                    Ok(Ok(Err(e))) if e.is::<wasmtime::PoolConcurrencyLimitError>() => {
                        host_error(format!(
                            "the instance pool is full ({e:#}): raise [host] instance-pool in wasm-sup.toml and restart the host"
                        ))
                    }
                    Ok(Ok(Err(e))) => {
                        with_coredump(classify::classify(&e, used, mem), &e, &mut store)
                    }
                    Ok(Err(panic)) => host_panic(&panic),
                    Err(_) => blocked_timeout(timeout, used, mem),
                    Ok(Ok(Ok(_))) => unreachable!("handled above"),
                });
            }
        };
        Ok(PluginInstance {
            store,
            instance,
            compiled,
            last_fuel_used: 0,
        })
    }

    /// Runs one export call with fresh fuel and a deadline `timeout` from now.
    async fn call<P, R>(
        &mut self,
        index: &wasmtime::component::ComponentExportIndex,
        params: P,
        timeout: Duration,
    ) -> Result<R, Exit>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        R: ComponentNamedList + Lift + Send + Sync + 'static,
    {
        let func = self
            .instance
            .get_typed_func::<P, R>(&mut self.store, index)
            .map_err(|e| host_error(format!("export has an unexpected type: {e}")))?;
        let fuel = self.store.data().env.config.fuel.unwrap_or(u64::MAX);
        refuel(&mut self.store, fuel)?;
        self.store.set_epoch_deadline(1);
        self.store.data_mut().deadline = crate::config::instant_after(Instant::now(), timeout);
        self.store.data_mut().txn = Txn::default();
        self.store.data().output.begin_call();
        let fut = AssertUnwindSafe(func.call_async(&mut self.store, params)).catch_unwind();
        let result = tokio::time::timeout(timeout.saturating_add(TIMEOUT_GRACE), fut).await;
        let crashed = !matches!(result, Ok(Ok(Ok(_))));
        self.store.data().output.end_call(crashed);
        let used = fuel.saturating_sub(self.store.get_fuel().unwrap_or(0));
        self.last_fuel_used = used;
        let mem = self.store.data().limits.memory_bytes;
        match result {
            Ok(Ok(Ok(r))) => Ok(r),
            Ok(Ok(Err(e))) => Err(with_coredump(
                classify::classify(&e, used, mem),
                &e,
                &mut self.store,
            )),
            Ok(Err(panic)) => Err(host_panic(&panic)),
            Err(_) => Err(blocked_timeout(timeout, used, mem)),
        }
    }

    fn timeout(&self) -> Duration {
        self.store.data().env.config.timeout
    }

    /// `lifecycle.init`; `Ok(Ok(()))` when the plugin does not export it.
    pub async fn init(&mut self) -> Result<Result<(), String>, Exit> {
        let Some(idx) = self.compiled.init else {
            return Ok(Ok(()));
        };
        let t = self.timeout();
        let (r,) = self.call::<(), (Result<(), String>,)>(&idx, (), t).await?;
        Ok(r)
    }

    /// `handler.handle`.
    pub async fn handle(&mut self, message: &[u8]) -> Result<Result<Vec<u8>, String>, Exit> {
        let idx = self.compiled.handle;
        let t = self.timeout();
        let (r,) = self
            .call::<(&[u8],), (Result<Vec<u8>, String>,)>(&idx, (message,), t)
            .await?;
        Ok(r)
    }

    /// `health.check` within `timeout`; `None` when the plugin does not export it.
    pub async fn check(&mut self, timeout: Duration) -> Result<Option<Health>, Exit> {
        let Some(idx) = self.compiled.check else {
            return Ok(None);
        };
        let (h,) = self.call::<(), (Health,)>(&idx, (), timeout).await?;
        Ok(Some(h))
    }

    /// `lifecycle.shutdown` within `timeout`; a no-op when not exported.
    pub async fn shutdown(&mut self, timeout: Duration) -> Result<(), Exit> {
        let Some(idx) = self.compiled.shutdown else {
            return Ok(());
        };
        self.call::<(), ()>(&idx, (), timeout).await
    }

    /// Takes the transaction of the call that just returned.
    pub fn take_txn(&mut self) -> Txn {
        std::mem::take(&mut self.store.data_mut().txn)
    }

    /// Fuel the last call used.
    pub fn last_fuel_used(&self) -> u64 {
        self.last_fuel_used
    }

    /// Current linear memory, bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.store.data().limits.memory_bytes
    }

    /// Whether the plugin exports `health`.
    pub fn has_health(&self) -> bool {
        self.compiled.check.is_some()
    }
}

/// Attaches the wasm coredump the engine captured at the trap, if any
/// (`[host] coredumps` on).
fn with_coredump(mut exit: Exit, err: &wasmtime::Error, store: &mut Store<HostState>) -> Exit {
    if let (Exit::Crashed(c), Some(dump)) =
        (&mut exit, err.downcast_ref::<wasmtime::WasmCoreDump>())
    {
        let name = store.data().env.name.clone();
        c.coredump = Some(dump.serialize(&mut *store, &name));
    }
    exit
}

fn host_error(message: String) -> Exit {
    Exit::Crashed(Crash {
        cause: Cause::HostError,
        message,
        backtrace: Vec::new(),
        fuel_used: 0,
        memory_bytes: 0,
        coredump: None,
    })
}

/// What a caught panic says.
pub(crate) fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

fn host_panic(panic: &Box<dyn std::any::Any + Send>) -> Exit {
    let what = panic_text(&**panic);
    tracing::error!(panic = %what, "host panicked while serving the plugin; contained");
    host_error(format!("host panicked while serving the call: {what}"))
}

/// Gives the store `fuel` for the next call; a store whose engine does not
/// meter fuel (see [`crate::engine::Metering`]) runs unmetered.
fn refuel(store: &mut Store<HostState>, fuel: u64) -> Result<(), Exit> {
    if store.get_fuel().is_err() {
        return Ok(());
    }
    store.set_fuel(fuel).map_err(|e| host_error(e.to_string()))
}

fn blocked_timeout(timeout: Duration, fuel_used: u64, memory_bytes: u64) -> Exit {
    Exit::Crashed(Crash {
        cause: Cause::Timeout,
        message: format!(
            "call ran past its timeout of {timeout:?} while blocked in a host call (config key `timeout`)"
        ),
        backtrace: Vec::new(),
        fuel_used,
        memory_bytes,
        coredump: None,
    })
}
