//! The admin HTTP API (axum): [`router`] maps each endpoint to its handler,
//! [`require_token`] guards it with a bearer token, [`serve`] serves it with
//! the connection bounds of DESIGN.md. The request and response types are
//! [`api`]; every error answer is an [`error::ApiError`].
//!
//! One module per resource: [`plugins`] (readiness, status, operations),
//! [`health`] (`/health` for load balancers), [`events`] (the event stream),
//! [`messages`] (send), [`records`] (crash reports, dead letters, through
//! [`crate::crash::store`]), [`state`] (list, get, reset). Handlers reach the
//! host only through [`SupervisorHandle`]. The CLI's client lives in the
//! binary, not here.

pub mod api;
pub mod error;
mod events;
mod extract;
mod health;
mod messages;
mod plugins;
mod records;
mod serve;
mod state;

use crate::supervisor::{Operation, SupervisorHandle};
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::routing::{delete, get, post};
use error::ApiError;
use extract::PluginName;
use subtle::ConstantTimeEq;

pub use serve::{
    BODY_TIMEOUT, HEADER_TIMEOUT, MAX_BODY_BYTES, MAX_CONNECTIONS, WRITE_TIMEOUT, http1, serve,
};

/// Paths served without the token: load-balancer probes send none
/// (DESIGN.md, refinement 9).
const OPEN_PATHS: [&str; 3] = ["/healthz", "/readyz", "/health"];

/// Requires `Authorization: Bearer TOKEN` on every request but the probes
/// of [`OPEN_PATHS`]. The token is compared in constant time.
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
                let matches =
                    given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(token.as_bytes())));
                if OPEN_PATHS.contains(&req.uri().path()) || matches {
                    next.run(req).await
                } else {
                    axum::response::IntoResponse::into_response(ApiError::Unauthorized)
                }
            }
        },
    ))
}

/// Operation `op` on the plugin of the path.
fn operate_one(op: Operation) -> axum::routing::MethodRouter<SupervisorHandle> {
    post(move |State(s): State<SupervisorHandle>, name: PluginName| plugins::operate(s, name, op))
}

/// Operation `op` on every plugin.
fn operate_all(op: Operation) -> axum::routing::MethodRouter<SupervisorHandle> {
    post(move |State(s): State<SupervisorHandle>| plugins::operate_all(s, op))
}

/// The admin API.
pub fn router(sup: SupervisorHandle) -> Router {
    Router::new()
        .route("/healthz", get(|| async { api::HEALTHZ }))
        .route("/readyz", get(plugins::readyz))
        .route("/health", get(health::host))
        .route("/v1/events", get(events::stream))
        .route("/v1/plugins/{name}/health", get(health::plugin))
        .route("/metrics", get(plugins::metrics))
        .route("/v1/plugins", get(plugins::list))
        .route("/v1/plugins/{name}", get(plugins::one))
        .route("/v1/plugins/{name}/messages", post(messages::send))
        .route("/v1/plugins/restart", operate_all(Operation::Restart))
        .route("/v1/plugins/stop", operate_all(Operation::Stop))
        .route("/v1/plugins/start", operate_all(Operation::Start))
        .route(
            "/v1/plugins/{name}/restart",
            operate_one(Operation::Restart),
        )
        .route("/v1/plugins/{name}/stop", operate_one(Operation::Stop))
        .route("/v1/plugins/{name}/start", operate_one(Operation::Start))
        .route("/v1/plugins/{name}/crashes", get(records::crashes))
        .route(
            "/v1/plugins/{name}/dead-letters",
            get(records::dead_letters),
        )
        .route(
            "/v1/plugins/{name}/dead-letters/{id}/replay",
            post(records::replay),
        )
        .route(
            "/v1/plugins/{name}/dead-letters/{id}/drop",
            post(records::drop_letter),
        )
        .route(
            "/v1/plugins/{name}/dead-letters/{id}",
            delete(records::drop_letter),
        )
        .route("/v1/plugins/{name}/state", get(state::list))
        .route("/v1/plugins/{name}/state/reset", post(state::reset))
        .route("/v1/plugins/{name}/state/{bucket}/{key}", get(state::get))
        .route_layer(axum::middleware::from_fn(serve::read_body_in_time))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(sup)
}

/// A path the API does not have: a JSON error like every other.
async fn no_route(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!(
        "no such endpoint: {}: see `wasm-sup --help` or docs/operations.md (Admin HTTP API)",
        uri.path()
    ))
}

/// A known path asked with a method it does not take.
async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::WrongMethod(format!("{} does not take {method}", uri.path()))
}
