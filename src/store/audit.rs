//! The audit log in SQL, shared by both backends: appending a batch to the hash chain inside
//! a backend's transaction, and the `Store` read methods. Backends differ only in how they
//! serialize writers (see `sqlite.rs`, `postgres.rs`).

use async_trait::async_trait;
use sqlx::Transaction;

use super::batch::extend_chain;
use super::sql::{Arg, Backend, execute, fetch_all, fetch_optional};
use super::{AuditRow, OnPool, SELECT_AUDIT, SqlStore};
use crate::domain::{AuditEntry, AuditRecord};
use crate::ports::{Store, StoreError};

/// Inside an open transaction: reads the chain head, chains `entries` onto it and inserts
/// them. Returns the new records.
pub(crate) async fn append_to_chain<DB: Backend>(
    tx: &mut Transaction<'_, DB>,
    entries: Vec<AuditEntry>,
) -> Result<Vec<AuditRecord>, StoreError> {
    let head = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1");
    let head: Option<(i64, String)> = fetch_optional(DB::on_conn(&mut **tx), head).await?;
    let records = extend_chain(head, entries);
    if records.is_empty() {
        return Ok(records);
    }
    execute(
        DB::on_conn(&mut **tx),
        insert_records(&records, None).build(),
    )
    .await?;
    Ok(records)
}

/// One multi-row INSERT for a batch (each statement is a round trip to the driver). With
/// `if_head`, it inserts only while the chain's last seq is still that one, so a writer that
/// remembers the head needs no transaction around a read (see `sqlite.rs`).
pub(crate) fn insert_records<DB: Backend>(
    records: &[AuditRecord],
    if_head: Option<i64>,
) -> sqlx::QueryBuilder<DB> {
    let mut insert = sqlx::QueryBuilder::new(
        "INSERT INTO audit_log (seq, request_id, at, actor, channel, command, args, outcome, detail, prev_hash, hash) ",
    );
    if if_head.is_some() {
        insert.push("SELECT * FROM (");
    }
    insert.push_values(records, |mut row, rec| {
        let e = &rec.entry;
        DB::push(&mut row, &rec.seq);
        DB::push(&mut row, e.request_id.as_str());
        DB::push(&mut row, &e.at.timestamp_micros());
        for text in [&e.actor, &e.channel, &e.command, &e.args] {
            DB::push(&mut row, text.as_str());
        }
        DB::push(&mut row, e.outcome.as_str());
        for text in [&e.detail, &rec.prev_hash, &rec.hash] {
            DB::push(&mut row, text.as_str());
        }
    });
    if let Some(head) = if_head {
        insert.push(") WHERE (SELECT COALESCE(MAX(seq), 0) FROM audit_log) = ");
        DB::push(&mut insert.separated(""), &head);
    }
    insert
}

#[async_trait]
impl<DB: Backend> Store for SqlStore<DB> {
    async fn append_audit(&self, entry: AuditEntry) -> Result<AuditRecord, StoreError> {
        self.batcher.append(entry).await
    }

    async fn recent_audit(&self, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        let sql = format!("{SELECT_AUDIT} ORDER BY seq DESC LIMIT $1");
        let q = sqlx::query(sqlx::AssertSqlSafe(sql)).arg(&i64::from(limit));
        let rows: Vec<AuditRow> = fetch_all(self.ex(), q).await?;
        rows.into_iter().map(AuditRow::into_record).collect()
    }

    async fn audit_after(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let sql = format!("{SELECT_AUDIT} WHERE seq > $1 ORDER BY seq LIMIT $2");
        let q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .arg(&after_seq)
            .arg(&i64::from(limit));
        let rows: Vec<AuditRow> = fetch_all(self.ex(), q).await?;
        rows.into_iter().map(AuditRow::into_record).collect()
    }

    async fn probe_write(&self) -> Result<(), StoreError> {
        // A write, not `SELECT 1`: a full disk or a read-only database still answers reads.
        let q = sqlx::query(
            "INSERT INTO store_probe (id, at) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET at = excluded.at",
        )
        .arg(&chrono::Utc::now().timestamp_micros());
        execute(self.ex(), q).await.map(drop)
    }
}
