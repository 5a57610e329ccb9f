//! Serving the admin API with the bounds of DESIGN.md ("Decisions for the
//! second wave"): [`HEADER_TIMEOUT`] to read a request's headers,
//! [`BODY_TIMEOUT`] for its body, [`WRITE_TIMEOUT`] for each write of an
//! answer (a client that stops reading is cut off), at most
//! [`MAX_CONNECTIONS`] connections at
//! once (more wait in the listener's backlog), no rate limiting. A client that
//! sends slowly or holds connections open cannot take the API from the
//! others or hold host memory for long.
//!
//! `axum::serve` sets none of these, so connections are served here with
//! hyper's HTTP/1 connection builder, which has the header timeout; the body
//! timeout is a middleware ([`read_body_in_time`]) that the router puts
//! around its routes only, inside the token check: a request without the
//! token, or for no route, is answered before a byte of its body is read.

use super::error::ApiError;
use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Time to read a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to read a request's body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a write of an answer may wait for the client to read.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// Largest request body read at all; each plugin's `max-message` is checked
/// against the body after it is read (answer 413).
pub const MAX_BODY_BYTES: usize = 64 << 20;

/// Serves `app` on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, app: Router) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::warn!("admin API: accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(app.clone());
        let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
        stream.set_write_timeout(Some(WRITE_TIMEOUT));
        tokio::spawn(async move {
            let _ = http1()
                .serve_connection(TokioIo::new(Box::pin(stream)), service)
                .await;
            drop(permit);
        });
    }
}

/// The HTTP/1 connection settings of the admin API (the header timeout and
/// the timer it needs), shared with the fuzz harness so that it serves
/// connections as the host does.
pub fn http1() -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    builder
}

/// Reads the whole body within [`BODY_TIMEOUT`] (408 when it does not
/// arrive), then hands the request on; a body over the router's limit gets 413.
pub(super) async fn read_body_in_time(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let read = axum::body::to_bytes(body, MAX_BODY_BYTES);
    match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(e)) => ApiError::TooLarge(format!(
            "request body not read: {e} (at most {MAX_BODY_BYTES} bytes)"
        ))
        .into_response(),
        Err(_) => ApiError::BodyTimeout(BODY_TIMEOUT).into_response(),
    }
}
