//! Outbound chat: the messages the core sends and the platforms that send them, plus the
//! delivery ids adapters use to drop redelivered events.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{Mention, MentionOf, Platform, Visibility};

use super::StoreError;

/// Platform delivery ids seen before, so a redelivered event is handled once: all that an
/// adapter needs from the store.
#[async_trait]
pub trait DeliveryLog: Send + Sync {
    /// Records a platform event id; false if it was seen before (a redelivery).
    async fn first_delivery(
        &self,
        platform: Platform,
        event_id: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Forgets event ids recorded before `before`, a bounded batch per call; returns how many.
    async fn forget_deliveries_before(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
}

/// Where an outbound chat message goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OutboundTarget {
    pub platform: Platform,
    pub channel_id: String,
    pub thread: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("the platform asked to retry after {0:?}")]
    RetryAfter(Duration),
    #[error("delivery failed: {0}")]
    Failed(String),
    /// The platform could not be reached or failed on its side (a transport error, a 5xx):
    /// sending again soon may work. A send that timed out may still have arrived, so a retry
    /// can duplicate a message; that beats losing it.
    #[error("platform unavailable: {0}")]
    Unavailable(String),
    /// Will never succeed (no adapter for that platform, channel gone): not retried.
    #[error("undeliverable: {0}")]
    Undeliverable(String),
    /// The bot may not post in that channel (not a member of it, no access, removed from the
    /// chat): not retried, and the person who asked is told how to let it in.
    #[error("opsbot cannot post in this channel: {0}")]
    NotInChannel(String),
}

impl OutboundError {
    /// Sending the same again will fail the same way.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Undeliverable(_) | Self::NotInChannel(_))
    }
}

/// How soon a message must leave: urgent ones (P1 incidents, critical alerts) overtake
/// routine ones waiting for the same channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Priority {
    #[default]
    Routine,
    Urgent,
}

/// A button under a message. Pressing it runs `command` exactly as if the person who pressed
/// it had typed it in that channel, so it passes the same permission checks and audit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatAction {
    pub label: String,
    pub command: String,
    /// Styled as the risky choice (deny, cancel) where the platform can show it.
    pub danger: bool,
}

/// A message with everything beyond its text that a platform may render.
#[derive(Clone, Debug, Default)]
pub struct OutboundMessage {
    pub text: String,
    pub actions: Vec<ChatAction>,
    pub priority: Priority,
    /// Who a reply is for; the bot's own posts (alerts, notices) always go to the channel.
    pub visibility: Visibility,
    /// Spans of `text` that ping someone on the target platform; everything else is plain.
    pub mentions: Vec<Mention>,
}

impl OutboundMessage {
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ..Self::default()
        }
    }

    pub fn urgent(mut self) -> Self {
        self.priority = Priority::Urgent;
        self
    }

    pub fn with_actions(mut self, actions: Vec<ChatAction>) -> Self {
        self.actions = actions;
        self
    }

    pub fn with_visibility(mut self, visibility: Visibility) -> Self {
        self.visibility = visibility;
        self
    }

    /// Appends `@name`, pinging `who` where given (an id on the target platform); without
    /// one, the name stays plain text.
    pub fn push_mention(&mut self, name: &str, who: Option<MentionOf>) {
        let start = self.text.len();
        self.text.push('@');
        self.text.push_str(name);
        if let Some(of) = who {
            self.mentions.push(Mention {
                range: start..self.text.len(),
                of,
            });
        }
    }
}

/// What sending a message gives back (its id, for later edits) or editing one (nothing).
pub type Sent<T = String> = Result<T, OutboundError>;

/// Messages the bot sends on its own (alert groups, notices), as opposed to replies.
#[async_trait]
pub trait ChatOutbound: Send + Sync {
    /// Posts a message (text, buttons, priority); returns its id for later edits. Platforms
    /// without buttons show the text alone (every action is also a command people can type).
    async fn send(&self, to: &OutboundTarget, message: &OutboundMessage) -> Sent;
    /// Replaces a message posted earlier: its text and its buttons (none left if `message`
    /// has no actions).
    async fn edit(&self, to: &OutboundTarget, id: &str, message: &OutboundMessage) -> Sent<()>;
}
