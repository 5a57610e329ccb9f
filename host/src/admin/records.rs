//! A plugin's crash reports and dead letters: list them, replay a dead
//! letter (queue its message again) or drop it.
//!
//! Records are read and removed only through [`crate::crash::store`], which
//! owns their format; this module never touches the backend's records
//! itself.

use super::api::{self, CrashList, DeadLetterList, Page};
use super::error::ApiError;
use super::extract::{KnownPlugin, Path, Query};
use crate::crash::{DeadLetter, store};
use crate::supervisor::SupervisorHandle;
use axum::Json;
use axum::extract::State;

/// `GET /v1/plugins/{name}/crashes?offset=&limit=`: newest first.
pub(super) async fn crashes(
    State(sup): State<SupervisorHandle>,
    KnownPlugin(name): KnownPlugin,
    Query(page): Query<Page>,
) -> Result<Json<CrashList>, ApiError> {
    let listed =
        store::crash_reports(sup.backend().as_ref(), &name, page.offset, page.limit()).await?;
    Ok(Json(CrashList {
        crashes: listed.items,
        name,
        next_offset: page.next(listed.more),
        offset: page.offset,
    }))
}

/// `GET /v1/plugins/{name}/dead-letters?offset=&limit=`: newest first.
pub(super) async fn dead_letters(
    State(sup): State<SupervisorHandle>,
    KnownPlugin(name): KnownPlugin,
    Query(page): Query<Page>,
) -> Result<Json<DeadLetterList>, ApiError> {
    let listed =
        store::dead_letters(sup.backend().as_ref(), &name, page.offset, page.limit()).await?;
    Ok(Json(DeadLetterList {
        dead_letters: listed.items.into_iter().map(Into::into).collect(),
        name,
        next_offset: page.next(listed.more),
        offset: page.offset,
    }))
}

/// Dead letter `id` of `name` (404 when there is none).
async fn find(sup: &SupervisorHandle, name: &str, id: u64) -> Result<DeadLetter, ApiError> {
    store::dead_letter(sup.backend().as_ref(), name, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("plugin {name:?} has no dead letter {id}")))
}

async fn remove(sup: &SupervisorHandle, name: &str, id: u64) -> Result<(), ApiError> {
    store::remove_dead_letter(sup.backend().as_ref(), sup.metrics(), name, id).await?;
    Ok(())
}

/// `POST /v1/plugins/{name}/dead-letters/{id}/replay`: queues the message
/// again (nobody waits for its outcome) and removes the dead letter.
pub(super) async fn replay(
    State(sup): State<SupervisorHandle>,
    KnownPlugin(name): KnownPlugin,
    Path((_, id)): Path<(String, u64)>,
) -> Result<Json<api::Replayed>, ApiError> {
    let letter = find(&sup, &name, id).await?;
    let size = letter.message.len();
    sup.enqueue(&name, letter.message)
        .map_err(|why| ApiError::refused(why, &name, size))?;
    remove(&sup, &name, id).await?;
    Ok(Json(api::Replayed { name, replayed: id }))
}

/// `POST /v1/plugins/{name}/dead-letters/{id}/drop` (or `DELETE
/// /v1/plugins/{name}/dead-letters/{id}`): deletes the dead letter.
pub(super) async fn drop_letter(
    State(sup): State<SupervisorHandle>,
    KnownPlugin(name): KnownPlugin,
    Path((_, id)): Path<(String, u64)>,
) -> Result<Json<api::Dropped>, ApiError> {
    find(&sup, &name, id).await?;
    remove(&sup, &name, id).await?;
    Ok(Json(api::Dropped { dropped: id, name }))
}
