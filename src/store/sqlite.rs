//! SQLite backend, the embedded default: one file, WAL mode, `BEGIN IMMEDIATE` for writes so
//! several opsbot processes on one file (a `serve` and a `chat`) queue instead of failing.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::batch::{AuditBatcher, BatchWrite, extend_chain};
use super::{AuditRow, SELECT_AUDIT, backend, migrate_error};
use crate::domain::{AuditEntry, AuditRecord};
use crate::ports::{Store, StoreError};

pub struct SqliteStore {
    pool: SqlitePool,
    batcher: AuditBatcher,
}

struct Writer {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://path.db`) and migrates it.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(backend)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL survives a process crash; only an OS crash can lose the last commits.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(backend)?;
        sqlx::migrate!("migrations/sqlite")
            .run(&pool)
            .await
            .map_err(migrate_error)?;
        let batcher = AuditBatcher::spawn(Arc::new(Writer { pool: pool.clone() }));
        Ok(Self { pool, batcher })
    }

    /// The pool, for tests that need to reach under the trait (e.g. to tamper with records).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

#[async_trait]
impl BatchWrite for Writer {
    async fn write_batch(&self, entries: Vec<AuditEntry>) -> Result<Vec<AuditRecord>, StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let head: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
        let records = extend_chain(head, entries);
        for rec in &records {
            sqlx::query(
                "INSERT INTO audit_log (seq, request_id, at, actor, channel, command, args, outcome, detail, prev_hash, hash) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(rec.seq)
            .bind(rec.entry.request_id.as_str())
            .bind(rec.entry.at.timestamp_micros())
            .bind(&rec.entry.actor)
            .bind(&rec.entry.channel)
            .bind(&rec.entry.command)
            .bind(&rec.entry.args)
            .bind(rec.entry.outcome.as_str())
            .bind(&rec.entry.detail)
            .bind(&rec.prev_hash)
            .bind(&rec.hash)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(records)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn append_audit(&self, entry: AuditEntry) -> Result<AuditRecord, StoreError> {
        self.batcher.append(entry).await
    }

    async fn recent_audit(&self, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        let rows: Vec<AuditRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{SELECT_AUDIT} ORDER BY seq DESC LIMIT ?"
        )))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.into_iter().map(AuditRow::into_record).collect()
    }

    async fn audit_after(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows: Vec<AuditRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{SELECT_AUDIT} WHERE seq > ? ORDER BY seq LIMIT ?"
        )))
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.into_iter().map(AuditRow::into_record).collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

super::runs::impl_run_store!(SqliteStore);
