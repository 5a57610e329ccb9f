//! A plugin's state as operators see it: list every key (small values
//! shown), read one value as bytes, and reset it all (with a confirmation
//! that repeats the plugin's name).
//!
//! Reads go to the state backend; the reset is an operation of the
//! supervisor (the plugin starts fresh), never a direct delete.

use super::api::{self, Confirm, KeyQuery, LISTED_VALUE_BYTES, StateEntry, StateList, StateUsage};
use super::error::ApiError;
use super::extract::{KnownPlugin, Path, Query};
use super::plugins::ack;
use crate::supervisor::{Operation, SupervisorHandle};
use anyhow::Context;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

/// `GET /v1/plugins/{name}/state`: every key with its size, and its value
/// when it is small (`text` if UTF-8, else `hex`). With `?key=K[&bucket=B]`,
/// one value as bytes (bucket `default` unless named).
pub(super) async fn list(
    State(sup): State<SupervisorHandle>,
    KnownPlugin(name): KnownPlugin,
    Query(q): Query<KeyQuery>,
) -> Result<Response, ApiError> {
    if let Some(key) = q.key {
        let bucket = q.bucket.unwrap_or_else(|| "default".to_string());
        return value(&sup, &name, &bucket, &key).await;
    }
    let b = sup.backend();
    let listed = b.list_all(&name).await.context("failed to read state")?;
    let usage = b.usage(&name).await.context("failed to read state")?;
    let mut keys = Vec::with_capacity(listed.len());
    for (bucket, key, size) in listed {
        let shown = if size <= LISTED_VALUE_BYTES {
            b.get(&name, &bucket, &key).await.ok().flatten()
        } else {
            None
        };
        keys.push(StateEntry::new(bucket, key, size, shown));
    }
    Ok(Json(StateList {
        keys,
        name,
        usage: StateUsage {
            bytes: usage.bytes,
            keys: usage.keys,
        },
    })
    .into_response())
}

/// One value, as bytes.
async fn value(
    sup: &SupervisorHandle,
    name: &str,
    bucket: &str,
    key: &str,
) -> Result<Response, ApiError> {
    let v = sup
        .backend()
        .get(name, bucket, key)
        .await
        .context("failed to read state")?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "plugin {name:?} has no key {key:?} in bucket {bucket:?}"
            ))
        })?;
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from(v),
    )
        .into_response())
}

/// `GET /v1/plugins/{name}/state/{bucket}/{key}`: one value, as bytes.
pub(super) async fn get(
    State(sup): State<SupervisorHandle>,
    KnownPlugin(name): KnownPlugin,
    Path((_, bucket, key)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    value(&sup, &name, &bucket, &key).await
}

/// `POST /v1/plugins/{name}/state/reset?confirm=NAME`: deletes every key of
/// the plugin and starts it fresh. The confirmation must repeat the name.
pub(super) async fn reset(
    State(sup): State<SupervisorHandle>,
    KnownPlugin(name): KnownPlugin,
    Query(c): Query<Confirm>,
    body: Bytes,
) -> Result<Json<api::OperationAck>, ApiError> {
    // Only a JSON object confirms: serde's derived struct would also take
    // an array (`["NAME"]`), which no client means as a confirmation.
    let in_body = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| match v {
            serde_json::Value::Object(mut fields) => fields.remove("confirm"),
            _ => None,
        });
    let confirm = Confirm {
        confirm: c.confirm.or(in_body),
    };
    if !confirm.confirms(&name) {
        return Err(ApiError::BadRequest(format!(
            "resetting deletes all of {name:?}'s state: confirm with ?confirm={name}"
        )));
    }
    let r = sup.operate(&name, Operation::ResetState).await;
    ack(&sup, name, Operation::ResetState, r)
}
