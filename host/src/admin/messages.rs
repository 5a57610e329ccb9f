//! `POST /v1/plugins/{name}/messages`, answered exactly as DESIGN.md's "What
//! a sender sees": 200 reply, 422 reason, 500 dead-lettered
//! ([`api::DeadLettered`]), 503 unavailable ([`api::Unavailable`],
//! `Retry-After` when a retry is scheduled), 429 mailbox full, 404 unknown
//! plugin, 400 bad name, 413 too large, 504 no outcome within
//! `reply-timeout` (the message stays queued and completes later).
//!
//! With an `Idempotency-Key` ([`crate::idempotency`]): a kept answer within
//! the plugin's `idempotency-window` is answered again, a retry while the
//! message is queued or running waits for its outcome, and the key with
//! another body is 409. Reading kept answers is the only state this module
//! reads.

use super::api;
use super::error::ApiError;
use super::extract::PluginName;
use crate::idempotency::{self, Joined, Tag};
use crate::mailbox::Outcome;
use crate::supervisor::SupervisorHandle;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// `POST /v1/plugins/{name}/messages`.
pub(super) async fn send(
    State(sup): State<SupervisorHandle>,
    PluginName(name): PluginName,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(key) = headers.get("idempotency-key") else {
        let (rx, reply_timeout) = sup
            .send(&name, body.to_vec(), None)
            .map_err(|why| ApiError::refused(why, &name, body.len()))?;
        return wait(reply_timeout, async { rx.await.ok() }).await;
    };
    let tag = Tag {
        key: idempotency::check_key(key.as_bytes()).map_err(ApiError::BadRequest)?,
        body_sha256: format!("{:x}", Sha256::digest(&body)),
    };
    // A retry whose flight ended without an outcome joins again: the
    // message was not handled, or the store holds another body's answer.
    for _ in 0..3 {
        match keyed(&sup, &name, &tag, &body).await? {
            Keyed::Answer(r) => return Ok(r),
            Keyed::Ended => continue,
        }
    }
    Err(ApiError::Unavailable {
        status: "stopping".into(),
        reason: "the message was not handled: the plugin stopped".into(),
        retry_after: None,
    })
}

enum Keyed {
    Answer(Response),
    Ended,
}

/// One attempt at a keyed message (see the module doc).
async fn keyed(
    sup: &SupervisorHandle,
    name: &str,
    tag: &Tag,
    body: &Bytes,
) -> Result<Keyed, ApiError> {
    let (window, reply_timeout) = sup
        .idempotency_window(name)
        .map_err(|why| ApiError::refused(why, name, body.len()))?;
    let ticket = match sup.flights().join(name, tag) {
        Joined::Conflict => return Err(conflict(tag)),
        Joined::Wait(rx) => {
            return match wait(reply_timeout, idempotency::outcome(rx)).await {
                Err(ApiError::Unavailable { .. }) => Ok(Keyed::Ended),
                other => other.map(Keyed::Answer),
            };
        }
        Joined::First(ticket) => ticket,
    };
    // A store that cannot be read is 503 (try again), never 500, which
    // would read as "dead-lettered".
    let kept = sup.backend().answer(name, &tag.key).await.map_err(|e| {
        ApiError::Failed(format!(
            "cannot read the answers kept for Idempotency-Key {:?}: {e:#}",
            tag.key
        ))
    })?;
    if let Some(kept) = kept
        && idempotency::fresh(&kept, window, crate::state::now_ms())
    {
        if kept.body_sha256 != tag.body_sha256 {
            return Err(conflict(tag));
        }
        let outcome = idempotency::outcome_of(&kept);
        ticket.finish(outcome.clone());
        return Ok(Keyed::Answer(outcome_response(outcome)));
    }
    let (rx, reply_timeout) = sup
        .send(name, body.to_vec(), Some(tag.clone()))
        .map_err(|why| ApiError::refused(why, name, body.len()))?;
    let outcome = ticket.subscribe();
    // The flight outlives this request: a 504 leaves the message queued,
    // and a retry then waits for the same outcome.
    tokio::spawn(async move {
        if let Ok(o) = rx.await {
            ticket.finish(o);
        }
    });
    wait(reply_timeout, idempotency::outcome(outcome))
        .await
        .map(Keyed::Answer)
}

fn conflict(tag: &Tag) -> ApiError {
    ApiError::Conflict(format!(
        "Idempotency-Key {:?} was used for a message with another body: use a new key for a new message",
        tag.key
    ))
}

/// Waits up to `reply_timeout` for an outcome (`None`: the message was
/// dropped unhandled) and renders it.
async fn wait(
    reply_timeout: Duration,
    outcome: impl Future<Output = Option<Outcome>>,
) -> Result<Response, ApiError> {
    match tokio::time::timeout(reply_timeout, outcome).await {
        Ok(Some(outcome)) => Ok(outcome_response(outcome)),
        Ok(None) => Err(ApiError::Unavailable {
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
