//! On-call overrides in SQL: `ports::OncallStore` for both backends.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::outbox::claim_queuing;
use super::runs::micros;
use super::sql::{Arg, Backend, fetch_all, fetch_optional};
use super::{OnPool, SqlStore};
use crate::domain::{Handoff, Override};
use crate::ports::{OncallStore, Queued, StoreError};

#[derive(sqlx::FromRow)]
pub(crate) struct OverrideRow {
    id: i64,
    schedule: String,
    layer: String,
    person: String,
    starts_at: i64,
    ends_at: i64,
}

impl OverrideRow {
    fn into_override(self) -> Result<Override, StoreError> {
        let time = |us: i64| {
            DateTime::from_timestamp_micros(us).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "on-call override #{}: time {us} out of range",
                    self.id
                ))
            })
        };
        Ok(Override {
            from: time(self.starts_at)?,
            until: time(self.ends_at)?,
            schedule: self.schedule,
            layer: self.layer,
            person: self.person,
        })
    }
}

#[async_trait]
impl<DB: Backend> OncallStore for SqlStore<DB> {
    async fn add_override(
        &self,
        o: &Override,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let q = sqlx::query(
            "INSERT INTO oncall_overrides \
             (schedule, layer, person, starts_at, ends_at, created_by, reason, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .arg(o.schedule.as_str())
        .arg(o.layer.as_str())
        .arg(o.person.as_str())
        .arg(&micros(o.from))
        .arg(&micros(o.until))
        .arg(by)
        .arg(reason)
        .arg(&micros(now));
        let row: Option<(i64,)> = fetch_optional(self.ex(), q).await?;
        row.map(|(id,)| id)
            .ok_or_else(|| StoreError::Corrupt("an override insert returned no id".into()))
    }

    async fn overrides_ending_after(&self, at: DateTime<Utc>) -> Result<Vec<Override>, StoreError> {
        let q = sqlx::query(
            "SELECT id, schedule, layer, person, starts_at, ends_at FROM oncall_overrides \
             WHERE ends_at > $1 ORDER BY id",
        )
        .arg(&micros(at));
        let rows: Vec<OverrideRow> = fetch_all(self.ex(), q).await?;
        rows.into_iter().map(OverrideRow::into_override).collect()
    }

    async fn claim_handoff(
        &self,
        schedule: &str,
        handoff: &Handoff,
        now: DateTime<Utc>,
        notices: &[Queued],
    ) -> Result<bool, StoreError> {
        let q = sqlx::query(
            "INSERT INTO oncall_handoffs (schedule, layer, at, announced_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (schedule, layer, at) DO NOTHING",
        )
        .arg(schedule)
        .arg(handoff.layer.as_str())
        .arg(&micros(handoff.at))
        .arg(&micros(now));
        // Announced already (here or by another replica): nothing is queued.
        claim_queuing(&self.pool, q, notices, now).await
    }
}
