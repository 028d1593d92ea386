//! SQLite backend, the embedded default: one file, WAL mode, one process. A store opened
//! [`Access::Exclusive`] (`serve`, `chat`, `migrate`) holds an OS lock on `<db>.lock` for its
//! life, so a second such process on the file refuses to start instead of running the
//! cluster-wide work (polling, sweeps, scheduled checks) twice; readers (`audit`,
//! `postmortem`, `check-config --connect`) open it [`Access::Shared`] beside it, and their
//! writes queue behind `BEGIN IMMEDIATE`.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
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
use super::{Access, SqliteStore, backend};
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
    /// Opens (creating if needed) the database at `url` (`sqlite://path.db`) for this process
    /// alone, and migrates it; refuses if another process holds it.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_as(url, Access::Exclusive).await
    }

    /// Opens the database beside a process that may hold it exclusively (a reader).
    pub async fn open_shared(url: &str) -> Result<Self, StoreError> {
        Self::open_as(url, Access::Shared).await
    }

    pub async fn open_as(url: &str, access: Access) -> Result<Self, StoreError> {
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
        // After the pool (which says why a file cannot be opened at all), before migrating.
        // An in-memory database is this process's alone anyway.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let lock = match access {
            Access::Exclusive if !in_memory => Some(lock_beside(options.get_filename())?),
            _ => None,
        };
        let writer = Writer {
            state: tokio::sync::Mutex::new((options.connect().await.map_err(backend)?, None)),
        };
        let store = Self::migrated(pool, sqlx::migrate!("migrations/sqlite"), writer).await?;
        if lock.is_some() {
            lapse_dead_leases(&store.pool).await?;
        }
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(checkpoint_forever(store.pool.clone(), stop.clone()));
        Ok(Self {
            _background: Some(stop.drop_guard()),
            _lock: lock,
            ..store
        })
    }
}

/// Ends the leases of runs an earlier process left approved or running. Holding the lock, this
/// process is the file's one user, so whoever took those leases is dead: without this their
/// runs would wait out the rest of a lease (a minute) before the first sweep may report them
/// interrupted; with it, the sweep at start does. Nothing re-runs them.
async fn lapse_dead_leases(pool: &SqlitePool) -> Result<(), StoreError> {
    let lapsed = sqlx::query(
        "UPDATE runs SET lease_until = 0 WHERE state IN ('approved', 'running') \
         AND lease_until IS NOT NULL",
    )
    .execute(pool)
    .await
    .map_err(backend)?
    .rows_affected();
    if lapsed > 0 {
        tracing::warn!(
            runs = lapsed,
            "runs were left approved or running by an opsbot that stopped; they are reported as interrupted now"
        );
    }
    Ok(())
}

/// Takes the OS lock on `<db>.lock` beside the database file. The kernel drops it when the file closes, so a killed opsbot never leaves it behind; the
/// file is opened close-on-exec, so runbook processes do not inherit it.
fn lock_beside(db: &Path) -> Result<File, StoreError> {
    let mut path = db.as_os_str().to_owned();
    path.push(".lock");
    let path = PathBuf::from(path);
    let cannot =
        |e: std::io::Error| StoreError::Unavailable(format!("cannot lock {}: {e}", path.display()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(cannot)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StoreError::Unavailable(format!(
            "another opsbot is using the SQLite database {} (it holds {}): stop it first; \
             only one `serve` or `chat` may use a SQLite file at a time (`audit` and \
             `postmortem` may read beside it); run replicas on Postgres",
            db.display(),
            path.display()
        ))),
        Err(TryLockError::Error(e)) => Err(cannot(e)),
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
    /// Another store on the same file (one opened `Access::Shared` beside `serve`) may move
    /// the head; then the batch is chained again inside `BEGIN IMMEDIATE` after reading it.
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
