//! Alerts, group messages and silences in SQL, shared by both backends through
//! [`impl_alert_store!`] (the queries use `$N`, `ON CONFLICT` and `RETURNING`, which SQLite
//! and Postgres both accept).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::domain::{Alert, IncomingAlert, Matcher, Silence};
use crate::ports::StoreError;

pub(crate) const SELECT_ALERT: &str = "SELECT id, fingerprint, source, group_key, status, labels, annotations, \
     starts_at, ends_at, generator_url, first_seen, last_seen, acked_by, acked_at, resolved_at FROM alerts";

#[derive(sqlx::FromRow)]
pub(crate) struct AlertRow {
    id: i64,
    fingerprint: String,
    source: String,
    group_key: String,
    status: String,
    labels: String,
    annotations: String,
    starts_at: i64,
    ends_at: Option<i64>,
    generator_url: Option<String>,
    first_seen: i64,
    last_seen: i64,
    acked_by: Option<String>,
    acked_at: Option<i64>,
    resolved_at: Option<i64>,
}

fn corrupt(what: &str, id: i64, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what} #{id}: {e}"))
}

fn time(id: i64, us: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| corrupt("alert", id, format!("timestamp {us} out of range")))
}

pub(crate) fn json_map(m: &BTreeMap<String, String>) -> String {
    serde_json::to_string(m).expect("string maps always serialize")
}

impl AlertRow {
    pub(crate) fn into_alert(self) -> Result<Alert, StoreError> {
        let id = self.id;
        let opt = |us: Option<i64>| us.map(|us| time(id, us)).transpose();
        Ok(Alert {
            id,
            incoming: IncomingAlert {
                source: self.source.parse().map_err(|e| corrupt("alert", id, e))?,
                fingerprint: self.fingerprint,
                group_key: self.group_key,
                status: self.status.parse().map_err(|e| corrupt("alert", id, e))?,
                labels: serde_json::from_str(&self.labels).map_err(|e| corrupt("alert", id, e))?,
                annotations: serde_json::from_str(&self.annotations)
                    .map_err(|e| corrupt("alert", id, e))?,
                starts_at: time(id, self.starts_at)?,
                ends_at: opt(self.ends_at)?,
                generator_url: self.generator_url,
            },
            first_seen: time(id, self.first_seen)?,
            last_seen: time(id, self.last_seen)?,
            acked_by: self.acked_by,
            acked_at: opt(self.acked_at)?,
            resolved_at: opt(self.resolved_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct SilenceRow {
    id: i64,
    matchers: String,
    created_by: String,
    reason: String,
    starts_at: i64,
    ends_at: i64,
    upstream_id: Option<String>,
}

impl SilenceRow {
    pub(crate) fn into_silence(self) -> Result<Silence, StoreError> {
        let id = self.id;
        let texts: Vec<String> =
            serde_json::from_str(&self.matchers).map_err(|e| corrupt("silence", id, e))?;
        let matchers = texts
            .iter()
            .map(|t| t.parse::<Matcher>())
            .collect::<Result<_, _>>()
            .map_err(|e| corrupt("silence", id, e))?;
        Ok(Silence {
            id,
            matchers,
            created_by: self.created_by,
            reason: self.reason,
            starts_at: time(id, self.starts_at)?,
            ends_at: time(id, self.ends_at)?,
            upstream_id: self.upstream_id,
        })
    }
}

pub(crate) fn matchers_json(s: &Silence) -> String {
    let texts: Vec<String> = s.matchers.iter().map(ToString::to_string).collect();
    serde_json::to_string(&texts).expect("strings always serialize")
}

/// Alerts per upsert statement: 12 bound values each stays under SQLite's 32,766 limit.
pub(crate) const UPSERT_CHUNK: usize = 1000;

/// Event ids forgotten per call (per sweep, every 15 s): far more than arrive meanwhile.
pub(crate) const FORGET_BATCH: i64 = 5000;

/// One multi-row upsert of `alerts` (distinct fingerprints: Postgres refuses to update a row
/// twice in one statement). A resolved alert that fires again starts a new episode, so its
/// acknowledgement is cleared.
pub(crate) fn upsert_alerts<DB>(
    alerts: &[IncomingAlert],
    now: DateTime<Utc>,
) -> sqlx::QueryBuilder<DB>
where
    DB: sqlx::Database,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Option<i64>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Option<String>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    let now = now.timestamp_micros();
    let mut q = sqlx::QueryBuilder::new(
        "INSERT INTO alerts (fingerprint, source, group_key, status, labels, annotations, starts_at, \
         ends_at, generator_url, first_seen, last_seen, resolved_at) ",
    );
    q.push_values(alerts, |mut row, a| {
        let resolved = (a.status == crate::domain::AlertStatus::Resolved).then_some(now);
        row.push_bind(a.fingerprint.clone())
            .push_bind(a.source.as_str().to_owned())
            .push_bind(a.group_key.clone())
            .push_bind(a.status.as_str().to_owned())
            .push_bind(json_map(&a.labels))
            .push_bind(json_map(&a.annotations))
            .push_bind(a.starts_at.timestamp_micros())
            .push_bind(a.ends_at.map(|t| t.timestamp_micros()))
            .push_bind(a.generator_url.clone())
            .push_bind(now)
            .push_bind(now)
            .push_bind(resolved);
    });
    q.push(
        " ON CONFLICT (fingerprint) DO UPDATE SET \
           group_key = excluded.group_key, \
           labels = excluded.labels, \
           annotations = excluded.annotations, \
           ends_at = excluded.ends_at, \
           generator_url = excluded.generator_url, \
           last_seen = excluded.last_seen, \
           acked_by = CASE WHEN alerts.status = 'resolved' AND excluded.status = 'firing' THEN NULL ELSE alerts.acked_by END, \
           acked_at = CASE WHEN alerts.status = 'resolved' AND excluded.status = 'firing' THEN NULL ELSE alerts.acked_at END, \
           resolved_at = CASE WHEN excluded.status = 'resolved' THEN COALESCE(alerts.resolved_at, excluded.last_seen) END, \
           starts_at = excluded.starts_at, \
           status = excluded.status",
    );
    q
}

/// Implements `ports::AlertStore` for a store type with a `pool` field.
macro_rules! impl_alert_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::ports::AlertStore for $store {
            async fn first_delivery(
                &self,
                platform: $crate::domain::Platform,
                event_id: &str,
                at: chrono::DateTime<chrono::Utc>,
            ) -> Result<bool, $crate::ports::StoreError> {
                let n = sqlx::query(
                    "INSERT INTO platform_events (platform, event_id, received_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                )
                .bind(platform.as_str())
                .bind(event_id)
                .bind(at.timestamp_micros())
                .execute(&self.pool)
                .await
                .map_err($crate::store::backend)?
                .rows_affected();
                Ok(n == 1)
            }

            async fn forget_deliveries_before(
                &self,
                before: chrono::DateTime<chrono::Utc>,
            ) -> Result<u64, $crate::ports::StoreError> {
                // In batches, so a large backlog (the first sweep after an upgrade) never
                // holds the table, or SQLite's write lock, for long.
                Ok(sqlx::query(
                    "DELETE FROM platform_events WHERE (platform, event_id) IN \
                     (SELECT platform, event_id FROM platform_events WHERE received_at < $1 LIMIT $2)",
                )
                    .bind(before.timestamp_micros())
                    .bind($crate::store::alerts::FORGET_BATCH)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::backend)?
                    .rows_affected())
            }

            async fn ingest_alerts(
                &self,
                alerts: &[$crate::domain::IncomingAlert],
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<(), $crate::ports::StoreError> {
                use $crate::store::alerts::{UPSERT_CHUNK, upsert_alerts};
                use $crate::store::backend;
                // One statement per chunk (each statement is a round trip to the driver); a
                // single chunk is atomic on its own, several share a transaction.
                if alerts.len() <= UPSERT_CHUNK {
                    upsert_alerts(alerts, now).build().execute(&self.pool).await.map_err(backend)?;
                    return Ok(());
                }
                let mut tx = self.pool.begin().await.map_err(backend)?;
                for chunk in alerts.chunks(UPSERT_CHUNK) {
                    upsert_alerts(chunk, now).build().execute(&mut *tx).await.map_err(backend)?;
                }
                tx.commit().await.map_err(backend)?;
                Ok(())
            }

            async fn alert(&self, id: i64) -> Result<Option<$crate::domain::Alert>, $crate::ports::StoreError> {
                use $crate::store::alerts::{AlertRow, SELECT_ALERT};
                let row: Option<AlertRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!("{SELECT_ALERT} WHERE id = $1")))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::store::backend)?;
                row.map(AlertRow::into_alert).transpose()
            }

            async fn alerts_in_group(
                &self,
                group_key: &str,
            ) -> Result<Vec<$crate::domain::Alert>, $crate::ports::StoreError> {
                use $crate::store::alerts::{AlertRow, SELECT_ALERT};
                let rows: Vec<AlertRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "{SELECT_ALERT} WHERE group_key = $1 ORDER BY id"
                )))
                .bind(group_key)
                .fetch_all(&self.pool)
                .await
                .map_err($crate::store::backend)?;
                rows.into_iter().map(AlertRow::into_alert).collect()
            }

            async fn active_alerts(&self, limit: u32) -> Result<Vec<$crate::domain::Alert>, $crate::ports::StoreError> {
                use $crate::store::alerts::{AlertRow, SELECT_ALERT};
                let rows: Vec<AlertRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "{SELECT_ALERT} WHERE status = 'firing' ORDER BY starts_at DESC, id DESC LIMIT $1"
                )))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err($crate::store::backend)?;
                rows.into_iter().map(AlertRow::into_alert).collect()
            }

            async fn ack_alert(
                &self,
                id: i64,
                by: &str,
                at: chrono::DateTime<chrono::Utc>,
            ) -> Result<bool, $crate::ports::StoreError> {
                let n = sqlx::query(
                    "UPDATE alerts SET acked_by = $1, acked_at = $2 WHERE id = $3 AND status = 'firing' AND acked_by IS NULL",
                )
                .bind(by)
                .bind(at.timestamp_micros())
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err($crate::store::backend)?
                .rows_affected();
                Ok(n == 1)
            }

            async fn resolve_alert(
                &self,
                id: i64,
                at: chrono::DateTime<chrono::Utc>,
            ) -> Result<bool, $crate::ports::StoreError> {
                let n = sqlx::query(
                    "UPDATE alerts SET status = 'resolved', resolved_at = $1, ends_at = $1 WHERE id = $2 AND status = 'firing'",
                )
                .bind(at.timestamp_micros())
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err($crate::store::backend)?
                .rows_affected();
                Ok(n == 1)
            }

            async fn group_message(
                &self,
                group_key: &str,
                platform: $crate::domain::Platform,
                channel_id: &str,
            ) -> Result<Option<(String, String)>, $crate::ports::StoreError> {
                sqlx::query_as(
                    "SELECT message_id, last_text FROM alert_messages WHERE group_key = $1 AND platform = $2 AND channel_id = $3",
                )
                .bind(group_key)
                .bind(platform.as_str())
                .bind(channel_id)
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::store::backend)
            }

            async fn set_group_message(
                &self,
                group_key: &str,
                platform: $crate::domain::Platform,
                channel_id: &str,
                message_id: &str,
                text: &str,
            ) -> Result<(), $crate::ports::StoreError> {
                sqlx::query(
                    "INSERT INTO alert_messages (group_key, platform, channel_id, message_id, last_text) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (group_key, platform, channel_id) DO UPDATE SET message_id = excluded.message_id, last_text = excluded.last_text",
                )
                .bind(group_key)
                .bind(platform.as_str())
                .bind(channel_id)
                .bind(message_id)
                .bind(text)
                .execute(&self.pool)
                .await
                .map_err($crate::store::backend)?;
                Ok(())
            }

            async fn alerts_due_reminder(
                &self,
                due_before: chrono::DateTime<chrono::Utc>,
            ) -> Result<Vec<($crate::domain::Alert, u32)>, $crate::ports::StoreError> {
                use $crate::store::alerts::{AlertRow, SELECT_ALERT};
                #[derive(sqlx::FromRow)]
                struct Due {
                    #[sqlx(flatten)]
                    row: AlertRow,
                    reminders: i32,
                }
                let select = SELECT_ALERT.replace(" FROM alerts", ", reminders FROM alerts");
                let rows: Vec<Due> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "{select} WHERE status = 'firing' AND acked_by IS NULL AND COALESCE(reminded_at, first_seen) < $1 ORDER BY id LIMIT 10000"
                )))
                .bind(due_before.timestamp_micros())
                .fetch_all(&self.pool)
                .await
                .map_err($crate::store::backend)?;
                rows.into_iter()
                    .map(|d| Ok((d.row.into_alert()?, d.reminders.max(0) as u32)))
                    .collect()
            }

            async fn mark_alert_reminded(
                &self,
                id: i64,
                previous: u32,
                at: chrono::DateTime<chrono::Utc>,
            ) -> Result<bool, $crate::ports::StoreError> {
                let n = sqlx::query("UPDATE alerts SET reminded_at = $1, reminders = reminders + 1 WHERE id = $2 AND reminders = $3")
                    .bind(at.timestamp_micros())
                    .bind(id)
                    .bind(previous as i32)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::backend)?
                    .rows_affected();
                Ok(n == 1)
            }

            async fn group_by_message(
                &self,
                platform: $crate::domain::Platform,
                channel_id: &str,
                message_id: &str,
            ) -> Result<Option<String>, $crate::ports::StoreError> {
                sqlx::query_scalar(
                    "SELECT group_key FROM alert_messages WHERE platform = $1 AND channel_id = $2 AND message_id = $3",
                )
                .bind(platform.as_str())
                .bind(channel_id)
                .bind(message_id)
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::store::backend)
            }

            async fn add_silence(&self, silence: &$crate::domain::Silence) -> Result<i64, $crate::ports::StoreError> {
                sqlx::query_scalar(
                    "INSERT INTO silences (matchers, created_by, reason, starts_at, ends_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
                )
                .bind($crate::store::alerts::matchers_json(silence))
                .bind(&silence.created_by)
                .bind(&silence.reason)
                .bind(silence.starts_at.timestamp_micros())
                .bind(silence.ends_at.timestamp_micros())
                .fetch_one(&self.pool)
                .await
                .map_err($crate::store::backend)
            }

            async fn set_silence_upstream(&self, id: i64, upstream_id: &str) -> Result<(), $crate::ports::StoreError> {
                sqlx::query("UPDATE silences SET upstream_id = $1 WHERE id = $2")
                    .bind(upstream_id)
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::backend)?;
                Ok(())
            }

            async fn end_silence(
                &self,
                id: i64,
                at: chrono::DateTime<chrono::Utc>,
            ) -> Result<bool, $crate::ports::StoreError> {
                let n = sqlx::query("UPDATE silences SET ends_at = $1 WHERE id = $2 AND ends_at > $1")
                    .bind(at.timestamp_micros())
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::backend)?
                    .rows_affected();
                Ok(n == 1)
            }

            async fn active_silences(
                &self,
                at: chrono::DateTime<chrono::Utc>,
            ) -> Result<Vec<$crate::domain::Silence>, $crate::ports::StoreError> {
                use $crate::store::alerts::SilenceRow;
                let rows: Vec<SilenceRow> = sqlx::query_as(
                    "SELECT id, matchers, created_by, reason, starts_at, ends_at, upstream_id FROM silences \
                     WHERE starts_at <= $1 AND ends_at > $1 ORDER BY id",
                )
                .bind(at.timestamp_micros())
                .fetch_all(&self.pool)
                .await
                .map_err($crate::store::backend)?;
                rows.into_iter().map(SilenceRow::into_silence).collect()
            }
        }
    };
}

pub(crate) use impl_alert_store;
