//! `GET /v1/events`: the host's [`crate::events`] as Server-Sent Events.
//!
//! Each plugin event is a `data:` line of [`api::Event`] JSON with its `id:`
//! (no `event:` name, so a browser's `EventSource.onmessage` gets them all).
//! A client that reconnects sends `Last-Event-ID` and resumes from the
//! backlog; one whose id is gone first gets `event: reset`; one that falls
//! behind gets `event: dropped` and the stream ends. `?plugin=NAME` filters.
//! Both named events carry `{"error": why}`. A comment every 15 s keeps
//! proxies from closing a quiet stream.

use super::api::{self, ErrorBody, EventQuery};
use super::error::ApiError;
use super::extract::Query;
use crate::events::Next;
use crate::supervisor::SupervisorHandle;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use std::convert::Infallible;

/// The stream's header a reconnecting client sends.
const LAST_EVENT_ID: &str = "last-event-id";

/// `GET /v1/events`.
pub(super) async fn stream(
    State(sup): State<SupervisorHandle>,
    headers: HeaderMap,
    Query(q): Query<EventQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    if let Some(p) = &q.plugin {
        crate::name::validate_name(p).map_err(ApiError::BadName)?;
    }
    let last = headers
        .get(LAST_EVENT_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let sub = sup.events().subscribe(last, q.plugin);
    let events = futures::stream::unfold(sub, |mut sub| async move {
        let next = sub.next().await?;
        Some((Ok(sse(next)), sub))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// One item of the stream as an SSE event.
fn sse(next: Next) -> SseEvent {
    let named = |name: &str, why: String| {
        SseEvent::default()
            .event(name)
            .json_data(ErrorBody { error: why })
            .expect("an error body is JSON")
    };
    match next {
        Next::Event(e) => SseEvent::default()
            .id(e.id.clone())
            .json_data(&*e as &api::Event)
            .expect("an event is JSON"),
        Next::Reset(why) => named("reset", why),
        Next::Dropped(why) => named("dropped", why),
    }
}
