//! The audit log in SQL, shared by both backends (both accept `$N` placeholders): appending
//! a batch to the hash chain inside a backend's transaction, and the `Store` read methods.
//! Backends differ only in how they serialize writers (see `sqlite.rs`, `postgres.rs`).

/// Inside an open transaction `$tx`: reads the chain head, chains `$entries` onto it and
/// inserts them. Evaluates to the new records.
macro_rules! append_to_chain {
    ($tx:expr, $entries:expr) => {{
        let head: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *$tx)
                .await
                .map_err($crate::store::backend)?;
        let records = $crate::store::batch::extend_chain(head, $entries);
        // One multi-row INSERT per batch: each statement is a round trip to the driver.
        if !records.is_empty() {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO audit_log (seq, request_id, at, actor, channel, command, args, outcome, detail, prev_hash, hash) ",
            );
            insert.push_values(&records, |mut row, rec| {
                row.push_bind(rec.seq)
                    .push_bind(rec.entry.request_id.as_str().to_owned())
                    .push_bind(rec.entry.at.timestamp_micros())
                    .push_bind(rec.entry.actor.clone())
                    .push_bind(rec.entry.channel.clone())
                    .push_bind(rec.entry.command.clone())
                    .push_bind(rec.entry.args.clone())
                    .push_bind(rec.entry.outcome.as_str())
                    .push_bind(rec.entry.detail.clone())
                    .push_bind(rec.prev_hash.clone())
                    .push_bind(rec.hash.clone());
            });
            insert
                .build()
                .execute(&mut *$tx)
                .await
                .map_err($crate::store::backend)?;
        }
        records
    }};
}

/// Implements `ports::Store` for a store type with `pool` and `batcher` fields.
macro_rules! impl_audit_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::ports::Store for $store {
            async fn append_audit(
                &self,
                entry: $crate::domain::AuditEntry,
            ) -> Result<$crate::domain::AuditRecord, $crate::ports::StoreError> {
                self.batcher.append(entry).await
            }

            async fn recent_audit(
                &self,
                limit: u32,
            ) -> Result<Vec<$crate::domain::AuditRecord>, $crate::ports::StoreError> {
                use $crate::store::{AuditRow, SELECT_AUDIT};
                let rows: Vec<AuditRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "{SELECT_AUDIT} ORDER BY seq DESC LIMIT $1"
                )))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err($crate::store::backend)?;
                rows.into_iter().map(AuditRow::into_record).collect()
            }

            async fn audit_after(
                &self,
                after_seq: i64,
                limit: u32,
            ) -> Result<Vec<$crate::domain::AuditRecord>, $crate::ports::StoreError> {
                use $crate::store::{AuditRow, SELECT_AUDIT};
                let rows: Vec<AuditRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "{SELECT_AUDIT} WHERE seq > $1 ORDER BY seq LIMIT $2"
                )))
                .bind(after_seq)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err($crate::store::backend)?;
                rows.into_iter().map(AuditRow::into_record).collect()
            }

            async fn ping(&self) -> Result<(), $crate::ports::StoreError> {
                sqlx::query("SELECT 1")
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::backend)?;
                Ok(())
            }
        }
    };
}

pub(crate) use {append_to_chain, impl_audit_store};
