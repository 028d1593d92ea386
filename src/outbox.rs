//! The outbox's deliverer: posts the messages queued in the store (`ports::OutboxStore`),
//! and makes the edits queued there, through the paced `ChatOutbound`, on the leader alone. It wakes when a producer signals
//! ([`OutboxSignal`]) and otherwise polls every [`POLL_EVERY`]; each claimed message is
//! sent in its own task (one slow channel holds up no other), then marked delivered with the
//! platform's id, retried later with backoff, or given up when the platform will never take
//! it. A post whose id the store refused is never posted again: its id is kept here and
//! storing it is what is retried. A wake that only names rows this deliverer has claimed
//! already (the database's notice of a row queued here, after this process's own signal
//! had it claimed) is let pass: it would only claim nothing.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::domain::{Platform, clip};
use crate::liveness::Liveness;
use crate::metrics::Metrics;
pub use crate::ports::OutboxSignal;
use crate::ports::{
    ChatOutbound, Claimed, Clock, OutboundError, OutboxId, OutboxStore, StoreError,
};

/// How often the outbox is looked at without a signal (rows due for a retry, rows queued by
/// another replica).
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// How long a claimed message is not due again. Long enough for the channel's pacing (a
/// Telegram group takes 20 a minute); a claim seen again while its send is still under way
/// here is skipped, so the hold only matters after this process is gone.
pub const CLAIM_HOLD: Duration = Duration::from_secs(120);
/// Messages claimed per pass.
const CLAIM_BATCH: u32 = 100;
/// Claimed ids remembered to let pass the notices of rows already claimed: far more than are
/// claimed between a row's commit and its notice arriving.
const RECENT_CLAIMS: usize = 4096;
/// Attempts before a message that keeps failing is given up (about 40 minutes of backoff).
pub const MAX_ATTEMPTS: u32 = 12;
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Delivers the outbox. Clones share what they remember (sends under way, ids to store).
#[derive(Clone)]
pub struct Deliverer(Arc<Inner>);

struct Inner {
    store: Arc<dyn OutboxStore>,
    outbound: Arc<dyn ChatOutbound>,
    clock: Arc<dyn Clock>,
    signal: OutboxSignal,
    metrics: Arc<Metrics>,
    /// Messages being sent, or sent with their id not yet stored: never sent again.
    busy: Mutex<HashSet<OutboxId>>,
    /// Posted messages whose id the store has not taken yet.
    unrecorded: Mutex<HashMap<OutboxId, String>>,
    /// The edit of each message sent last (or being sent): the next edit of it waits for that
    /// one to finish, so edits land in the order they were queued and the newest stays.
    last_edit: Mutex<HashMap<EditKey, (OutboxId, oneshot::Receiver<()>)>>,
    /// The ids claimed last, oldest first ([`RECENT_CLAIMS`] at most).
    claimed: Mutex<RecentIds>,
}

/// A bounded set of ids that forgets the oldest first.
#[derive(Default)]
struct RecentIds {
    order: VecDeque<OutboxId>,
    set: HashSet<OutboxId>,
}

impl RecentIds {
    fn insert(&mut self, id: OutboxId) {
        if !self.set.insert(id) {
            return;
        }
        self.order.push_back(id);
        if self.order.len() > RECENT_CLAIMS
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
    }

    fn contains(&self, id: OutboxId) -> bool {
        self.set.contains(&id)
    }
}

/// One message on one platform, as edits name it.
type EditKey = (Platform, String, String);

/// An edit's place in line behind the edits of the same message claimed before it.
struct EditTurn {
    key: EditKey,
    previous: Option<oneshot::Receiver<()>>,
    done: oneshot::Sender<()>,
}

fn edit_key(c: &Claimed) -> Option<EditKey> {
    let to = &c.queued.to;
    let message = c.queued.edit_of.clone()?;
    Some((to.platform, to.channel_id.clone(), message))
}

/// What became of one attempt.
enum Settled {
    Delivered(String),
    Retry(DateTime<Utc>, String),
    GiveUp(String),
}

impl Deliverer {
    pub fn new(
        store: Arc<dyn OutboxStore>,
        outbound: Arc<dyn ChatOutbound>,
        clock: Arc<dyn Clock>,
        signal: OutboxSignal,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self(Arc::new(Inner {
            store,
            outbound,
            clock,
            signal,
            metrics,
            busy: Mutex::default(),
            unrecorded: Mutex::default(),
            last_edit: Mutex::default(),
            claimed: Mutex::default(),
        }))
    }

    /// Delivers until `shutdown` (or until this replica stops leading), then waits for the
    /// sends it started; a send cut short stays queued for the next leader.
    pub async fn run(self, liveness: Arc<Liveness>, shutdown: CancellationToken) {
        let tasks = TaskTracker::new();
        let watch = (self.0.store)
            .watch_queued(self.0.signal.clone())
            .map(tokio::spawn);
        loop {
            let full = match self.deliver_due(&tasks, &shutdown).await {
                Ok(started) => {
                    liveness.tick("outbox", POLL_EVERY);
                    started >= CLAIM_BATCH as usize
                }
                Err(e) => {
                    warn!(error = %e, "reading the outbox failed");
                    false
                }
            };
            // A full batch may have left more due behind it (a backlog, or rows queued by
            // other replicas, whose signals never reach this one): claim again now rather
            // than a poll later, which would cap delivery at one batch a second.
            if full && !shutdown.is_cancelled() {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.woken_for_unclaimed() => {}
                _ = tokio::time::sleep(POLL_EVERY) => {}
            }
        }
        if let Some(watch) = watch {
            watch.abort();
        }
        tasks.close();
        tasks.wait().await;
        // Stepped down with posts whose ids the store refused: the next leader would post
        // them again once their claim lapses, so keep storing them here until it does.
        if !self
            .0
            .unrecorded
            .lock()
            .expect("outbox poisoned")
            .is_empty()
        {
            tokio::spawn(self.record_while_claimed());
        }
    }

    /// Until a wake that may find something to claim: one that names no rows, or names a row
    /// not claimed here yet.
    async fn woken_for_unclaimed(&self) {
        loop {
            self.0.signal.woken().await;
            let heard = self.0.signal.take_heard();
            let claimed = self.0.claimed.lock().expect("outbox poisoned");
            if heard.unnamed || heard.ids.iter().any(|id| !claimed.contains(*id)) {
                return;
            }
        }
    }

    /// Retries storing the ids of posted messages for as long as their claim holds.
    async fn record_while_claimed(self) {
        let until = tokio::time::Instant::now() + CLAIM_HOLD;
        loop {
            self.record_unrecorded().await;
            if self
                .0
                .unrecorded
                .lock()
                .expect("outbox poisoned")
                .is_empty()
            {
                return;
            }
            if tokio::time::Instant::now() >= until {
                warn!(
                    "stopped storing the ids of posted outbox messages: their claim has lapsed, so the next leader may post them again"
                );
                return;
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// One pass: stores the ids still unrecorded, claims the messages due and starts sending
    /// each in `tasks`; returns how many started.
    pub async fn deliver_due(
        &self,
        tasks: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Result<usize, StoreError> {
        self.record_unrecorded().await;
        let now = self.0.clock.now();
        let claimed = self.0.store.claim_due(now, CLAIM_HOLD, CLAIM_BATCH).await?;
        {
            let mut recent = self.0.claimed.lock().expect("outbox poisoned");
            for c in &claimed {
                recent.insert(c.id);
            }
        }
        let mut started = 0;
        for c in claimed {
            // Still being sent here (a slow channel outlasted the hold): not again.
            if !self.0.busy.lock().expect("outbox poisoned").insert(c.id) {
                continue;
            }
            started += 1;
            let after = self.queue_edit(&c);
            let (this, shutdown) = (self.clone(), shutdown.clone());
            tasks.spawn(async move { this.deliver(c, after, shutdown).await });
        }
        Ok(started)
    }

    /// For an edit: what it must wait for (the previous edit of its message, when one is
    /// still being sent) and what tells the next edit it is done.
    fn queue_edit(&self, c: &Claimed) -> Option<EditTurn> {
        let key = edit_key(c)?;
        let (done, finished) = oneshot::channel();
        let mut last = self.0.last_edit.lock().expect("outbox poisoned");
        let previous = last.insert(key.clone(), (c.id, finished)).map(|(_, rx)| rx);
        Some(EditTurn {
            key,
            previous,
            done,
        })
    }

    async fn deliver(self, c: Claimed, turn: Option<EditTurn>, shutdown: CancellationToken) {
        let (previous, finished) = match turn {
            Some(t) => (t.previous, Some((t.key, t.done))),
            None => (None, None),
        };
        let sent = tokio::select! {
            _ = shutdown.cancelled() => {
                self.release(c.id);
                return;
            }
            sent = async {
                if let Some(previous) = previous {
                    // Sent or dropped: either way that edit is no longer under way. One
                    // stuck on the platform holds this one no longer than its own claim.
                    let _ = tokio::time::timeout(CLAIM_HOLD, previous).await;
                }
                self.send(&c).await
            } => sent,
        };
        if let Some((key, done)) = finished {
            self.edit_sent(&key, c.id, done);
        }
        let stored = match self.settle(&c, sent) {
            Settled::Delivered(message_id) => return self.record_posted(c.id, message_id).await,
            Settled::Retry(at, why) => self.0.store.retry_at(c.id, at, &why).await,
            Settled::GiveUp(why) => self.0.store.give_up(c.id, &why).await,
        };
        if let Err(e) = stored {
            // The row stays pending and comes back after its hold: one more attempt.
            warn!(outbox = %c.id, error = %e, "could not record a failed chat delivery");
        }
        self.release(c.id);
    }

    /// Posts the message, or edits the one it replaces (whose id then stays its id).
    async fn send(&self, c: &Claimed) -> Result<String, OutboundError> {
        let (to, message) = (&c.queued.to, &c.queued.message);
        match &c.queued.edit_of {
            None => self.0.outbound.send(to, message).await,
            Some(id) => (self.0.outbound.edit(to, id, message).await).map(|()| id.clone()),
        }
    }

    /// What to do after one send, counted and logged.
    fn settle(&self, c: &Claimed, sent: Result<String, OutboundError>) -> Settled {
        let error = match sent {
            Ok(message_id) => return Settled::Delivered(message_id),
            Err(e) => e,
        };
        let (to, why) = (&c.queued.to, error.to_string());
        if error.is_permanent() || c.attempts >= MAX_ATTEMPTS {
            self.0.metrics.outbox_given_up();
            warn!(outbox = %c.id, platform = %to.platform, channel = %to.channel_id,
                attempts = c.attempts, error = %why, text = %clip(&c.queued.message.text, 200),
                "giving up on a queued chat message");
            return Settled::GiveUp(why);
        }
        self.0.metrics.outbox_retried();
        let wait = match error {
            OutboundError::RetryAfter(d) => d.max(Duration::from_secs(1)),
            _ => backoff(c.attempts),
        };
        info!(outbox = %c.id, channel = %to.channel_id, attempts = c.attempts,
            retry_in_secs = wait.as_secs(), error = %why, "queued chat message not delivered yet");
        let wait = chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
        Settled::Retry(self.0.clock.now() + wait, why)
    }

    /// Stores the id of the message this task just posted. Only its own: ids left from
    /// earlier failures are the next pass's, so concurrent sends do not each write them all
    /// again. If the store fails, the id waits in memory for the next pass.
    async fn record_posted(&self, id: OutboxId, message_id: String) {
        match self.0.store.mark_delivered(id, &message_id).await {
            Ok(_) => self.release(id),
            Err(e) => {
                warn!(outbox = %id, error = %e, "posted, but the store did not take its id; trying again");
                self.remember_posted(id, message_id);
            }
        }
    }

    /// Stores the ids of posted messages the store has not taken yet; those it takes (or
    /// that are no longer pending) are done with.
    async fn record_unrecorded(&self) {
        let waiting: Vec<(OutboxId, String)> = {
            let map = self.0.unrecorded.lock().expect("outbox poisoned");
            map.iter().map(|(id, m)| (*id, m.clone())).collect()
        };
        for (id, message_id) in waiting {
            match self.0.store.mark_delivered(id, &message_id).await {
                Ok(_) => {
                    self.0
                        .unrecorded
                        .lock()
                        .expect("outbox poisoned")
                        .remove(&id);
                    self.release(id);
                }
                Err(e) => {
                    warn!(outbox = %id, error = %e, "posted, but the store did not take its id; trying again")
                }
            }
        }
    }

    /// Posted: from now on only its id is stored, however often that fails.
    fn remember_posted(&self, id: OutboxId, message_id: String) {
        let mut unrecorded = self.0.unrecorded.lock().expect("outbox poisoned");
        unrecorded.insert(id, message_id);
    }

    /// Lets the next edit of the message go, and forgets the message if none is queued.
    fn edit_sent(&self, key: &EditKey, id: OutboxId, done: oneshot::Sender<()>) {
        let mut last = self.0.last_edit.lock().expect("outbox poisoned");
        if last.get(key).is_some_and(|(last_id, _)| *last_id == id) {
            last.remove(key);
        }
        drop(last);
        let _ = done.send(());
    }

    fn release(&self, id: OutboxId) {
        self.0.busy.lock().expect("outbox poisoned").remove(&id);
    }
}

/// 1 s after the first failure, doubling up to [`MAX_BACKOFF`].
fn backoff(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << doublings).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(MAX_ATTEMPTS), MAX_BACKOFF);
    }
}
