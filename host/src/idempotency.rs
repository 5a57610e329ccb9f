//! Idempotency keys on `POST /v1/plugins/{name}/messages` (DESIGN.md,
//! "Idempotency keys, precisely"): a client that retries a message with the
//! same `Idempotency-Key` gets the first answer again instead of a second
//! delivery, across host restarts and (later) failovers.
//!
//! - A key is per plugin: 1–255 visible ASCII characters ([`check_key`]).
//! - The answer of a keyed message (200 reply, 422 reason, or 500 with its
//!   dead letter) is written in the same commit as the call's writes or the
//!   dead letter ([`stored`]), so it is durable exactly when the effects
//!   are: a host killed between that commit and the reply answers the
//!   retry from the store. Other outcomes (503, 504) are not kept: the
//!   message was not handled, or is still queued.
//! - [`Flights`] tracks, in memory, the keys whose message is queued or
//!   running: a retry meanwhile waits for the same outcome, and one with
//!   another body (by SHA-256) gets 409 [`Joined::Conflict`], as it does
//!   against a kept answer.
//! - A kept answer older than the plugin's `idempotency-window` is ignored
//!   ([`fresh`]), and the plugin's commits drop such answers at most once
//!   every [`PRUNE_EVERY`].

use crate::mailbox::Outcome;
use crate::state::StoredAnswer;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often a plugin's commits drop its expired answers.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The key and body hash a keyed message carries to its plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    /// The `Idempotency-Key`.
    pub key: String,
    /// SHA-256 of the message body, hex.
    pub body_sha256: String,
}

/// Checks an `Idempotency-Key` header value.
pub fn check_key(value: &[u8]) -> Result<String, String> {
    if value.is_empty() || value.len() > 255 {
        return Err(format!(
            "Idempotency-Key must be 1 to 255 characters, not {}",
            value.len()
        ));
    }
    if let Some(b) = value.iter().find(|b| !b.is_ascii_graphic()) {
        return Err(format!(
            "Idempotency-Key holds the byte 0x{b:02x}: use visible ASCII characters only (no spaces)"
        ));
    }
    Ok(String::from_utf8_lossy(value).into_owned())
}

/// The answer to keep for `outcome`, if it is one that is kept.
pub fn stored(tag: &Tag, outcome: &Outcome, time_ms: u64) -> Option<StoredAnswer> {
    let (status, body) = match outcome {
        Outcome::Reply(bytes) => (200, bytes.clone()),
        Outcome::Rejected(reason) => (422, reason.clone().into_bytes()),
        Outcome::DeadLettered { id, causes } => (
            500,
            serde_json::to_vec(&serde_json::json!({"dead_letter": id, "causes": causes}))
                .expect("JSON of numbers and strings"),
        ),
        Outcome::Unavailable { .. } => return None,
    };
    Some(StoredAnswer {
        key: tag.key.clone(),
        body_sha256: tag.body_sha256.clone(),
        status,
        body,
        time_ms,
    })
}

/// The outcome a kept answer stands for.
pub fn outcome_of(a: &StoredAnswer) -> Outcome {
    match a.status {
        200 => Outcome::Reply(a.body.clone()),
        422 => Outcome::Rejected(String::from_utf8_lossy(&a.body).into_owned()),
        _ => {
            let json: serde_json::Value = serde_json::from_slice(&a.body).unwrap_or_default();
            Outcome::DeadLettered {
                id: json["dead_letter"].as_u64().unwrap_or(0),
                causes: json["causes"]
                    .as_array()
                    .map(|c| {
                        c.iter()
                            .filter_map(|s| s.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        }
    }
}

/// Whether a kept answer is still within `window` at `now_ms`.
pub fn fresh(a: &StoredAnswer, window: Duration, now_ms: u64) -> bool {
    a.time_ms.saturating_add(window.as_millis() as u64) >= now_ms
}

/// Keys whose message is queued or running (see the module doc).
#[derive(Debug, Default)]
pub struct Flights {
    map: Mutex<HashMap<(String, String), Flight>>,
}

#[derive(Debug)]
struct Flight {
    body_sha256: String,
    outcome: watch::Receiver<Option<Outcome>>,
}

/// What a keyed request finds.
#[derive(Debug)]
pub enum Joined {
    /// Nobody has the key in flight: this request looks up the store and
    /// sends, then hands the outcome to [`Ticket::finish`].
    First(Ticket),
    /// The same message is queued or running: wait for its outcome.
    Wait(watch::Receiver<Option<Outcome>>),
    /// The key is in flight with another body (409).
    Conflict,
}

/// The first request of a key in flight; the flight ends when it is
/// finished or dropped.
#[derive(Debug)]
pub struct Ticket {
    flights: Arc<Flights>,
    id: (String, String),
    tx: watch::Sender<Option<Outcome>>,
}

impl Flights {
    /// Joins the flight of `tag` for `plugin`, or starts it.
    pub fn join(self: &Arc<Self>, plugin: &str, tag: &Tag) -> Joined {
        let id = (plugin.to_string(), tag.key.clone());
        let mut map = self.map.lock();
        if let Some(f) = map.get(&id) {
            return if f.body_sha256 == tag.body_sha256 {
                Joined::Wait(f.outcome.clone())
            } else {
                Joined::Conflict
            };
        }
        let (tx, rx) = watch::channel(None);
        map.insert(
            id.clone(),
            Flight {
                body_sha256: tag.body_sha256.clone(),
                outcome: rx,
            },
        );
        Joined::First(Ticket {
            flights: self.clone(),
            id,
            tx,
        })
    }

    /// How many keys are in flight.
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Whether no key is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Ticket {
    /// A receiver of the outcome, for the first request itself.
    pub fn subscribe(&self) -> watch::Receiver<Option<Outcome>> {
        self.tx.subscribe()
    }

    /// Hands the outcome to every request waiting and ends the flight.
    pub fn finish(self, outcome: Outcome) {
        self.tx.send_replace(Some(outcome));
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.flights.map.lock().remove(&self.id);
    }
}

/// Waits for a flight's outcome; `None`: it ended without one.
pub async fn outcome(mut rx: watch::Receiver<Option<Outcome>>) -> Option<Outcome> {
    rx.wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|o| o.clone())
}

/// Whether a plugin's commit should drop expired answers now (at most
/// once every [`PRUNE_EVERY`]); records the time when it should.
pub fn prune_due(last: &mut Option<Instant>) -> bool {
    let due = last.is_none_or(|t| t.elapsed() >= PRUNE_EVERY);
    if due {
        *last = Some(Instant::now());
    }
    due
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(key: &str, body: &str) -> Tag {
        Tag {
            key: key.into(),
            body_sha256: body.into(),
        }
    }

    #[test]
    fn keys_are_1_to_255_visible_ascii_characters() {
        assert_eq!(check_key(b"order-17").unwrap(), "order-17");
        assert!(check_key(&[b'k'; 255]).is_ok());
        assert!(check_key(&[b'k'; 256]).unwrap_err().contains("1 to 255"));
        assert!(check_key(b"").is_err());
        assert!(check_key(b"a b").unwrap_err().contains("0x20"));
        assert!(check_key("é".as_bytes()).is_err());
    }

    #[test]
    fn kept_answers_stand_for_their_outcomes() {
        let t = tag("k", "h");
        for outcome in [
            Outcome::Reply(b"3".to_vec()),
            Outcome::Rejected("no".into()),
            Outcome::DeadLettered {
                id: 9,
                causes: vec!["trap".into()],
            },
        ] {
            let a = stored(&t, &outcome, 5).unwrap();
            assert_eq!(outcome_of(&a), outcome);
        }
        let unavailable = Outcome::Unavailable {
            status: "stopped".into(),
            reason: "r".into(),
            retry_after: None,
        };
        assert!(stored(&t, &unavailable, 5).is_none());
        let a = stored(&t, &Outcome::Reply(vec![]), 1_000).unwrap();
        assert!(fresh(&a, Duration::from_secs(1), 2_000));
        assert!(!fresh(&a, Duration::from_secs(1), 2_001));
    }

    #[tokio::test]
    async fn a_retry_in_flight_waits_for_the_same_outcome_and_another_body_conflicts() {
        let flights = Arc::new(Flights::default());
        let Joined::First(ticket) = flights.join("p", &tag("k", "h1")) else {
            panic!("first")
        };
        let Joined::Wait(rx) = flights.join("p", &tag("k", "h1")) else {
            panic!("wait")
        };
        assert!(matches!(
            flights.join("p", &tag("k", "h2")),
            Joined::Conflict
        ));
        // Keys are per plugin.
        assert!(matches!(
            flights.join("q", &tag("k", "h2")),
            Joined::First(_)
        ));
        let waiting = tokio::spawn(outcome(rx));
        ticket.finish(Outcome::Reply(b"1".to_vec()));
        assert_eq!(waiting.await.unwrap(), Some(Outcome::Reply(b"1".to_vec())));
        assert!(flights.is_empty(), "the flight ended");
        // A ticket dropped without an outcome ends its flight too.
        let Joined::First(ticket) = flights.join("p", &tag("k", "h1")) else {
            panic!("first")
        };
        let rx = ticket.subscribe();
        drop(ticket);
        assert_eq!(outcome(rx).await, None);
        assert!(flights.is_empty());
    }
}
