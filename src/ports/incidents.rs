//! Durable incidents and their timelines.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{Alert, AlertId, Incident, IncidentId, Platform, TimelineEntry};

use super::{Queued, StoreError};

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
    /// The open incidents an alert of group `group_key` is linked to, by id.
    async fn open_incidents_linked_to_group(
        &self,
        group_key: &str,
    ) -> Result<Vec<IncidentId>, StoreError>;
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
