//! [`ApiError`]: every error answer of the admin API, each with its status,
//! rendered as `{"error": MESSAGE}` ([`api::ErrorBody`]); a plugin that cannot
//! take a message answers [`api::Unavailable`] with `Retry-After` instead.
//! Handlers return `Result<_, ApiError>` and use `?`; how a refused message
//! ([`SendRefused`]) or a failed operation ([`OperateError`]) maps to a status
//! is written here once.
//!
//! This module builds answers only: it reads no state and calls no handler.

use super::api;
use crate::mailbox::Outcome;
use crate::supervisor::{OperateError, SendRefused};
use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::time::Duration;

/// An error answer of the admin API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The path names no valid plugin name (400): why.
    #[error("{0}")]
    BadName(String),
    /// The request is not what the endpoint takes (400).
    #[error("{0}")]
    BadRequest(String),
    /// A path parameter could not be read (its own status, 400 mostly).
    #[error("{}", .0.body_text())]
    Path(PathRejection),
    /// The query string could not be read (400).
    #[error("{}", .0.body_text())]
    Query(QueryRejection),
    /// No or the wrong bearer token (401).
    #[error("missing or wrong bearer token: send Authorization: Bearer TOKEN")]
    Unauthorized,
    /// No plugin of that name (404).
    #[error("no plugin named {0:?}")]
    NoSuchPlugin(String),
    /// Something else that does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The path exists, the method does not (405).
    #[error("{0}")]
    WrongMethod(String),
    /// The request body did not arrive in time (408).
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(Duration),
    /// The request conflicts with one made before (409).
    #[error("{0}")]
    Conflict(String),
    /// A body over a limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// The plugin's mailbox is full (429).
    #[error("the mailbox of {0:?} is full: retry later")]
    MailboxFull(String),
    /// The host failed (500): the error with its causes.
    #[error("{0:#}")]
    Internal(anyhow::Error),
    /// An operation could not be carried out (503): why.
    #[error("{0}")]
    Failed(String),
    /// The plugin takes no messages now (503, [`api::Unavailable`], with
    /// `Retry-After` when a retry is scheduled).
    #[error("{status}: {reason}")]
    Unavailable {
        /// The plugin's status.
        status: String,
        /// Why.
        reason: String,
        /// Until its next attempt, if one is scheduled.
        retry_after: Option<Duration>,
    },
    /// No outcome within the plugin's `reply-timeout` (504).
    #[error(
        "no outcome within reply-timeout ({0:?}); the message stays queued and completes later"
    )]
    NoOutcome(Duration),
}

impl ApiError {
    /// The status the error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadName(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Path(r) => r.status(),
            ApiError::Query(r) => r.status(),
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NoSuchPlugin(_) | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::WrongMethod(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MailboxFull(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Failed(_) | ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NoOutcome(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// Why a message of `size` bytes to `plugin` was not accepted.
    pub fn refused(why: SendRefused, plugin: &str, size: usize) -> ApiError {
        match why {
            SendRefused::NoSuchPlugin => ApiError::NoSuchPlugin(plugin.to_string()),
            SendRefused::TooLarge { limit } => ApiError::TooLarge(format!(
                "message of {size} bytes is larger than the plugin's max-message ({limit} bytes)"
            )),
            SendRefused::MailboxFull => ApiError::MailboxFull(plugin.to_string()),
            SendRefused::Unavailable(outcome) => ApiError::from(outcome),
        }
    }

    /// Why an operator's request to `plugin` was not carried out.
    pub fn operate(why: OperateError, plugin: &str) -> ApiError {
        match why {
            OperateError::NoSuchPlugin => ApiError::NoSuchPlugin(plugin.to_string()),
            OperateError::Failed(why) => ApiError::Failed(why),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        ApiError::Internal(e)
    }
}

/// A message that will not be handled. Only [`Outcome::Unavailable`] comes
/// this way; any other outcome is a host error.
impl From<Outcome> for ApiError {
    fn from(outcome: Outcome) -> ApiError {
        match outcome {
            Outcome::Unavailable {
                status,
                reason,
                retry_after,
            } => ApiError::Unavailable {
                status,
                reason,
                retry_after,
            },
            other => ApiError::Internal(anyhow::anyhow!(
                "a refused message had the outcome {other:?}"
            )),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> ApiError {
        ApiError::Path(r)
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> ApiError {
        ApiError::Query(r)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match self {
            ApiError::Unavailable {
                status: plugin_status,
                reason,
                retry_after,
            } => {
                let body = api::Unavailable {
                    reason,
                    retry_after_secs: retry_after.map(|d| d.as_secs_f64().ceil() as u64),
                    status: plugin_status,
                };
                let mut r = (status, Json(body)).into_response();
                if let Some(d) = retry_after {
                    let secs = d.as_secs_f64().ceil().max(1.0) as u64;
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                }
                r
            }
            e => (
                status,
                Json(api::ErrorBody {
                    error: e.to_string(),
                }),
            )
                .into_response(),
        }
    }
}
