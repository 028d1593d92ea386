//! On-call overrides, handoffs and escalations as stored.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{EscalationRecord, EscalationSubject, Handoff, Override, SentPage, StopReason};

use super::{Queued, StoreError};

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
    /// How many escalations are under way (not stopped), for `/metrics`.
    async fn active_escalations(&self) -> Result<u64, StoreError>;
}
