//! Leader leases in SQL: `ports::LeaseStore` for both backends. Taking, renewing and taking
//! over a lease is one conditional upsert, so two replicas racing for a free lease cannot
//! both win; a released lease keeps its row, so its epoch never goes back.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::runs::micros;
use super::sql::{Arg, Backend, changed_one, fetch_optional};
use super::{OnPool, SqlStore};
use crate::ports::{Epoch, LeaseStore, StoreError};

/// The holder keeps its epoch only while renewing a lease that has not expired: after a
/// lapse someone else may have done the work in between, so even the same holder starts a
/// new term.
const ACQUIRE_OR_RENEW: &str = "INSERT INTO leases (name, holder, epoch, expires_at) \
     VALUES ($1, $2, 1, $3) \
     ON CONFLICT (name) DO UPDATE SET \
       epoch = CASE WHEN leases.holder = excluded.holder AND leases.expires_at > $4 \
                    THEN leases.epoch ELSE leases.epoch + 1 END, \
       holder = excluded.holder, \
       expires_at = excluded.expires_at \
     WHERE leases.holder = excluded.holder OR leases.expires_at <= $4 \
     RETURNING epoch";

#[async_trait]
impl<DB: Backend> LeaseStore for SqlStore<DB> {
    async fn acquire_or_renew(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<Epoch>, StoreError> {
        let ttl = chrono::Duration::from_std(ttl)
            .map_err(|e| StoreError::Corrupt(format!("lease {name}: ttl {ttl:?}: {e}")))?;
        let q = sqlx::query(ACQUIRE_OR_RENEW)
            .arg(name)
            .arg(holder)
            .arg(&micros(now + ttl))
            .arg(&micros(now));
        let row: Option<(i64,)> = fetch_optional(self.ex(), q).await?;
        Ok(row.map(|(epoch,)| Epoch(epoch)))
    }

    async fn release(&self, name: &str, holder: &str, epoch: Epoch) -> Result<bool, StoreError> {
        // Expired at the Unix epoch: free for anyone from now on, whatever their clock says.
        let q = sqlx::query(
            "UPDATE leases SET holder = NULL, expires_at = 0 \
             WHERE name = $1 AND holder = $2 AND epoch = $3",
        )
        .arg(name)
        .arg(holder)
        .arg(&epoch.0);
        changed_one(self.ex(), q).await
    }
}
