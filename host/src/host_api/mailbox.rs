//! `wasm-sup:plugin/mailbox`: `send`, `send-after` and `self-info`.
//!
//! `send` reserves a slot in the target's mailbox at once (so `mailbox-full` is
//! answered during the call) and puts the message in the call's outbox;
//! `send-after` adds a durable timer to the call's transaction. Both are
//! released only if the call commits. A plugin that is failed, stopped or
//! shutting down has a closed mailbox, which `send` reports as `mailbox-full`.
//! The bounds of a call's outbox and of a plugin's timers are kept by
//! [`crate::instance::txn`]. In cluster mode a `send` to a plugin another
//! node owns is durable: it goes into the target's inbox with the commit.

use crate::bindings::mailbox::{Host, InstanceInfo, SendError};
use crate::instance::HostState;
use crate::instance::txn::{Outgoing, SendRefusal};
use crate::state::{TimerRecord, now_ms};

impl Host for HostState {
    fn send(&mut self, to: String, message: Vec<u8>) -> wasmtime::Result<Result<(), SendError>> {
        // Here: its mailbox. In cluster mode, a plugin of the folder that
        // another node owns (or none does yet): its inbox in the state
        // database, written with the call's commit as a timer of the target
        // due at once, which its owner takes and delivers (see
        // `crate::mailbox::timers`); its mailbox bound is not known here.
        let local = self.env.directory.get(&to);
        let max_message = match &local {
            Some(addr) => addr.max_message,
            None => match self.env.directory.elsewhere(&to) {
                Some(max) => max,
                None => return Ok(Err(SendError::NoSuchPlugin)),
            },
        };
        if message.len() as u64 > max_message {
            return Ok(Err(SendError::TooLarge));
        }
        if !self
            .txn
            .outbox_has_room(message.len(), self.env.config.max_message)
        {
            return Ok(Err(SendError::MailboxFull));
        }
        match local {
            Some(addr) => {
                let Ok(slot) = addr.mailbox.reserve() else {
                    return Ok(Err(SendError::MailboxFull));
                };
                self.txn.send(Outgoing::Send { to, slot, message });
            }
            None => {
                let id = self.env.state.backend().next_id();
                self.txn.send_to_inbox(TimerRecord {
                    id,
                    plugin: to,
                    due_ms: now_ms(),
                    message,
                });
            }
        }
        Ok(Ok(()))
    }

    async fn send_after(
        &mut self,
        delay_ms: u64,
        message: Vec<u8>,
    ) -> wasmtime::Result<Result<(), SendError>> {
        let env = &self.env;
        let sent = self
            .txn
            .send_after(
                &env.state,
                &env.config.state,
                env.config.max_message,
                &env.name,
                now_ms(),
                delay_ms,
                message,
            )
            .await
            .map_err(|e| wasmtime::Error::msg(format!("{e:#}")))?;
        Ok(sent.map_err(|refusal| match refusal {
            SendRefusal::Full => SendError::MailboxFull,
            SendRefusal::TooLarge => SendError::TooLarge,
        }))
    }

    fn self_info(&mut self) -> wasmtime::Result<InstanceInfo> {
        Ok(InstanceInfo {
            name: self.env.name.clone(),
            generation: self.generation,
            restarts: self.restarts,
        })
    }
}
