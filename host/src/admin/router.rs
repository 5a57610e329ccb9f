//! `fn router(SupervisorHandle) -> Router`: the admin HTTP API.
//!
//! `POST /v1/plugins/{name}/messages` answers exactly as DESIGN.md's "What a
//! sender sees": 200 reply, 422 reason, 500 dead-lettered (JSON), 503
//! unavailable (JSON, `Retry-After` when a retry is scheduled), 429 mailbox
//! full, 404 unknown plugin, 400 bad name, 413 too large, 504 no outcome within
//! `reply-timeout` (the message stays queued and completes later).

use super::ops;
use crate::discovery::validate_name;
use crate::mailbox::Outcome;
use crate::supervisor::{Operation, SendRefused, SupervisorHandle};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::json;

/// Largest request body read at all; each plugin's `max-message` is checked
/// against the body after it is read (answer 413).
pub const MAX_BODY_BYTES: usize = 64 << 20;

/// Paths served without the token: load-balancer probes send none
/// (DESIGN.md, refinement 9).
const OPEN_PATHS: [&str; 3] = ["/healthz", "/readyz", "/health"];

/// Requires `Authorization: Bearer TOKEN` on every request but the probes
/// of [`OPEN_PATHS`].
pub fn require_token(router: Router, token: String) -> Router {
    let token: std::sync::Arc<str> = token.into();
    router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let token = token.clone();
            async move {
                let given = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "));
                if OPEN_PATHS.contains(&req.uri().path())
                    || given.is_some_and(|g| same(g.as_bytes(), token.as_bytes()))
                {
                    next.run(req).await
                } else {
                    error(
                        StatusCode::UNAUTHORIZED,
                        "missing or wrong bearer token: send Authorization: Bearer TOKEN",
                    )
                }
            }
        },
    ))
}

/// Compares without an early exit, so timing does not tell how much matched.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The admin API.
pub fn router(sup: SupervisorHandle) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/plugins", get(list))
        .route("/v1/plugins/{name}", get(one))
        .route("/v1/plugins/{name}/messages", post(send))
        .route(
            "/v1/plugins/restart",
            post(|State(s): State<SupervisorHandle>| ops::operate_all(s, Operation::Restart)),
        )
        .route(
            "/v1/plugins/stop",
            post(|State(s): State<SupervisorHandle>| ops::operate_all(s, Operation::Stop)),
        )
        .route(
            "/v1/plugins/start",
            post(|State(s): State<SupervisorHandle>| ops::operate_all(s, Operation::Start)),
        )
        .route(
            "/v1/plugins/{name}/restart",
            post(|State(s): State<SupervisorHandle>, Path(n): Path<String>| {
                ops::operate(s, n, Operation::Restart)
            }),
        )
        .route(
            "/v1/plugins/{name}/stop",
            post(|State(s): State<SupervisorHandle>, Path(n): Path<String>| {
                ops::operate(s, n, Operation::Stop)
            }),
        )
        .route(
            "/v1/plugins/{name}/start",
            post(|State(s): State<SupervisorHandle>, Path(n): Path<String>| {
                ops::operate(s, n, Operation::Start)
            }),
        )
        .route("/v1/plugins/{name}/crashes", get(ops::crashes))
        .route("/v1/plugins/{name}/dead-letters", get(ops::dead_letters))
        .route(
            "/v1/plugins/{name}/dead-letters/{id}/replay",
            post(ops::replay),
        )
        .route(
            "/v1/plugins/{name}/dead-letters/{id}/drop",
            post(ops::drop_letter),
        )
        .route(
            "/v1/plugins/{name}/dead-letters/{id}",
            delete(ops::drop_letter),
        )
        .route("/v1/plugins/{name}/state", get(ops::state_list))
        .route("/v1/plugins/{name}/state/reset", post(ops::state_reset))
        .route(
            "/v1/plugins/{name}/state/{bucket}/{key}",
            get(ops::state_get),
        )
        .route_layer(axum::middleware::from_fn(super::serve::read_body_in_time))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(sup)
}

/// A path the API does not have: a JSON error like every other.
async fn no_route(uri: axum::http::Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "no such endpoint: {}: see `wasm-sup --help` or the README's Admin HTTP API",
            uri.path()
        ),
    )
}

/// A known path asked with a method it does not take.
async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not take {method}", uri.path()),
    )
}

pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// The 400 answer for a path name that is not a valid plugin name.
pub(super) fn bad_name(name: &str) -> Option<Response> {
    validate_name(name)
        .err()
        .map(|why| error(StatusCode::BAD_REQUEST, why))
}

async fn readyz(State(sup): State<SupervisorHandle>) -> Response {
    if let Some((done, total)) = sup.loading() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "ready": false,
                "status": "loading",
                "reason": format!("loading {done}/{total}"),
            })),
        )
            .into_response();
    }
    if sup.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let waiting: Vec<_> = sup
            .list()
            .into_iter()
            .filter(|p| p.status != crate::supervisor::Status::Running)
            .map(|p| json!({ "name": p.name, "status": p.status }))
            .collect();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "not_running": waiting })),
        )
            .into_response()
    }
}

async fn metrics(State(sup): State<SupervisorHandle>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        sup.scrape(),
    )
        .into_response()
}

async fn list(State(sup): State<SupervisorHandle>) -> Response {
    Json(json!({
        "plugins": sup.list(),
        "budget": sup.budget().info(),
        "groups": sup.groups(),
    }))
    .into_response()
}

async fn one(State(sup): State<SupervisorHandle>, Path(name): Path<String>) -> Response {
    if let Some(r) = bad_name(&name) {
        return r;
    }
    match sup.get(&name) {
        Some(info) => Json(info).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no plugin named {name:?}")),
    }
}

async fn send(
    State(sup): State<SupervisorHandle>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    if let Some(r) = bad_name(&name) {
        return r;
    }
    let (rx, reply_timeout) = match sup.send(&name, body.to_vec()) {
        Ok(x) => x,
        Err(SendRefused::NoSuchPlugin) => {
            return error(StatusCode::NOT_FOUND, format!("no plugin named {name:?}"));
        }
        Err(SendRefused::TooLarge { limit }) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "message of {} bytes is larger than the plugin's max-message ({limit} bytes)",
                    body.len()
                ),
            );
        }
        Err(SendRefused::MailboxFull) => {
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                format!("the mailbox of {name:?} is full: retry later"),
            );
        }
        Err(SendRefused::Unavailable(outcome)) => return outcome_response(outcome),
    };
    match tokio::time::timeout(reply_timeout, rx).await {
        Ok(Ok(outcome)) => outcome_response(outcome),
        Ok(Err(_)) => outcome_response(Outcome::Unavailable {
            status: "stopping".into(),
            reason: "the message was not handled: the plugin stopped".into(),
            retry_after: None,
        }),
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "no outcome within reply-timeout ({reply_timeout:?}); the message stays queued and completes later"
            ),
        ),
    }
}

/// The HTTP form of a message's outcome.
pub fn outcome_response(outcome: Outcome) -> Response {
    match outcome {
        Outcome::Reply(bytes) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            Body::from(bytes),
        )
            .into_response(),
        Outcome::Rejected(reason) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            reason,
        )
            .into_response(),
        Outcome::DeadLettered { id, causes } => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "dead_letter": id, "causes": causes })),
        )
            .into_response(),
        Outcome::Unavailable {
            status,
            reason,
            retry_after,
        } => {
            let mut r = (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "status": status,
                    "reason": reason,
                    "retry_after_secs": retry_after.map(|d| d.as_secs_f64().ceil() as u64),
                })),
            )
                .into_response();
            if let Some(d) = retry_after {
                let secs = d.as_secs_f64().ceil().max(1.0) as u64;
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            r
        }
    }
}
