//! Durable alerts, group messages and silences, and the systems told about groups.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{Alert, AlertId, IncomingAlert, Platform, Silence};

use super::{OutboundError, Queued, StoreError};

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
    /// Forgets a bounded batch of alerts resolved and last seen before `before` (keeping those
    /// an incident links to, for its postmortem), then the messages, post claims and change
    /// marks of groups none of whose alerts is left; returns how many alerts.
    async fn forget_resolved_before(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
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
