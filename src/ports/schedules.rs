//! Scheduled runs as stored: each slot claimed once (a conditional insert) with what it
//! announces, pauses shared by the replicas, and the read-only counts the daily report shows.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{Incident, RunState, SlotOutcome};

use super::{Queued, StoreError};

/// Who paused a schedule, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pause {
    pub schedule: String,
    pub by: String,
    pub at: DateTime<Utc>,
}

/// Runs of one command in one state, for the daily report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunCount {
    pub command: String,
    pub state: RunState,
    pub count: u64,
}

#[async_trait]
pub trait ScheduleStore: Send + Sync {
    /// The newest slot of `schedule` claimed so far, whatever became of it.
    async fn last_slot(&self, schedule: &str) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// Claims `slot` of `schedule` as `outcome` for `by` (a replica) and queues `notices`
    /// with the claim, in one transaction; false (nothing queued) when it was claimed already.
    async fn claim_slot(
        &self,
        schedule: &str,
        slot: DateTime<Utc>,
        outcome: SlotOutcome,
        by: &str,
        now: DateTime<Utc>,
        notices: &[Queued],
    ) -> Result<bool, StoreError>;
    /// Every paused schedule.
    async fn pauses(&self) -> Result<Vec<Pause>, StoreError>;
    /// Pauses (`Some`, who and when) or resumes (`None`) `schedule`; false when it already was.
    async fn set_paused(&self, schedule: &str, pause: Option<&Pause>) -> Result<bool, StoreError>;
    /// Incidents not resolved yet, oldest first.
    async fn open_incidents(&self) -> Result<Vec<Incident>, StoreError>;
    /// Runbook requests made since `since`, counted by command and state.
    async fn runs_since(&self, since: DateTime<Utc>) -> Result<Vec<RunCount>, StoreError>;
}
