//! Alerts, group messages and silences in SQL: `ports::AlertStore` for both backends, and
//! how `alerts` and `silences` rows map to the domain.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::outbox::insert_queued;
use super::sql::{Arg, Backend, changed_one, execute, fetch_all, fetch_one, fetch_optional};
use super::{OnPool, SqlStore, backend};
use crate::domain::{Alert, AlertId, IncomingAlert, Matcher, Platform, Silence};
use crate::ports::{AlertStore, DeliveryLog, FiringCount, PostClaim, Queued, StoreError};

pub(crate) const SELECT_ALERT: &str = "SELECT id, fingerprint, source, group_key, status, labels, annotations, \
     starts_at, ends_at, generator_url, first_seen, last_seen, acked_by, acked_at, resolved_at FROM alerts";

#[derive(sqlx::FromRow)]
pub(crate) struct AlertRow {
    id: i64,
    fingerprint: String,
    source: String,
    group_key: String,
    status: String,
    labels: String,
    annotations: String,
    starts_at: i64,
    ends_at: Option<i64>,
    generator_url: Option<String>,
    first_seen: i64,
    last_seen: i64,
    acked_by: Option<String>,
    acked_at: Option<i64>,
    resolved_at: Option<i64>,
}

fn corrupt(what: &str, id: i64, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what} #{id}: {e}"))
}

fn time(id: i64, us: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| corrupt("alert", id, format!("timestamp {us} out of range")))
}

pub(crate) fn json_map(m: &BTreeMap<String, String>) -> String {
    serde_json::to_string(m).expect("string maps always serialize")
}

impl AlertRow {
    pub(crate) fn into_alert(self) -> Result<Alert, StoreError> {
        let id = self.id;
        let opt = |us: Option<i64>| us.map(|us| time(id, us)).transpose();
        Ok(Alert {
            id: AlertId(id),
            incoming: IncomingAlert {
                source: self.source.parse().map_err(|e| corrupt("alert", id, e))?,
                fingerprint: self.fingerprint,
                group_key: self.group_key,
                status: self.status.parse().map_err(|e| corrupt("alert", id, e))?,
                labels: serde_json::from_str(&self.labels).map_err(|e| corrupt("alert", id, e))?,
                annotations: serde_json::from_str(&self.annotations)
                    .map_err(|e| corrupt("alert", id, e))?,
                starts_at: time(id, self.starts_at)?,
                ends_at: opt(self.ends_at)?,
                generator_url: self.generator_url,
            },
            first_seen: time(id, self.first_seen)?,
            last_seen: time(id, self.last_seen)?,
            acked_by: self.acked_by,
            acked_at: opt(self.acked_at)?,
            resolved_at: opt(self.resolved_at)?,
        })
    }
}

/// An alert due a reminder, and how many it has had.
#[derive(sqlx::FromRow)]
pub(crate) struct DueRow {
    #[sqlx(flatten)]
    row: AlertRow,
    reminders: i32,
}

#[derive(sqlx::FromRow)]
pub(crate) struct SilenceRow {
    id: i64,
    matchers: String,
    created_by: String,
    reason: String,
    starts_at: i64,
    ends_at: i64,
    upstream_id: Option<String>,
}

impl SilenceRow {
    pub(crate) fn into_silence(self) -> Result<Silence, StoreError> {
        let id = self.id;
        let texts: Vec<String> =
            serde_json::from_str(&self.matchers).map_err(|e| corrupt("silence", id, e))?;
        let matchers = texts
            .iter()
            .map(|t| t.parse::<Matcher>())
            .collect::<Result<_, _>>()
            .map_err(|e| corrupt("silence", id, e))?;
        Ok(Silence {
            id,
            matchers,
            created_by: self.created_by,
            reason: self.reason,
            starts_at: time(id, self.starts_at)?,
            ends_at: time(id, self.ends_at)?,
            upstream_id: self.upstream_id,
        })
    }
}

pub(crate) fn matchers_json(s: &Silence) -> String {
    let texts: Vec<String> = s.matchers.iter().map(ToString::to_string).collect();
    serde_json::to_string(&texts).expect("strings always serialize")
}

/// Alerts per upsert statement: 12 bound values each stays under SQLite's 32,766 limit.
const UPSERT_CHUNK: usize = 1000;

/// Event ids forgotten per call (per sweep, every 15 s): far more than arrive meanwhile.
const FORGET_BATCH: i64 = 5000;

/// What a group leaves behind once its alerts are forgotten: its messages, post claims and
/// change mark, for groups with no alert left and nothing left to deliver (marks last).
const FORGET_GROUPS: [&str; 3] = [
    "DELETE FROM alert_messages WHERE NOT EXISTS (SELECT 1 FROM alerts a \
     WHERE a.group_key = alert_messages.group_key) AND NOT EXISTS (SELECT 1 FROM alert_groups g \
     WHERE g.group_key = alert_messages.group_key AND g.version > g.delivered)",
    "DELETE FROM alert_post_claims WHERE NOT EXISTS (SELECT 1 FROM alerts a \
     WHERE a.group_key = alert_post_claims.group_key) AND NOT EXISTS (SELECT 1 FROM alert_groups g \
     WHERE g.group_key = alert_post_claims.group_key AND g.version > g.delivered)",
    "DELETE FROM alert_groups WHERE version = delivered AND NOT EXISTS (SELECT 1 FROM alerts a \
     WHERE a.group_key = alert_groups.group_key)",
];

/// The columns an upsert of `alerts` writes, in the order both backends supply them.
pub(crate) const INSERT_ALERTS: &str = "INSERT INTO alerts (fingerprint, source, group_key, \
     status, labels, annotations, starts_at, ends_at, generator_url, first_seen, last_seen, \
     resolved_at) ";

/// What storing an alert does to the row of its fingerprint when there is one. A resolved
/// alert that fires again starts a new episode, so its acknowledgement is cleared.
pub(crate) const ALERT_CONFLICT: &str = " ON CONFLICT (fingerprint) DO UPDATE SET \
     group_key = excluded.group_key, \
     labels = excluded.labels, \
     annotations = excluded.annotations, \
     ends_at = excluded.ends_at, \
     generator_url = excluded.generator_url, \
     last_seen = excluded.last_seen, \
     acked_by = CASE WHEN alerts.status = 'resolved' AND excluded.status = 'firing' THEN NULL ELSE alerts.acked_by END, \
     acked_at = CASE WHEN alerts.status = 'resolved' AND excluded.status = 'firing' THEN NULL ELSE alerts.acked_at END, \
     resolved_at = CASE WHEN excluded.status = 'resolved' THEN COALESCE(alerts.resolved_at, excluded.last_seen) END, \
     starts_at = excluded.starts_at, \
     status = excluded.status";

/// One multi-row upsert of `alerts` (distinct fingerprints: Postgres refuses to update a row
/// twice in one statement).
fn push_upsert<DB: Backend>(
    q: &mut sqlx::QueryBuilder<DB>,
    alerts: &[&IncomingAlert],
    now: DateTime<Utc>,
) {
    let now = now.timestamp_micros();
    q.push(INSERT_ALERTS);
    q.push_values(alerts, |mut row, a| {
        let resolved = (a.status == crate::domain::AlertStatus::Resolved).then_some(now);
        for text in [
            a.fingerprint.as_str(),
            a.source.as_str(),
            a.group_key.as_str(),
            a.status.as_str(),
        ] {
            DB::push(&mut row, text);
        }
        DB::push(&mut row, &json_map(&a.labels));
        DB::push(&mut row, &json_map(&a.annotations));
        DB::push(&mut row, &a.starts_at.timestamp_micros());
        DB::push(&mut row, &a.ends_at.map(|t| t.timestamp_micros()));
        DB::push(&mut row, &a.generator_url);
        DB::push(&mut row, &now);
        DB::push(&mut row, &now);
        DB::push(&mut row, &resolved);
    });
    q.push(ALERT_CONFLICT);
}

/// Bumps a group's version (a new group starts pending at 1 with 0 delivered).
pub(crate) const BUMP_GROUP: &str =
    " ON CONFLICT (group_key) DO UPDATE SET version = alert_groups.version + 1";

/// Marks `groups` as changed, in one statement.
fn mark_groups<DB: Backend>(groups: &std::collections::BTreeSet<&str>) -> sqlx::QueryBuilder<DB> {
    let mut q =
        sqlx::QueryBuilder::new("INSERT INTO alert_groups (group_key, version, delivered) ");
    q.push_values(groups, |mut row, g| {
        DB::push(&mut row, *g);
        row.push("1").push("0");
    });
    q.push(BUMP_GROUP);
    q
}

/// Records a platform event id on `conn`; false if it was recorded before.
pub(crate) async fn record_delivery<DB: Backend>(
    conn: &mut DB::Connection,
    platform: Platform,
    event_id: &str,
    at: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let q = sqlx::query(
        "INSERT INTO platform_events (platform, event_id, received_at) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
    )
    .arg(platform.as_str())
    .arg(event_id)
    .arg(&at.timestamp_micros());
    changed_one(DB::on_conn(conn), q).await
}

/// Stores `alerts` (distinct fingerprints) on `conn` and marks their groups as changed, in
/// one transaction: a multi-row upsert per chunk (each statement is a round trip to the
/// driver), then one statement marking the groups. Postgres stores them its own way, in one
/// statement (`store/postgres.rs`).
pub(crate) async fn upsert_on<DB: Backend>(
    conn: &mut DB::Connection,
    alerts: &[&IncomingAlert],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut tx = sqlx::Connection::begin(conn)
        .await
        .map_err(super::backend)?;
    for chunk in alerts.chunks(UPSERT_CHUNK) {
        let mut q = sqlx::QueryBuilder::new("");
        push_upsert(&mut q, chunk, now);
        execute(DB::on_conn(&mut tx), q.build()).await?;
    }
    let groups = alerts.iter().map(|a| a.group_key.as_str()).collect();
    execute(DB::on_conn(&mut tx), mark_groups(&groups).build()).await?;
    tx.commit().await.map_err(super::backend)
}

#[async_trait]
impl<DB: Backend> DeliveryLog for SqlStore<DB> {
    async fn first_delivery(
        &self,
        platform: Platform,
        event_id: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.writes.first_delivery(platform, event_id, at).await
    }

    async fn forget_deliveries_before(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        // In batches, so a large backlog (the first sweep after an upgrade) never
        // holds the table, or SQLite's write lock, for long.
        let q = sqlx::query(
            "DELETE FROM platform_events WHERE (platform, event_id) IN \
             (SELECT platform, event_id FROM platform_events WHERE received_at < $1 LIMIT $2)",
        )
        .arg(&before.timestamp_micros())
        .arg(&FORGET_BATCH);
        execute(self.ex(), q).await
    }
}

#[async_trait]
impl<DB: Backend> AlertStore for SqlStore<DB> {
    async fn ingest_alerts(
        &self,
        alerts: &[IncomingAlert],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // An empty delivery stores nothing (and a VALUES list cannot be empty).
        if alerts.is_empty() {
            return Ok(());
        }
        self.ingest.ingest(alerts.to_vec(), now).await
    }

    async fn alert(&self, id: AlertId) -> Result<Option<Alert>, StoreError> {
        let id = id.0;
        let q = sqlx::query(sqlx::AssertSqlSafe(format!("{SELECT_ALERT} WHERE id = $1"))).arg(&id);
        let row: Option<AlertRow> = fetch_optional(self.ex(), q).await?;
        row.map(AlertRow::into_alert).transpose()
    }

    async fn forget_resolved_before(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let q = sqlx::query(
            "DELETE FROM alerts WHERE id IN (SELECT id FROM alerts WHERE status = 'resolved' \
             AND last_seen < $1 AND id NOT IN (SELECT alert_id FROM incident_alerts) LIMIT $2)",
        )
        .arg(&before.timestamp_micros())
        .arg(&FORGET_BATCH);
        let forgotten = execute(DB::on_conn(&mut tx), q).await?;
        // A group with alerts left, or with a change still to deliver, keeps its message: a
        // new alert in it is an edit, not a second post.
        for sql in FORGET_GROUPS {
            execute(DB::on_conn(&mut tx), sqlx::query(sql)).await?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(forgotten)
    }

    async fn alerts_in_group(&self, group_key: &str) -> Result<Vec<Alert>, StoreError> {
        let sql = format!("{SELECT_ALERT} WHERE group_key = $1 ORDER BY id");
        alerts_where(self, sqlx::query(sqlx::AssertSqlSafe(sql)).arg(group_key)).await
    }

    async fn active_alerts(&self, limit: u32) -> Result<Vec<Alert>, StoreError> {
        let sql = format!(
            "{SELECT_ALERT} WHERE status = 'firing' ORDER BY starts_at DESC, id DESC LIMIT $1"
        );
        alerts_where(
            self,
            sqlx::query(sqlx::AssertSqlSafe(sql)).arg(&i64::from(limit)),
        )
        .await
    }

    async fn firing_count(&self, kinds: u32) -> Result<FiringCount, StoreError> {
        // One scan: counts per severity, each row also carrying the sum over all of them.
        let sql = format!(
            "SELECT COUNT(*), COALESCE(SUBSTR({}, 1, {}), 'none') AS severity, \
             CAST(SUM(COUNT(*)) OVER () AS BIGINT) \
             FROM alerts WHERE status = 'firing' GROUP BY 2 ORDER BY 1 DESC, 2 LIMIT $1",
            DB::SEVERITY,
            FiringCount::SEVERITY_CHARS
        );
        let q = sqlx::query(sqlx::AssertSqlSafe(sql)).arg(&i64::from(kinds));
        let rows: Vec<(i64, String, i64)> = fetch_all(self.ex(), q).await?;
        let count = |n: i64| u64::try_from(n).unwrap_or_default();
        Ok(FiringCount {
            total: rows.first().map_or(0, |(_, _, total)| count(*total)),
            by_severity: rows.into_iter().map(|(n, s, _)| (s, count(n))).collect(),
        })
    }

    async fn ack_alert(
        &self,
        id: AlertId,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let id = id.0;
        let q = sqlx::query(
            "UPDATE alerts SET acked_by = $1, acked_at = $2 \
             WHERE id = $3 AND status = 'firing' AND acked_by IS NULL",
        )
        .arg(by)
        .arg(&at.timestamp_micros())
        .arg(&id);
        changed_one(self.ex(), q).await
    }

    async fn resolve_alert(&self, id: AlertId, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let id = id.0;
        let q = sqlx::query(
            "UPDATE alerts SET status = 'resolved', resolved_at = $1, ends_at = $1 \
             WHERE id = $2 AND status = 'firing'",
        )
        .arg(&at.timestamp_micros())
        .arg(&id);
        changed_one(self.ex(), q).await
    }

    async fn group_message(
        &self,
        group_key: &str,
        platform: Platform,
        channel_id: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let q = sqlx::query(
            "SELECT message_id, last_text FROM alert_messages \
             WHERE group_key = $1 AND platform = $2 AND channel_id = $3",
        )
        .arg(group_key)
        .arg(platform.as_str())
        .arg(channel_id);
        fetch_optional(self.ex(), q).await
    }

    async fn set_group_message(
        &self,
        group_key: &str,
        platform: Platform,
        channel_id: &str,
        message_id: &str,
        text: &str,
    ) -> Result<(), StoreError> {
        let q = sqlx::query(
            "INSERT INTO alert_messages (group_key, platform, channel_id, message_id, last_text) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (group_key, platform, channel_id) \
             DO UPDATE SET message_id = excluded.message_id, last_text = excluded.last_text",
        )
        .arg(group_key)
        .arg(platform.as_str())
        .arg(channel_id)
        .arg(message_id)
        .arg(text);
        execute(self.ex(), q).await.map(drop)
    }

    async fn mark_groups_changed(&self, group_keys: &[String]) -> Result<(), StoreError> {
        let groups: std::collections::BTreeSet<&str> =
            group_keys.iter().map(String::as_str).collect();
        if groups.is_empty() {
            return Ok(());
        }
        execute(self.ex(), mark_groups(&groups).build())
            .await
            .map(drop)
    }

    async fn pending_groups(&self, limit: u32) -> Result<Vec<(String, i64)>, StoreError> {
        let q = sqlx::query(
            "SELECT group_key, version FROM alert_groups WHERE version > delivered \
             ORDER BY group_key LIMIT $1",
        )
        .arg(&i64::from(limit));
        fetch_all(self.ex(), q).await
    }

    async fn group_delivered(&self, group_key: &str, version: i64) -> Result<(), StoreError> {
        let q = sqlx::query(
            "UPDATE alert_groups SET delivered = $2 WHERE group_key = $1 AND delivered < $2",
        )
        .arg(group_key)
        .arg(&version);
        execute(self.ex(), q).await.map(drop)
    }

    async fn claim_group_post(
        &self,
        group_key: &str,
        platform: Platform,
        channel_id: &str,
        claim: &PostClaim<'_>,
    ) -> Result<bool, StoreError> {
        let q = sqlx::query(
            "INSERT INTO alert_post_claims (group_key, platform, channel_id, claimed_by, claimed_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (group_key, platform, channel_id) \
             DO UPDATE SET claimed_by = excluded.claimed_by, claimed_at = excluded.claimed_at \
             WHERE alert_post_claims.claimed_by = excluded.claimed_by \
             OR alert_post_claims.claimed_at < $6",
        )
        .arg(group_key)
        .arg(platform.as_str())
        .arg(channel_id)
        .arg(claim.holder)
        .arg(&claim.at.timestamp_micros())
        .arg(&claim.stale_before.timestamp_micros());
        changed_one(self.ex(), q).await
    }

    async fn alerts_due_reminder(
        &self,
        due_before: DateTime<Utc>,
    ) -> Result<Vec<(Alert, u32)>, StoreError> {
        let select = SELECT_ALERT.replace(" FROM alerts", ", reminders FROM alerts");
        let sql = format!(
            "{select} WHERE status = 'firing' AND acked_by IS NULL \
             AND COALESCE(reminded_at, first_seen) < $1 ORDER BY id LIMIT 10000"
        );
        let q = sqlx::query(sqlx::AssertSqlSafe(sql)).arg(&due_before.timestamp_micros());
        let rows: Vec<DueRow> = fetch_all(self.ex(), q).await?;
        rows.into_iter()
            .map(|d| Ok((d.row.into_alert()?, d.reminders.max(0) as u32)))
            .collect()
    }

    async fn mark_alert_reminded(
        &self,
        id: AlertId,
        previous: u32,
        at: DateTime<Utc>,
        notices: &[Queued],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let q = sqlx::query(
            "UPDATE alerts SET reminded_at = $1, reminders = reminders + 1 WHERE id = $2 AND reminders = $3",
        )
        .arg(&at.timestamp_micros())
        .arg(&id.0)
        .arg(&(previous as i32));
        // Claimed by another replica: dropping the transaction queues nothing.
        if !changed_one(DB::on_conn(&mut tx), q).await? {
            return Ok(false);
        }
        for notice in notices {
            insert_queued::<DB>(&mut tx, notice, at).await?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    async fn group_by_message(
        &self,
        platform: Platform,
        channel_id: &str,
        message_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let q = sqlx::query(
            "SELECT group_key FROM alert_messages WHERE platform = $1 AND channel_id = $2 AND message_id = $3",
        )
        .arg(platform.as_str())
        .arg(channel_id)
        .arg(message_id);
        let row: Option<(String,)> = fetch_optional(self.ex(), q).await?;
        Ok(row.map(|(group_key,)| group_key))
    }

    async fn add_silence(&self, silence: &Silence) -> Result<i64, StoreError> {
        let q = sqlx::query(
            "INSERT INTO silences (matchers, created_by, reason, starts_at, ends_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .arg(&matchers_json(silence))
        .arg(silence.created_by.as_str())
        .arg(silence.reason.as_str())
        .arg(&silence.starts_at.timestamp_micros())
        .arg(&silence.ends_at.timestamp_micros());
        let (id,): (i64,) = fetch_one(self.ex(), q).await?;
        Ok(id)
    }

    async fn set_silence_upstream(&self, id: i64, upstream_id: &str) -> Result<(), StoreError> {
        let q = sqlx::query("UPDATE silences SET upstream_id = $1 WHERE id = $2")
            .arg(upstream_id)
            .arg(&id);
        execute(self.ex(), q).await.map(drop)
    }

    async fn end_silence(&self, id: i64, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let q = sqlx::query("UPDATE silences SET ends_at = $1 WHERE id = $2 AND ends_at > $1")
            .arg(&at.timestamp_micros())
            .arg(&id);
        changed_one(self.ex(), q).await
    }

    async fn active_silences(&self, at: DateTime<Utc>) -> Result<Vec<Silence>, StoreError> {
        let q = sqlx::query(
            "SELECT id, matchers, created_by, reason, starts_at, ends_at, upstream_id FROM silences \
             WHERE starts_at <= $1 AND ends_at > $1 ORDER BY id",
        )
        .arg(&at.timestamp_micros());
        let rows: Vec<SilenceRow> = fetch_all(self.ex(), q).await?;
        rows.into_iter().map(SilenceRow::into_silence).collect()
    }
}

/// The alerts a `SELECT_ALERT ...` query finds (incidents read linked alerts this way too).
pub(crate) async fn alerts_where<DB: Backend>(
    store: &SqlStore<DB>,
    q: super::sql::Q<'_, DB>,
) -> Result<Vec<Alert>, StoreError> {
    let rows: Vec<AlertRow> = fetch_all(store.ex(), q).await?;
    rows.into_iter().map(AlertRow::into_alert).collect()
}
