//! SQLite backend, the embedded default: one file, WAL mode, `BEGIN IMMEDIATE` for writes so
//! several opsbot processes on one file (a `serve` and a `chat`) queue instead of failing.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::audit::append_to_chain;
use super::batch::BatchWrite;
use super::{SqliteStore, backend};
use crate::domain::{AuditEntry, AuditRecord};
use crate::ports::StoreError;

/// How often the WAL is checkpointed in the background. SQLite's automatic checkpoint would
/// run inside the audit writer's commit and stall every waiting command on its fsyncs
/// (docs/benchmarks.md); a passive checkpoint from another connection never blocks writers.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

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
            .pragma("wal_autocheckpoint", "0")
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(backend)?;
        let writer = Writer { pool: pool.clone() };
        let store = Self::migrated(pool, sqlx::migrate!("migrations/sqlite"), writer).await?;
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(checkpoint_forever(store.pool.clone(), stop.clone()));
        Ok(Self {
            _background: Some(stop.drop_guard()),
            ..store
        })
    }
}

async fn checkpoint_forever(pool: SqlitePool, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
                    tracing::warn!(error = %e, "SQLite checkpoint failed");
                }
            }
        }
    }
    // Leave a short WAL behind for the next start.
    let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&pool)
        .await;
}

#[async_trait]
impl BatchWrite for Writer {
    async fn write_batch(&self, entries: Vec<AuditEntry>) -> Result<Vec<AuditRecord>, StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let records = append_to_chain(&mut tx, entries).await?;
        tx.commit().await.map_err(backend)?;
        Ok(records)
    }
}
