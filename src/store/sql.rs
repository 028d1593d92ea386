//! What the shared SQL needs from a database: [`Backend`] names, once, every Rust type the
//! queries bind and every row they read, so the store methods are plain functions generic
//! over the database (`DB: Backend`) instead of one macro expansion per backend.

use sqlx::query::Query;
use sqlx::query_builder::Separated;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, Type};

use super::alerts::{AlertRow, DueRow, SilenceRow};
use super::escalations::{EscalationRow, PageRow};
use super::incidents::{IncidentRow, TimelineRow};
use super::oncall::OverrideRow;
use super::outbox::{DepthRow, OutboxRow};
use super::runs::{RunRow, StepRow};
use super::{AuditRow, backend};
use futures_util::future::BoxFuture;

use crate::ports::{OutboxSignal, StoreError};

/// A query being built for `DB`.
pub(crate) type Q<'q, DB> = Query<'q, DB, <DB as Database>::Arguments>;

/// A `&T` can be bound as a parameter. A trait on the database rather than a bound on `T`,
/// because Rust carries supertraits of [`Backend`] to its users but not where-clauses; and
/// taken by reference so that `T` (`str`, not `&'a str`) names no lifetime, which async
/// code would otherwise have to prove for every lifetime.
pub(crate) trait Bind<T: ?Sized>: Database {
    fn bind<'q>(q: Q<'q, Self>, value: &T) -> Q<'q, Self>;
    fn push(row: &mut Separated<'_, Self, &'static str>, value: &T);
}

impl<DB: Database, T: ?Sized> Bind<T> for DB
where
    for<'a> &'a T: Encode<'a, DB> + Type<DB>,
{
    fn bind<'q>(q: Q<'q, Self>, value: &T) -> Q<'q, Self> {
        q.bind(value)
    }

    fn push(row: &mut Separated<'_, Self, &'static str>, value: &T) {
        row.push_bind(value);
    }
}

/// A row of type `R` can be read from this database's rows.
pub(crate) trait ReadRow<R>: Database {
    fn decode(row: &Self::Row) -> Result<R, sqlx::Error>;
}

impl<DB: Database, R> ReadRow<R> for DB
where
    R: for<'r> FromRow<'r, DB::Row>,
{
    fn decode(row: &Self::Row) -> Result<R, sqlx::Error> {
        R::from_row(row)
    }
}

/// Statements can run on the database's pools and connections.
pub(crate) trait Execute: Database {
    fn on_pool(pool: &Pool<Self>) -> impl Executor<'_, Database = Self>;
    fn on_conn(conn: &mut Self::Connection) -> impl Executor<'_, Database = Self>;
}

impl<DB: Database> Execute for DB
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    fn on_pool(pool: &Pool<Self>) -> impl Executor<'_, Database = Self> {
        pool
    }

    fn on_conn(conn: &mut Self::Connection) -> impl Executor<'_, Database = Self> {
        conn
    }
}

/// SQLite and Postgres: every statement in `store/` is written once, in the SQL both accept
/// (`$N` placeholders, `RETURNING`, `ON CONFLICT ... DO UPDATE/NOTHING`, `excluded.`, window
/// functions), with [`Backend::SEVERITY`] the one fragment each spells its own way.
pub(crate) trait Backend:
    Execute
    + Database<Arguments: IntoArguments<Self>, QueryResult: RowsAffected>
    + Bind<i64>
    + Bind<Option<i64>>
    + Bind<i32>
    + Bind<Option<i32>>
    + Bind<bool>
    + Bind<str>
    + Bind<String>
    + Bind<Option<String>>
    + ReadRow<(i64,)>
    + ReadRow<(String,)>
    + ReadRow<(i64, String)>
    + ReadRow<(String, String)>
    + ReadRow<(String, i64)>
    + ReadRow<(i64, String, i64)>
    + ReadRow<(String, String, i64)>
    + ReadRow<AuditRow>
    + ReadRow<RunRow>
    + ReadRow<StepRow>
    + ReadRow<AlertRow>
    + ReadRow<DueRow>
    + ReadRow<SilenceRow>
    + ReadRow<IncidentRow>
    + ReadRow<TimelineRow>
    + ReadRow<OutboxRow>
    + ReadRow<DepthRow>
    + ReadRow<OverrideRow>
    + ReadRow<EscalationRow>
    + ReadRow<PageRow>
{
    /// An alert row's `severity` label as text, or NULL (labels are a JSON object in TEXT;
    /// the one expression the backends spell differently).
    const SEVERITY: &'static str;
    /// What ends a `SELECT` that picks rows to claim: Postgres locks them and passes over
    /// rows another claimer holds (`FOR UPDATE SKIP LOCKED`), so racing claimers each get
    /// other rows, without waiting for or losing any to the race; SQLite runs one writer
    /// at a time and has no such clause.
    const SKIP_LOCKED: &'static str;
    /// See [`crate::ports::OutboxStore::watch_queued`].
    fn watch_queued(pool: &Pool<Self>, signal: OutboxSignal) -> Option<BoxFuture<'static, ()>>;
}

impl Backend for sqlx::Sqlite {
    const SEVERITY: &'static str = "json_extract(labels, '$.severity')";
    const SKIP_LOCKED: &'static str = "";
    fn watch_queued(_: &Pool<Self>, _: OutboxSignal) -> Option<BoxFuture<'static, ()>> {
        None
    }
}
impl Backend for sqlx::Postgres {
    const SEVERITY: &'static str = "(labels::json ->> 'severity')";
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";
    fn watch_queued(pool: &Pool<Self>, signal: OutboxSignal) -> Option<BoxFuture<'static, ()>> {
        Some(Box::pin(super::postgres::forward_queued(pool, signal)))
    }
}

/// The one thing the backends' query results do not share a trait for.
pub(crate) trait RowsAffected {
    fn rows_affected(&self) -> u64;
}

impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

/// `.arg(v)`: binds `v` through [`Bind`], where a generic `DB` cannot call `.bind(v)`.
pub(crate) trait Arg<DB: Database>: Sized {
    fn arg<T: ?Sized>(self, value: &T) -> Self
    where
        DB: Bind<T>;
}

impl<DB: Database> Arg<DB> for Q<'_, DB> {
    fn arg<T: ?Sized>(self, value: &T) -> Self
    where
        DB: Bind<T>,
    {
        <DB as Bind<T>>::bind(self, value)
    }
}

/// Runs `q`; how many rows it changed.
pub(crate) async fn execute<'e, DB: Backend>(
    ex: impl Executor<'e, Database = DB>,
    q: Q<'e, DB>,
) -> Result<u64, StoreError> {
    let done = ex.execute(q).await.map_err(backend)?;
    Ok(done.rows_affected())
}

/// Runs `q`; whether it changed exactly one row (a conditional update that applied).
pub(crate) async fn changed_one<'e, DB: Backend>(
    ex: impl Executor<'e, Database = DB>,
    q: Q<'e, DB>,
) -> Result<bool, StoreError> {
    Ok(execute(ex, q).await? == 1)
}

pub(crate) async fn fetch_all<'e, DB: Backend + ReadRow<R>, R>(
    ex: impl Executor<'e, Database = DB>,
    q: Q<'e, DB>,
) -> Result<Vec<R>, StoreError> {
    let rows = ex.fetch_all(q).await.map_err(backend)?;
    rows.iter().map(decode::<DB, R>).collect()
}

pub(crate) async fn fetch_optional<'e, DB: Backend + ReadRow<R>, R>(
    ex: impl Executor<'e, Database = DB>,
    q: Q<'e, DB>,
) -> Result<Option<R>, StoreError> {
    let row = ex.fetch_optional(q).await.map_err(backend)?;
    row.as_ref().map(decode::<DB, R>).transpose()
}

fn decode<DB: Backend + ReadRow<R>, R>(row: &DB::Row) -> Result<R, StoreError> {
    <DB as ReadRow<R>>::decode(row).map_err(backend)
}

pub(crate) async fn fetch_one<'e, DB: Backend + ReadRow<R>, R>(
    ex: impl Executor<'e, Database = DB>,
    q: Q<'e, DB>,
) -> Result<R, StoreError> {
    fetch_optional(ex, q)
        .await?
        .ok_or_else(|| backend(sqlx::Error::RowNotFound))
}
