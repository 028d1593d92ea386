//! Incidents, timelines and linked alerts in SQL, shared by both backends through
//! [`impl_incident_store!`].

use chrono::{DateTime, Utc};

use crate::domain::{Incident, TimelineEntry};
use crate::ports::StoreError;

pub(crate) const SELECT_INCIDENT: &str = "SELECT id, title, severity, status, commander, platform, channel_id, \
     opened_by, opened_at, acked_at, resolved_at FROM incidents";

#[derive(sqlx::FromRow)]
pub(crate) struct IncidentRow {
    id: i64,
    title: String,
    severity: String,
    status: String,
    commander: String,
    platform: String,
    channel_id: String,
    opened_by: String,
    opened_at: i64,
    acked_at: Option<i64>,
    resolved_at: Option<i64>,
}

fn corrupt(id: i64, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("incident #{id}: {e}"))
}

fn time(id: i64, us: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| corrupt(id, format!("timestamp {us} out of range")))
}

impl IncidentRow {
    pub(crate) fn into_incident(self) -> Result<Incident, StoreError> {
        let id = self.id;
        Ok(Incident {
            id,
            title: self.title,
            severity: self.severity.parse().map_err(|e| corrupt(id, e))?,
            status: self.status.parse().map_err(|e| corrupt(id, e))?,
            commander: self.commander,
            platform: self.platform.parse().map_err(|e| corrupt(id, e))?,
            channel_id: self.channel_id,
            opened_by: self.opened_by,
            opened_at: time(id, self.opened_at)?,
            acked_at: self.acked_at.map(|t| time(id, t)).transpose()?,
            resolved_at: self.resolved_at.map(|t| time(id, t)).transpose()?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct TimelineRow {
    incident_id: i64,
    at: i64,
    kind: String,
    actor: String,
    text: String,
}

impl TimelineRow {
    pub(crate) fn into_entry(self) -> Result<TimelineEntry, StoreError> {
        Ok(TimelineEntry {
            at: time(self.incident_id, self.at)?,
            kind: self
                .kind
                .parse()
                .map_err(|e| corrupt(self.incident_id, e))?,
            actor: self.actor,
            text: self.text,
        })
    }
}

/// Implements `ports::IncidentStore` for a store type with a `pool` field.
macro_rules! impl_incident_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::ports::IncidentStore for $store {
            async fn open_incident(
                &self,
                i: &$crate::domain::Incident,
            ) -> Result<Option<$crate::domain::Incident>, $crate::ports::StoreError> {
                use $crate::store::incidents::IncidentRow;
                let row: Option<IncidentRow> = sqlx::query_as(
                    "INSERT INTO incidents (title, severity, status, commander, platform, channel_id, opened_by, opened_at) \
                     VALUES ($1, $2, 'open', $3, $4, $5, $6, $7) \
                     ON CONFLICT (platform, channel_id) WHERE status = 'open' DO NOTHING \
                     RETURNING id, title, severity, status, commander, platform, channel_id, opened_by, opened_at, acked_at, resolved_at",
                )
                .bind(&i.title)
                .bind(i.severity.as_str())
                .bind(&i.commander)
                .bind(i.platform.as_str())
                .bind(&i.channel_id)
                .bind(&i.opened_by)
                .bind(i.opened_at.timestamp_micros())
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::store::backend)?;
                row.map(IncidentRow::into_incident).transpose()
            }

            async fn incident(&self, id: i64) -> Result<Option<$crate::domain::Incident>, $crate::ports::StoreError> {
                use $crate::store::incidents::{IncidentRow, SELECT_INCIDENT};
                let row: Option<IncidentRow> =
                    sqlx::query_as(sqlx::AssertSqlSafe(format!("{SELECT_INCIDENT} WHERE id = $1")))
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err($crate::store::backend)?;
                row.map(IncidentRow::into_incident).transpose()
            }

            async fn open_incident_in(
                &self,
                platform: $crate::domain::Platform,
                channel_id: &str,
            ) -> Result<Option<$crate::domain::Incident>, $crate::ports::StoreError> {
                use $crate::store::incidents::{IncidentRow, SELECT_INCIDENT};
                let row: Option<IncidentRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "{SELECT_INCIDENT} WHERE platform = $1 AND channel_id = $2 AND status = 'open'"
                )))
                .bind(platform.as_str())
                .bind(channel_id)
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::store::backend)?;
                row.map(IncidentRow::into_incident).transpose()
            }

            async fn set_commander(&self, id: i64, commander: &str) -> Result<(), $crate::ports::StoreError> {
                sqlx::query("UPDATE incidents SET commander = $1 WHERE id = $2")
                    .bind(commander)
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::backend)?;
                Ok(())
            }

            async fn ack_incident(
                &self,
                id: i64,
                at: chrono::DateTime<chrono::Utc>,
            ) -> Result<(), $crate::ports::StoreError> {
                sqlx::query("UPDATE incidents SET acked_at = $1 WHERE id = $2 AND acked_at IS NULL")
                    .bind(at.timestamp_micros())
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::backend)?;
                Ok(())
            }

            async fn resolve_incident(
                &self,
                id: i64,
                at: chrono::DateTime<chrono::Utc>,
            ) -> Result<bool, $crate::ports::StoreError> {
                let n = sqlx::query(
                    "UPDATE incidents SET status = 'resolved', resolved_at = $1, acked_at = COALESCE(acked_at, $1) \
                     WHERE id = $2 AND status = 'open'",
                )
                .bind(at.timestamp_micros())
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err($crate::store::backend)?
                .rows_affected();
                Ok(n == 1)
            }

            async fn add_timeline(
                &self,
                id: i64,
                e: &$crate::domain::TimelineEntry,
            ) -> Result<(), $crate::ports::StoreError> {
                sqlx::query("INSERT INTO incident_timeline (incident_id, at, kind, actor, text) VALUES ($1, $2, $3, $4, $5)")
                    .bind(id)
                    .bind(e.at.timestamp_micros())
                    .bind(e.kind.as_str())
                    .bind(&e.actor)
                    .bind(&e.text)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::backend)?;
                Ok(())
            }

            async fn timeline(&self, id: i64) -> Result<Vec<$crate::domain::TimelineEntry>, $crate::ports::StoreError> {
                use $crate::store::incidents::TimelineRow;
                let rows: Vec<TimelineRow> = sqlx::query_as(
                    "SELECT incident_id, at, kind, actor, text FROM incident_timeline WHERE incident_id = $1 ORDER BY at, id",
                )
                .bind(id)
                .fetch_all(&self.pool)
                .await
                .map_err($crate::store::backend)?;
                rows.into_iter().map(TimelineRow::into_entry).collect()
            }

            async fn link_alert(&self, id: i64, alert_id: i64) -> Result<bool, $crate::ports::StoreError> {
                let n = sqlx::query("INSERT INTO incident_alerts (incident_id, alert_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(id)
                    .bind(alert_id)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::backend)?
                    .rows_affected();
                Ok(n == 1)
            }

            async fn linked_alerts(&self, id: i64) -> Result<Vec<$crate::domain::Alert>, $crate::ports::StoreError> {
                use $crate::store::alerts::{AlertRow, SELECT_ALERT};
                let rows: Vec<AlertRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "{SELECT_ALERT} WHERE id IN (SELECT alert_id FROM incident_alerts WHERE incident_id = $1) ORDER BY starts_at"
                )))
                .bind(id)
                .fetch_all(&self.pool)
                .await
                .map_err($crate::store::backend)?;
                rows.into_iter().map(AlertRow::into_alert).collect()
            }

            async fn unacked_incidents(&self) -> Result<Vec<$crate::domain::Incident>, $crate::ports::StoreError> {
                use $crate::store::incidents::{IncidentRow, SELECT_INCIDENT};
                let rows: Vec<IncidentRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "{SELECT_INCIDENT} WHERE status = 'open' AND acked_at IS NULL AND reminded_at IS NULL ORDER BY id"
                )))
                .fetch_all(&self.pool)
                .await
                .map_err($crate::store::backend)?;
                rows.into_iter().map(IncidentRow::into_incident).collect()
            }

            async fn mark_reminded(
                &self,
                id: i64,
                at: chrono::DateTime<chrono::Utc>,
            ) -> Result<(), $crate::ports::StoreError> {
                sqlx::query("UPDATE incidents SET reminded_at = $1 WHERE id = $2")
                    .bind(at.timestamp_micros())
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::backend)?;
                Ok(())
            }
        }
    };
}

pub(crate) use impl_incident_store;
