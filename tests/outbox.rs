//! The outbox's deliverer against a real SQLite store and a scripted chat platform, pass by
//! pass (`Deliverer::deliver_due`) with a fake clock: retries, a deliverer that dies with a
//! message in flight, a post whose id the store refuses, and wake-ups that find nothing new.

mod support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use opsbot::domain::Platform;
use opsbot::metrics::Metrics;
use opsbot::outbox::{CLAIM_HOLD, Deliverer, OutboxSignal};
use opsbot::ports::{
    ChatOutbound, Claimed, Clock, FakeClock, OutboundError, OutboundMessage, OutboundTarget,
    OutboxDepth, OutboxId, OutboxStore, Queued, Sent, StoreError,
};
use opsbot::store::SqliteStore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the scripted platform does with the next post.
enum Answer {
    Fail(OutboundError),
    /// Never answers (the process dies while the post is on its way).
    Hang,
    /// Takes the edit once the gate opens (a slow platform).
    Gate(Arc<tokio::sync::Notify>),
}

/// A chat platform that answers posts from a script (then accepts every post) and records
/// the posts it accepted.
#[derive(Default)]
struct Scripted {
    script: Mutex<VecDeque<Answer>>,
    posted: Mutex<Vec<String>>,
    attempts: Mutex<usize>,
    /// (message id, new text) of each edit made.
    edited: Mutex<Vec<(String, String)>>,
}

impl Scripted {
    fn new(script: impl IntoIterator<Item = Answer>) -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::new(script.into_iter().collect()),
            ..Self::default()
        })
    }

    fn posted(&self) -> Vec<String> {
        self.posted.lock().unwrap().clone()
    }
}

#[async_trait]
impl ChatOutbound for Scripted {
    async fn send(&self, _to: &OutboundTarget, message: &OutboundMessage) -> Sent {
        *self.attempts.lock().unwrap() += 1;
        let next = self.script.lock().unwrap().pop_front();
        match next {
            Some(Answer::Fail(e)) => Err(e),
            Some(Answer::Hang) => std::future::pending().await,
            Some(Answer::Gate(_)) | None => {
                let mut posted = self.posted.lock().unwrap();
                posted.push(message.text.clone());
                Ok(format!("m{}", posted.len()))
            }
        }
    }

    async fn edit(&self, _: &OutboundTarget, id: &str, message: &OutboundMessage) -> Sent<()> {
        *self.attempts.lock().unwrap() += 1;
        let next = self.script.lock().unwrap().pop_front();
        match next {
            Some(Answer::Fail(e)) => return Err(e),
            Some(Answer::Gate(gate)) => gate.notified().await,
            Some(Answer::Hang) => std::future::pending().await,
            None => {}
        }
        let edit = (id.to_owned(), message.text.clone());
        self.edited.lock().unwrap().push(edit);
        Ok(())
    }
}

struct Setup {
    store: Arc<SqliteStore>,
    clock: Arc<FakeClock>,
    metrics: Arc<Metrics>,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("outbox.db").display());
        let store = SqliteStore::open(&url).await.expect("open sqlite store");
        Self {
            store: Arc::new(store),
            clock: Arc::new(FakeClock::new(Utc::now())),
            metrics: Arc::new(Metrics::new()),
            _dir: dir,
        }
    }

    fn deliverer(&self, store: Arc<dyn OutboxStore>, chat: Arc<Scripted>) -> Deliverer {
        let clock: Arc<dyn Clock> = self.clock.clone();
        let signal = OutboxSignal::default();
        Deliverer::new(store, chat, clock, signal, self.metrics.clone())
    }

    async fn queue(&self, text: &str) -> OutboxId {
        let queued = Queued {
            to: OutboundTarget {
                platform: Platform::Slack,
                channel_id: "C1".into(),
                thread: None,
            },
            message: OutboundMessage::text(text),
            edit_of: None,
            binds_run: None,
        };
        self.store.enqueue(&queued, self.clock.now()).await.unwrap()
    }

    async fn depth(&self) -> u64 {
        self.store.outbox_depth().await.unwrap().pending
    }
}

/// An edit of the message `m7` in Slack channel C1.
fn edit_m7(text: &str) -> Queued {
    let to = OutboundTarget {
        platform: Platform::Slack,
        channel_id: "C1".into(),
        thread: None,
    };
    Queued::edit(to, "m7", OutboundMessage::text(text))
}

/// One pass of `deliverer`, waiting for the sends it started.
async fn pass(deliverer: &Deliverer) {
    let tasks = TaskTracker::new();
    let token = CancellationToken::new();
    deliverer.deliver_due(&tasks, &token).await.expect("pass");
    tasks.close();
    tasks.wait().await;
}

#[tokio::test]
async fn a_failed_delivery_is_retried_later_and_posted_once() {
    let s = Setup::new().await;
    let chat = Scripted::new([Answer::Fail(OutboundError::Unavailable("502".into()))]);
    let d = s.deliverer(s.store.clone(), chat.clone());
    s.queue("expired").await;
    pass(&d).await;
    assert!(chat.posted().is_empty());
    assert_eq!(s.depth().await, 1, "still queued after a failure");
    pass(&d).await;
    assert_eq!(
        *chat.attempts.lock().unwrap(),
        1,
        "not due again before its backoff"
    );
    s.clock.advance(Duration::from_secs(1));
    pass(&d).await;
    assert_eq!(chat.posted(), ["expired"]);
    assert_eq!(s.depth().await, 0);
    s.clock.advance(CLAIM_HOLD * 2);
    pass(&d).await;
    assert_eq!(chat.posted(), ["expired"], "delivered once");
    let metrics = s.metrics.encode();
    assert!(
        metrics.contains("opsbot_outbox_retried_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("opsbot_outbox_given_up_total 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_message_the_platform_will_never_take_is_given_up() {
    let s = Setup::new().await;
    let chat = Scripted::new([Answer::Fail(OutboundError::NotInChannel(
        "not_in_channel".into(),
    ))]);
    let d = s.deliverer(s.store.clone(), chat.clone());
    s.queue("nobody sees this").await;
    pass(&d).await;
    s.clock.advance(CLAIM_HOLD * 2);
    pass(&d).await;
    assert_eq!(*chat.attempts.lock().unwrap(), 1, "not tried again");
    assert_eq!(s.depth().await, 0);
    assert!(
        s.metrics
            .encode()
            .contains("opsbot_outbox_given_up_total 1")
    );
}

#[tokio::test]
async fn a_message_decided_before_a_crash_is_posted_once_by_the_next_deliverer() {
    let s = Setup::new().await;
    s.queue("decided, never posted").await;
    s.queue("in flight when it died").await;
    // The first deliverer takes the first message's turn and dies while posting the second.
    let dying = Scripted::new([
        Answer::Fail(OutboundError::Unavailable("x".into())),
        Answer::Hang,
    ]);
    let first = s.deliverer(s.store.clone(), dying.clone());
    let (tasks, token) = (TaskTracker::new(), CancellationToken::new());
    first.deliver_due(&tasks, &token).await.unwrap();
    support::eventually("both sends started", support::WAIT, async || {
        (*dying.attempts.lock().unwrap() == 2).then_some(())
    })
    .await;
    token.cancel();
    tasks.close();
    tasks.wait().await;
    drop(first);

    let chat = Scripted::new([]);
    let next = s.deliverer(s.store.clone(), chat.clone());
    s.clock.advance(Duration::from_secs(1));
    pass(&next).await;
    assert_eq!(
        chat.posted().len(),
        1,
        "the one that failed, once its backoff is over"
    );
    s.clock.advance(CLAIM_HOLD);
    pass(&next).await;
    s.clock.advance(CLAIM_HOLD * 2);
    pass(&next).await;
    let mut posted = chat.posted();
    posted.sort();
    assert_eq!(posted, ["decided, never posted", "in flight when it died"]);
    assert_eq!(s.depth().await, 0);
}

/// The outbox of a store that refuses to record the first `refusals` deliveries.
struct RefusesMarks {
    store: Arc<SqliteStore>,
    refusals: Mutex<u32>,
}

#[async_trait]
impl OutboxStore for RefusesMarks {
    async fn enqueue(&self, q: &Queued, now: DateTime<Utc>) -> Result<OutboxId, StoreError> {
        self.store.enqueue(q, now).await
    }
    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        hold: Duration,
        limit: u32,
    ) -> Result<Vec<Claimed>, StoreError> {
        self.store.claim_due(now, hold, limit).await
    }
    async fn mark_delivered(&self, id: OutboxId, message_id: &str) -> Result<bool, StoreError> {
        let refused = {
            let mut refusals = self.refusals.lock().unwrap();
            let refuse = *refusals > 0;
            *refusals = refusals.saturating_sub(1);
            refuse
        };
        if refused {
            return Err(StoreError::Unavailable("disk full".into()));
        }
        self.store.mark_delivered(id, message_id).await
    }
    async fn retry_at(&self, id: OutboxId, at: DateTime<Utc>, e: &str) -> Result<bool, StoreError> {
        self.store.retry_at(id, at, e).await
    }
    async fn give_up(&self, id: OutboxId, e: &str) -> Result<bool, StoreError> {
        self.store.give_up(id, e).await
    }
    async fn outbox_depth(&self) -> Result<OutboxDepth, StoreError> {
        self.store.outbox_depth().await
    }
    async fn forget_outbox_before(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.store.forget_outbox_before(before).await
    }
}

#[tokio::test]
async fn a_post_whose_id_the_store_refuses_is_not_posted_again() {
    let s = Setup::new().await;
    let refusing = Arc::new(RefusesMarks {
        store: s.store.clone(),
        refusals: Mutex::new(2),
    });
    let chat = Scripted::new([]);
    let d = s.deliverer(refusing.clone(), chat.clone());
    s.queue("posted once").await;
    pass(&d).await;
    for _ in 0..3 {
        s.clock.advance(CLAIM_HOLD * 2);
        pass(&d).await;
    }
    assert_eq!(chat.posted(), ["posted once"]);
    assert_eq!(*refusing.refusals.lock().unwrap(), 0);
    assert_eq!(s.depth().await, 0, "its id stored in the end");
}

#[tokio::test]
async fn a_deliverer_that_steps_down_keeps_storing_the_id_of_what_it_posted() {
    let s = Setup::new().await;
    let refusing = Arc::new(RefusesMarks {
        store: s.store.clone(),
        refusals: Mutex::new(1),
    });
    let chat = Scripted::new([]);
    let d = s.deliverer(refusing.clone(), chat.clone());
    s.queue("posted once").await;
    let leading = CancellationToken::new();
    let liveness = Arc::new(opsbot::liveness::Liveness::default());
    let run = tokio::spawn(d.clone().run(liveness, leading.clone()));
    support::eventually("posted", support::WAIT, async || {
        (chat.posted().len() == 1).then_some(())
    })
    .await;
    // Leadership lost while the store still refuses the id.
    leading.cancel();
    run.await.unwrap();
    support::eventually(
        "its id stored after stepping down",
        support::WAIT,
        async || (s.depth().await == 0).then_some(()),
    )
    .await;
    assert_eq!(chat.posted(), ["posted once"]);
}

#[tokio::test]
async fn a_queued_edit_replaces_its_message_and_only_the_newest_is_made() {
    let s = Setup::new().await;
    let chat = Scripted::new([Answer::Fail(OutboundError::Unavailable("502".into()))]);
    let d = s.deliverer(s.store.clone(), chat.clone());
    s.store
        .enqueue(&edit_m7("approved"), s.clock.now())
        .await
        .unwrap();
    pass(&d).await;
    assert!(
        chat.edited.lock().unwrap().is_empty(),
        "the first attempt failed"
    );
    s.store
        .enqueue(&edit_m7("ran: ok"), s.clock.now())
        .await
        .unwrap();
    s.clock.advance(Duration::from_secs(2));
    pass(&d).await;
    s.clock.advance(CLAIM_HOLD * 2);
    pass(&d).await;
    assert_eq!(
        *chat.edited.lock().unwrap(),
        [("m7".to_owned(), "ran: ok".to_owned())],
        "the older edit, still waiting for its retry, was superseded"
    );
    assert!(chat.posted().is_empty(), "an edit posts nothing");
    assert_eq!(s.depth().await, 0);
}

#[tokio::test]
async fn an_edit_waits_for_the_previous_edit_of_its_message_so_the_newest_lands_last() {
    let s = Setup::new().await;
    let gate = Arc::new(tokio::sync::Notify::new());
    let chat = Scripted::new([Answer::Gate(gate.clone())]);
    let d = s.deliverer(s.store.clone(), chat.clone());
    let (tasks, token) = (TaskTracker::new(), CancellationToken::new());
    s.store
        .enqueue(&edit_m7("approved"), s.clock.now())
        .await
        .unwrap();
    d.deliver_due(&tasks, &token).await.unwrap();
    // The newer edit is claimed while the older one is still on its way to a slow platform.
    s.store
        .enqueue(&edit_m7("ran: ok"), s.clock.now())
        .await
        .unwrap();
    assert_eq!(d.deliver_due(&tasks, &token).await.unwrap(), 1);
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        *chat.attempts.lock().unwrap(),
        1,
        "the newer edit waits its turn"
    );
    gate.notify_one();
    tasks.close();
    tasks.wait().await;
    let edited: Vec<String> = chat
        .edited
        .lock()
        .unwrap()
        .iter()
        .map(|(_, t)| t.clone())
        .collect();
    assert_eq!(
        edited,
        ["approved", "ran: ok"],
        "the message ends as last queued"
    );
}

/// An outbox in memory that records each claim: no I/O, so paused time moves on only once
/// every task waits.
#[derive(Default)]
struct InMemory {
    /// Each queued row and whether it has been claimed.
    rows: Mutex<Vec<(Queued, bool)>>,
    /// The ids each `claim_due` call handed out, in order.
    claims: Mutex<Vec<Vec<OutboxId>>>,
}

impl InMemory {
    fn claims(&self) -> Vec<Vec<OutboxId>> {
        self.claims.lock().unwrap().clone()
    }
}

#[async_trait]
impl OutboxStore for InMemory {
    async fn enqueue(&self, q: &Queued, _: DateTime<Utc>) -> Result<OutboxId, StoreError> {
        let mut rows = self.rows.lock().unwrap();
        rows.push((q.clone(), false));
        Ok(OutboxId(rows.len() as i64))
    }
    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        _: Duration,
        limit: u32,
    ) -> Result<Vec<Claimed>, StoreError> {
        let mut rows = self.rows.lock().unwrap();
        let claimed: Vec<Claimed> = (rows.iter_mut().enumerate())
            .filter(|(_, (_, claimed))| !*claimed)
            .take(limit as usize)
            .map(|(i, (queued, claimed))| {
                *claimed = true;
                Claimed {
                    id: OutboxId(i as i64 + 1),
                    queued: queued.clone(),
                    attempts: 1,
                    created_at: now,
                }
            })
            .collect();
        let ids = claimed.iter().map(|c| c.id).collect();
        self.claims.lock().unwrap().push(ids);
        Ok(claimed)
    }
    async fn mark_delivered(&self, _: OutboxId, _: &str) -> Result<bool, StoreError> {
        Ok(true)
    }
    async fn retry_at(&self, _: OutboxId, _: DateTime<Utc>, _: &str) -> Result<bool, StoreError> {
        Ok(true)
    }
    async fn give_up(&self, _: OutboxId, _: &str) -> Result<bool, StoreError> {
        Ok(true)
    }
    async fn outbox_depth(&self) -> Result<OutboxDepth, StoreError> {
        Ok(OutboxDepth::default())
    }
    async fn forget_outbox_before(&self, _: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(0)
    }
}

/// A deliverer running over an in-memory outbox that counts its claims, and a chat that
/// takes every message.
async fn running_deliverer() -> (
    Arc<InMemory>,
    Arc<Scripted>,
    OutboxSignal,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let store = Arc::new(InMemory::default());
    let chat = Scripted::new([]);
    let signal = OutboxSignal::default();
    let clock: Arc<dyn Clock> = Arc::new(FakeClock::new(Utc::now()));
    let metrics = Arc::new(Metrics::new());
    let d = Deliverer::new(store.clone(), chat.clone(), clock, signal.clone(), metrics);
    let liveness = Arc::new(opsbot::liveness::Liveness::default());
    let leading = CancellationToken::new();
    let run = tokio::spawn(d.run(liveness, leading.clone()));
    settle().await;
    (store, chat, signal, leading, run)
}

/// Lets every task run until all wait (paused time: far less than a poll interval).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test(start_paused = true)]
async fn the_notice_of_a_row_claimed_here_already_claims_nothing() {
    let (store, chat, signal, leading, run) = running_deliverer().await;
    let queue = async |text: &str| {
        let to = OutboundTarget {
            platform: Platform::Slack,
            channel_id: "C1".into(),
            thread: None,
        };
        let queued = Queued::post(to, OutboundMessage::text(text));
        store.enqueue(&queued, Utc::now()).await.unwrap()
    };
    // Queued here: this process's own signal has it claimed at once...
    let here = queue("queued here").await;
    signal.wake();
    settle().await;
    // ...and the database's notice of it, after the commit, finds it claimed.
    signal.wake_for([here]);
    settle().await;
    // A row another replica queued: its notice is all this deliverer hears of it.
    let there = queue("queued there").await;
    signal.wake_for([there]);
    settle().await;
    assert_eq!(store.claims(), [vec![], vec![here], vec![there]]);
    assert_eq!(chat.posted(), ["queued here", "queued there"]);
    leading.cancel();
    run.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn while_the_store_notifies_a_row_queued_here_is_claimed_once_on_its_notice() {
    let (store, chat, signal, leading, run) = running_deliverer().await;
    let to = OutboundTarget {
        platform: Platform::Slack,
        channel_id: "C1".into(),
        thread: None,
    };
    // The watcher listens (Postgres): the producer's own wake adds nothing...
    signal.store_notifies(true);
    let here = (store.enqueue(
        &Queued::post(to.clone(), OutboundMessage::text("here")),
        Utc::now(),
    ))
    .await
    .unwrap();
    signal.wake();
    settle().await;
    assert_eq!(store.claims(), [vec![]], "only the start's claim so far");
    // ...the notice that follows the commit claims the row, once.
    signal.wake_for([here]);
    settle().await;
    assert_eq!(store.claims(), [vec![], vec![here]]);
    // A watcher that reconnected may have missed notices: it wakes the deliverer in any case.
    signal.wake_unnamed();
    settle().await;
    assert_eq!(store.claims().len(), 3);
    // Not listening any more: a producer's wake is all there is, and it wakes.
    signal.store_notifies(false);
    let later = (store.enqueue(
        &Queued::post(to, OutboundMessage::text("later")),
        Utc::now(),
    ))
    .await
    .unwrap();
    signal.wake();
    settle().await;
    assert_eq!(store.claims().last(), Some(&vec![later]));
    assert_eq!(chat.posted(), ["here", "later"]);
    leading.cancel();
    run.await.unwrap();
}
