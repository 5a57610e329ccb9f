//! The operations endpoints: restart/stop/start, crash reports, dead letters
//! (list, replay, drop) and plugin state (list, get, reset).

use super::router::{bad_name, error};
use crate::crash::{CrashReport, DeadLetter, MessageInfo};
use crate::state::{Commit, RecordKind};
use crate::supervisor::{OperateError, Operation, SendRefused, SupervisorHandle};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Most records one page returns.
pub const MAX_PAGE: usize = 1000;

/// `?offset=&limit=` of a listing.
#[derive(Debug, Deserialize)]
pub struct Page {
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
}

impl Page {
    fn limit(&self) -> usize {
        self.limit.unwrap_or(20).clamp(1, MAX_PAGE)
    }
}

fn unknown(sup: &SupervisorHandle, name: &str) -> Option<Response> {
    if let Some(r) = bad_name(name) {
        return Some(r);
    }
    sup.get(name)
        .is_none()
        .then(|| error(StatusCode::NOT_FOUND, format!("no plugin named {name:?}")))
}

fn op_result(
    name: &str,
    op: Operation,
    r: Result<(), OperateError>,
    sup: &SupervisorHandle,
) -> Response {
    match r {
        Ok(()) => Json(
            json!({ "name": name, "operation": op_name(op), "ok": true, "plugin": sup.get(name) }),
        )
        .into_response(),
        Err(OperateError::NoSuchPlugin) => {
            error(StatusCode::NOT_FOUND, format!("no plugin named {name:?}"))
        }
        Err(OperateError::Failed(why)) => error(StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

fn op_name(op: Operation) -> &'static str {
    match op {
        Operation::Stop => "stop",
        Operation::Start => "start",
        Operation::Restart => "restart",
        Operation::ResetState => "state-reset",
    }
}

/// `POST /v1/plugins/{name}/restart|stop|start`.
pub async fn operate(sup: SupervisorHandle, name: String, op: Operation) -> Response {
    if let Some(r) = bad_name(&name) {
        return r;
    }
    let r = sup.operate(&name, op).await;
    op_result(&name, op, r, &sup)
}

/// `POST /v1/plugins/restart|stop|start`.
pub async fn operate_all(sup: SupervisorHandle, op: Operation) -> Response {
    let results = sup.operate_all(op).await;
    let ok = results.iter().all(|(_, r)| r.is_ok());
    let body: Vec<_> = results
        .into_iter()
        .map(|(name, r)| match r {
            Ok(()) => json!({ "name": name, "ok": true }),
            Err(e) => json!({ "name": name, "ok": false, "error": e.to_string() }),
        })
        .collect();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::MULTI_STATUS
    };
    (
        status,
        Json(json!({ "operation": op_name(op), "ok": ok, "plugins": body })),
    )
        .into_response()
}

/// One page of a plugin's records of `kind`, newest first, each turned into
/// its JSON view by `view`: `{"name", FIELD: [...], "offset", "next_offset"}`.
async fn records_page<T: Serialize>(
    sup: &SupervisorHandle,
    name: &str,
    kind: RecordKind,
    page: &Page,
    field: &str,
    view: impl Fn(&[u8]) -> Option<T>,
) -> Response {
    if let Some(r) = unknown(sup, name) {
        return r;
    }
    let limit = page.limit();
    match sup
        .backend()
        .records(name, kind, page.offset, limit + 1)
        .await
    {
        Ok(mut rows) => {
            let more = rows.len() > limit;
            rows.truncate(limit);
            let items: Vec<T> = rows.iter().filter_map(|(_, body)| view(body)).collect();
            Json(json!({
                "name": name,
                field: items,
                "offset": page.offset,
                "next_offset": more.then_some(page.offset + limit),
            }))
            .into_response()
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to read {field}: {e:#}"),
        ),
    }
}

/// `GET /v1/plugins/{name}/crashes?offset=&limit=`: newest first.
pub async fn crashes(
    State(sup): State<SupervisorHandle>,
    Path(name): Path<String>,
    Query(page): Query<Page>,
) -> Response {
    records_page(&sup, &name, RecordKind::Crash, &page, "crashes", |body| {
        serde_json::from_slice::<CrashReport>(body).ok()
    })
    .await
}

/// A dead letter as the API lists it.
#[derive(Debug, Serialize)]
pub struct DeadLetterView {
    id: u64,
    time_ms: u64,
    causes: Vec<String>,
    reports: Vec<u64>,
    message: MessageInfo,
}

/// `GET /v1/plugins/{name}/dead-letters?offset=&limit=`: newest first.
pub async fn dead_letters(
    State(sup): State<SupervisorHandle>,
    Path(name): Path<String>,
    Query(page): Query<Page>,
) -> Response {
    records_page(
        &sup,
        &name,
        RecordKind::DeadLetter,
        &page,
        "dead_letters",
        |body| {
            let d = serde_json::from_slice::<DeadLetter>(body).ok()?;
            Some(DeadLetterView {
                id: d.id,
                time_ms: d.time_ms,
                message: MessageInfo::of(&d.message, d.causes.len() as u32),
                causes: d.causes,
                reports: d.reports,
            })
        },
    )
    .await
}

async fn take_dead_letter(
    sup: &SupervisorHandle,
    name: &str,
    id: u64,
) -> Result<DeadLetter, Response> {
    if let Some(r) = unknown(sup, name) {
        return Err(r);
    }
    let body = sup
        .backend()
        .record(name, RecordKind::DeadLetter, id)
        .await
        .map_err(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("failed to read dead letter: {e:#}"),
            )
        })?
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                format!("plugin {name:?} has no dead letter {id}"),
            )
        })?;
    serde_json::from_slice(&body).map_err(|e| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("dead letter {id} is unreadable: {e}"),
        )
    })
}

async fn remove_dead_letter(sup: &SupervisorHandle, name: &str, id: u64) -> Result<(), Response> {
    let mut c = Commit::new(name);
    c.remove_records.push((RecordKind::DeadLetter, id));
    sup.backend().commit(c).await.map_err(|e| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to remove dead letter: {e:#}"),
        )
    })?;
    sup.metrics()
        .dead_letters
        .get_or_create(&crate::admin::metrics::Metrics::plugin(name))
        .dec();
    Ok(())
}

/// `POST /v1/plugins/{name}/dead-letters/{id}/replay`: queues the message
/// again (nobody waits for its outcome) and removes the dead letter.
pub async fn replay(
    State(sup): State<SupervisorHandle>,
    Path((name, id)): Path<(String, u64)>,
) -> Response {
    let letter = match take_dead_letter(&sup, &name, id).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    match sup.enqueue(&name, letter.message) {
        Ok(()) => {}
        Err(SendRefused::MailboxFull) => {
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                "the mailbox is full: retry later",
            );
        }
        Err(SendRefused::Unavailable(o)) => return super::router::outcome_response(o),
        Err(e) => return error(StatusCode::CONFLICT, format!("cannot replay: {e:?}")),
    }
    if let Err(r) = remove_dead_letter(&sup, &name, id).await {
        return r;
    }
    Json(json!({ "name": name, "replayed": id })).into_response()
}

/// `POST /v1/plugins/{name}/dead-letters/{id}/drop`: deletes the dead letter.
pub async fn drop_letter(
    State(sup): State<SupervisorHandle>,
    Path((name, id)): Path<(String, u64)>,
) -> Response {
    if let Err(r) = take_dead_letter(&sup, &name, id).await {
        return r;
    }
    if let Err(r) = remove_dead_letter(&sup, &name, id).await {
        return r;
    }
    Json(json!({ "name": name, "dropped": id })).into_response()
}

/// Values up to this size are shown in the state listing.
pub const LISTED_VALUE_BYTES: u64 = 4096;

/// `?bucket=&key=` of the state listing.
#[derive(Debug, Deserialize)]
pub struct KeyQuery {
    bucket: Option<String>,
    key: Option<String>,
}

/// `GET /v1/plugins/{name}/state`: every key with its size, and its value
/// when it is small (`text` if UTF-8, else `hex`). With `?key=K[&bucket=B]`,
/// one value as bytes (bucket `default` unless named).
pub async fn state_list(
    State(sup): State<SupervisorHandle>,
    Path(name): Path<String>,
    Query(q): Query<KeyQuery>,
) -> Response {
    if let Some(r) = unknown(&sup, &name) {
        return r;
    }
    if let Some(key) = q.key {
        let bucket = q.bucket.unwrap_or_else(|| "default".to_string());
        return value(&sup, &name, &bucket, &key).await;
    }
    let b = sup.backend();
    match (b.list_all(&name).await, b.usage(&name).await) {
        (Ok(all), Ok(usage)) => {
            let mut keys = Vec::with_capacity(all.len());
            for (bucket, key, size) in all {
                let mut entry = json!({ "bucket": bucket, "key": key, "size": size });
                if size <= LISTED_VALUE_BYTES
                    && let Ok(Some(v)) = b.get(&name, &bucket, &key).await
                {
                    match String::from_utf8(v) {
                        Ok(text) => entry["text"] = json!(text),
                        Err(e) => entry["hex"] = json!(crate::crash::hex(e.as_bytes())),
                    }
                }
                keys.push(entry);
            }
            Json(json!({ "name": name, "keys": keys, "usage": { "keys": usage.keys, "bytes": usage.bytes } }))
                .into_response()
        }
        (Err(e), _) | (_, Err(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to read state: {e:#}"),
        ),
    }
}

async fn value(sup: &SupervisorHandle, name: &str, bucket: &str, key: &str) -> Response {
    match sup.backend().get(name, bucket, key).await {
        Ok(Some(v)) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            Body::from(v),
        )
            .into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("plugin {name:?} has no key {key:?} in bucket {bucket:?}"),
        ),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to read state: {e:#}"),
        ),
    }
}

/// `GET /v1/plugins/{name}/state/{bucket}/{key}`: one value, as bytes.
pub async fn state_get(
    State(sup): State<SupervisorHandle>,
    Path((name, bucket, key)): Path<(String, String, String)>,
) -> Response {
    if let Some(r) = unknown(&sup, &name) {
        return r;
    }
    value(&sup, &name, &bucket, &key).await
}

/// `?confirm=NAME` (or `true`) of a state reset; the same may come as a JSON
/// body `{"confirm": "NAME"}` or `{"confirm": true}`.
#[derive(Debug, Deserialize)]
pub struct Confirm {
    confirm: Option<serde_json::Value>,
}

fn confirmed(c: Option<&serde_json::Value>, name: &str) -> bool {
    match c {
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::String(s)) => s == name || s == "true" || s == "yes",
        _ => false,
    }
}

/// `POST /v1/plugins/{name}/state/reset?confirm=NAME`: deletes every key of
/// the plugin and starts it fresh. The confirmation must repeat the name.
pub async fn state_reset(
    State(sup): State<SupervisorHandle>,
    Path(name): Path<String>,
    Query(c): Query<Confirm>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = unknown(&sup, &name) {
        return r;
    }
    // Only a JSON object confirms: serde's derived struct would also take
    // an array (`["NAME"]`), which no client means as a confirmation.
    let in_body = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| match v {
            serde_json::Value::Object(mut fields) => fields.remove("confirm"),
            _ => None,
        });
    if !confirmed(c.confirm.as_ref().or(in_body.as_ref()), &name) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("resetting deletes all of {name:?}'s state: confirm with ?confirm={name}"),
        );
    }
    let r = sup.operate(&name, Operation::ResetState).await;
    op_result(&name, Operation::ResetState, r, &sup)
}
