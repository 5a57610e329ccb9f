//! `POST /v1/plugins/{name}/messages`, answered exactly as DESIGN.md's "What
//! a sender sees": 200 reply, 422 reason, 500 dead-lettered
//! ([`api::DeadLettered`]), 503 unavailable ([`api::Unavailable`],
//! `Retry-After` when a retry is scheduled), 429 mailbox full, 404 unknown
//! plugin, 400 bad name, 413 too large, 504 no outcome within
//! `reply-timeout` (the message stays queued and completes later).
//!
//! This module sends messages and renders their outcomes; it reads no state.

use super::api;
use super::error::ApiError;
use super::extract::PluginName;
use crate::mailbox::Outcome;
use crate::supervisor::SupervisorHandle;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// `POST /v1/plugins/{name}/messages`.
pub(super) async fn send(
    State(sup): State<SupervisorHandle>,
    PluginName(name): PluginName,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (rx, reply_timeout) = sup
        .send(&name, body.to_vec())
        .map_err(|why| ApiError::refused(why, &name, body.len()))?;
    match tokio::time::timeout(reply_timeout, rx).await {
        Ok(Ok(outcome)) => Ok(outcome_response(outcome)),
        Ok(Err(_)) => Err(ApiError::Unavailable {
            status: "stopping".into(),
            reason: "the message was not handled: the plugin stopped".into(),
            retry_after: None,
        }),
        Err(_) => Err(ApiError::NoOutcome(reply_timeout)),
    }
}

/// The HTTP form of a message's outcome.
fn outcome_response(outcome: Outcome) -> Response {
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
            Json(api::DeadLettered {
                causes,
                dead_letter: id,
            }),
        )
            .into_response(),
        unavailable @ Outcome::Unavailable { .. } => ApiError::from(unavailable).into_response(),
    }
}
