//! Runbook requests in SQL, shared by both backends: the queries use `$N` placeholders,
//! which SQLite and Postgres both accept, and [`impl_run_store!`] instantiates the same
//! method bodies for each backend's pool.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::{NewRun, Run, RunResult, RunState};
use crate::ports::StoreError;

/// Columns in the order [`RunRow`] reads them.
pub(crate) const SELECT_RUN: &str = "SELECT id, command, args, rendered, action_hash, requester, requester_name, \
     platform, channel_id, channel_name, thread, message_id, approvals_needed, state, break_glass, \
     created_at, expires_at, result_code, duration_ms, output, truncated FROM runs";

pub(crate) const RETURNING_RUN: &str = "RETURNING id, command, args, rendered, action_hash, requester, \
     requester_name, platform, channel_id, channel_name, thread, message_id, approvals_needed, state, \
     break_glass, created_at, expires_at, result_code, duration_ms, output, truncated";

#[derive(sqlx::FromRow)]
pub(crate) struct RunRow {
    id: i64,
    command: String,
    args: String,
    rendered: String,
    action_hash: String,
    requester: String,
    requester_name: String,
    platform: String,
    channel_id: String,
    channel_name: String,
    thread: Option<String>,
    message_id: Option<String>,
    approvals_needed: i32,
    state: String,
    break_glass: Option<String>,
    created_at: i64,
    expires_at: i64,
    result_code: Option<i32>,
    duration_ms: Option<i64>,
    output: Option<String>,
    truncated: Option<bool>,
}

fn corrupt(id: i64, what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("run #{id}: {what}"))
}

pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn time(id: i64, us: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| corrupt(id, format!("timestamp {us} out of range")))
}

pub(crate) fn args_json(args: &[(String, String)]) -> String {
    serde_json::to_string(args).expect("string pairs always serialize")
}

impl RunRow {
    pub(crate) fn into_run(self) -> Result<Run, StoreError> {
        let id = self.id;
        let result = match (self.duration_ms, self.output) {
            (Some(ms), Some(output)) => Some(RunResult {
                code: self.result_code,
                duration: Duration::from_millis(ms.max(0) as u64),
                output,
                truncated: self.truncated.unwrap_or(false),
            }),
            _ => None,
        };
        Ok(Run {
            id,
            new: NewRun {
                command: self.command,
                args: serde_json::from_str(&self.args).map_err(|e| corrupt(id, e))?,
                rendered: self.rendered,
                action_hash: self.action_hash,
                requester: self.requester.parse().map_err(|e| corrupt(id, e))?,
                requester_name: self.requester_name,
                platform: self.platform.parse().map_err(|e| corrupt(id, e))?,
                channel_id: self.channel_id,
                channel_name: self.channel_name,
                thread: self.thread,
                approvals_needed: u32::try_from(self.approvals_needed)
                    .map_err(|e| corrupt(id, e))?,
                state: RunState::Pending,
                break_glass: self.break_glass,
                created_at: time(id, self.created_at)?,
                expires_at: time(id, self.expires_at)?,
            },
            state: self.state.parse().map_err(|e| corrupt(id, e))?,
            message_id: self.message_id,
            result,
        })
    }
}

/// Implements `ports::RunStore` for a store type with a `pool` field.
macro_rules! impl_run_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::ports::RunStore for $store {
            async fn create_run(
                &self,
                run: $crate::domain::NewRun,
            ) -> Result<$crate::domain::Run, $crate::ports::StoreError> {
                use $crate::store::runs::{RETURNING_RUN, RunRow, args_json, micros};
                let row: RunRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO runs (command, args, rendered, action_hash, requester, requester_name, platform, \
                     channel_id, channel_name, thread, approvals_needed, state, break_glass, created_at, expires_at, updated_at, lease_until) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $14, $16) {RETURNING_RUN}"
                )))
                .bind(&run.command)
                .bind(args_json(&run.args))
                .bind(&run.rendered)
                .bind(&run.action_hash)
                .bind(run.requester.to_string())
                .bind(&run.requester_name)
                .bind(run.platform.as_str())
                .bind(&run.channel_id)
                .bind(&run.channel_name)
                .bind(&run.thread)
                .bind(run.approvals_needed as i32)
                .bind(run.state.as_str())
                .bind(&run.break_glass)
                .bind(micros(run.created_at))
                .bind(micros(run.expires_at))
                // A request created already approved (no approval needed, break-glass) is leased
                // from the start, so a crash before it runs still ends up `interrupted`.
                .bind(micros(run.created_at) + $crate::router::runbook::LEASE.as_micros() as i64)
                .fetch_one(&self.pool)
                .await
                .map_err($crate::store::backend)?;
                row.into_run()
            }

            async fn run(&self, id: i64) -> Result<Option<$crate::domain::Run>, $crate::ports::StoreError> {
                use $crate::store::runs::{RunRow, SELECT_RUN};
                let row: Option<RunRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!("{SELECT_RUN} WHERE id = $1")))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::store::backend)?;
                row.map(RunRow::into_run).transpose()
            }

            async fn run_by_message(
                &self,
                platform: $crate::domain::Platform,
                channel_id: &str,
                message_id: &str,
            ) -> Result<Option<$crate::domain::Run>, $crate::ports::StoreError> {
                use $crate::store::runs::{RunRow, SELECT_RUN};
                let row: Option<RunRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "{SELECT_RUN} WHERE platform = $1 AND channel_id = $2 AND message_id = $3"
                )))
                .bind(platform.as_str())
                .bind(channel_id)
                .bind(message_id)
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::store::backend)?;
                row.map(RunRow::into_run).transpose()
            }

            async fn set_run_message(&self, id: i64, message_id: &str) -> Result<(), $crate::ports::StoreError> {
                sqlx::query("UPDATE runs SET message_id = $1 WHERE id = $2")
                    .bind(message_id)
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::backend)?;
                Ok(())
            }

            async fn add_vote(
                &self,
                id: i64,
                vote: &$crate::domain::Vote,
            ) -> Result<$crate::domain::VoteTally, $crate::ports::StoreError> {
                let inserted = sqlx::query(
                    // Votes count only while the request is pending.
                    "INSERT INTO run_votes (run_id, approver, approver_name, action_hash, at) \
                     SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM runs WHERE id = $1 AND state = 'pending') \
                     ON CONFLICT DO NOTHING",
                )
                .bind(id)
                .bind(vote.approver.to_string())
                .bind(&vote.approver_name)
                .bind(&vote.action_hash)
                .bind($crate::store::runs::micros(vote.at))
                .execute(&self.pool)
                .await
                .map_err($crate::store::backend)?
                .rows_affected();
                let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM run_votes WHERE run_id = $1")
                    .bind(id)
                    .fetch_one(&self.pool)
                    .await
                    .map_err($crate::store::backend)?;
                Ok($crate::domain::VoteTally {
                    counted: inserted == 1,
                    total: total as u32,
                })
            }

            async fn retract_vote(
                &self,
                id: i64,
                approver: &$crate::domain::UserRef,
            ) -> Result<bool, $crate::ports::StoreError> {
                let n = sqlx::query(
                    "DELETE FROM run_votes WHERE run_id = $1 AND approver = $2 \
                     AND EXISTS (SELECT 1 FROM runs WHERE id = $1 AND state = 'pending')",
                )
                .bind(id)
                .bind(approver.to_string())
                .execute(&self.pool)
                .await
                .map_err($crate::store::backend)?
                .rows_affected();
                Ok(n > 0)
            }

            async fn transition(
                &self,
                id: i64,
                from: $crate::domain::RunState,
                to: $crate::domain::RunState,
                at: chrono::DateTime<chrono::Utc>,
                lease_until: Option<chrono::DateTime<chrono::Utc>>,
            ) -> Result<bool, $crate::ports::StoreError> {
                use $crate::store::runs::micros;
                let n = sqlx::query(
                    "UPDATE runs SET state = $1, updated_at = $2, lease_until = COALESCE($3, lease_until) \
                     WHERE id = $4 AND state = $5",
                )
                .bind(to.as_str())
                .bind(micros(at))
                .bind(lease_until.map(micros))
                .bind(id)
                .bind(from.as_str())
                .execute(&self.pool)
                .await
                .map_err($crate::store::backend)?
                .rows_affected();
                Ok(n == 1)
            }

            async fn finish_run(
                &self,
                id: i64,
                to: $crate::domain::RunState,
                result: &$crate::domain::RunResult,
                at: chrono::DateTime<chrono::Utc>,
            ) -> Result<bool, $crate::ports::StoreError> {
                let n = sqlx::query(
                    "UPDATE runs SET state = $1, updated_at = $2, result_code = $3, duration_ms = $4, output = $5, \
                     truncated = $6, lease_until = NULL WHERE id = $7 AND state = 'running'",
                )
                .bind(to.as_str())
                .bind($crate::store::runs::micros(at))
                .bind(result.code)
                .bind(result.duration.as_millis() as i64)
                .bind(&result.output)
                .bind(result.truncated)
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err($crate::store::backend)?
                .rows_affected();
                Ok(n == 1)
            }

            async fn renew_lease(
                &self,
                id: i64,
                until: chrono::DateTime<chrono::Utc>,
            ) -> Result<(), $crate::ports::StoreError> {
                sqlx::query("UPDATE runs SET lease_until = $1 WHERE id = $2 AND state IN ('approved', 'running')")
                    .bind($crate::store::runs::micros(until))
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::backend)?;
                Ok(())
            }

            async fn interrupt_stale(
                &self,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<Vec<$crate::domain::Run>, $crate::ports::StoreError> {
                use $crate::store::runs::{RETURNING_RUN, RunRow, micros};
                let rows: Vec<RunRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "UPDATE runs SET state = 'interrupted', updated_at = $1, lease_until = NULL \
                     WHERE state IN ('approved', 'running') AND lease_until < $1 {RETURNING_RUN}"
                )))
                .bind(micros(now))
                .fetch_all(&self.pool)
                .await
                .map_err($crate::store::backend)?;
                rows.into_iter().map(RunRow::into_run).collect()
            }

            async fn expire_due(
                &self,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<Vec<$crate::domain::Run>, $crate::ports::StoreError> {
                use $crate::store::runs::{RETURNING_RUN, RunRow, micros};
                let rows: Vec<RunRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "UPDATE runs SET state = 'expired', updated_at = $1 \
                     WHERE state = 'pending' AND expires_at <= $1 {RETURNING_RUN}"
                )))
                .bind(micros(now))
                .fetch_all(&self.pool)
                .await
                .map_err($crate::store::backend)?;
                rows.into_iter().map(RunRow::into_run).collect()
            }
        }
    };
}

pub(crate) use impl_run_store;
