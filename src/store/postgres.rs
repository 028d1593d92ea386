//! Postgres backend, for teams running several replicas. Audit appends take a transaction-
//! scoped advisory lock so replicas extend one hash chain without forking it.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::audit::append_to_chain;
use super::batch::BatchWrite;
use super::{PostgresStore, backend};
use crate::domain::{AuditEntry, AuditRecord};
use crate::ports::StoreError;

/// Advisory lock key guarding the audit chain head ("opsbot" in ASCII).
const AUDIT_CHAIN_LOCK: i64 = 0x6f_70_73_62_6f_74;

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
        // NOTICEs are chatter ("relation already exists, skipping" from every start's
        // migrations, logged by sqlx at INFO); warnings and errors still arrive.
        let mut options = PgConnectOptions::from_str(url)
            .map_err(backend)?
            .options([("client_min_messages", "warning")]);
        if let Some(schema) = schema {
            options = options.options([("search_path", schema)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(backend)?;
        let writer = Writer { pool: pool.clone() };
        Self::migrated(pool, sqlx::migrate!("migrations/postgres"), writer).await
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
        let records = append_to_chain(&mut tx, entries).await?;
        tx.commit().await.map_err(backend)?;
        Ok(records)
    }
}
