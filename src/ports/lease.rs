//! Leases for work that must run on one replica, with their fencing epochs.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;

/// A lease's fencing token: each new holder of a lease gets a larger epoch than every holder
/// before it, and keeps it while it renews, so work stamped with an older epoch is stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub i64);

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Named leases with a fencing epoch, for work one replica of a cluster must do alone.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Takes lease `name` for `holder` until `now + ttl`, or extends it: one conditional
    /// statement. The holder keeps its epoch while it renews a lease it still holds; a lease
    /// that is free (released) or expired goes to `holder` with the next epoch. `None`: another
    /// holder has it and it has not expired.
    async fn acquire_or_renew(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<Epoch>, StoreError>;
    /// Gives the lease up so another holder can take it at once; only if `holder` still holds
    /// it at `epoch` (false otherwise, and nothing changed).
    async fn release(&self, name: &str, holder: &str, epoch: Epoch) -> Result<bool, StoreError>;
}
