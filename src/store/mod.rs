//! Store backends behind the `ports::Store` traits: SQLite (the embedded default) and
//! Postgres (for replicas), both one [`SqlStore`] over a different database.
//!
//! Every statement is written once, in the SQL both databases accept (`$N` placeholders,
//! `RETURNING`, `ON CONFLICT`, `excluded.`), in plain `async fn`s generic over
//! `DB: sql::Backend`: that trait lists, once, each Rust type the statements bind and each
//! row they read, so the methods need no per-backend copy, macro or where-clause. (sqlx's
//! `Any` driver was the alternative; it would convert every value at run time and hide the
//! pool types the tests and SQLite's own set-up use.) What really differs per database —
//! connection options, migrations, how audit writers are serialized — lives in `sqlite.rs`
//! and `postgres.rs`. Both share the group-commit audit writer in [`batch`].

pub(crate) mod alerts;
mod audit;
mod batch;
pub(crate) mod escalations;
pub(crate) mod incidents;
mod leases;
pub mod nodelay;
mod oncall;
pub(crate) mod outbox;
pub mod postgres;
pub(crate) mod runs;
mod schedules;
mod sql;
pub mod sqlite;

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use sqlx::migrate::{Migrate, Migrator};
use sqlx::{Database, Executor, Pool};
use tokio_util::sync::DropGuard;

use self::batch::{AuditBatcher, BatchWrite, IngestBatcher};
use self::sql::Backend;

use crate::domain::{AuditEntry, AuditRecord, RequestId};
use crate::ports::{Store, StoreError};

/// Columns of `audit_log` in the order [`record_from_parts`] takes them.
pub(crate) const SELECT_AUDIT: &str = "SELECT seq, request_id, at, actor, channel, command, args, outcome, detail, prev_hash, hash FROM audit_log";

/// A store on one database. [`SqliteStore::open`] and [`PostgresStore::connect`] build one.
pub struct SqlStore<DB: Database> {
    pool: Pool<DB>,
    batcher: AuditBatcher,
    ingest: IngestBatcher,
    /// The backend's writer, for the writes that do not batch (delivery ids).
    writes: Arc<dyn BatchWrite>,
    /// Stops the backend's background work (SQLite's checkpointer) when the store goes away.
    _background: Option<DropGuard>,
    /// SQLite's `<db>.lock`, locked while an exclusive store lives (see `sqlite.rs`).
    _lock: Option<std::fs::File>,
}

/// Whether a process opens the store as its one user or beside one. Only SQLite tells them
/// apart (Postgres serves every replica alike).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Access {
    /// `serve`, `chat` and `migrate`: refused while another such process has the SQLite file.
    #[default]
    Exclusive,
    /// Readers (`audit`, `postmortem`, `check-config --connect`): work beside a running `serve`.
    Shared,
}

pub type SqliteStore = SqlStore<sqlx::Sqlite>;
pub type PostgresStore = SqlStore<sqlx::Postgres>;

impl<DB: Database> SqlStore<DB> {
    /// The pool, for tests that need to reach under the trait (e.g. to tamper with records).
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// What both backends do once connected: apply the migrations, then start the audit writer.
    async fn migrated(
        pool: Pool<DB>,
        migrations: Migrator,
        writer: impl BatchWrite,
    ) -> Result<Self, StoreError>
    where
        DB::Connection: Migrate,
    {
        migrations.run(&pool).await.map_err(migrate_error)?;
        let writes: Arc<dyn BatchWrite> = Arc::new(writer);
        Ok(Self {
            pool,
            batcher: AuditBatcher::spawn(writes.clone()),
            ingest: IngestBatcher::spawn(writes.clone()),
            writes,
            _background: None,
            _lock: None,
        })
    }
}

/// Where a store's statements outside a transaction run. (A trait rather than an inherent
/// method: `Backend` is crate-private and `SqlStore` is public.)
pub(crate) trait OnPool<DB> {
    fn ex(&self) -> impl Executor<'_, Database = DB>;
}

impl<DB: Backend> OnPool<DB> for SqlStore<DB> {
    fn ex(&self) -> impl Executor<'_, Database = DB> {
        DB::on_pool(&self.pool)
    }
}

/// Opens the store named by `database_url` and applies its migrations.
pub async fn connect(
    database_url: &SecretString,
    max_connections: u32,
    access: Access,
) -> Result<Arc<dyn Store>, StoreError> {
    let url = database_url.expose_secret();
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open_as(url, access).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            PostgresStore::connect(url, max_connections, None).await?,
        ))
    } else {
        Err(StoreError::Unavailable(
            "database_url must start with sqlite: or postgres://".into(),
        ))
    }
}

/// Maps a sqlx error onto the store boundary. Connection-level failures are `Unavailable`.
pub(crate) fn backend(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => StoreError::Unavailable(e.to_string()),
        other => StoreError::Backend(Box::new(other)),
    }
}

pub(crate) fn migrate_error(e: sqlx::migrate::MigrateError) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// One `audit_log` row as stored, for both backends.
#[derive(sqlx::FromRow)]
pub(crate) struct AuditRow {
    seq: i64,
    request_id: String,
    at: i64,
    actor: String,
    channel: String,
    command: String,
    args: String,
    outcome: String,
    detail: String,
    prev_hash: String,
    hash: String,
}

impl AuditRow {
    /// Rebuilds the record; a value the domain cannot read is `Corrupt`.
    pub(crate) fn into_record(self) -> Result<AuditRecord, StoreError> {
        let seq = self.seq;
        let at = chrono::DateTime::from_timestamp_micros(self.at).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "audit record #{seq}: timestamp {} out of range",
                self.at
            ))
        })?;
        let outcome = self
            .outcome
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("audit record #{seq}: {e}")))?;
        Ok(AuditRecord {
            seq,
            entry: AuditEntry {
                request_id: RequestId::from_stored(self.request_id),
                at,
                actor: self.actor,
                channel: self.channel,
                command: self.command,
                args: self.args,
                outcome,
                detail: self.detail,
            },
            prev_hash: self.prev_hash,
            hash: self.hash,
        })
    }
}
