//! The normalized inbound event every adapter produces, the reply the router hands back,
//! and the request id that ties a reply, its log lines and its audit record together.

use std::fmt;

use chrono::{DateTime, Utc};

use super::identity::{Platform, UserRef};

/// Short random id shown to users ("request id 3f9a1c2b7d4e") and written to logs and audit.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    pub fn new() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        RequestId(id[..12].to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Rebuilds an id read back from the store.
    pub fn from_stored(s: String) -> Self {
        RequestId(s)
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an event happened: the platform's channel id plus its human name, which
/// channel allow-lists match against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelRef {
    pub id: String,
    pub name: String,
}

/// What the user sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventPayload {
    /// Command text as typed, e.g. `/rollback api --to v1.4.2`.
    Command(String),
    /// The platform delivered bytes that are not UTF-8; kept so the attempt is answered and audited.
    Undecodable { byte_len: usize },
    /// A reaction added to (or removed from) a message, e.g. ✅ on an approval request.
    Reaction {
        emoji: String,
        message_id: String,
        added: bool,
    },
}

/// One event from any platform, normalized.
#[derive(Clone, Debug)]
pub struct InboundEvent {
    pub platform: Platform,
    /// Slack workspace, Discord guild or Telegram chat, where the platform has one.
    pub workspace: Option<String>,
    pub channel: ChannelRef,
    /// Thread or message to reply under, where the platform has one.
    pub thread: Option<String>,
    /// Verified platform user id; the only thing identity is decided on.
    pub user: UserRef,
    /// For display only; never used to decide anything.
    pub display_name: String,
    pub payload: EventPayload,
    /// The platform's own event id, for deduplicating redeliveries.
    pub event_id: Option<String>,
    /// Platform-specific handle for answering (Slack response_url, Discord interaction token).
    pub reply_handle: Option<String>,
    pub received_at: DateTime<Utc>,
}

impl InboundEvent {
    /// The one way adapters build an event: who, where, what; the rest has a `with_`/`in_`
    /// setter. The display name starts as the user id (identity never depends on it).
    pub fn new(user: UserRef, channel: ChannelRef, payload: EventPayload) -> Self {
        Self {
            platform: user.platform,
            workspace: None,
            channel,
            thread: None,
            display_name: user.user_id.clone(),
            user,
            payload,
            event_id: None,
            reply_handle: None,
            received_at: Utc::now(),
        }
    }

    pub fn in_thread(mut self, thread: Option<String>) -> Self {
        self.thread = thread;
        self
    }

    pub fn in_workspace(mut self, workspace: Option<String>) -> Self {
        self.workspace = workspace;
        self
    }

    pub fn with_display_name(mut self, name: impl Into<String>) -> Self {
        self.display_name = name.into();
        self
    }

    pub fn with_event_id(mut self, id: Option<String>) -> Self {
        self.event_id = id;
        self
    }

    pub fn with_reply_handle(mut self, handle: Option<String>) -> Self {
        self.reply_handle = handle;
        self
    }
}

impl ChannelRef {
    /// A channel known by id only (its name stands in as the id until looked up).
    pub fn id_only(id: impl Into<String>) -> Self {
        let id = id.into();
        Self {
            name: id.clone(),
            id,
        }
    }

    pub fn named(id: impl Into<String>, name: Option<String>) -> Self {
        let id = id.into();
        Self {
            name: name.unwrap_or_else(|| id.clone()),
            id,
        }
    }
}

/// What the router answers with. Text is plain with light markdown (code blocks for tables).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub text: String,
    pub request_id: RequestId,
    pub visibility: Visibility,
}

/// Who a reply is for. Outcomes the channel shares (an incident opened, an alert acked or
/// silenced, a runbook requested or run) are for the channel; answers only the asker needs
/// (help, whoami, look-ups, refusals, dry runs) are for the requester, where the platform can
/// show a message to one person (Slack); elsewhere both appear in the channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Visibility {
    Channel,
    /// Private unless the core decided otherwise: a reply nobody classified stays with its asker.
    #[default]
    Requester,
}
