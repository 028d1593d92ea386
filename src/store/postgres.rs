//! Postgres backend, for teams running several replicas. Audit appends take a transaction-
//! scoped advisory lock so replicas extend one hash chain without forking it.

use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Connection as _;
use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use tracing::{debug, warn};

use super::alerts::{ALERT_CONFLICT, BUMP_GROUP, INSERT_ALERTS, json_map, record_delivery};
use super::audit::append_to_chain;
use super::batch::BatchWrite;
use super::{PostgresStore, backend};
use crate::domain::{AuditEntry, AuditRecord, IncomingAlert, Platform};
use crate::ports::{OutboxId, OutboxSignal, StoreError};

/// The channel the outbox's trigger notifies on each insert (migrations 0021, 0026), one per
/// schema.
const OUTBOX_CHANNEL: &str = "SELECT 'opsbot_outbox_' || left(md5(current_schema()), 16)";

/// How long the first connection may take before the server counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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
        first_connection(&options).await?;
        // sqlx leaves Nagle's algorithm on (see `nodelay`).
        let tcp_port = options.get_socket().is_none().then(|| options.get_port());
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |_, _| {
                Box::pin(async move {
                    if let Some(port) = tcp_port {
                        super::nodelay::set_on_sockets_to(port);
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(backend)?;
        let writer = Writer { pool: pool.clone() };
        Self::migrated(pool, sqlx::migrate!("migrations/postgres"), writer).await
    }
}

/// Connects once, directly, before the pool does: the pool retries a failed connection until
/// its acquire timeout and then says only "pool timed out", hiding the cause.
async fn first_connection(options: &PgConnectOptions) -> Result<(), StoreError> {
    let server = format!("{}:{}", options.get_host(), options.get_port());
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(options)).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(e)) => Err(StoreError::Unavailable(connect_failure(
            &e, options, &server,
        ))),
        Err(_) => Err(StoreError::Unavailable(format!(
            "Postgres at {server} did not answer within {}s; check the host and port in \
             store.database_url and that no firewall drops opsbot's connections",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// The cause of a failed connection and what to check, in one sentence without the password.
fn connect_failure(e: &sqlx::Error, options: &PgConnectOptions, server: &str) -> String {
    let database = options.get_database().unwrap_or(options.get_username());
    match e {
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => format!(
            "connection refused by {server}: is Postgres running there, listening on that \
             address and port (listen_addresses, port in postgresql.conf)?"
        ),
        sqlx::Error::Io(io) => format!(
            "cannot reach Postgres at {server}: {io}; check the host and port in store.database_url"
        ),
        sqlx::Error::Tls(tls) => format!(
            "TLS with Postgres at {server} failed: {tls}; check sslmode in store.database_url"
        ),
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("3D000") => format!(
                "database {database:?} does not exist on {server}; create it (createdb \
                 {database}) or fix the database name in store.database_url"
            ),
            Some("28P01" | "28000") => format!(
                "Postgres at {server} refused user {:?}: {}; check the user and password in \
                 store.database_url (and pg_hba.conf)",
                options.get_username(),
                db.message()
            ),
            _ => format!(
                "Postgres at {server} refused the connection: {}",
                db.message()
            ),
        },
        other => format!("cannot connect to Postgres at {server}: {other}"),
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

    async fn ingest(
        &self,
        alerts: &[&IncomingAlert],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        upsert_alerts(&self.pool, alerts, now).await
    }

    fn merges_deliveries(&self) -> bool {
        false
    }

    async fn first_delivery(
        &self,
        platform: Platform,
        event_id: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        record_delivery::<Postgres>(&mut conn, platform, event_id, at).await
    }
}

/// Stores alerts and marks their groups as changed, in group order (so concurrent deliveries
/// lock group rows in one order), as one statement whatever their number: each column
/// travels as one array, so the text never changes and each connection parses it once (sqlx
/// keeps it prepared) instead of a multi-row VALUES list whose text, ~1,200 parameters and
/// plan change with the row count; and one statement is atomic without a transaction.
static UPSERT_ALERTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH stored AS ({INSERT_ALERTS}SELECT f, s, g, st, l, a, sa, ea, u, $10::int8, \
         $10::int8, CASE WHEN st = 'resolved' THEN $10::int8 END \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
         $7::int8[], $8::int8[], $9::text[]) AS t(f, s, g, st, l, a, sa, ea, u)\
         {ALERT_CONFLICT} RETURNING group_key) \
         INSERT INTO alert_groups (group_key, version, delivered) \
         SELECT DISTINCT group_key, 1, 0 FROM stored ORDER BY group_key{BUMP_GROUP}"
    )
});

/// Stores `alerts` (distinct fingerprints, in fingerprint order) with [`UPSERT_ALERTS`].
async fn upsert_alerts(
    pool: &PgPool,
    alerts: &[&IncomingAlert],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let text = |f: fn(&IncomingAlert) -> &str| alerts.iter().map(|a| f(a)).collect::<Vec<_>>();
    let json = |f: fn(&IncomingAlert) -> &std::collections::BTreeMap<String, String>| {
        alerts.iter().map(|a| json_map(f(a))).collect::<Vec<_>>()
    };
    let starts: Vec<i64> = alerts
        .iter()
        .map(|a| a.starts_at.timestamp_micros())
        .collect();
    let ends: Vec<Option<i64>> = alerts
        .iter()
        .map(|a| a.ends_at.map(|t| t.timestamp_micros()))
        .collect();
    let urls: Vec<Option<&str>> = alerts.iter().map(|a| a.generator_url.as_deref()).collect();
    sqlx::query(UPSERT_ALERTS.as_str())
        .bind(text(|a| &a.fingerprint))
        .bind(text(|a| a.source.as_str()))
        .bind(text(|a| &a.group_key))
        .bind(text(|a| a.status.as_str()))
        .bind(json(|a| &a.labels))
        .bind(json(|a| &a.annotations))
        .bind(starts)
        .bind(ends)
        .bind(urls)
        .bind(now.timestamp_micros())
        .execute(pool)
        .await
        .map(drop)
        .map_err(backend)
}

/// Wakes `signal` on every notification of the outbox's channel ([`OUTBOX_CHANNEL`]), and after each reconnection
/// (what was queued while the connection was down went unheard), until dropped. Listens on a
/// connection of its own, outside the pool the store's statements share. A listener that
/// cannot connect tries again every second; the deliverer's poll covers the gap.
pub(super) fn forward_queued(
    pool: &PgPool,
    signal: OutboxSignal,
) -> impl Future<Output = ()> + Send + 'static {
    let own = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with((*pool.connect_options()).clone());
    async move {
        let mut failing = false;
        loop {
            let ended = forward_until_error(&own, &signal, &mut failing).await;
            // Not listening: producers' own wakes are all the deliverer hears until it is.
            signal.store_notifies(false);
            if let Err(e) = ended {
                // Once per outage: the poll still delivers, only later.
                if !failing {
                    warn!(error = %e, "cannot listen for outbox messages queued by other replicas; they go out at the next poll; retrying");
                }
                debug!(error = %e, "listening for queued outbox messages failed; retrying");
                failing = true;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

async fn forward_until_error(
    pool: &PgPool,
    signal: &OutboxSignal,
    failing: &mut bool,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    let channel: String = sqlx::query_scalar(OUTBOX_CHANNEL)
        .fetch_one(&mut listener)
        .await?;
    listener.listen(&channel).await?;
    *failing = false;
    signal.store_notifies(true);
    signal.wake_unnamed();
    loop {
        match listener.try_recv().await? {
            Some(notice) => wake_for_payload(signal, notice.payload()),
            // The connection was lost and made again (eager reconnect): rows queued
            // meanwhile went unheard.
            None => signal.wake_unnamed(),
        }
    }
}

/// Wakes `signal` for the rows a notice names (migration 0026: their ids, comma-separated),
/// or for anything when it names none or cannot be read.
fn wake_for_payload(signal: &OutboxSignal, payload: &str) {
    let ids: Option<Vec<OutboxId>> = (!payload.is_empty())
        .then(|| {
            payload
                .split(',')
                .map(|id| id.parse().ok().map(OutboxId))
                .collect()
        })
        .flatten();
    match ids {
        Some(ids) => signal.wake_for(ids),
        None => signal.wake_unnamed(),
    }
}
