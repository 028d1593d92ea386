//! Incidents, timelines and linked alerts in SQL: `ports::IncidentStore` for both backends,
//! and how `incidents` and `incident_timeline` rows map to the domain.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::alerts::{SELECT_ALERT, alerts_where};
use super::outbox::insert_queued;
use super::runs::micros;
use super::sql::{Arg, Backend, Q, changed_one, execute, fetch_all, fetch_optional};
use super::{OnPool, SqlStore, backend};
use crate::domain::{Alert, AlertId, Incident, IncidentId, Platform, Severity, TimelineEntry};
use crate::ports::{IncidentStore, Queued, StoreError};

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
            id: IncidentId(id),
            title: self.title,
            // As stored: a name the scheme no longer has is still shown, never refused.
            severity: Severity::stored(self.severity),
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

#[async_trait]
impl<DB: Backend> IncidentStore for SqlStore<DB> {
    async fn open_incident(&self, i: &Incident) -> Result<Option<Incident>, StoreError> {
        let q = sqlx::query(
            "INSERT INTO incidents (title, severity, status, commander, platform, channel_id, opened_by, opened_at) \
             VALUES ($1, $2, 'open', $3, $4, $5, $6, $7) \
             ON CONFLICT (platform, channel_id) WHERE status = 'open' DO NOTHING \
             RETURNING id, title, severity, status, commander, platform, channel_id, opened_by, opened_at, \
             acked_at, resolved_at",
        )
        .arg(i.title.as_str())
        .arg(i.severity.as_str())
        .arg(i.commander.as_str())
        .arg(i.platform.as_str())
        .arg(i.channel_id.as_str())
        .arg(i.opened_by.as_str())
        .arg(&i.opened_at.timestamp_micros());
        incident_where(self, q).await
    }

    async fn incident(&self, id: IncidentId) -> Result<Option<Incident>, StoreError> {
        let id = id.0;
        let sql = format!("{SELECT_INCIDENT} WHERE id = $1");
        incident_where(self, sqlx::query(sqlx::AssertSqlSafe(sql)).arg(&id)).await
    }

    async fn open_incident_in(
        &self,
        platform: Platform,
        channel_id: &str,
    ) -> Result<Option<Incident>, StoreError> {
        let sql = format!(
            "{SELECT_INCIDENT} WHERE platform = $1 AND channel_id = $2 AND status = 'open'"
        );
        let q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .arg(platform.as_str())
            .arg(channel_id);
        incident_where(self, q).await
    }

    async fn set_commander(&self, id: IncidentId, commander: &str) -> Result<(), StoreError> {
        let id = id.0;
        let q = sqlx::query("UPDATE incidents SET commander = $1 WHERE id = $2")
            .arg(commander)
            .arg(&id);
        execute(self.ex(), q).await.map(drop)
    }

    async fn ack_incident(&self, id: IncidentId, at: DateTime<Utc>) -> Result<(), StoreError> {
        let id = id.0;
        stamp(
            self,
            "UPDATE incidents SET acked_at = $1 WHERE id = $2 AND acked_at IS NULL",
            id,
            at,
        )
        .await
    }

    async fn resolve_incident(
        &self,
        id: IncidentId,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let id = id.0;
        let q = sqlx::query(
            "UPDATE incidents SET status = 'resolved', resolved_at = $1, acked_at = COALESCE(acked_at, $1) \
             WHERE id = $2 AND status = 'open'",
        )
        .arg(&at.timestamp_micros())
        .arg(&id);
        changed_one(self.ex(), q).await
    }

    async fn add_timeline(&self, id: IncidentId, e: &TimelineEntry) -> Result<(), StoreError> {
        let id = id.0;
        let q = sqlx::query(
            "INSERT INTO incident_timeline (incident_id, at, kind, actor, text) VALUES ($1, $2, $3, $4, $5)",
        )
        .arg(&id)
        .arg(&e.at.timestamp_micros())
        .arg(e.kind.as_str())
        .arg(e.actor.as_str())
        .arg(e.text.as_str());
        execute(self.ex(), q).await.map(drop)
    }

    async fn timeline(&self, id: IncidentId) -> Result<Vec<TimelineEntry>, StoreError> {
        let id = id.0;
        let q = sqlx::query(
            "SELECT incident_id, at, kind, actor, text FROM incident_timeline \
             WHERE incident_id = $1 ORDER BY at, id",
        )
        .arg(&id);
        let rows: Vec<TimelineRow> = fetch_all(self.ex(), q).await?;
        rows.into_iter().map(TimelineRow::into_entry).collect()
    }

    async fn link_alert(&self, id: IncidentId, alert_id: AlertId) -> Result<bool, StoreError> {
        let (id, alert_id) = (id.0, alert_id.0);
        let q = sqlx::query(
            "INSERT INTO incident_alerts (incident_id, alert_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .arg(&id)
        .arg(&alert_id);
        changed_one(self.ex(), q).await
    }

    async fn linked_alerts(&self, id: IncidentId) -> Result<Vec<Alert>, StoreError> {
        let id = id.0;
        let sql = format!(
            "{SELECT_ALERT} WHERE id IN (SELECT alert_id FROM incident_alerts WHERE incident_id = $1) \
             ORDER BY starts_at"
        );
        alerts_where(self, sqlx::query(sqlx::AssertSqlSafe(sql)).arg(&id)).await
    }

    async fn open_incidents_linked_to_group(
        &self,
        group_key: &str,
    ) -> Result<Vec<IncidentId>, StoreError> {
        let q = sqlx::query(
            "SELECT DISTINCT i.id FROM incidents i \
             JOIN incident_alerts l ON l.incident_id = i.id \
             JOIN alerts a ON a.id = l.alert_id \
             WHERE a.group_key = $1 AND i.status = 'open' ORDER BY i.id",
        )
        .arg(group_key);
        let ids: Vec<(i64,)> = fetch_all(self.ex(), q).await?;
        Ok(ids.into_iter().map(|(id,)| IncidentId(id)).collect())
    }

    async fn unacked_incidents(&self) -> Result<Vec<Incident>, StoreError> {
        let sql = format!(
            "{SELECT_INCIDENT} WHERE status = 'open' AND acked_at IS NULL AND reminded_at IS NULL ORDER BY id"
        );
        let rows: Vec<IncidentRow> =
            fetch_all(self.ex(), sqlx::query(sqlx::AssertSqlSafe(sql))).await?;
        rows.into_iter().map(IncidentRow::into_incident).collect()
    }

    async fn mark_reminded(
        &self,
        id: IncidentId,
        at: DateTime<Utc>,
        notice: &Queued,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let q = sqlx::query(
            "UPDATE incidents SET reminded_at = $1 WHERE id = $2 AND reminded_at IS NULL",
        )
        .arg(&micros(at))
        .arg(&id.0);
        // Reminded already (by an earlier leader): dropping the transaction queues nothing.
        if !changed_one(DB::on_conn(&mut tx), q).await? {
            return Ok(false);
        }
        insert_queued::<DB>(&mut tx, notice, at).await?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }
}

/// The one incident a query returning its columns finds, if any.
async fn incident_where<DB: Backend>(
    store: &SqlStore<DB>,
    q: Q<'_, DB>,
) -> Result<Option<Incident>, StoreError> {
    let row: Option<IncidentRow> = fetch_optional(store.ex(), q).await?;
    row.map(IncidentRow::into_incident).transpose()
}

/// Runs `update`, whose parameters are a time and then an incident id.
async fn stamp<DB: Backend>(
    store: &SqlStore<DB>,
    update: &'static str,
    id: i64,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let q = sqlx::query(update).arg(&at.timestamp_micros()).arg(&id);
    execute(store.ex(), q).await.map(drop)
}
