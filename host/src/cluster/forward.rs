//! Any node serves any plugin (DESIGN.md, "Cluster, precisely"): an axum
//! layer in front of the admin API that answers a plugin's requests here
//! when this node runs it, and otherwise forwards them, one hop at most
//! (marked by the header [`FORWARDED`]), to the owner's advertised
//! address, relaying the answer unchanged. When forwarding fails the
//! answer says how: 503 `unowned` (no live node holds it; `Retry-After:
//! 1`), 503 `owner-unreachable` (nothing was sent), 504 (the connection was
//! lost after sending: the outcome is unknown), 503 `owner-changed` (the
//! receiver no longer owns it).
//!
//! A message a draining node handed over (its 503 says `moved`) was not
//! handled: it is forwarded to the plugin's new owner once there is one.
//!
//! The layer also answers `GET /v1/cluster`, and `GET /v1/plugins` for the
//! whole cluster (each node's own list, with each plugin's `owner`).

use super::{Cluster, Inner, MOVED, db};
use crate::admin::api;
use crate::admin::error::ApiError;
use crate::admin::{BODY_TIMEOUT, MAX_BODY_BYTES};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::time::{Duration, Instant, UNIX_EPOCH};

/// The header that marks a forwarded request (one hop at most).
pub const FORWARDED: &str = "wasm-sup-forwarded";

/// Headers not passed on either way (hop by hop, or set by the client).
const HOP: [&str; 6] = [
    "connection",
    "host",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "upgrade",
];

/// The cluster's layer over the admin API; see the module doc.
pub async fn middleware(State(cluster): State<Cluster>, req: Request, next: Next) -> Response {
    let inner = &cluster.inner;
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let forwarded = req.headers().contains_key(FORWARDED);
    match segments.as_slice() {
        ["v1", "cluster"] if req.method() == Method::GET => cluster_info(inner).await,
        ["v1", "plugins"] if req.method() == Method::GET => list(inner, req, next, forwarded).await,
        ["v1", "plugins", "restart" | "stop" | "start"] if req.method() == Method::POST => {
            next.run(req).await
        }
        ["v1", "plugins", name, rest @ ..] => {
            let name = name.to_string();
            let ask = if rest.is_empty() && req.method() == Method::GET {
                Ask::Info
            } else if rest == ["move"] && req.method() == Method::POST {
                Ask::Move
            } else {
                Ask::Other
            };
            plugin(inner, &name, ask, forwarded, req, next).await
        }
        _ => next.run(req).await,
    }
}

/// What a request about one plugin asks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ask {
    /// `GET /v1/plugins/{name}`: answered with its `owner`.
    Info,
    /// `POST /v1/plugins/{name}/move?node=NODE`: served by its owner.
    Move,
    /// Anything else: the admin API's own answer.
    Other,
}

/// A request about plugin `name`.
async fn plugin(
    inner: &Inner,
    name: &str,
    ask: Ask,
    forwarded: bool,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let body = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY_BYTES))
        .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            return ApiError::TooLarge(format!(
                "request body over {MAX_BODY_BYTES} bytes, or cut off"
            ))
            .into_response();
        }
        Err(_) => {
            return (
                StatusCode::REQUEST_TIMEOUT,
                axum::Json(api::ErrorBody {
                    error: format!("request body not read within {BODY_TIMEOUT:?}"),
                }),
            )
                .into_response();
        }
    };
    let sup = &inner.supervisor;
    let me = inner.config.node.as_str();
    let advertise = inner.config.advertise.as_str();
    let reply_timeout = sup.reply_timeout_of(name);
    let unknown = || !sup.knows(name) && inner.snapshot.read().row_of(name).is_none();
    let target = if sup.contains(name) {
        Where::Here
    } else if forwarded {
        if unknown() {
            return next.run(Request::from_parts(parts, Body::from(body))).await;
        }
        return unavailable(
            "owner-changed",
            &format!("{me} does not own {name} (any more)"),
            None,
        );
    } else {
        let owner = {
            let snap = inner.snapshot.read();
            snap.row_of(name)
                .and_then(|row| snap.live_holder(row))
                .map(|n| n.address.clone())
        };
        match owner {
            // Held here, and starting or being handed over.
            Some(address) if address == advertise => {
                find_owner(inner, name, reply_timeout, advertise).await
            }
            Some(address) => Where::There(address),
            None if unknown() => {
                return next.run(Request::from_parts(parts, Body::from(body))).await;
            }
            None => find_owner(inner, name, reply_timeout.min(inner.config.lease), "").await,
        }
    };
    let forward = |body| Forward {
        name,
        parts: &parts,
        body,
        reply_timeout,
    };
    match target {
        Where::There(address) => relay(inner, &forward(body), &address).await,
        Where::Nobody => unowned(name),
        Where::Here if ask == Ask::Move => move_from_here(inner, name, &parts).await,
        Where::Here => {
            let local = Request::from_parts(parts.clone(), Body::from(body.clone()));
            let answer = next.run(local).await;
            // Handed over (a drain, a rebalance) while the request was on
            // its way: it was not handled here; its new owner takes it.
            // Taken off this node just before the handler looked: 404.
            let gone =
                answer.status() == StatusCode::NOT_FOUND && sup.knows(name) && !sup.contains(name);
            if answer.status() != StatusCode::SERVICE_UNAVAILABLE && !gone {
                return if ask == Ask::Info {
                    with_owner(answer, me).await
                } else {
                    answer
                };
            }
            let (head, bytes) = buffered(answer).await;
            if !gone && status_of(&bytes).as_deref() != Some(MOVED) {
                return Response::from_parts(head, Body::from(bytes));
            }
            if forwarded {
                return unavailable(
                    "owner-changed",
                    &format!("{me} no longer owns {name}"),
                    None,
                );
            }
            match find_owner(inner, name, reply_timeout, advertise).await {
                Where::There(address) => relay(inner, &forward(body), &address).await,
                Where::Here => relay(inner, &forward(body), advertise).await,
                Where::Nobody => unowned(name),
            }
        }
    }
}

/// `POST /v1/plugins/{name}/move?node=NODE` on the plugin's owner: hands
/// its unit over to NODE as a drain would (the call in flight commits,
/// queued messages follow it), and NODE keeps it however rendezvous hashing
/// would place it, until it leaves. Answers once NODE runs it (or after two
/// leases, with `owner: null`).
async fn move_from_here(inner: &Inner, name: &str, parts: &axum::http::request::Parts) -> Response {
    let me = inner.config.node.as_str();
    let target = parts
        .uri
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("node="))
        .unwrap_or_default()
        .to_string();
    if target.is_empty() {
        return ApiError::BadRequest(format!(
            "say where to: POST /v1/plugins/{name}/move?node=NODE (wasm-sup move {name} NODE)"
        ))
        .into_response();
    }
    let live = {
        let snap = inner.snapshot.read();
        snap.nodes
            .get(&target)
            .is_some_and(|n| n.live && !n.draining)
    };
    if !live {
        return ApiError::Conflict(format!(
            "no live node named {target:?} to move {name} to: see `wasm-sup status` for the nodes"
        ))
        .into_response();
    }
    let unit = inner.supervisor.unit_of(name);
    let mut moved = target != me;
    if moved {
        let _moves = inner.moves.lock().await;
        let held = inner.held.lock().get(&unit).cloned();
        match held {
            Some(h) => {
                let why = format!("moved to {target} on request");
                inner.hand_over(&unit, &h, &why, Some(&target)).await;
            }
            None => moved = false,
        }
    }
    let owner = if moved {
        match find_owner(inner, name, inner.config.lease * 2, &inner.config.advertise).await {
            Where::There(address) => {
                let snap = inner.snapshot.read();
                snap.nodes
                    .values()
                    .find(|n| n.address == address)
                    .map(|n| n.name.clone())
            }
            _ => None,
        }
    } else if inner.supervisor.contains(name) {
        Some(me.to_string())
    } else {
        None
    };
    axum::Json(json!({
        "name": name,
        "unit": unit,
        "from": me,
        "to": target,
        "owner": owner,
    }))
    .into_response()
}

/// Where a plugin's requests go.
enum Where {
    /// This node runs it.
    Here,
    /// The live node at this address holds it.
    There(String),
    /// No live node holds it.
    Nobody,
}

/// Where `name` runs, other than at address `except`: this node once it
/// runs the plugin, or the live holder in the rows placement reads every
/// quarter lease (at most 250 ms old: requests waiting here add no load on
/// the database, whose few connections the lease needs); checked every
/// 50 ms until one is found or `wait` passes.
async fn find_owner(inner: &Inner, name: &str, wait: Duration, except: &str) -> Where {
    let until = Instant::now() + wait;
    let advertise = inner.config.advertise.as_str();
    loop {
        let here = inner.supervisor.contains(name);
        if here && except != advertise {
            return Where::Here;
        }
        let found = {
            let snap = inner.snapshot.read();
            snap.row_of(name)
                .and_then(|row| snap.live_holder(row))
                .map(|n| n.address.clone())
                .filter(|a| a != except)
        };
        // Held here but not running yet (claimed a moment ago): wait for it.
        if let Some(a) = found
            && a != advertise
        {
            return Where::There(a);
        }
        if Instant::now() >= until {
            return Where::Nobody;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A request to forward: the plugin it is for, the request as received
/// (its body read), and how long its answer may take.
struct Forward<'a> {
    name: &'a str,
    parts: &'a axum::http::request::Parts,
    body: Bytes,
    reply_timeout: Duration,
}

/// Forwards a request to `address`. When nothing was taken there (the
/// receiver no longer owns the plugin, or could not be reached), waits for
/// another node to hold it and sends it there, once.
async fn relay(inner: &Inner, req: &Forward<'_>, address: &str) -> Response {
    let answer = send(inner, req, address).await;
    if answer.status() != StatusCode::SERVICE_UNAVAILABLE {
        return answer;
    }
    let (head, bytes) = buffered(answer).await;
    let wait = match status_of(&bytes).as_deref() {
        Some("owner-changed") => req.reply_timeout,
        // A node killed outright still holds its lease for a while.
        Some("owner-unreachable") => req.reply_timeout.min(inner.config.lease * 2),
        _ => return Response::from_parts(head, Body::from(bytes)),
    };
    match find_owner(inner, req.name, wait, address).await {
        Where::There(next) => send(inner, req, &next).await,
        // Served by this node's own middleware, which runs the plugin now.
        Where::Here => send(inner, req, &inner.config.advertise).await,
        Where::Nobody => Response::from_parts(head, Body::from(bytes)),
    }
}

/// `headers` without the hop-by-hop ones ([`HOP`]).
fn passed(headers: &HeaderMap) -> HeaderMap {
    headers
        .iter()
        .filter(|(k, _)| !HOP.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// One forwarded request, and its answer relayed.
async fn send(inner: &Inner, req: &Forward<'_>, address: &str) -> Response {
    let (name, parts) = (req.name, req.parts);
    let path = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    let url = format!("http://{address}{path}");
    let mut headers = passed(&parts.headers);
    headers.insert(
        FORWARDED,
        HeaderValue::from_str(&inner.config.node).unwrap_or(HeaderValue::from_static("1")),
    );
    let sent = inner
        .http
        .request(parts.method.clone(), &url)
        .headers(headers)
        .body(req.body.clone())
        .timeout(req.reply_timeout + Duration::from_secs(1))
        .send()
        .await;
    let answer = match sent {
        Ok(r) => r,
        Err(e) if e.is_connect() => {
            return unavailable(
                "owner-unreachable",
                &format!("cannot reach {name}'s owner at {address}: {e}; retry"),
                Some(Duration::from_secs(1)),
            );
        }
        Err(e) => return outcome_unknown(name, address, &e),
    };
    let status = answer.status();
    let head = passed(answer.headers());
    match answer.bytes().await {
        Ok(bytes) => {
            let mut r = Response::new(Body::from(bytes));
            *r.status_mut() = status;
            *r.headers_mut() = head;
            r
        }
        Err(e) => outcome_unknown(name, address, &e),
    }
}

/// 504: the request went out and no answer came back.
fn outcome_unknown(name: &str, address: &str, e: &reqwest::Error) -> Response {
    (
        StatusCode::GATEWAY_TIMEOUT,
        axum::Json(api::ErrorBody {
            error: format!(
                "forwarded to {name}'s owner at {address}, and no answer came back ({e}): the outcome is unknown; retry with the same Idempotency-Key"
            ),
        }),
    )
        .into_response()
}

/// A 503 with a cluster status.
fn unavailable(status: &str, reason: &str, retry_after: Option<Duration>) -> Response {
    ApiError::Unavailable {
        status: status.to_string(),
        reason: reason.to_string(),
        retry_after,
    }
    .into_response()
}

fn unowned(name: &str) -> Response {
    unavailable(
        "unowned",
        &format!("no live node owns {name} now; a node claims it within a lease"),
        Some(Duration::from_secs(1)),
    )
}

/// An answer with its body read.
async fn buffered(answer: Response) -> (axum::http::response::Parts, Bytes) {
    let (head, body) = answer.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .unwrap_or_default();
    (head, bytes)
}

/// The `status` of a JSON answer.
fn status_of(bytes: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    v.get("status")?.as_str().map(str::to_string)
}

/// A plugin's JSON answer with its `owner`.
async fn with_owner(answer: Response, node: &str) -> Response {
    if answer.status() != StatusCode::OK {
        return answer;
    }
    let (mut head, bytes) = buffered(answer).await;
    let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(head, Body::from(bytes));
    };
    if let Some(o) = v.as_object_mut() {
        o.insert("owner".into(), json!(node));
    }
    head.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(head, Body::from(v.to_string()))
}

/// `GET /v1/plugins`: this node's plugins and, unless the request was
/// forwarded, every other live node's, each with its `owner`; plugins no
/// node runs are listed `stopped` with `owner: null`.
async fn list(inner: &Inner, req: Request, next: Next, forwarded: bool) -> Response {
    let me = inner.config.node.clone();
    let auth = req.headers().get(header::AUTHORIZATION).cloned();
    let answer = next.run(req).await;
    if answer.status() != StatusCode::OK {
        return answer;
    }
    let (mut head, bytes) = buffered(answer).await;
    let Ok(mut all) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(head, Body::from(bytes));
    };
    let mut plugins: Vec<Value> = Vec::new();
    let mut take = |list: &Value, owner: &str| {
        for p in list
            .get("plugins")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let mut p = p.clone();
            if let Some(o) = p.as_object_mut() {
                o.insert("owner".into(), json!(owner));
            }
            plugins.push(p);
        }
    };
    take(&all, &me);
    if !forwarded {
        let others: Vec<(String, String)> = {
            let snap = inner.snapshot.read();
            snap.nodes
                .values()
                .filter(|n| n.live && n.name != me)
                .map(|n| (n.name.clone(), n.address.clone()))
                .collect()
        };
        let asks = others.iter().map(|(node, address)| {
            let mut ask = inner
                .http
                .get(format!("http://{address}/v1/plugins"))
                .header(FORWARDED, me.as_str())
                .timeout(Duration::from_secs(5));
            if let Some(a) = &auth {
                ask = ask.header(header::AUTHORIZATION, a.clone());
            }
            async move {
                let v = ask
                    .send()
                    .await
                    .ok()?
                    .error_for_status()
                    .ok()?
                    .json::<Value>()
                    .await
                    .ok()?;
                Some((node.clone(), v))
            }
        });
        for (node, v) in futures::future::join_all(asks).await.into_iter().flatten() {
            take(&v, &node);
        }
        let listed: std::collections::BTreeSet<String> = plugins
            .iter()
            .filter_map(|p| p.get("name").and_then(Value::as_str).map(str::to_string))
            .collect();
        for p in inner.supervisor.placeable() {
            if listed.contains(&p.name) {
                continue;
            }
            if let Some(info) = inner.supervisor.standby_info(&p.name)
                && let Ok(mut v) = serde_json::to_value(info)
                && let Some(o) = v.as_object_mut()
            {
                o.insert("owner".into(), Value::Null);
                plugins.push(v);
            }
        }
    }
    if let Some(o) = all.as_object_mut() {
        o.insert("plugins".into(), Value::Array(plugins));
    }
    head.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(head, Body::from(all.to_string()))
}

/// `GET /v1/cluster`: every node the database knows, read afresh.
async fn cluster_info(inner: &Inner) -> Response {
    let snap = match db::read(&inner.pool).await {
        Ok(s) => s,
        Err(e) => {
            return unavailable(
                "database-unreachable",
                &format!("cannot read the cluster's rows: {}", db::describe(&e)),
                Some(Duration::from_secs(1)),
            );
        }
    };
    let nodes: Vec<Value> = snap
        .nodes
        .values()
        .map(|n| {
            let mut plugins: Vec<&str> = snap
                .owners
                .values()
                .filter(|r| snap.live_holder(r).is_some_and(|h| h.name == n.name))
                .flat_map(|r| r.plugins.iter().map(String::as_str))
                .collect();
            plugins.sort_unstable();
            let expires =
                UNIX_EPOCH + Duration::from_millis(u64::try_from(n.expires_ms).unwrap_or(0));
            json!({
                "name": n.name,
                "address": n.address,
                "lease_expires_at": humantime::format_rfc3339_millis(expires).to_string(),
                "live": n.live,
                "draining": n.draining,
                "plugins": plugins,
                "self": n.name == inner.config.node,
            })
        })
        .collect();
    axum::Json(json!({ "nodes": nodes })).into_response()
}
