//! What the nodes tell each other through PostgreSQL `LISTEN/NOTIFY`
//! (DESIGN.md, "Cluster, precisely"):
//!
//! - `wasm_sup_inbox`: a commit put a message in a plugin's inbox (a
//!   `mailbox.send` from a plugin on another node; the state backend sends
//!   it with the commit). The payload is the plugin's name; whichever node
//!   runs it takes the message ([`crate::mailbox::timers`]).
//! - `wasm_sup_events`: an event of some node's plugin. This node's events
//!   are numbered from the sequence `wasm_sup_event_ids` and sent by
//!   [`relay`]; every node, this one included, takes them in from
//!   [`listen`] in the order the database delivers them, so each node's
//!   stream holds every node's events under the same ids. The payload is
//!   `ID JSON`; PostgreSQL caps a payload at 8,000 bytes, so an event's
//!   long texts are cut to [`CUT`] characters when it would not fit.
//!
//! One connection of its own listens ([`Listener`]); it is checked every
//! [`PING`], and when it breaks the node connects again, takes every inbox
//! of its plugins (a notice may have been missed), and tells event
//! subscribers that events may have been missed ([`Events::gap`]). Nothing
//! is lost on the inbox side: the messages wait in the database.

use super::Inner;
use crate::events::{Event, Events};
use anyhow::{Context, Result, bail};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls, Notification};

/// How often the listening connection is checked.
const PING: Duration = Duration::from_secs(5);
/// Pause before connecting again.
const RETRY: Duration = Duration::from_secs(1);
/// Events sent in one statement.
const BATCH: usize = 256;
/// Longest text an event keeps when it would not fit a notice.
const CUT: usize = 512;
/// The payload size an event is kept under (PostgreSQL's cap is 8,000).
const PAYLOAD: usize = 7_900;

/// A connection that listens, with the notices it received.
pub(super) struct Listener {
    client: Client,
    notices: mpsc::UnboundedReceiver<Result<Notification, tokio_postgres::Error>>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Connects to the cluster's database and listens on both channels.
pub(super) async fn connect(url: &str) -> Result<Listener> {
    let (pg, _) = crate::state::postgres::config_of(url, "--cluster")?;
    let (client, mut conn) = tokio::time::timeout(Duration::from_secs(5), pg.connect(NoTls))
        .await
        .context("connecting timed out")??;
    let (tx, notices) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = messages.next().await {
            let sent = match m {
                Ok(AsyncMessage::Notification(n)) => tx.send(Ok(n)),
                Ok(_) => Ok(()),
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            if sent.is_err() {
                return;
            }
        }
    });
    client
        .batch_execute("LISTEN wasm_sup_inbox; LISTEN wasm_sup_events")
        .await?;
    Ok(Listener {
        client,
        notices,
        driver,
    })
}

/// Listens for the node's life, from `first` (connected by `join`, so
/// that this node's own first events are heard).
pub(super) async fn listen(inner: Arc<Inner>, first: Listener) {
    let mut listener = Some(first);
    loop {
        let l = match listener.take() {
            Some(l) => l,
            None => match connect(&inner.config.url).await {
                Ok(l) => {
                    tracing::info!("listening to the cluster's notices again");
                    // Messages that arrived while nobody listened here.
                    for p in inner.held_plugins() {
                        inner.supervisor.take_inbox(&p);
                    }
                    l
                }
                Err(e) => {
                    tracing::debug!("cannot listen to the cluster's notices yet: {e:#}");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            },
        };
        let e = serve(&inner, l).await;
        tracing::warn!(
            "the connection listening to the cluster's notices broke ({e:#}); connecting again"
        );
        inner.supervisor.events().gap(
            "this node's connection to PostgreSQL broke: events of the cluster may have been missed; read the plugins' state again (GET /v1/plugins) and follow from now",
        );
        tokio::time::sleep(RETRY).await;
    }
}

/// Acts on notices until the connection breaks.
async fn serve(inner: &Inner, mut l: Listener) -> anyhow::Error {
    let mut ping = tokio::time::interval(PING);
    ping.tick().await;
    loop {
        tokio::select! {
            n = l.notices.recv() => match n {
                Some(Ok(n)) => take(inner, n.channel(), n.payload()),
                Some(Err(e)) => return e.into(),
                None => return anyhow::anyhow!("the connection closed"),
            },
            _ = ping.tick() => {
                match tokio::time::timeout(PING, l.client.simple_query("")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return e.into(),
                    Err(_) => return anyhow::anyhow!("the server did not answer within {PING:?}"),
                }
            }
        }
    }
}

/// Acts on one notice.
fn take(inner: &Inner, channel: &str, payload: &str) {
    match channel {
        "wasm_sup_inbox" => inner.supervisor.take_inbox(payload),
        "wasm_sup_events" => match parse_event(payload) {
            Ok(e) => inner.supervisor.events().accept(e),
            Err(e) => tracing::warn!("a cluster event could not be read ({e:#}): {payload:.200}"),
        },
        _ => {}
    }
}

/// An event from its notice's payload, `ID JSON`.
fn parse_event(payload: &str) -> Result<Event> {
    let Some((id, json)) = payload.split_once(' ') else {
        bail!("no id");
    };
    let mut event: Event = serde_json::from_str(json)?;
    event.id = id.to_string();
    Ok(event)
}

/// An event as the JSON of its notice, cut to fit (see the module doc).
fn payload_of(event: &Event) -> Result<String> {
    let json = serde_json::to_string(event)?;
    if json.len() <= PAYLOAD {
        return Ok(json);
    }
    let mut value = serde_json::to_value(event)?;
    cut(&mut value);
    let json = serde_json::to_string(&value)?;
    if json.len() > PAYLOAD {
        bail!("{} bytes after cutting its texts", json.len());
    }
    Ok(json)
}

fn cut(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) if s.chars().count() > CUT => {
            *s = format!("{}…", s.chars().take(CUT).collect::<String>());
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(cut),
        serde_json::Value::Object(fields) => fields.values_mut().for_each(cut),
        _ => {}
    }
}

/// Numbers this node's events and sends them to every node, in the order
/// they were published; a batch that fails is sent again after [`RETRY`]
/// (while the database is unreachable, events wait here, up to
/// [`crate::events::RELAY_QUEUE`]).
pub(super) async fn relay(inner: Arc<Inner>, mut events: mpsc::Receiver<Event>) {
    let mut batch: Vec<String> = Vec::new();
    loop {
        if batch.is_empty() {
            let Some(first) = events.recv().await else {
                return;
            };
            for e in std::iter::once(first).chain(std::iter::from_fn(|| events.try_recv().ok())) {
                match payload_of(&e) {
                    Ok(p) => batch.push(p),
                    Err(why) => tracing::warn!(
                        plugin = %e.plugin,
                        "event {} dropped: it does not fit a PostgreSQL notice ({why:#})",
                        e.kind.name()
                    ),
                }
                if batch.len() == BATCH {
                    break;
                }
            }
            if batch.is_empty() {
                continue;
            }
        }
        let sent = async {
            let client = inner.pool.get().await?;
            let st = client
                .prepare_cached(
                    "SELECT pg_notify('wasm_sup_events', nextval('wasm_sup_event_ids')::text || ' ' || e) \
                     FROM unnest($1::text[]) AS e",
                )
                .await?;
            client.query(&st, &[&batch]).await?;
            Ok::<_, anyhow::Error>(())
        };
        match sent.await {
            Ok(()) => batch.clear(),
            Err(e) => {
                tracing::debug!("cluster events wait for PostgreSQL: {e:#}");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Sends `events` through the cluster from now on (see the module doc).
pub(super) fn start_relay(
    inner: &Arc<Inner>,
    events: &Events,
) -> Option<tokio::task::JoinHandle<()>> {
    let rx = events.relay(&inner.config.node)?;
    Some(tokio::spawn(relay(inner.clone(), rx)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventKind;

    fn event(reason: String) -> Event {
        Event {
            id: String::new(),
            time: "2026-12-02T00:00:00.000Z".into(),
            plugin: "p".into(),
            node: Some("a".into()),
            kind: EventKind::Stopped {
                reason: Some(reason),
            },
        }
    }

    #[test]
    fn an_event_goes_through_a_notice_whole_or_with_long_texts_cut() {
        let short = event("operator".into());
        let back = parse_event(&format!("42 {}", payload_of(&short).unwrap())).unwrap();
        assert_eq!(back.id, "42");
        assert_eq!(back.kind, short.kind);
        assert_eq!(back.node.as_deref(), Some("a"));
        let long = event("x".repeat(20_000));
        let p = payload_of(&long).unwrap();
        assert!(p.len() <= PAYLOAD);
        let back = parse_event(&format!("43 {p}")).unwrap();
        let EventKind::Stopped { reason: Some(r) } = back.kind else {
            panic!("kind kept")
        };
        assert_eq!(r.chars().count(), CUT + 1);
        assert!(parse_event("no-json-here").is_err());
        // A kind whose fields meet the event's own (`node`) reads back.
        let claimed = Event {
            kind: EventKind::OwnerChanged {
                from: Some("b".into()),
                epoch: 7,
            },
            ..event(String::new())
        };
        let back = parse_event(&format!("44 {}", payload_of(&claimed).unwrap())).unwrap();
        assert_eq!((back.node, back.kind), (claimed.node, claimed.kind));
    }
}
