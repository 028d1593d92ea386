//! For the benches: knobs from the environment, limits no bench reaches, and a Postgres
//! database of the bench's own, created for a run and dropped after it.

use sqlx::Connection as _;

/// Rate limits no bench run reaches: every command it sends is admitted.
#[allow(dead_code)] // not every bench sends commands
pub const UNLIMITED: &str = "[limits]\nglobal = \"1000000/s\"\nper_user = \"1000000/s\"\n\
     per_channel = \"1000000/s\"\nper_command = \"1000000/s\"\n";

/// The environment variable `name` parsed, or `default`.
pub fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A database of its own on the server at `server`; returns its URL.
pub async fn fresh_database(server: &str, name: &str) -> String {
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
        .await
        .expect("Postgres for the bench (OPSBOT_BENCH_POSTGRES_URL)");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create the bench database");
    format!("{server}/{name}")
}

pub async fn drop_database(server: &str, name: &str) {
    if let Ok(mut admin) = sqlx::PgConnection::connect(&format!("{server}/postgres")).await {
        let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut admin)
            .await
        {
            println!("could not drop database {name}: {e}");
        }
    }
}
