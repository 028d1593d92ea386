//! A fake chat platform (`RecordingOutbound`) for the bot's own messages: it records every
//! post and edit, the buttons each message carries and which posts were urgent.

use super::wait::{WAIT, eventually, satisfies};

/// A chat platform that records what the bot posted and edited, for assertions.
#[derive(Default)]
pub struct RecordingOutbound {
    pub log: std::sync::Mutex<Vec<Outbound>>,
    /// When set, every delivery fails this way (to test retries).
    pub fail_with_retry_after: std::sync::Mutex<Option<std::time::Duration>>,
    /// Texts of the posts sent with urgent priority.
    pub urgent: std::sync::Mutex<Vec<String>>,
    /// The commands of the buttons each message carries now (by message id).
    pub buttons: std::sync::Mutex<std::collections::HashMap<String, Vec<String>>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outbound {
    Post {
        channel: String,
        id: String,
        text: String,
    },
    Edit {
        channel: String,
        id: String,
        text: String,
    },
}

impl RecordingOutbound {
    pub fn messages(&self) -> Vec<Outbound> {
        self.log.lock().unwrap().clone()
    }

    /// The commands behind the buttons message `id` shows now.
    pub fn buttons_on(&self, id: &str) -> Vec<String> {
        self.buttons
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    fn record_buttons(&self, id: &str, message: &opsbot::ports::OutboundMessage) {
        let commands = message.actions.iter().map(|a| a.command.clone()).collect();
        self.buttons.lock().unwrap().insert(id.to_owned(), commands);
    }

    /// Waits until `pred` holds for the recorded messages.
    pub async fn wait_until(
        &self,
        what: &str,
        pred: impl Fn(&[Outbound]) -> bool,
    ) -> Vec<Outbound> {
        eventually(what, WAIT, async || satisfies(self.messages(), |m| pred(m))).await
    }
}

#[async_trait::async_trait]
impl opsbot::ports::ChatOutbound for RecordingOutbound {
    async fn send(
        &self,
        to: &opsbot::ports::OutboundTarget,
        message: &opsbot::ports::OutboundMessage,
    ) -> Result<String, opsbot::ports::OutboundError> {
        if message.priority == opsbot::ports::Priority::Urgent {
            self.urgent.lock().unwrap().push(message.text.clone());
        }
        if let Some(d) = *self.fail_with_retry_after.lock().unwrap() {
            return Err(opsbot::ports::OutboundError::RetryAfter(d));
        }
        let id = {
            let mut log = self.log.lock().unwrap();
            let id = format!("m{}", log.len() + 1);
            log.push(Outbound::Post {
                channel: to.channel_id.clone(),
                id: id.clone(),
                text: message.text.clone(),
            });
            id
        };
        self.record_buttons(&id, message);
        Ok(id)
    }

    async fn edit(
        &self,
        to: &opsbot::ports::OutboundTarget,
        message_id: &str,
        message: &opsbot::ports::OutboundMessage,
    ) -> Result<(), opsbot::ports::OutboundError> {
        if let Some(d) = *self.fail_with_retry_after.lock().unwrap() {
            return Err(opsbot::ports::OutboundError::RetryAfter(d));
        }
        self.record_buttons(message_id, message);
        self.log.lock().unwrap().push(Outbound::Edit {
            channel: to.channel_id.clone(),
            id: message_id.to_owned(),
            text: message.text.clone(),
        });
        Ok(())
    }
}
