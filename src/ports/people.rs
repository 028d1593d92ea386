//! On-call overrides, handoffs and escalations as stored.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{EscalationRecord, EscalationSubject, Handoff, Override, StopReason};

use super::{Page, Queued, StoreError};

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

/// A page a step sends: recorded with the step's claim, sent by the leader after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedPage {
    pub service: String,
    pub page: Page,
}

/// A queued page not sent yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingPage {
    pub id: i64,
    /// The policy of its escalation (for metrics).
    pub policy: String,
    pub service: String,
    pub page: Page,
    /// Sends tried so far.
    pub attempts: u32,
    /// Its escalation stopped meanwhile: a trigger now would reopen what was handled.
    pub stopped: bool,
}

/// How a queued page ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageEnd {
    Sent,
    /// The service refused it for good (a 4xx).
    Rejected,
    /// Still failing after every attempt.
    GivenUp,
    /// Its escalation stopped before it went out.
    Cancelled,
}

impl PageEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Rejected => "rejected",
            Self::GivenUp => "given_up",
            Self::Cancelled => "cancelled",
        }
    }
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
    /// step (then the next is `step + 1`, due at `next_due`, or none), queuing the `pages`
    /// the step sends (to send, and to close when it stops) and its `notices`, in one
    /// transaction. False (nothing queued) when another sweep took it or it stopped.
    async fn claim_escalation_step(
        &self,
        id: i64,
        step: u32,
        next_due: Option<DateTime<Utc>>,
        pages: &[QueuedPage],
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
    /// How many escalations are under way (not stopped), for `/metrics`.
    async fn active_escalations(&self) -> Result<u64, StoreError>;
    /// Up to `limit` queued pages not sent yet whose next attempt is due at `now`, oldest
    /// first.
    async fn due_pages(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<PendingPage>, StoreError>;
    /// Claims page `id` for one attempt: only if it is unsent and due at `now`; then it is
    /// not due again before `hold_until` (so a sender that died mid-send is succeeded then).
    async fn claim_page(
        &self,
        id: i64,
        now: DateTime<Utc>,
        hold_until: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Tries page `id` again at `at`.
    async fn retry_page(&self, id: i64, at: DateTime<Utc>) -> Result<(), StoreError>;
    /// Records how page `id` ended.
    async fn end_page(&self, id: i64, now: DateTime<Utc>, end: PageEnd) -> Result<(), StoreError>;
}
