//! Health for load balancers and monitors: `GET /health` for the host and
//! `GET /v1/plugins/{name}/health` for one plugin (docs/design.md,
//! "Operating it"). Both answer without the token and read only the
//! supervisor's view of its plugins; a plugin's health is its status and its
//! last `health` answer ([`api::PluginHealth::of`]).

use super::api::{self, HealthReport, HostHealth, PluginHealth};
use super::error::ApiError;
use super::extract::PluginName;
use crate::config::RestartType;
use crate::supervisor::SupervisorHandle;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

/// 200 when `ok`, else 503.
fn code(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// `GET /health`: 200 when the first load is done, every permanent plugin
/// runs and none is unhealthy; else 503. Both with a [`HealthReport`].
pub(super) async fn host(State(sup): State<SupervisorHandle>) -> (StatusCode, Json<HealthReport>) {
    let infos = sup.list();
    let reason = sup
        .loading()
        .map(|(done, total)| format!("loading {done}/{total}"));
    let plugins: Vec<PluginHealth> = infos.iter().map(PluginHealth::of).collect();
    let ok = reason.is_none()
        && infos.iter().zip(&plugins).all(|(p, h)| {
            let must_run = p.restart_type == RestartType::Permanent;
            h.health != Some(api::HealthLevel::Unhealthy) && (!must_run || h.health.is_some())
        });
    let report = HealthReport {
        plugins,
        reason,
        status: if ok {
            HostHealth::Healthy
        } else {
            HostHealth::Unhealthy
        },
    };
    (code(ok), Json(report))
}

/// `GET /v1/plugins/{name}/health`: 200 for healthy or degraded, 503
/// otherwise (unhealthy or not running), 404 for no such plugin.
pub(super) async fn plugin(
    State(sup): State<SupervisorHandle>,
    PluginName(name): PluginName,
) -> Result<(StatusCode, Json<PluginHealth>), ApiError> {
    let info = sup.get(&name).ok_or(ApiError::NoSuchPlugin(name))?;
    let h = PluginHealth::of(&info);
    Ok((code(h.serves()), Json(h)))
}
