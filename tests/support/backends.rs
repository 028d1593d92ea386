//! One suite, both stores: [`Backend`] is SQLite on a temp file or Postgres on a fresh
//! schema (a test run without Postgres skips with a reason, or fails with `CI=true`), and
//! `on_both_backends!` defines a `sqlite_…` and a `postgres_…` test for each shared case.

use std::sync::Arc;

use opsbot::ports::Store;
use opsbot::store::{PostgresStore, SqliteStore};
use tempfile::TempDir;

/// A store under test plus raw access to its database (for tampering, or a second
/// connection as another replica would hold).
pub enum Backend {
    Sqlite {
        store: Arc<SqliteStore>,
        _dir: TempDir,
    },
    Postgres {
        store: Arc<PostgresStore>,
        schema: String,
    },
}

impl Backend {
    pub async fn sqlite() -> Backend {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("store.db").display());
        let store = SqliteStore::open(&url).await.expect("open sqlite store");
        Backend::Sqlite {
            store: Arc::new(store),
            _dir: dir,
        }
    }

    /// `None` (after printing why) when Postgres is unreachable outside CI.
    pub async fn postgres() -> Option<Backend> {
        let schema = super::fresh_postgres_schema().await?;
        let store = PostgresStore::connect(&super::postgres_url(), 8, Some(&schema))
            .await
            .expect("connect postgres store");
        Some(Backend::Postgres {
            store: Arc::new(store),
            schema,
        })
    }

    pub fn store(&self) -> Arc<dyn Store> {
        match self {
            Backend::Sqlite { store, .. } => store.clone(),
            Backend::Postgres { store, .. } => store.clone(),
        }
    }

    /// The Postgres schema the store lives in; `None` on SQLite.
    pub fn schema(&self) -> Option<&str> {
        match self {
            Backend::Sqlite { .. } => None,
            Backend::Postgres { schema, .. } => Some(schema),
        }
    }

    /// Runs one statement directly against the database, bypassing the store.
    pub async fn exec(&self, sql: &str) -> Result<u64, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self {
            Backend::Sqlite { store, .. } => Ok(sqlx::query(sql)
                .execute(store.pool())
                .await?
                .rows_affected()),
            Backend::Postgres { store, .. } => Ok(sqlx::query(sql)
                .execute(store.pool())
                .await?
                .rows_affected()),
        }
    }

    /// Drops a passing test's Postgres schema (a failing test's is kept for inspection).
    pub async fn cleanup(self) {
        if let Backend::Postgres { store, schema } = self {
            store.pool().close().await;
            super::drop_postgres_schema(&schema).await;
        }
    }
}

/// Defines `sqlite_<case>` and `postgres_<case>` tests running the shared `case(&Backend)`.
#[allow(unused_macros)] // only the store suites use it
macro_rules! on_both_backends {
    ($($case:ident => $sqlite:ident, $postgres:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $sqlite() {
            let backend = $crate::support::Backend::sqlite().await;
            $case(&backend).await;
            backend.cleanup().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $postgres() {
            let Some(backend) = $crate::support::Backend::postgres().await else {
                return;
            };
            $case(&backend).await;
            backend.cleanup().await;
        }
    )*};
}
#[allow(unused_imports)]
pub(crate) use on_both_backends;
