//! The durable outbox in SQL: `ports::OutboxStore` for both backends, and how a queued
//! message maps to a row (its text and buttons as JSON in `body`, its lane in `urgent`).
//! Producers that decide a message in a store transaction queue it there with
//! [`insert_queued`], so deciding and queuing commit together.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::runs::micros;
use super::sql::{Arg, Backend, Q, changed_one, execute, fetch_all, fetch_one};
use super::{OnPool, SqlStore, backend};
use crate::domain::{Mention, Visibility};
use crate::ports::{
    ChatAction, Claimed, OutboundMessage, OutboundTarget, OutboxDepth, OutboxId, OutboxSignal,
    OutboxStore, Priority, Queued, StoreError,
};

/// How many finished rows one call of `forget_outbox_before` deletes at most, so pruning a
/// large backlog never holds the writer for long.
const FORGET_BATCH: i64 = 1000;

/// What `body` holds: everything of an `OutboundMessage` but its lane (a column) and its
/// visibility (the bot's own posts always go to the channel).
#[derive(Serialize, Deserialize)]
struct Body {
    text: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    actions: Vec<Action>,
    /// Who the message pings on its platform (spans of `text`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    mentions: Vec<Mention>,
}

#[derive(Serialize, Deserialize)]
struct Action {
    label: String,
    command: String,
    #[serde(default)]
    danger: bool,
}

impl Body {
    fn of(message: &OutboundMessage) -> String {
        let body = Body {
            text: message.text.clone(),
            actions: (message.actions.iter())
                .map(|a| Action {
                    label: a.label.clone(),
                    command: a.command.clone(),
                    danger: a.danger,
                })
                .collect(),
            mentions: message.mentions.clone(),
        };
        serde_json::to_string(&body).expect("strings and bools always serialize")
    }

    fn into_message(self, urgent: bool) -> OutboundMessage {
        let actions = (self.actions.into_iter())
            .map(|a| ChatAction {
                label: a.label,
                command: a.command,
                danger: a.danger,
            })
            .collect();
        let mut message = OutboundMessage::text(self.text)
            .with_actions(actions)
            .with_visibility(Visibility::Channel);
        message.mentions = self.mentions;
        if urgent { message.urgent() } else { message }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct OutboxRow {
    id: i64,
    platform: String,
    channel_id: String,
    thread: Option<String>,
    body: String,
    urgent: bool,
    attempts: i32,
    created_at: i64,
    edit_of: Option<String>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct DepthRow {
    pending: i64,
    oldest: Option<i64>,
}

fn corrupt(id: i64, what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("outbox row #{id}: {what}"))
}

impl OutboxRow {
    fn into_claimed(self) -> Result<Claimed, StoreError> {
        let id = self.id;
        let body: Body = serde_json::from_str(&self.body).map_err(|e| corrupt(id, e))?;
        Ok(Claimed {
            id: OutboxId(id),
            queued: Queued {
                to: OutboundTarget {
                    platform: self.platform.parse().map_err(|e| corrupt(id, e))?,
                    channel_id: self.channel_id,
                    thread: self.thread,
                },
                message: body.into_message(self.urgent),
                edit_of: self.edit_of,
                // Binding happens in the store when it is marked delivered.
                binds_run: None,
            },
            attempts: u32::try_from(self.attempts).map_err(|e| corrupt(id, e))?,
            created_at: DateTime::from_timestamp_micros(self.created_at).ok_or_else(|| {
                corrupt(id, format!("timestamp {} out of range", self.created_at))
            })?,
        })
    }
}

/// Runs `claim` (a conditional insert or update) and, when it changed one row, queues
/// `notices` in the same transaction; false, with nothing queued, when it changed none (the
/// claim was taken already, here or by another replica).
pub(crate) async fn claim_queuing<DB: Backend>(
    pool: &sqlx::Pool<DB>,
    claim: Q<'_, DB>,
    notices: &[Queued],
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await.map_err(backend)?;
    // Dropping the transaction unclaimed queues nothing.
    if !changed_one(DB::on_conn(&mut tx), claim).await? {
        return Ok(false);
    }
    for notice in notices {
        insert_queued::<DB>(&mut tx, notice, now).await?;
    }
    tx.commit().await.map_err(backend)?;
    Ok(true)
}

/// Queues `queued` on `conn` (a connection, or the transaction that decided it), due at
/// `now`. An edit first retires the pending edits of the same message it makes pointless.
pub(crate) async fn insert_queued<DB: Backend>(
    conn: &mut DB::Connection,
    queued: &Queued,
    now: DateTime<Utc>,
) -> Result<OutboxId, StoreError> {
    let to = &queued.to;
    if let Some(message_id) = &queued.edit_of {
        let q = sqlx::query(
            "UPDATE outbox SET state = 'done', last_error = 'superseded' \
             WHERE state = 'pending' AND edit_of = $1 AND platform = $2 AND channel_id = $3",
        )
        .arg(message_id.as_str())
        .arg(to.platform.as_str())
        .arg(to.channel_id.as_str());
        execute(DB::on_conn(conn), q).await?;
    }
    let q = sqlx::query(
        "INSERT INTO outbox (platform, channel_id, thread, body, urgent, created_at, next_attempt_at, edit_of, binds_run) \
         VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8) RETURNING id",
    )
    .arg(to.platform.as_str())
    .arg(to.channel_id.as_str())
    .arg(&to.thread)
    .arg(&Body::of(&queued.message))
    .arg(&(queued.message.priority == Priority::Urgent))
    .arg(&micros(now))
    .arg(&queued.edit_of)
    .arg(&queued.binds_run.map(|r| r.0));
    let (id,): (i64,) = fetch_one(DB::on_conn(conn), q).await?;
    Ok(OutboxId(id))
}

/// Claims by moving the due time forward. On Postgres the subquery locks the rows it picks
/// and skips those a concurrent claim holds, so racing claimers take disjoint rows and each
/// still fills its batch; the outer `state`/`next_attempt_at` test is the guard that holds
/// on both backends (SQLite runs one writer at a time), so a row goes to one claim.
fn claim_sql<DB: Backend>() -> String {
    format!(
        "UPDATE outbox SET next_attempt_at = $1, attempts = attempts + 1 \
         WHERE state = 'pending' AND next_attempt_at <= $2 AND id IN ( \
           SELECT id FROM outbox WHERE state = 'pending' AND next_attempt_at <= $2 \
           ORDER BY urgent DESC, id LIMIT $3{}) \
         RETURNING id, platform, channel_id, thread, body, urgent, attempts, created_at, edit_of",
        DB::SKIP_LOCKED
    )
}

#[async_trait]
impl<DB: Backend> OutboxStore for SqlStore<DB> {
    async fn enqueue(&self, queued: &Queued, now: DateTime<Utc>) -> Result<OutboxId, StoreError> {
        // One transaction, so an edit and the older edits it supersedes change together.
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let id = insert_queued::<DB>(&mut tx, queued, now).await?;
        tx.commit().await.map_err(backend)?;
        Ok(id)
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        hold: Duration,
        limit: u32,
    ) -> Result<Vec<Claimed>, StoreError> {
        let hold = chrono::Duration::from_std(hold)
            .map_err(|e| StoreError::Corrupt(format!("outbox hold {hold:?}: {e}")))?;
        let q = sqlx::query(sqlx::AssertSqlSafe(claim_sql::<DB>()))
            .arg(&micros(now + hold))
            .arg(&micros(now))
            .arg(&i64::from(limit));
        let rows: Vec<OutboxRow> = fetch_all(self.ex(), q).await?;
        let mut claimed = (rows.into_iter())
            .map(OutboxRow::into_claimed)
            .collect::<Result<Vec<_>, _>>()?;
        // RETURNING keeps no order.
        claimed.sort_by_key(|c| (c.queued.message.priority != Priority::Urgent, c.id));
        Ok(claimed)
    }

    async fn mark_delivered(&self, id: OutboxId, message_id: &str) -> Result<bool, StoreError> {
        let q = sqlx::query(
            "UPDATE outbox SET state = 'done', message_id = $1, last_error = NULL \
             WHERE id = $2 AND state = 'pending'",
        )
        .arg(message_id)
        .arg(&id.0);
        let delivered = changed_one(self.ex(), q).await?;
        if delivered {
            // A gate's approval request posted from the background: reactions on the message
            // find the request once it is bound (before, `/approve` and the buttons work).
            let bind = sqlx::query(
                "UPDATE runs SET message_id = $1 WHERE message_id IS NULL AND id = \
                 (SELECT binds_run FROM outbox WHERE id = $2)",
            )
            .arg(message_id)
            .arg(&id.0);
            execute(self.ex(), bind).await?;
        }
        Ok(delivered)
    }

    async fn retry_at(
        &self,
        id: OutboxId,
        at: DateTime<Utc>,
        error: &str,
    ) -> Result<bool, StoreError> {
        let q = sqlx::query(
            "UPDATE outbox SET next_attempt_at = $1, last_error = $2 \
             WHERE id = $3 AND state = 'pending'",
        )
        .arg(&micros(at))
        .arg(error)
        .arg(&id.0);
        changed_one(self.ex(), q).await
    }

    async fn give_up(&self, id: OutboxId, error: &str) -> Result<bool, StoreError> {
        let q = sqlx::query(
            "UPDATE outbox SET state = 'given_up', last_error = $1 \
             WHERE id = $2 AND state = 'pending'",
        )
        .arg(error)
        .arg(&id.0);
        changed_one(self.ex(), q).await
    }

    async fn outbox_depth(&self) -> Result<OutboxDepth, StoreError> {
        let q = sqlx::query(
            "SELECT COUNT(*) AS pending, MIN(created_at) AS oldest FROM outbox \
             WHERE state = 'pending'",
        );
        let row: DepthRow = fetch_one(self.ex(), q).await?;
        Ok(OutboxDepth {
            pending: u64::try_from(row.pending).unwrap_or(0),
            oldest: row.oldest.and_then(DateTime::from_timestamp_micros),
        })
    }

    async fn forget_outbox_before(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let q = sqlx::query(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox \
             WHERE state <> 'pending' AND created_at < $1 LIMIT $2)",
        )
        .arg(&micros(before))
        .arg(&FORGET_BATCH);
        execute(self.ex(), q).await
    }

    fn watch_queued(&self, signal: OutboxSignal) -> Option<BoxFuture<'static, ()>> {
        DB::watch_queued(&self.pool, signal)
    }
}
