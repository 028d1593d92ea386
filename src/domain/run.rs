//! Runbook requests: the state machine every approval-gated (or immediate) runbook run goes
//! through, the votes that approve it, and the result it ends with. Transitions are applied
//! by the store as single conditional updates, so racing approvers, redelivered events or
//! two replicas can move a request out of a state at most once.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::identity::{Platform, UserRef};

/// Where a request is in its life. `pending -> approved -> running -> succeeded | failed |
/// timed_out | interrupted`, or `pending -> denied | cancelled | expired`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunState {
    Pending,
    Approved,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Interrupted,
    Denied,
    Cancelled,
    Expired,
}

impl RunState {
    pub const ALL: [RunState; 10] = [
        RunState::Pending,
        RunState::Approved,
        RunState::Running,
        RunState::Succeeded,
        RunState::Failed,
        RunState::TimedOut,
        RunState::Interrupted,
        RunState::Denied,
        RunState::Cancelled,
        RunState::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Approved => "approved",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::TimedOut => "timed_out",
            RunState::Interrupted => "interrupted",
            RunState::Denied => "denied",
            RunState::Cancelled => "cancelled",
            RunState::Expired => "expired",
        }
    }

    /// Whether the action has started (or finished); such a request never runs again.
    pub fn has_run(self) -> bool {
        match self {
            RunState::Approved
            | RunState::Running
            | RunState::Succeeded
            | RunState::Failed
            | RunState::TimedOut
            | RunState::Interrupted => true,
            RunState::Pending | RunState::Denied | RunState::Cancelled | RunState::Expired => false,
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunState::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown run state {s:?}"))
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
    pub id: i64,
    pub new: NewRun,
    pub state: RunState,
    /// The chat message approvers react to, once posted.
    pub message_id: Option<String>,
    pub result: Option<RunResult>,
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
