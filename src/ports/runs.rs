//! Durable runbook requests and the runner that executes their actions.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{NewRun, Platform, Run, RunId, RunResult, RunState, UserRef, Vote, VoteTally};

use super::{Queued, StoreError};

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
    /// Stores `run`, a `/retry` of `retry.of` from step `retry.from`, and copies the retried
    /// run's records of the steps before it (not its rollback steps) as its own, in one
    /// transaction.
    async fn create_retry(
        &self,
        run: NewRun,
        lease_until: DateTime<Utc>,
        retry: crate::domain::Retry,
    ) -> Result<Run, StoreError>;
    /// Stops running run `id` at an approval gate: `running -> waiting` (conditional, the
    /// lease released) and, in the same transaction, stores `gate` (a pending request) as
    /// the gate at step `step` of `id` and queues `notice(gate, Pending)`. `None`, and
    /// nothing changed, when `id` was not running.
    async fn open_gate(
        &self,
        id: RunId,
        gate: (NewRun, u32),
        at: DateTime<Utc>,
        notice: &RunNotice<'_>,
    ) -> Result<Option<Run>, StoreError>;
    /// Records that `by` asked to cancel running run `id` (its process stops it); false when
    /// it was not running or a cancel was asked for already.
    async fn request_cancel(&self, id: RunId, by: &str) -> Result<bool, StoreError>;
    /// The approval requests of run `id`'s gates, oldest first.
    async fn gates_of(&self, id: RunId) -> Result<Vec<Run>, StoreError>;
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
    /// Records `message_id` as the message of run `id` if it has none and is running or
    /// waiting (a run needing no approval, whose answer becomes its progress); true if so.
    async fn bind_progress(&self, id: RunId, message_id: &str) -> Result<bool, StoreError>;
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
    /// Records how step `idx` ended (`running -> state`, conditional) and the value it
    /// published, queuing `queued` in the same transaction; false, and nothing queued, when
    /// it was not running.
    async fn finish_step(
        &self,
        id: RunId,
        idx: u32,
        ended: (crate::domain::StepState, &RunResult, Option<&str>),
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
