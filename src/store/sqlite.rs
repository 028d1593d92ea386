//! SQLite backend, the embedded default: one file, WAL mode, `BEGIN IMMEDIATE` for writes so
//! several opsbot processes on one file (a `serve` and a `chat`) queue instead of failing.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use sqlx::{ConnectOptions as _, Connection as _, Sqlite, SqliteConnection};

use super::alerts::{record_delivery, upsert_on};
use super::audit::{append_to_chain, insert_records};
use super::batch::{BatchWrite, extend_chain};
use super::sql::execute;
use super::{SqliteStore, backend};
use crate::domain::{AuditEntry, AuditRecord, IncomingAlert, Platform};
use crate::ports::StoreError;

/// How often the WAL is checkpointed in the background. SQLite's automatic checkpoint would
/// run inside the audit writer's commit and stall every waiting command on its fsyncs
/// (docs/benchmarks.md); a passive checkpoint from another connection never blocks writers.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// What the WAL is truncated to once checkpointed (bytes).
const WAL_SIZE_LIMIT: &str = "4194304";

/// The writer: its own connection, for the audit chain, alert deliveries and delivery ids
/// (each a write every command or webhook makes), and the chain head it last wrote (`None`
/// until read, or after a failure). Writes from one connection never meet SQLite's busy
/// handler, whose waits are sleeps of 1 ms and up; the pool is for reads and the rarer
/// writes.
struct Writer {
    state: tokio::sync::Mutex<(SqliteConnection, Option<(i64, String)>)>,
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
            // SQLite reuses a checkpointed WAL without shrinking it, so one burst would keep
            // it at its high-water mark for as long as opsbot runs (36 MB after 5 minutes of
            // alert load): cut it back to this size when it restarts.
            .pragma("journal_size_limit", WAL_SIZE_LIMIT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // A pool checks a connection with a round trip before lending it; a connection to
            // a local file cannot have gone stale, and the check doubled every query's trips
            // to SQLite's thread.
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await
            .map_err(backend)?;
        let writer = Writer {
            state: tokio::sync::Mutex::new((options.connect().await.map_err(backend)?, None)),
        };
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
    crate::periodic::every(CHECKPOINT_EVERY, &stop, async || {
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::warn!(error = %e, "SQLite checkpoint failed");
        }
    })
    .await;
    // Leave a short WAL behind for the next start.
    let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&pool)
        .await;
}

#[async_trait]
impl BatchWrite for Writer {
    /// Each statement is a round trip to SQLite's worker thread, and at a command at a time
    /// each batch is one record, so the usual path is one guarded INSERT that needs no
    /// transaction: it applies only if the chain still ends where this writer left it.
    /// Another process on the same file (a `chat` beside `serve`) moves the head; then the
    /// batch is chained again inside `BEGIN IMMEDIATE` after reading the head.
    async fn write_batch(&self, entries: Vec<AuditEntry>) -> Result<Vec<AuditRecord>, StoreError> {
        let mut state = self.state.lock().await;
        let (conn, head) = &mut *state;
        let entries = match head.take() {
            None => entries,
            Some(known) => {
                let seq = known.0;
                let records = extend_chain(Some(known), entries);
                let mut insert = insert_records::<Sqlite>(&records, Some(seq));
                match execute(&mut *conn, insert.build()).await {
                    Ok(n) if n as usize == records.len() => {
                        *head = last_of(&records);
                        return Ok(records);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "guarded audit insert failed; retrying in a transaction")
                    }
                }
                records.into_iter().map(|r| r.entry).collect()
            }
        };
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(backend)?;
        let records = append_to_chain(&mut tx, entries).await?;
        tx.commit().await.map_err(backend)?;
        *head = last_of(&records);
        Ok(records)
    }

    async fn ingest(
        &self,
        alerts: &[&IncomingAlert],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError> {
        let mut state = self.state.lock().await;
        upsert_on::<Sqlite>(&mut state.0, alerts, now).await
    }

    async fn first_delivery(
        &self,
        platform: Platform,
        event_id: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, StoreError> {
        let mut state = self.state.lock().await;
        record_delivery::<Sqlite>(&mut state.0, platform, event_id, at).await
    }
}

/// The chain head after `records`; `None` (read it again next time) for an empty batch.
fn last_of(records: &[AuditRecord]) -> Option<(i64, String)> {
    records.last().map(|r| (r.seq, r.hash.clone()))
}
