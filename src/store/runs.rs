//! Runbook requests in SQL: `ports::RunStore` for both backends, and how a `runs` row
//! maps to a [`Run`]. How long a run's lease lasts is the caller's policy, passed in.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::outbox::insert_queued;
use super::sql::{Arg, Backend, Q, changed_one, execute, fetch_all, fetch_one, fetch_optional};
use super::{OnPool, SqlStore, backend};
use crate::domain::{
    Gate, NewRun, Platform, Retry, Run, RunId, RunResult, RunState, StepRecord, StepState, UserRef,
    Vote, VoteTally,
};
use crate::ports::{Queued, RunNotice, RunStore, StepStart, StoreError};

/// Columns in the order [`RunRow`] reads them.
pub(crate) const SELECT_RUN: &str = "SELECT id, command, args, rendered, action_hash, requester, requester_name, \
     platform, channel_id, channel_name, thread, message_id, approvals_needed, state, break_glass, \
     created_at, expires_at, result_code, duration_ms, output, truncated, current_step, gate_of, gate_step, cancel_requested, retry_of, from_step FROM runs";

pub(crate) const RETURNING_RUN: &str = "RETURNING id, command, args, rendered, action_hash, requester, \
     requester_name, platform, channel_id, channel_name, thread, message_id, approvals_needed, state, \
     break_glass, created_at, expires_at, result_code, duration_ms, output, truncated, current_step, \
     gate_of, gate_step, cancel_requested, retry_of, from_step";

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
    current_step: Option<String>,
    gate_of: Option<i64>,
    gate_step: Option<i32>,
    cancel_requested: Option<String>,
    retry_of: Option<i64>,
    from_step: Option<i32>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct StepRow {
    run_id: i64,
    idx: i32,
    name: String,
    rollback: bool,
    state: String,
    started_at: i64,
    duration_ms: Option<i64>,
    code: Option<i32>,
    output: Option<String>,
    truncated: Option<bool>,
    published: Option<String>,
}

impl StepRow {
    fn into_step(self) -> Result<StepRecord, StoreError> {
        let id = self.run_id;
        let result = match (self.duration_ms, self.output) {
            (Some(ms), Some(output)) => Some(RunResult {
                code: self.code,
                duration: Duration::from_millis(ms.max(0) as u64),
                output,
                truncated: self.truncated.unwrap_or(false),
            }),
            _ => None,
        };
        Ok(StepRecord {
            idx: u32::try_from(self.idx).map_err(|e| corrupt(id, e))?,
            name: self.name,
            rollback: self.rollback,
            state: self.state.parse().map_err(|e| corrupt(id, e))?,
            started_at: time(id, self.started_at)?,
            result,
            published: self.published,
        })
    }
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
            id: RunId(id),
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
            current_step: self.current_step,
            gate: match (self.gate_of, self.gate_step) {
                (Some(run), Some(step)) => Some(Gate {
                    run: RunId(run),
                    step: u32::try_from(step).map_err(|e| corrupt(id, e))?,
                }),
                _ => None,
            },
            cancel_requested: self.cancel_requested,
            retry: match (self.retry_of, self.from_step) {
                (Some(of), Some(from)) => Some(Retry {
                    of: RunId(of),
                    from: u32::try_from(from).map_err(|e| corrupt(id, e))?,
                }),
                _ => None,
            },
        })
    }
}

#[async_trait]
impl<DB: Backend> RunStore for SqlStore<DB> {
    async fn create_run(&self, run: NewRun, lease_until: DateTime<Utc>) -> Result<Run, StoreError> {
        let row: RunRow = fetch_one(self.ex(), insert_run(&run, lease_until, None)).await?;
        row.into_run()
    }

    async fn create_retry(
        &self,
        run: NewRun,
        lease_until: DateTime<Utc>,
        retry: Retry,
    ) -> Result<Run, StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let insert = insert_run(&run, lease_until, Some(Origin::Retry(retry)));
        let row: RunRow = fetch_one(DB::on_conn(&mut tx), insert).await?;
        let run = row.into_run()?;
        // The steps before `from` as the retried run recorded them: their marks and values.
        let copy = sqlx::query(
            "INSERT INTO run_steps (run_id, idx, name, rollback, state, started_at, duration_ms, \
             code, output, truncated, published) SELECT $1, idx, name, rollback, state, started_at, \
             duration_ms, code, output, truncated, published FROM run_steps \
             WHERE run_id = $2 AND idx < $3 AND NOT rollback",
        )
        .arg(&run.id.0)
        .arg(&retry.of.0)
        .arg(&(retry.from as i32));
        execute(DB::on_conn(&mut tx), copy).await?;
        tx.commit().await.map_err(backend)?;
        Ok(run)
    }

    async fn open_gate(
        &self,
        id: RunId,
        (gate, step): (NewRun, u32),
        at: DateTime<Utc>,
        notice: &RunNotice<'_>,
    ) -> Result<Option<Run>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // The run stops holding a lease: nothing of it runs while it waits.
        let wait = sqlx::query(
            "UPDATE runs SET state = 'waiting', updated_at = $1, lease_until = NULL \
             WHERE id = $2 AND state = 'running'",
        )
        .arg(&micros(at))
        .arg(&id.0);
        if !changed_one(DB::on_conn(&mut tx), wait).await? {
            return Ok(None);
        }
        // A pending request's lease is never looked at; the sweep expires it at `expires_at`.
        let insert = insert_run(&gate, at, Some(Origin::Gate(Gate { run: id, step })));
        let row: RunRow = fetch_one(DB::on_conn(&mut tx), insert).await?;
        let gate = row.into_run()?;
        for queued in notice(&gate, RunState::Pending) {
            insert_queued::<DB>(&mut tx, &queued, at).await?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(Some(gate))
    }

    async fn request_cancel(&self, id: RunId, by: &str) -> Result<bool, StoreError> {
        let q = sqlx::query(
            "UPDATE runs SET cancel_requested = $1 WHERE id = $2 AND state = 'running' \
             AND cancel_requested IS NULL",
        )
        .arg(by)
        .arg(&id.0);
        changed_one(self.ex(), q).await
    }

    async fn gates_of(&self, id: RunId) -> Result<Vec<Run>, StoreError> {
        let q = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{SELECT_RUN} WHERE gate_of = $1 ORDER BY id"
        )))
        .arg(&id.0);
        let rows: Vec<RunRow> = fetch_all(self.ex(), q).await?;
        rows.into_iter().map(RunRow::into_run).collect()
    }

    async fn run(&self, id: RunId) -> Result<Option<Run>, StoreError> {
        let id = id.0;
        let q = sqlx::query(sqlx::AssertSqlSafe(format!("{SELECT_RUN} WHERE id = $1"))).arg(&id);
        let row: Option<RunRow> = fetch_optional(self.ex(), q).await?;
        row.map(RunRow::into_run).transpose()
    }

    async fn run_by_message(
        &self,
        platform: Platform,
        channel_id: &str,
        message_id: &str,
    ) -> Result<Option<Run>, StoreError> {
        let q = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{SELECT_RUN} WHERE platform = $1 AND channel_id = $2 AND message_id = $3"
        )))
        .arg(platform.as_str())
        .arg(channel_id)
        .arg(message_id);
        let row: Option<RunRow> = fetch_optional(self.ex(), q).await?;
        row.map(RunRow::into_run).transpose()
    }

    async fn set_run_message(
        &self,
        id: RunId,
        message_id: &str,
        at: DateTime<Utc>,
        notice: &RunNotice<'_>,
    ) -> Result<bool, StoreError> {
        // The update locks the row (Postgres) or holds the writer (SQLite) until the notice
        // is queued, so a decision committing meanwhile either sees this message id and
        // retires it itself, or is seen here as decided: one of the two queues the edit.
        let update = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE runs SET message_id = $1 WHERE id = $2 {RETURNING_RUN}"
        )))
        .arg(message_id)
        .arg(&id.0);
        moved_one(self, update, at, RunState::Pending, notice).await
    }

    async fn bind_progress(&self, id: RunId, message_id: &str) -> Result<bool, StoreError> {
        let q = sqlx::query(
            "UPDATE runs SET message_id = $1 WHERE id = $2 AND message_id IS NULL \
             AND state IN ('running', 'waiting')",
        )
        .arg(message_id)
        .arg(&id.0);
        changed_one(self.ex(), q).await
    }

    async fn add_vote(&self, id: RunId, vote: &Vote) -> Result<VoteTally, StoreError> {
        let id = id.0;
        // Votes count only while the request is pending.
        let q = sqlx::query(
            "INSERT INTO run_votes (run_id, approver, approver_name, action_hash, at) \
             SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM runs WHERE id = $1 AND state = 'pending') \
             ON CONFLICT DO NOTHING",
        )
        .arg(&id)
        .arg(&vote.approver.to_string())
        .arg(vote.approver_name.as_str())
        .arg(vote.action_hash.as_str())
        .arg(&micros(vote.at));
        let counted = changed_one(self.ex(), q).await?;
        let q = sqlx::query("SELECT COUNT(*) FROM run_votes WHERE run_id = $1").arg(&id);
        let (total,): (i64,) = fetch_one(self.ex(), q).await?;
        Ok(VoteTally {
            counted,
            total: total as u32,
        })
    }

    async fn retract_vote(&self, id: RunId, approver: &UserRef) -> Result<bool, StoreError> {
        let id = id.0;
        let q = sqlx::query(
            "DELETE FROM run_votes WHERE run_id = $1 AND approver = $2 \
             AND EXISTS (SELECT 1 FROM runs WHERE id = $1 AND state = 'pending')",
        )
        .arg(&id)
        .arg(&approver.to_string());
        Ok(execute(self.ex(), q).await? > 0)
    }

    async fn transition(
        &self,
        id: RunId,
        from: RunState,
        to: RunState,
        at: DateTime<Utc>,
        lease_until: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        let q = transition_args(sqlx::query(TRANSITION), id, (from, to), at, lease_until);
        changed_one(self.ex(), q).await
    }

    async fn transition_queuing(
        &self,
        id: RunId,
        (from, to): (RunState, RunState),
        at: DateTime<Utc>,
        lease_until: Option<DateTime<Utc>>,
        notice: &RunNotice<'_>,
    ) -> Result<bool, StoreError> {
        let update = sqlx::query(sqlx::AssertSqlSafe(format!("{TRANSITION} {RETURNING_RUN}")));
        let update = transition_args(update, id, (from, to), at, lease_until);
        moved_one(self, update, at, from, notice).await
    }

    async fn finish_run(
        &self,
        id: RunId,
        to: RunState,
        result: &RunResult,
        at: DateTime<Utc>,
        notice: &RunNotice<'_>,
    ) -> Result<bool, StoreError> {
        let update = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE runs SET state = $1, updated_at = $2, result_code = $3, duration_ms = $4, output = $5, \
             truncated = $6, lease_until = NULL WHERE id = $7 AND state = 'running' {RETURNING_RUN}"
        )))
        .arg(to.as_str())
        .arg(&micros(at))
        .arg(&result.code)
        .arg(&(result.duration.as_millis() as i64))
        .arg(result.output.as_str())
        .arg(&result.truncated)
        .arg(&id.0);
        moved_one(self, update, at, RunState::Running, notice).await
    }

    async fn renew_lease(&self, id: RunId, until: DateTime<Utc>) -> Result<(), StoreError> {
        let id = id.0;
        let q = sqlx::query(
            "UPDATE runs SET lease_until = $1 WHERE id = $2 AND state IN ('approved', 'running')",
        )
        .arg(&micros(until))
        .arg(&id);
        execute(self.ex(), q).await.map(drop)
    }

    async fn interrupt_stale(
        &self,
        now: DateTime<Utc>,
        notice: &RunNotice<'_>,
    ) -> Result<Vec<(Run, RunState)>, StoreError> {
        // One update per earlier state: RETURNING shows only the new one, and whether the
        // process had started is what the people in the channel need to know.
        let mut moved = Vec::new();
        for was in [RunState::Running, RunState::Approved] {
            let update = format!(
                "UPDATE runs SET state = 'interrupted', updated_at = $1, lease_until = NULL \
                 WHERE state = '{was}' AND lease_until < $1"
            );
            let runs = runs_moved(self, &update, now, was, notice).await?;
            moved.extend(runs.into_iter().map(|run| (run, was)));
        }
        Ok(moved)
    }

    async fn start_step(
        &self,
        id: RunId,
        step: &StepStart<'_>,
        at: DateTime<Utc>,
        queued: &[Queued],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // Only a running run's step, and each step once: the insert is the claim.
        let claim = sqlx::query(
            "INSERT INTO run_steps (run_id, idx, name, rollback, state, started_at) \
             SELECT $1, $2, $3, $4, 'running', $5 WHERE EXISTS \
             (SELECT 1 FROM runs WHERE id = $1 AND state = 'running') ON CONFLICT DO NOTHING",
        )
        .arg(&id.0)
        .arg(&(step.idx as i32))
        .arg(step.name)
        .arg(&step.rollback)
        .arg(&micros(at));
        if !changed_one(DB::on_conn(&mut tx), claim).await? {
            return Ok(false);
        }
        let current = sqlx::query("UPDATE runs SET current_step = $1 WHERE id = $2")
            .arg(step.name)
            .arg(&id.0);
        execute(DB::on_conn(&mut tx), current).await?;
        for q in queued {
            insert_queued::<DB>(&mut tx, q, at).await?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    async fn finish_step(
        &self,
        id: RunId,
        idx: u32,
        (state, result, published): (StepState, &RunResult, Option<&str>),
        at: DateTime<Utc>,
        queued: &[Queued],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let done = sqlx::query(
            "UPDATE run_steps SET state = $1, duration_ms = $2, code = $3, output = $4, \
             truncated = $5, published = $8 WHERE run_id = $6 AND idx = $7 AND state = 'running'",
        )
        .arg(state.as_str())
        .arg(&(result.duration.as_millis() as i64))
        .arg(&result.code)
        .arg(result.output.as_str())
        .arg(&result.truncated)
        .arg(&id.0)
        .arg(&(idx as i32))
        .arg(&published.map(str::to_owned));
        if !changed_one(DB::on_conn(&mut tx), done).await? {
            return Ok(false);
        }
        for q in queued {
            insert_queued::<DB>(&mut tx, q, at).await?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    async fn run_steps(&self, id: RunId) -> Result<Vec<StepRecord>, StoreError> {
        let q = sqlx::query(
            "SELECT run_id, idx, name, rollback, state, started_at, duration_ms, code, output, \
             truncated, published FROM run_steps WHERE run_id = $1 ORDER BY idx",
        )
        .arg(&id.0);
        let rows: Vec<StepRow> = fetch_all(self.ex(), q).await?;
        rows.into_iter().map(StepRow::into_step).collect()
    }

    async fn expire_due(
        &self,
        now: DateTime<Utc>,
        notice: &RunNotice<'_>,
    ) -> Result<Vec<Run>, StoreError> {
        runs_moved(
            self,
            "UPDATE runs SET state = 'expired', updated_at = $1 \
             WHERE state = 'pending' AND expires_at <= $1",
            now,
            RunState::Pending,
            notice,
        )
        .await
    }
}

/// Where a request that is not a person's own comes from.
#[derive(Clone, Copy)]
enum Origin {
    Gate(Gate),
    Retry(Retry),
}

/// The insert of a new request (a gate's or a retry's when `origin` says so), returning it.
fn insert_run<DB: Backend>(
    run: &NewRun,
    lease_until: DateTime<Utc>,
    origin: Option<Origin>,
) -> Q<'_, DB> {
    let (gate, retry) = match origin {
        Some(Origin::Gate(g)) => (Some(g), None),
        Some(Origin::Retry(r)) => (None, Some(r)),
        None => (None, None),
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO runs (command, args, rendered, action_hash, requester, requester_name, platform, \
         channel_id, channel_name, thread, approvals_needed, state, break_glass, created_at, expires_at, \
         updated_at, lease_until, gate_of, gate_step, retry_of, from_step) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $14, $16, $17, $18, \
         $19, $20) {RETURNING_RUN}"
    )))
    .arg(run.command.as_str())
    .arg(&args_json(&run.args))
    .arg(run.rendered.as_str())
    .arg(run.action_hash.as_str())
    .arg(&run.requester.to_string())
    .arg(run.requester_name.as_str())
    .arg(run.platform.as_str())
    .arg(run.channel_id.as_str())
    .arg(run.channel_name.as_str())
    .arg(&run.thread)
    .arg(&(run.approvals_needed as i32))
    .arg(run.state.as_str())
    .arg(&run.break_glass)
    .arg(&micros(run.created_at))
    .arg(&micros(run.expires_at))
    // A request created already approved (no approval needed, break-glass) is leased
    // from the start, so a crash before it runs still ends up `interrupted`.
    .arg(&micros(lease_until))
    .arg(&gate.map(|g| g.run.0))
    .arg(&gate.map(|g| g.step as i32))
    .arg(&retry.map(|r| r.of.0))
    .arg(&retry.map(|r| r.from as i32))
}

/// The conditional move of one run, `$1`..`$5` as [`transition_args`] binds them.
const TRANSITION: &str = "UPDATE runs SET state = $1, updated_at = $2, \
     lease_until = COALESCE($3, lease_until) WHERE id = $4 AND state = $5";

fn transition_args<DB: Backend>(
    q: Q<'_, DB>,
    id: RunId,
    (from, to): (RunState, RunState),
    at: DateTime<Utc>,
    lease_until: Option<DateTime<Utc>>,
) -> Q<'_, DB> {
    q.arg(to.as_str())
        .arg(&micros(at))
        .arg(&lease_until.map(micros))
        .arg(&id.0)
        .arg(from.as_str())
}

/// Runs a sweep `update` (its one parameter is `now`) of runs in state `was` and returns the
/// runs it moved, each with its `notice` queued in the same transaction: a move is never
/// committed without the message that tells the channel about it.
async fn runs_moved<DB: Backend>(
    store: &SqlStore<DB>,
    update: &str,
    now: DateTime<Utc>,
    was: RunState,
    notice: &RunNotice<'_>,
) -> Result<Vec<Run>, StoreError> {
    let q = sqlx::query(sqlx::AssertSqlSafe(format!("{update} {RETURNING_RUN}"))).arg(&micros(now));
    moved_with_notices(store, q, now, was, notice).await
}

/// Runs `update` (a conditional move of one run, `RETURNING` it) and queues its `notice` in
/// the same transaction; false, with nothing queued, when it moved nothing.
async fn moved_one<DB: Backend>(
    store: &SqlStore<DB>,
    update: Q<'_, DB>,
    now: DateTime<Utc>,
    was: RunState,
    notice: &RunNotice<'_>,
) -> Result<bool, StoreError> {
    let moved = moved_with_notices(store, update, now, was, notice).await?;
    Ok(!moved.is_empty())
}

/// Runs `update` (which returns the runs it moved from `was`) and queues each moved run's
/// `notice` in one transaction.
async fn moved_with_notices<DB: Backend>(
    store: &SqlStore<DB>,
    update: Q<'_, DB>,
    now: DateTime<Utc>,
    was: RunState,
    notice: &RunNotice<'_>,
) -> Result<Vec<Run>, StoreError> {
    let mut tx = store.pool.begin().await.map_err(backend)?;
    let rows: Vec<RunRow> = fetch_all(DB::on_conn(&mut tx), update).await?;
    let runs = (rows.into_iter())
        .map(RunRow::into_run)
        .collect::<Result<Vec<_>, _>>()?;
    for run in &runs {
        for queued in notice(run, was) {
            insert_queued::<DB>(&mut tx, &queued, now).await?;
        }
    }
    tx.commit().await.map_err(backend)?;
    Ok(runs)
}
