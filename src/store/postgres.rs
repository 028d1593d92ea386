//! Postgres backend, for teams running several replicas. Audit appends take a transaction-
//! scoped advisory lock so replicas extend one hash chain without forking it.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::batch::{AuditBatcher, BatchWrite, extend_chain};
use super::{AuditRow, SELECT_AUDIT, backend, migrate_error};
use crate::domain::{AuditEntry, AuditRecord};
use crate::ports::{Store, StoreError};

/// Advisory lock key guarding the audit chain head ("opsbot" in ASCII).
const AUDIT_CHAIN_LOCK: i64 = 0x6f_70_73_62_6f_74;

pub struct PostgresStore {
    pool: PgPool,
    batcher: AuditBatcher,
}

struct Writer {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects, optionally pinning every connection to `schema` (tests use one schema each),
    /// and applies migrations.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        schema: Option<&str>,
    ) -> Result<Self, StoreError> {
        let mut options = PgConnectOptions::from_str(url).map_err(backend)?;
        if let Some(schema) = schema {
            options = options.options([("search_path", schema)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(backend)?;
        sqlx::migrate!("migrations/postgres")
            .run(&pool)
            .await
            .map_err(migrate_error)?;
        let batcher = AuditBatcher::spawn(Arc::new(Writer { pool: pool.clone() }));
        Ok(Self { pool, batcher })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait]
impl BatchWrite for Writer {
    async fn write_batch(&self, entries: Vec<AuditEntry>) -> Result<Vec<AuditRecord>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(AUDIT_CHAIN_LOCK)
            .execute(&mut *tx)
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
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
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
impl Store for PostgresStore {
    async fn append_audit(&self, entry: AuditEntry) -> Result<AuditRecord, StoreError> {
        self.batcher.append(entry).await
    }

    async fn recent_audit(&self, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        let rows: Vec<AuditRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{SELECT_AUDIT} ORDER BY seq DESC LIMIT $1"
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
            "{SELECT_AUDIT} WHERE seq > $1 ORDER BY seq LIMIT $2"
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

super::runs::impl_run_store!(PostgresStore);
