//! The plugins themselves: readiness (`/readyz`), the metrics scrape, the
//! list and one plugin's status, and the operations restart/stop/start, for
//! one plugin or all.
//!
//! This module reads the supervisor's view of its plugins and asks it for
//! operations; it touches no state and no records.

use super::api::{self, NotReady, NotRunning, OperationAck, OperationAll, PluginDone, Unready};
use super::error::ApiError;
use super::extract::PluginName;
use crate::supervisor::{OperateError, Operation, PluginInfo, Status, SupervisorHandle};
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

/// `GET /readyz`: 200 once every plugin runs, 503 with why not.
pub(super) async fn readyz(
    State(sup): State<SupervisorHandle>,
) -> Result<&'static str, (StatusCode, Json<NotReady>)> {
    let why = if let Some((done, total)) = sup.loading() {
        Unready::Loading {
            reason: format!("loading {done}/{total}"),
            status: "loading".into(),
        }
    } else if sup.ready() {
        return Ok(api::READY);
    } else {
        Unready::Waiting {
            not_running: sup
                .list()
                .into_iter()
                .filter(|p| p.status != Status::Running)
                .map(|p| NotRunning {
                    name: p.name,
                    status: p.status,
                })
                .collect(),
        }
    };
    Err((
        StatusCode::SERVICE_UNAVAILABLE,
        Json(NotReady { ready: false, why }),
    ))
}

/// `GET /metrics`: OpenMetrics text.
pub(super) async fn metrics(State(sup): State<SupervisorHandle>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        sup.scrape(),
    )
}

/// `GET /v1/plugins`.
pub(super) async fn list(State(sup): State<SupervisorHandle>) -> Json<api::PluginList> {
    Json(api::PluginList {
        budget: sup.budget().info(),
        groups: sup.groups(),
        plugins: sup.list(),
    })
}

/// `GET /v1/plugins/{name}`.
pub(super) async fn one(
    State(sup): State<SupervisorHandle>,
    PluginName(name): PluginName,
) -> Result<Json<PluginInfo>, ApiError> {
    sup.get(&name).map(Json).ok_or(ApiError::NoSuchPlugin(name))
}

/// The answer to `op` on `name` once the supervisor has answered `r`.
pub(super) fn ack(
    sup: &SupervisorHandle,
    name: String,
    op: Operation,
    r: Result<(), OperateError>,
) -> Result<Json<OperationAck>, ApiError> {
    r.map_err(|e| ApiError::operate(e, &name))?;
    Ok(Json(OperationAck {
        plugin: sup.get(&name),
        name,
        ok: true,
        operation: op,
    }))
}

/// `POST /v1/plugins/{name}/restart|stop|start`.
pub(super) async fn operate(
    sup: SupervisorHandle,
    PluginName(name): PluginName,
    op: Operation,
) -> Result<Json<OperationAck>, ApiError> {
    let r = sup.operate(&name, op).await;
    ack(&sup, name, op, r)
}

/// `POST /v1/plugins/restart|stop|start`: 200 when every plugin did it, 207
/// otherwise.
pub(super) async fn operate_all(
    sup: SupervisorHandle,
    op: Operation,
) -> (StatusCode, Json<OperationAll>) {
    let plugins: Vec<PluginDone> = sup
        .operate_all(op)
        .await
        .into_iter()
        .map(|(name, r)| PluginDone {
            ok: r.is_ok(),
            error: r.err().map(|e| e.to_string()),
            name,
        })
        .collect();
    let ok = plugins.iter().all(|p| p.ok);
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::MULTI_STATUS
    };
    (
        status,
        Json(OperationAll {
            ok,
            operation: op,
            plugins,
        }),
    )
}
