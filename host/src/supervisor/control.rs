//! The requests a child takes between calls ([`Control`]), the operator's
//! requests ([`Operation`]), and why a message or a request was refused.

use crate::compile::Compiled;
use crate::config::PluginConfig;
use crate::mailbox::Outcome;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

/// The answer to an operator's request.
pub(crate) type Ack = oneshot::Sender<Result<(), String>>;

/// Operator and host requests to a child, handled between calls.
#[derive(Debug)]
pub(crate) enum Control {
    /// Graceful stop for good (host shutdown, the file removed, the plugin
    /// moved to another node), to finish by the deadline, for the reason
    /// given; answered when done.
    Shutdown(Instant, String, oneshot::Sender<()>),
    /// Stop gracefully and stay `stopped`.
    Stop(Ack),
    /// Start a `failed` or `stopped` plugin (a no-op when it runs).
    Start(Ack),
    /// Stop gracefully and start a new instance, with a fresh restart history.
    Restart(Ack),
    /// Drop the instance, delete all of the plugin's state, start it fresh.
    ResetState(Ack),
    /// Live upgrade: finish the call in flight, shut the instance down, start
    /// the new version on the same state and mailbox.
    Upgrade(Arc<Compiled>, Ack),
    /// A new configuration, for the plugin's next start.
    Reconfigure(Arc<PluginConfig>),
    /// The plugin's group restarts it: stop gracefully and wait for `Resume`.
    Hold(Ack),
    /// The plugin's group starts it again (answered once `init` has run).
    Resume(Ack),
    /// Stop gracefully and stay `stopped`, for the given reason.
    StopFor(String, Ack),
}

/// An operator's request to one plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    /// `stop`.
    Stop,
    /// `start`.
    Start,
    /// `restart`.
    Restart,
    /// `state/reset`.
    #[serde(rename = "state-reset")]
    ResetState,
}

/// Why a message was not accepted.
#[derive(Debug, Clone, PartialEq)]
pub enum SendRefused {
    /// No plugin of that name (HTTP 404).
    NoSuchPlugin,
    /// Larger than the plugin's `max-message` (HTTP 413).
    TooLarge {
        /// The limit, bytes.
        limit: u64,
    },
    /// Mailbox full (HTTP 429).
    MailboxFull,
    /// Failed, stopped or shutting down (HTTP 503).
    Unavailable(Outcome),
}

/// Why an operator's request was not carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperateError {
    /// No plugin of that name.
    NoSuchPlugin,
    /// It could not be done; why.
    Failed(String),
}

impl std::fmt::Display for OperateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OperateError::NoSuchPlugin => f.write_str("no such plugin"),
            OperateError::Failed(why) => f.write_str(why),
        }
    }
}
