//! The durable outbox: messages queued with the state change that causes them.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;

use super::{OutboundMessage, OutboundTarget, StoreError};

/// A chat message the bot decided to post (or an edit of one it posted), queued in the
/// outbox until the leader delivers it.
#[derive(Clone, Debug)]
pub struct Queued {
    pub to: OutboundTarget,
    /// Its priority is the lane it takes (urgent overtakes routine in its channel).
    pub message: OutboundMessage,
    /// The platform's id of the message in `to` this replaces; `None` posts a new one.
    pub edit_of: Option<String>,
    /// The request whose approval message this post is: delivering it binds the request to
    /// the message's id, so reactions on it count (a gate reached in the background).
    pub binds_run: Option<crate::domain::RunId>,
}

impl Queued {
    /// A new message for `to`.
    pub fn post(to: OutboundTarget, message: OutboundMessage) -> Self {
        Self {
            to,
            message,
            edit_of: None,
            binds_run: None,
        }
    }

    /// This post, binding request `run` to the message once it is delivered.
    pub fn binding(mut self, run: crate::domain::RunId) -> Self {
        self.binds_run = Some(run);
        self
    }

    /// `message` replacing message `id` in `to` (text and buttons).
    pub fn edit(to: OutboundTarget, id: impl Into<String>, message: OutboundMessage) -> Self {
        Self {
            to,
            message,
            edit_of: Some(id.into()),
            binds_run: None,
        }
    }
}

/// Wakes the outbox's deliverer when a producer has queued something, so a message does not
/// wait for the next poll. Producers hold a clone; waking a deliverer that does not run here
/// (a follower) does nothing. It also remembers what woke it: the store's watcher names the
/// rows it heard were queued ([`OutboxSignal::wake_for`]), so the deliverer can let pass a
/// notification of rows it has claimed already (its own, queued and signalled here first).
#[derive(Clone, Debug, Default)]
pub struct OutboxSignal(std::sync::Arc<SignalState>);

#[derive(Debug, Default)]
struct SignalState {
    notify: tokio::sync::Notify,
    heard: std::sync::Mutex<Heard>,
    /// The store's watcher is listening: every committed row will be named by the
    /// database's own notice, so a producer's wake here would only add an empty claim.
    store_notifies: std::sync::atomic::AtomicBool,
}

/// What woke the deliverer since it last looked ([`OutboxSignal::take_heard`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Heard {
    /// A wake that named no rows (a producer here, a reconnected watcher): look in any case.
    pub unnamed: bool,
    /// Rows another process (or this one, through the database) queued.
    pub ids: Vec<OutboxId>,
}

/// Named rows remembered between two looks at most; beyond that a wake counts as unnamed.
const MAX_HEARD: usize = 4096;

impl OutboxSignal {
    /// A producer here queued something (committed). Nothing to do while the store's
    /// watcher listens ([`OutboxSignal::store_notifies`]): its notice of the same rows
    /// follows the commit and names them.
    pub fn wake(&self) {
        if !self
            .0
            .store_notifies
            .load(std::sync::atomic::Ordering::Acquire)
        {
            self.wake_unnamed();
        }
    }

    /// Wakes the deliverer to look in any case (a watcher that reconnected, and so may have
    /// missed notices).
    pub fn wake_unnamed(&self) {
        self.heard().unnamed = true;
        self.0.notify.notify_one();
    }

    /// Whether the store's watcher is listening for every queued row (set by the watcher as
    /// it starts and stops listening).
    pub fn store_notifies(&self, listening: bool) {
        (self.0.store_notifies).store(listening, std::sync::atomic::Ordering::Release);
    }

    /// Wakes the deliverer for rows `ids`, queued (and committed) by any process.
    pub fn wake_for(&self, ids: impl IntoIterator<Item = OutboxId>) {
        {
            let mut heard = self.heard();
            if !heard.unnamed {
                heard.ids.extend(ids);
                if heard.ids.len() > MAX_HEARD {
                    *heard = Heard {
                        unnamed: true,
                        ids: Vec::new(),
                    };
                }
            }
        }
        self.0.notify.notify_one();
    }

    /// Until the next [`OutboxSignal::wake`] (or one made since the last wait).
    pub async fn woken(&self) {
        self.0.notify.notified().await;
    }

    /// What woke it since the last call, forgetting it.
    pub fn take_heard(&self) -> Heard {
        std::mem::take(&mut *self.heard())
    }

    fn heard(&self) -> std::sync::MutexGuard<'_, Heard> {
        // Plain data, valid whatever a panicking holder left.
        self.0.heard.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An outbox row's number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutboxId(pub i64);

impl std::fmt::Display for OutboxId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A queued message a deliverer has claimed.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub id: OutboxId,
    pub queued: Queued,
    /// Delivery attempts so far, this one included.
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
}

/// How much waits in the outbox.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxDepth {
    pub pending: u64,
    /// When the oldest pending message was queued.
    pub oldest: Option<DateTime<Utc>>,
}

/// The durable outbox: messages are queued when decided and delivered later, by one
/// deliverer at a time. Every change is conditional on the row still being pending.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Queues a message, due at once.
    async fn enqueue(&self, queued: &Queued, now: DateTime<Utc>) -> Result<OutboxId, StoreError>;
    /// Claims up to `limit` pending messages due at `now`, urgent ones first, then oldest:
    /// each is not due again before `now + hold`, and counts one more attempt. One
    /// conditional update, so two deliverers never claim one row in the same hold.
    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        hold: Duration,
        limit: u32,
    ) -> Result<Vec<Claimed>, StoreError>;
    /// Records that the platform took it as `message_id` (binding the request it names to
    /// that message, if any and not bound yet); false if it was not pending.
    async fn mark_delivered(&self, id: OutboxId, message_id: &str) -> Result<bool, StoreError>;
    /// Leaves it pending, due again at `at`, with the reason it failed.
    async fn retry_at(
        &self,
        id: OutboxId,
        at: DateTime<Utc>,
        error: &str,
    ) -> Result<bool, StoreError>;
    /// Stops trying (the platform will never take it), with the reason.
    async fn give_up(&self, id: OutboxId, error: &str) -> Result<bool, StoreError>;
    /// How many messages are pending and since when.
    async fn outbox_depth(&self) -> Result<OutboxDepth, StoreError>;
    /// Forgets delivered and given-up messages queued before `before`, a bounded batch per
    /// call; returns how many.
    async fn forget_outbox_before(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
    /// A task that wakes `signal` whenever any process queues a message in this store, so a
    /// deliverer hears at once of rows another replica queued (their in-process signals never
    /// reach it); it runs until dropped. `None` where every producer is in this process
    /// (SQLite), whose own signals say it all.
    fn watch_queued(&self, _signal: OutboxSignal) -> Option<BoxFuture<'static, ()>> {
        None
    }
}
