//! Runbook requests: the state machine every approval-gated (or immediate) runbook run goes
//! through, the votes that approve it, and the result it ends with. Transitions are applied
//! by the store as single conditional updates, so racing approvers, redelivered events or
//! two replicas can move a request out of a state at most once.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::RunId;
use super::identity::{Platform, UserRef};

string_enum! {
    /// Where a request is in its life. `pending -> approved -> running -> succeeded | failed |
    /// timed_out | interrupted`, or `pending -> denied | cancelled | expired`. A run of steps
    /// at an approval gate goes `running -> waiting -> running` (it holds no lease while it
    /// waits: nothing of it is running, so a crash leaves it waiting).
    pub enum RunState("run state") {
        Pending = "pending", Approved = "approved", Running = "running", Waiting = "waiting",
        Succeeded = "succeeded", Failed = "failed", TimedOut = "timed_out",
        Interrupted = "interrupted", Denied = "denied", Cancelled = "cancelled",
        Expired = "expired",
    }
}

impl RunState {
    /// Whether the action has started (or finished); such a request never runs again.
    pub fn has_run(self) -> bool {
        match self {
            RunState::Approved
            | RunState::Running
            | RunState::Waiting
            | RunState::Succeeded
            | RunState::Failed
            | RunState::TimedOut
            | RunState::Interrupted => true,
            RunState::Pending | RunState::Denied | RunState::Cancelled | RunState::Expired => false,
        }
    }
}

/// What a new request is created with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRun {
    pub command: String,
    /// Bound argument values, in declaration order.
    pub args: Vec<(String, String)>,
    /// What will run, as shown to approvers (secrets masked).
    pub rendered: String,
    /// Hash of the exact action; execution refuses if it would differ.
    pub action_hash: String,
    pub requester: UserRef,
    pub requester_name: String,
    pub platform: Platform,
    pub channel_id: String,
    pub channel_name: String,
    pub thread: Option<String>,
    pub approvals_needed: u32,
    pub state: RunState,
    pub break_glass: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A stored request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub id: RunId,
    pub new: NewRun,
    pub state: RunState,
    /// The chat message approvers react to, once posted.
    pub message_id: Option<String>,
    pub result: Option<RunResult>,
    /// The step running or last started, for a run of steps.
    pub current_step: Option<String>,
    /// For the approval request of a gate: the run it holds and the gate's step.
    pub gate: Option<Gate>,
    /// Who asked `/cancel` of it while it was running.
    pub cancel_requested: Option<String>,
    /// For a `/retry`: the run it retries and the step it starts from.
    pub retry: Option<Retry>,
}

/// The run a `/retry` runs again, and the step (its index) it starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    pub of: RunId,
    pub from: u32,
}

/// The run an approval gate holds, and the gate's place in its steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gate {
    pub run: RunId,
    pub step: u32,
}

string_enum! {
    /// Where one step of a run is: `running -> succeeded | failed | timed_out`.
    pub enum StepState("step state") {
        Running = "running", Succeeded = "succeeded", Failed = "failed", TimedOut = "timed_out",
    }
}

/// One step of a run as stored: claimed when it starts, its result recorded when it ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepRecord {
    /// Position in the order the run executed its steps (rollback steps after the others).
    pub idx: u32,
    pub name: String,
    /// A step of the `on_failure` path.
    pub rollback: bool,
    pub state: StepState,
    pub started_at: DateTime<Utc>,
    pub result: Option<RunResult>,
    /// The value it published for later steps (validated and redacted), if any.
    pub published: Option<String>,
}

/// How an execution ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunResult {
    /// Process exit code or HTTP status; `None` when it never finished (timeout, spawn error).
    pub code: Option<i32>,
    pub duration: Duration,
    /// Captured output, truncated and with secrets redacted.
    pub output: String,
    pub truncated: bool,
}

/// One approver's vote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vote {
    pub approver: UserRef,
    pub approver_name: String,
    pub action_hash: String,
    pub at: DateTime<Utc>,
}

/// What recording a vote did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoteTally {
    /// False when this approver had already voted (each approver counts once).
    pub counted: bool,
    pub total: u32,
}
