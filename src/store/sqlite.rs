//! SQLite backend, the embedded default: one file, WAL mode, `BEGIN IMMEDIATE` for writes so
//! several opsbot processes on one file (a `serve` and a `chat`) queue instead of failing.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};

use super::batch::{AuditBatcher, BatchWrite};
use super::{SELECT_AUDIT, backend, migrate_error};
use crate::domain::{AuditEntry, AuditRecord, GENESIS_HASH, chain_hash};
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
        let (mut seq, mut prev) = head.unwrap_or((0, GENESIS_HASH.to_owned()));
        let mut records = Vec::with_capacity(entries.len());
        for entry in entries {
            seq += 1;
            let hash = chain_hash(&prev, seq, &entry);
            sqlx::query(
                "INSERT INTO audit_log (seq, request_id, at, actor, channel, command, args, outcome, detail, prev_hash, hash) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(seq)
            .bind(entry.request_id.as_str())
            .bind(entry.at.timestamp_micros())
            .bind(&entry.actor)
            .bind(&entry.channel)
            .bind(&entry.command)
            .bind(&entry.args)
            .bind(entry.outcome.as_str())
            .bind(&entry.detail)
            .bind(&prev)
            .bind(&hash)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
            let prev_hash = std::mem::replace(&mut prev, hash.clone());
            records.push(AuditRecord {
                seq,
                entry,
                prev_hash,
                hash,
            });
        }
        tx.commit().await.map_err(backend)?;
        Ok(records)
    }
}

fn record_from_row(row: &SqliteRow) -> Result<AuditRecord, StoreError> {
    super::record_from_parts(
        row.try_get("seq").map_err(backend)?,
        row.try_get("request_id").map_err(backend)?,
        row.try_get("at").map_err(backend)?,
        row.try_get("actor").map_err(backend)?,
        row.try_get("channel").map_err(backend)?,
        row.try_get("command").map_err(backend)?,
        row.try_get("args").map_err(backend)?,
        row.try_get::<String, _>("outcome").map_err(backend)?,
        row.try_get("detail").map_err(backend)?,
        row.try_get("prev_hash").map_err(backend)?,
        row.try_get("hash").map_err(backend)?,
    )
}

#[async_trait]
impl Store for SqliteStore {
    async fn append_audit(&self, entry: AuditEntry) -> Result<AuditRecord, StoreError> {
        self.batcher.append(entry).await
    }

    async fn recent_audit(&self, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{SELECT_AUDIT} ORDER BY seq DESC LIMIT ?"
        )))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(record_from_row).collect()
    }

    async fn audit_after(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{SELECT_AUDIT} WHERE seq > ? ORDER BY seq LIMIT ?"
        )))
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(record_from_row).collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }
}
