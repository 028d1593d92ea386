//! Escalations in SQL: `ports::EscalationStore` for both backends. A step is claimed by one
//! conditional update of `next_step` in the transaction that queues its messages (on
//! Postgres the row lock makes a racing claimer re-read `next_step` and match nothing); a
//! partial unique index keeps one active escalation per subject. The pages a step sends are
//! rows of `escalation_pages`, inserted with its claim and each attempt claimed the same way.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::outbox::insert_queued;
use super::runs::micros;
use super::sql::{Arg, Backend, changed_one, execute, fetch_all, fetch_optional};
use super::{OnPool, SqlStore, backend};
use crate::domain::{EscalationRecord, EscalationSubject, SentPage, StopReason};
use crate::ports::{EscalationStore, Page, PageEnd, PendingPage, Queued, QueuedPage, StoreError};

const SELECT_ESCALATION: &str = "SELECT id, subject_kind, subject_key, policy, started_at, \
     next_step, next_due_at, pages, stopped_at, stop_reason FROM escalations";

#[derive(sqlx::FromRow)]
pub(crate) struct EscalationRow {
    id: i64,
    subject_kind: String,
    subject_key: String,
    policy: String,
    started_at: i64,
    next_step: i64,
    next_due_at: Option<i64>,
    pages: String,
    stopped_at: Option<i64>,
    stop_reason: Option<String>,
}

impl EscalationRow {
    fn into_record(self) -> Result<EscalationRecord, StoreError> {
        let id = self.id;
        let corrupt = |what: String| StoreError::Corrupt(format!("escalation #{id}: {what}"));
        let time = |us: i64| {
            DateTime::from_timestamp_micros(us)
                .ok_or_else(|| corrupt(format!("time {us} out of range")))
        };
        let stopped = match (self.stopped_at, self.stop_reason) {
            (Some(at), Some(why)) => Some((time(at)?, why.parse().map_err(corrupt)?)),
            (None, _) => None,
            (Some(_), None) => return Err(corrupt("stopped without a reason".into())),
        };
        Ok(EscalationRecord {
            id,
            subject: EscalationSubject::from_parts(&self.subject_kind, self.subject_key)
                .map_err(corrupt)?,
            policy: self.policy,
            started_at: time(self.started_at)?,
            next_step: u32::try_from(self.next_step).map_err(|e| corrupt(e.to_string()))?,
            next_due_at: self.next_due_at.map(time).transpose()?,
            pages: serde_json::from_str(&self.pages).map_err(|e| corrupt(e.to_string()))?,
            stopped,
        })
    }
}

fn records(rows: Vec<EscalationRow>) -> Result<Vec<EscalationRecord>, StoreError> {
    rows.into_iter().map(EscalationRow::into_record).collect()
}

#[async_trait]
impl<DB: Backend> EscalationStore for SqlStore<DB> {
    async fn start_escalation(
        &self,
        subject: &EscalationSubject,
        policy: &str,
        now: DateTime<Utc>,
        first_due: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let (kind, key) = subject.parts();
        let q = sqlx::query(
            "INSERT INTO escalations (subject_kind, subject_key, policy, started_at, next_step, next_due_at) \
             VALUES ($1, $2, $3, $4, 0, $5) \
             ON CONFLICT (subject_kind, subject_key) WHERE stopped_at IS NULL DO NOTHING",
        )
        .arg(kind)
        .arg(key.as_str())
        .arg(policy)
        .arg(&micros(now))
        .arg(&micros(first_due));
        changed_one(self.ex(), q).await
    }

    async fn active_escalation(
        &self,
        subject: &EscalationSubject,
    ) -> Result<Option<EscalationRecord>, StoreError> {
        let (kind, key) = subject.parts();
        let sql = format!(
            "{SELECT_ESCALATION} WHERE subject_kind = $1 AND subject_key = $2 AND stopped_at IS NULL"
        );
        let q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .arg(kind)
            .arg(key.as_str());
        let row: Option<EscalationRow> = fetch_optional(self.ex(), q).await?;
        row.map(EscalationRow::into_record).transpose()
    }

    async fn due_escalations(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<EscalationRecord>, StoreError> {
        let sql = format!(
            "{SELECT_ESCALATION} WHERE stopped_at IS NULL AND next_due_at <= $1 \
             ORDER BY next_due_at, id LIMIT $2"
        );
        let q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .arg(&micros(now))
            .arg(&i64::from(limit));
        records(fetch_all(self.ex(), q).await?)
    }

    async fn claim_escalation_step(
        &self,
        id: i64,
        step: u32,
        next_due: Option<DateTime<Utc>>,
        pages: &[QueuedPage],
        notices: &[Queued],
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let q = sqlx::query(
            "UPDATE escalations SET next_step = $1 + 1, next_due_at = $2 \
             WHERE id = $3 AND next_step = $1 AND stopped_at IS NULL RETURNING pages",
        )
        .arg(&i64::from(step))
        .arg(&next_due.map(micros))
        .arg(&id);
        // Taken by another sweep, or stopped: dropping the transaction queues nothing.
        let Some((stored,)): Option<(String,)> = fetch_optional(DB::on_conn(&mut tx), q).await?
        else {
            return Ok(false);
        };
        if !pages.is_empty() {
            let mut all: Vec<SentPage> = serde_json::from_str(&stored)
                .map_err(|e| StoreError::Corrupt(format!("escalation #{id}: {e}")))?;
            all.extend(pages.iter().map(|p| SentPage {
                service: p.service.clone(),
                dedup_key: p.page.dedup_key.clone(),
            }));
            let json = serde_json::to_string(&all).expect("strings always serialize");
            let q = sqlx::query("UPDATE escalations SET pages = $1 WHERE id = $2")
                .arg(json.as_str())
                .arg(&id);
            execute(DB::on_conn(&mut tx), q).await?;
        }
        for p in pages {
            insert_page::<DB>(&mut tx, id, p, now).await?;
        }
        for notice in notices {
            insert_queued::<DB>(&mut tx, notice, now).await?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    async fn stop_escalation(
        &self,
        subject: &EscalationSubject,
        why: StopReason,
        now: DateTime<Utc>,
    ) -> Result<Option<EscalationRecord>, StoreError> {
        let (kind, key) = subject.parts();
        let q = sqlx::query(
            "UPDATE escalations SET stopped_at = $1, stop_reason = $2, next_due_at = NULL \
             WHERE subject_kind = $3 AND subject_key = $4 AND stopped_at IS NULL \
             RETURNING id, subject_kind, subject_key, policy, started_at, next_step, next_due_at, \
             pages, stopped_at, stop_reason",
        )
        .arg(&micros(now))
        .arg(why.as_str())
        .arg(kind)
        .arg(key.as_str());
        let row: Option<EscalationRow> = fetch_optional(self.ex(), q).await?;
        row.map(EscalationRow::into_record).transpose()
    }

    async fn pages_to_close(&self, limit: u32) -> Result<Vec<EscalationRecord>, StoreError> {
        let sql = format!(
            "{SELECT_ESCALATION} WHERE stopped_at IS NOT NULL AND pages_closed_at IS NULL \
             AND pages <> '[]' ORDER BY id LIMIT $1"
        );
        let q = sqlx::query(sqlx::AssertSqlSafe(sql)).arg(&i64::from(limit));
        records(fetch_all(self.ex(), q).await?)
    }

    async fn pages_closed(&self, id: i64, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let q = sqlx::query(
            "UPDATE escalations SET pages_closed_at = $1 WHERE id = $2 AND pages_closed_at IS NULL",
        )
        .arg(&micros(now))
        .arg(&id);
        changed_one(self.ex(), q).await
    }

    async fn active_escalations(&self) -> Result<u64, StoreError> {
        // The partial index of due escalations holds exactly the active ones.
        let q = sqlx::query("SELECT COUNT(*) FROM escalations WHERE stopped_at IS NULL");
        let (n,): (i64,) = fetch_optional(self.ex(), q).await?.unwrap_or((0,));
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn due_pages(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<PendingPage>, StoreError> {
        let q = sqlx::query(
            "SELECT p.id, e.policy, p.service, p.dedup_key, p.summary, p.source, p.severity, \
             p.attempts, e.stopped_at IS NOT NULL AS stopped \
             FROM escalation_pages p JOIN escalations e ON e.id = p.escalation_id \
             WHERE p.sent_at IS NULL AND p.next_attempt_at <= $1 ORDER BY p.id LIMIT $2",
        )
        .arg(&micros(now))
        .arg(&i64::from(limit));
        let rows: Vec<PageRow> = fetch_all(self.ex(), q).await?;
        rows.into_iter().map(PageRow::into_pending).collect()
    }

    async fn claim_page(
        &self,
        id: i64,
        now: DateTime<Utc>,
        hold_until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let q = sqlx::query(
            "UPDATE escalation_pages SET attempts = attempts + 1, next_attempt_at = $1 \
             WHERE id = $2 AND sent_at IS NULL AND next_attempt_at <= $3",
        )
        .arg(&micros(hold_until))
        .arg(&id)
        .arg(&micros(now));
        changed_one(self.ex(), q).await
    }

    async fn retry_page(&self, id: i64, at: DateTime<Utc>) -> Result<(), StoreError> {
        let q = sqlx::query(
            "UPDATE escalation_pages SET next_attempt_at = $1 WHERE id = $2 AND sent_at IS NULL",
        )
        .arg(&micros(at))
        .arg(&id);
        execute(self.ex(), q).await.map(drop)
    }

    async fn end_page(&self, id: i64, now: DateTime<Utc>, end: PageEnd) -> Result<(), StoreError> {
        let q = sqlx::query(
            "UPDATE escalation_pages SET sent_at = $1, outcome = $2 WHERE id = $3 AND sent_at IS NULL",
        )
        .arg(&micros(now))
        .arg(end.as_str())
        .arg(&id);
        execute(self.ex(), q).await.map(drop)
    }
}

/// Queues one page of a step in the step's claim, due at once.
async fn insert_page<DB: Backend>(
    conn: &mut DB::Connection,
    escalation: i64,
    p: &QueuedPage,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let q = sqlx::query(
        "INSERT INTO escalation_pages \
         (escalation_id, service, dedup_key, summary, source, severity, next_attempt_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .arg(&escalation)
    .arg(p.service.as_str())
    .arg(p.page.dedup_key.as_str())
    .arg(p.page.summary.as_str())
    .arg(p.page.source.as_str())
    .arg(p.page.severity.as_str())
    .arg(&micros(now));
    execute(DB::on_conn(conn), q).await.map(drop)
}

#[derive(sqlx::FromRow)]
pub(crate) struct PageRow {
    id: i64,
    policy: String,
    service: String,
    dedup_key: String,
    summary: String,
    source: String,
    severity: String,
    attempts: i64,
    stopped: bool,
}

impl PageRow {
    fn into_pending(self) -> Result<PendingPage, StoreError> {
        let id = self.id;
        let severity = (self.severity.parse())
            .map_err(|e| StoreError::Corrupt(format!("escalation page #{id}: {e}")))?;
        Ok(PendingPage {
            id,
            policy: self.policy,
            service: self.service,
            page: Page {
                dedup_key: self.dedup_key,
                summary: self.summary,
                source: self.source,
                severity,
            },
            attempts: u32::try_from(self.attempts).unwrap_or(u32::MAX),
            stopped: self.stopped,
        })
    }
}
