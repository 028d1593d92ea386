//! Scheduled runs in SQL: `ports::ScheduleStore` for both backends. A slot is claimed by a
//! conditional insert into `schedule_slots` (primary key schedule × slot) in the transaction
//! that queues its notices, so of any number of replicas and restarts one claims it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::incidents::{IncidentRow, SELECT_INCIDENT};
use super::outbox::claim_queuing;
use super::runs::micros;
use super::sql::{Arg, Backend, changed_one, fetch_all, fetch_optional};
use super::{OnPool, SqlStore};
use crate::domain::{Incident, SlotOutcome};
use crate::ports::{Pause, Queued, RunCount, ScheduleStore, StoreError};

fn time(us: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| StoreError::Corrupt(format!("schedule time {us} out of range")))
}

#[async_trait]
impl<DB: Backend> ScheduleStore for SqlStore<DB> {
    async fn last_slot(&self, schedule: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let q = sqlx::query(
            "SELECT slot_at FROM schedule_slots WHERE schedule = $1 ORDER BY slot_at DESC LIMIT 1",
        )
        .arg(schedule);
        let row: Option<(i64,)> = fetch_optional(self.ex(), q).await?;
        row.map(|(us,)| time(us)).transpose()
    }

    async fn claim_slot(
        &self,
        schedule: &str,
        slot: DateTime<Utc>,
        outcome: SlotOutcome,
        by: &str,
        now: DateTime<Utc>,
        notices: &[Queued],
    ) -> Result<bool, StoreError> {
        let q = sqlx::query(
            "INSERT INTO schedule_slots (schedule, slot_at, outcome, claimed_by, claimed_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (schedule, slot_at) DO NOTHING",
        )
        .arg(schedule)
        .arg(&micros(slot))
        .arg(outcome.as_str())
        .arg(by)
        .arg(&micros(now));
        claim_queuing(&self.pool, q, notices, now).await
    }

    async fn pauses(&self) -> Result<Vec<Pause>, StoreError> {
        let q = sqlx::query(
            "SELECT schedule, paused_by, paused_at FROM schedule_pauses ORDER BY schedule",
        );
        let rows: Vec<(String, String, i64)> = fetch_all(self.ex(), q).await?;
        (rows.into_iter())
            .map(|(schedule, by, at)| {
                Ok(Pause {
                    schedule,
                    by,
                    at: time(at)?,
                })
            })
            .collect()
    }

    async fn set_paused(&self, schedule: &str, pause: Option<&Pause>) -> Result<bool, StoreError> {
        let q = match pause {
            Some(p) => sqlx::query(
                "INSERT INTO schedule_pauses (schedule, paused_by, paused_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (schedule) DO NOTHING",
            )
            .arg(schedule)
            .arg(p.by.as_str())
            .arg(&micros(p.at)),
            None => sqlx::query("DELETE FROM schedule_pauses WHERE schedule = $1").arg(schedule),
        };
        changed_one(self.ex(), q).await
    }

    async fn open_incidents(&self) -> Result<Vec<Incident>, StoreError> {
        let sql = format!("{SELECT_INCIDENT} WHERE status = 'open' ORDER BY id");
        let rows: Vec<IncidentRow> =
            fetch_all(self.ex(), sqlx::query(sqlx::AssertSqlSafe(sql))).await?;
        rows.into_iter().map(IncidentRow::into_incident).collect()
    }

    async fn runs_since(&self, since: DateTime<Utc>) -> Result<Vec<RunCount>, StoreError> {
        let q = sqlx::query(
            "SELECT command, state, COUNT(*) FROM runs WHERE created_at >= $1 \
             GROUP BY command, state ORDER BY command, state",
        )
        .arg(&micros(since));
        let rows: Vec<(String, String, i64)> = fetch_all(self.ex(), q).await?;
        (rows.into_iter())
            .map(|(command, state, count)| {
                Ok(RunCount {
                    state: state.parse().map_err(StoreError::Corrupt)?,
                    command,
                    count: u64::try_from(count).unwrap_or(0),
                })
            })
            .collect()
    }
}
