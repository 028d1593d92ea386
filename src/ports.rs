//! The traits the core needs from the outside world: a store, a rate limiter, a clock,
//! health probes and outbound chat. Backends and adapters implement them at the edge;
//! the core never names sqlx, redis, axum or a platform crate.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;

use crate::domain::{
    Alert, AlertId, AuditEntry, AuditRecord, EscalationRecord, EscalationSubject, Handoff,
    Incident, IncidentId, IncomingAlert, Mention, MentionOf, NewRun, Override, Platform, RateQuota,
    Run, RunId, RunResult, RunState, SentPage, Silence, StopReason, TimelineEntry, UserRef,
    Visibility, Vote, VoteTally,
};

/// Failure of the store boundary. The message is for logs, never for chat.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("store query failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Durable state. One trait, one behaviour, whichever backend is behind it.
#[async_trait]
pub trait Store:
    RunStore
    + AlertStore
    + IncidentStore
    + DeliveryLog
    + LeaseStore
    + OutboxStore
    + OncallStore
    + EscalationStore
    + Send
    + Sync
{
    /// Appends to the hash-chained audit log; returns once the record is committed.
    async fn append_audit(&self, entry: AuditEntry) -> Result<AuditRecord, StoreError>;
    /// The newest `limit` records, newest first.
    async fn recent_audit(&self, limit: u32) -> Result<Vec<AuditRecord>, StoreError>;
    /// Up to `limit` records with `seq > after_seq`, oldest first (for verification).
    async fn audit_after(&self, after_seq: i64, limit: u32)
    -> Result<Vec<AuditRecord>, StoreError>;
    /// Whether the store accepts writes (for `/readyz`): rewrites one tiny row.
    async fn probe_write(&self) -> Result<(), StoreError>;
}

/// A lease's fencing token: each new holder of a lease gets a larger epoch than every holder
/// before it, and keeps it while it renews, so work stamped with an older epoch is stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub i64);

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Named leases with a fencing epoch, for work one replica of a cluster must do alone.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Takes lease `name` for `holder` until `now + ttl`, or extends it: one conditional
    /// statement. The holder keeps its epoch while it renews a lease it still holds; a lease
    /// that is free (released) or expired goes to `holder` with the next epoch. `None`: another
    /// holder has it and it has not expired.
    async fn acquire_or_renew(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<Epoch>, StoreError>;
    /// Gives the lease up so another holder can take it at once; only if `holder` still holds
    /// it at `epoch` (false otherwise, and nothing changed).
    async fn release(&self, name: &str, holder: &str, epoch: Epoch) -> Result<bool, StoreError>;
}

#[derive(Debug, thiserror::Error)]
#[error("rate limiter unavailable: {0}")]
pub struct LimiterError(pub String);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitDecision {
    Allowed,
    Limited { retry_after: Duration },
}

/// Counts one event against `key` under `quota`.
#[async_trait]
pub trait RateLimiter: Send + Sync {
    async fn check(&self, key: &str, quota: RateQuota) -> Result<LimitDecision, LimiterError>;
}

/// Reads a variable from opsbot's environment (runbook pass-through variables and secrets).
/// Tests inject their own.
pub type EnvLookup = std::sync::Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Wall-clock time for stored timestamps. Tests use [`FakeClock`].
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct FakeClock(Mutex<DateTime<Utc>>);

impl FakeClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self(Mutex::new(start))
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().expect("fake clock poisoned");
        *now += chrono::Duration::from_std(by).expect("duration fits");
    }
}

impl Clock for FakeClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("fake clock poisoned")
    }
}

/// Result of one health probe run to completion (timeouts are applied by the caller).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeReport {
    pub up: bool,
    pub detail: String,
}

impl ProbeReport {
    pub fn up(detail: impl Into<String>) -> Self {
        Self {
            up: true,
            detail: detail.into(),
        }
    }

    pub fn down(detail: impl Into<String>) -> Self {
        Self {
            up: false,
            detail: detail.into(),
        }
    }
}

/// One health check's probe (HTTP, TCP, Postgres, Redis, exec...).
#[async_trait]
pub trait Probe: Send + Sync {
    async fn probe(&self) -> ProbeReport;
}

/// The messages a move of a run (from the state given) queues with it: what the run's channel
/// is told (a sweep's notice, a run's result), and the edit retiring its request's buttons
/// where there are any.
pub type RunNotice<'a> = dyn Fn(&Run, RunState) -> Vec<Queued> + Send + Sync + 'a;

/// A [`RunNotice`] for a move nobody needs to hear about.
pub fn untold(_: &Run, _: RunState) -> Vec<Queued> {
    Vec::new()
}

/// A step about to start: its place in the run's order, its name, and whether it is a
/// rollback step.
#[derive(Clone, Copy, Debug)]
pub struct StepStart<'a> {
    pub idx: u32,
    pub name: &'a str,
    pub rollback: bool,
}

/// Durable runbook requests. Every state change is one conditional update: it succeeds
/// only from the expected state, which is what makes execution happen at most once.
#[async_trait]
pub trait RunStore: Send + Sync {
    /// Stores a new request, leased until `lease_until` (the runbook's lease policy) so that
    /// one created already approved ends up `interrupted` if its process dies before it runs.
    async fn create_run(&self, run: NewRun, lease_until: DateTime<Utc>) -> Result<Run, StoreError>;
    async fn run(&self, id: RunId) -> Result<Option<Run>, StoreError>;
    /// The request whose approval message is `message_id` in that channel.
    async fn run_by_message(
        &self,
        platform: Platform,
        channel_id: &str,
        message_id: &str,
    ) -> Result<Option<Run>, StoreError>;
    /// Records the chat message approvers react to and, in the same transaction, queues
    /// `notice(run, Pending)` for the run as it then stands (a request decided before its
    /// message was bound has its buttons retired here; its decision could not). False when
    /// there is no such run.
    async fn set_run_message(
        &self,
        id: RunId,
        message_id: &str,
        at: DateTime<Utc>,
        notice: &RunNotice<'_>,
    ) -> Result<bool, StoreError>;
    /// Records a vote (once per approver) and returns the tally.
    async fn add_vote(&self, id: RunId, vote: &Vote) -> Result<VoteTally, StoreError>;
    /// Withdraws a vote while the request is still pending; true if one was withdrawn.
    async fn retract_vote(&self, id: RunId, approver: &UserRef) -> Result<bool, StoreError>;
    /// Moves `id` from `from` to `to`; false (and nothing changed) if it was not in `from`.
    async fn transition(
        &self,
        id: RunId,
        from: RunState,
        to: RunState,
        at: DateTime<Utc>,
        lease_until: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError>;
    /// [`RunStore::transition`] that decides something the chat must see: `notice`'s
    /// messages (given the run as moved, its message id as stored at that moment, and `from`)
    /// are queued in the outbox in the same transaction. False, and nothing changed or
    /// queued, if it was not in `from`.
    async fn transition_queuing(
        &self,
        id: RunId,
        (from, to): (RunState, RunState),
        at: DateTime<Utc>,
        lease_until: Option<DateTime<Utc>>,
        notice: &RunNotice<'_>,
    ) -> Result<bool, StoreError>;
    /// Records the result and moves `running -> to`, queuing `notice`'s messages (given the
    /// run as finished and `Running`) in the outbox in the same transaction; false, and
    /// nothing changed or queued, if it was not running.
    async fn finish_run(
        &self,
        id: RunId,
        to: RunState,
        result: &RunResult,
        at: DateTime<Utc>,
        notice: &RunNotice<'_>,
    ) -> Result<bool, StoreError>;
    async fn renew_lease(&self, id: RunId, until: DateTime<Utc>) -> Result<(), StoreError>;
    /// Claims a step of running run `id` (and records it as the run's current step), queuing
    /// `queued` in the same transaction; false, and nothing changed or queued, when the run
    /// is not running or the step was claimed before.
    async fn start_step(
        &self,
        id: RunId,
        step: &StepStart<'_>,
        at: DateTime<Utc>,
        queued: &[Queued],
    ) -> Result<bool, StoreError>;
    /// Records how step `idx` ended (`running -> state`, conditional), queuing `queued` in
    /// the same transaction; false, and nothing queued, when it was not running.
    async fn finish_step(
        &self,
        id: RunId,
        idx: u32,
        ended: (crate::domain::StepState, &RunResult),
        at: DateTime<Utc>,
        queued: &[Queued],
    ) -> Result<bool, StoreError>;
    /// The steps run `id` has started, in order.
    async fn run_steps(&self, id: RunId) -> Result<Vec<crate::domain::StepRecord>, StoreError>;
    /// Marks approved/running requests whose lease lapsed (their process died) `interrupted`;
    /// each with the state it was in, so the notice can say whether anything had started.
    /// `notice`'s messages are queued in the outbox in the same transaction, for each.
    async fn interrupt_stale(
        &self,
        now: DateTime<Utc>,
        notice: &RunNotice<'_>,
    ) -> Result<Vec<(Run, RunState)>, StoreError>;
    /// Marks pending requests past their expiry `expired`, queuing `notice`'s messages (called
    /// with `Pending`, the state each left) in the same transaction.
    async fn expire_due(
        &self,
        now: DateTime<Utc>,
        notice: &RunNotice<'_>,
    ) -> Result<Vec<Run>, StoreError>;
}

/// How an action run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionOutcome {
    /// Exit code (exec) or HTTP status (http); `None` if it never finished.
    pub code: Option<i32>,
    pub success: bool,
    pub timed_out: bool,
    /// Combined output, capped; `truncated` says whether anything was cut.
    pub output: String,
    pub truncated: bool,
    pub duration: Duration,
}

/// Runs a rendered action (a process or an HTTP request) under its timeout.
#[async_trait]
pub trait ActionRunner: Send + Sync {
    async fn run(&self, action: &crate::domain::ActionKind) -> ActionOutcome;
}

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

/// Durable alerts, their group messages and silences.
#[async_trait]
pub trait AlertStore: Send + Sync {
    /// Inserts or updates every alert (by fingerprint) in one transaction.
    async fn ingest_alerts(
        &self,
        alerts: &[IncomingAlert],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    async fn alert(&self, id: AlertId) -> Result<Option<Alert>, StoreError>;
    async fn alerts_in_group(&self, group_key: &str) -> Result<Vec<Alert>, StoreError>;
    /// Firing alerts, newest first.
    async fn active_alerts(&self, limit: u32) -> Result<Vec<Alert>, StoreError>;
    /// How many alerts are firing, and how many of each severity (the `kinds` most common).
    async fn firing_count(&self, kinds: u32) -> Result<FiringCount, StoreError>;
    /// Acknowledges a firing, unacknowledged alert; false if it was not.
    async fn ack_alert(&self, id: AlertId, by: &str, at: DateTime<Utc>)
    -> Result<bool, StoreError>;
    /// Resolves a firing alert by hand; false if it was not firing.
    async fn resolve_alert(&self, id: AlertId, at: DateTime<Utc>) -> Result<bool, StoreError>;
    /// The message a group is shown in, in one channel: (message id, text last sent).
    async fn group_message(
        &self,
        group_key: &str,
        platform: Platform,
        channel_id: &str,
    ) -> Result<Option<(String, String)>, StoreError>;
    async fn set_group_message(
        &self,
        group_key: &str,
        platform: Platform,
        channel_id: &str,
        message_id: &str,
        text: &str,
    ) -> Result<(), StoreError>;
    /// Marks groups as changed, so the replica that delivers brings their messages up to
    /// date: for changes other than `ingest_alerts`, which marks its groups in the same
    /// statement (or transaction) that stores the alerts.
    async fn mark_groups_changed(&self, group_keys: &[String]) -> Result<(), StoreError>;
    /// Up to `limit` groups changed since their messages were last brought up to date, each
    /// with the version that [`AlertStore::group_delivered`] then records.
    async fn pending_groups(&self, limit: u32) -> Result<Vec<(String, i64)>, StoreError>;
    /// Records that a group's messages show every change up to `version` (never lowers it).
    async fn group_delivered(&self, group_key: &str, version: i64) -> Result<(), StoreError>;
    /// Claims the post of a group's first message in one channel (a conditional insert): true
    /// if no one held the claim, `claim.holder` already did, or it was taken before
    /// `claim.stale_before` (its holder died between claim and post).
    async fn claim_group_post(
        &self,
        group_key: &str,
        platform: Platform,
        channel_id: &str,
        claim: &PostClaim<'_>,
    ) -> Result<bool, StoreError>;
    /// Firing, unacknowledged alerts last notified (or started) before `due_before`.
    async fn alerts_due_reminder(
        &self,
        due_before: DateTime<Utc>,
    ) -> Result<Vec<(Alert, u32)>, StoreError>;
    /// Records a reminder and queues its `notices` (one per channel) in the outbox, in one
    /// transaction; false (nothing queued) if someone else (another replica) sent it first.
    async fn mark_alert_reminded(
        &self,
        id: AlertId,
        previous: u32,
        at: DateTime<Utc>,
        notices: &[Queued],
    ) -> Result<bool, StoreError>;
    /// The alert group shown in that chat message, if any.
    async fn group_by_message(
        &self,
        platform: Platform,
        channel_id: &str,
        message_id: &str,
    ) -> Result<Option<String>, StoreError>;
    async fn add_silence(&self, silence: &Silence) -> Result<i64, StoreError>;
    async fn set_silence_upstream(&self, id: i64, upstream_id: &str) -> Result<(), StoreError>;
    /// Ends a silence now; false if there was no active silence with that id.
    async fn end_silence(&self, id: i64, at: DateTime<Utc>) -> Result<bool, StoreError>;
    async fn active_silences(&self, at: DateTime<Utc>) -> Result<Vec<Silence>, StoreError>;
}

/// Who claims a group's first post, when, and before when another's claim is stale.
#[derive(Clone, Copy, Debug)]
pub struct PostClaim<'a> {
    /// The replica's name (`hostname:pid:random`): its own claim it may take again.
    pub holder: &'a str,
    pub at: DateTime<Utc>,
    pub stale_before: DateTime<Utc>,
}

/// How many alerts are firing in all, and by severity label (`none` without one; values cut
/// to [`FiringCount::SEVERITY_CHARS`] characters), most common first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FiringCount {
    pub total: u64,
    pub by_severity: Vec<(String, u64)>,
}

impl FiringCount {
    /// How much of a severity label is compared and shown.
    pub const SEVERITY_CHARS: usize = 40;
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

/// A chat message the bot decided to post (or an edit of one it posted), queued in the
/// outbox until the leader delivers it.
#[derive(Clone, Debug)]
pub struct Queued {
    pub to: OutboundTarget,
    /// Its priority is the lane it takes (urgent overtakes routine in its channel).
    pub message: OutboundMessage,
    /// The platform's id of the message in `to` this replaces; `None` posts a new one.
    pub edit_of: Option<String>,
}

impl Queued {
    /// A new message for `to`.
    pub fn post(to: OutboundTarget, message: OutboundMessage) -> Self {
        Self {
            to,
            message,
            edit_of: None,
        }
    }

    /// `message` replacing message `id` in `to` (text and buttons).
    pub fn edit(to: OutboundTarget, id: impl Into<String>, message: OutboundMessage) -> Self {
        Self {
            to,
            message,
            edit_of: Some(id.into()),
        }
    }
}

/// Wakes the outbox's deliverer when a producer has queued something, so a message does not
/// wait for the next poll. Producers hold a clone; waking a deliverer that does not run here
/// (a follower) does nothing.
#[derive(Clone, Debug, Default)]
pub struct OutboxSignal(std::sync::Arc<tokio::sync::Notify>);

impl OutboxSignal {
    pub fn wake(&self) {
        self.0.notify_one();
    }

    /// Until the next [`OutboxSignal::wake`] (or one made since the last wait).
    pub async fn woken(&self) {
        self.0.notified().await;
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
    /// Records that the platform took it as `message_id`; false if it was not pending.
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

/// On-call overrides made from chat.
#[async_trait]
pub trait OncallStore: Send + Sync {
    /// Stores an override (who made it and why, for the record); returns its number.
    async fn add_override(
        &self,
        o: &Override,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError>;
    /// Overrides that end after `at` (under way or to come), oldest first.
    async fn overrides_ending_after(&self, at: DateTime<Utc>) -> Result<Vec<Override>, StoreError>;
    /// Claims the announcement of a handoff and queues `notices` with the claim, in one
    /// transaction; false (nothing queued) when it was announced already.
    async fn claim_handoff(
        &self,
        schedule: &str,
        handoff: &Handoff,
        now: DateTime<Utc>,
        notices: &[Queued],
    ) -> Result<bool, StoreError>;
}

/// Escalations under way: started once per subject, each step claimed by a conditional
/// update (next step N → N+1) in the transaction that queues its messages, stopped once.
#[async_trait]
pub trait EscalationStore: Send + Sync {
    /// Starts escalating `subject` through `policy`, its first step due at `first_due`,
    /// unless an escalation of it is under way; true if this call started it.
    async fn start_escalation(
        &self,
        subject: &EscalationSubject,
        policy: &str,
        now: DateTime<Utc>,
        first_due: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// The escalation of `subject` under way, if any.
    async fn active_escalation(
        &self,
        subject: &EscalationSubject,
    ) -> Result<Option<EscalationRecord>, StoreError>;
    /// Up to `limit` escalations under way whose next step is due at `now`, oldest due first.
    async fn due_escalations(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<EscalationRecord>, StoreError>;
    /// Takes step `step` of escalation `id`: only if it is under way and `step` is its next
    /// step (then the next is `step + 1`, due at `next_due`, or none), recording `page` if
    /// the step sends one and queuing `notices`, in one transaction. False (nothing queued)
    /// when another sweep took it or it stopped.
    async fn claim_escalation_step(
        &self,
        id: i64,
        step: u32,
        next_due: Option<DateTime<Utc>>,
        pages: &[SentPage],
        notices: &[Queued],
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Stops the escalation of `subject` under way; returns it as it was, if this call stopped it.
    async fn stop_escalation(
        &self,
        subject: &EscalationSubject,
        why: StopReason,
        now: DateTime<Utc>,
    ) -> Result<Option<EscalationRecord>, StoreError>;
    /// Up to `limit` stopped escalations whose pages have not been closed upstream yet.
    async fn pages_to_close(&self, limit: u32) -> Result<Vec<EscalationRecord>, StoreError>;
    /// Records that escalation `id`'s pages were closed upstream; false if done already.
    async fn pages_closed(&self, id: i64, now: DateTime<Utc>) -> Result<bool, StoreError>;
}

/// Durable incidents and their timelines.
#[async_trait]
pub trait IncidentStore: Send + Sync {
    /// Opens an incident; `None` if the channel already has an open one.
    async fn open_incident(&self, incident: &Incident) -> Result<Option<Incident>, StoreError>;
    async fn incident(&self, id: IncidentId) -> Result<Option<Incident>, StoreError>;
    async fn open_incident_in(
        &self,
        platform: Platform,
        channel_id: &str,
    ) -> Result<Option<Incident>, StoreError>;
    async fn set_commander(&self, id: IncidentId, commander: &str) -> Result<(), StoreError>;
    /// Records the first acknowledgement; later ones change nothing.
    async fn ack_incident(&self, id: IncidentId, at: DateTime<Utc>) -> Result<(), StoreError>;
    /// Resolves an open incident; false if it was not open.
    async fn resolve_incident(&self, id: IncidentId, at: DateTime<Utc>)
    -> Result<bool, StoreError>;
    async fn add_timeline(&self, id: IncidentId, entry: &TimelineEntry) -> Result<(), StoreError>;
    async fn timeline(&self, id: IncidentId) -> Result<Vec<TimelineEntry>, StoreError>;
    /// Links an alert; false if it was already linked.
    async fn link_alert(&self, id: IncidentId, alert_id: AlertId) -> Result<bool, StoreError>;
    async fn linked_alerts(&self, id: IncidentId) -> Result<Vec<Alert>, StoreError>;
    /// Open, unacknowledged incidents not yet reminded about (for response-target reminders).
    async fn unacked_incidents(&self) -> Result<Vec<Incident>, StoreError>;
    /// Records the reminder and queues its `notice` in the outbox, in one transaction; false
    /// (nothing queued) if the incident was reminded about already.
    async fn mark_reminded(
        &self,
        id: IncidentId,
        at: DateTime<Utc>,
        notice: &Queued,
    ) -> Result<bool, StoreError>;
}

/// Systems told about alert groups besides chat (signed outbound webhooks).
#[async_trait]
pub trait GroupNotifier: Send + Sync {
    async fn group_changed(&self, group_key: &str, alerts: &[Alert]) -> Result<(), OutboundError>;
}

/// Mirrors silences created from chat into Alertmanager, so its own notifications stop too.
#[async_trait]
pub trait SilenceSync: Send + Sync {
    /// Creates the silence upstream; returns the upstream id.
    async fn create(&self, silence: &Silence) -> Result<String, OutboundError>;
    async fn expire(&self, upstream_id: &str) -> Result<(), OutboundError>;
}

/// What a page asks of the paging service: open it, say someone is on it, close it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageAction {
    Trigger,
    Acknowledge,
    Resolve,
}

/// How loudly a page rings (PagerDuty's `payload.severity`; ntfy priority 5 for `Critical`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSeverity {
    Critical,
    Error,
    Warning,
    Info,
}

/// One page to a paging service (`[[paging.services]]`). The same `dedup_key` names the same
/// thing across trigger, acknowledge and resolve (an alert's fingerprint, `incident-7`), so
/// a trigger sent twice opens one page upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub dedup_key: String,
    /// One line; outside text in it is the service's to show, never chat markup.
    pub summary: String,
    /// What the page is about (a service label, `opsbot`).
    pub source: String,
    pub severity: PageSeverity,
}

/// Sends pages to the paging services named in the config (PagerDuty Events v2, ntfy, a
/// signed webhook). Retries what may succeed later (429, 5xx, transport) with backoff inside
/// `page`; an error returned is final for this call.
#[async_trait]
pub trait Pager: Send + Sync {
    /// `service` is a `[[paging.services]] name`; an unknown one is `Undeliverable`.
    async fn page(
        &self,
        service: &str,
        action: PageAction,
        page: &Page,
    ) -> Result<(), OutboundError>;
}
