//! The traits the core needs from the outside world: a store, a rate limiter, a clock,
//! health probes and outbound chat. Backends and adapters implement them at the edge;
//! the core never names sqlx, redis, axum or a platform crate.

use async_trait::async_trait;

use crate::domain::{AuditEntry, AuditRecord};

mod alerts;
mod chat;
mod clock;
mod incidents;
mod lease;
mod limits;
mod outbox;
mod paging;
mod people;
mod probes;
mod runs;
mod schedules;

pub use alerts::*;
pub use chat::*;
pub use clock::*;
pub use incidents::*;
pub use lease::*;
pub use limits::*;
pub use outbox::*;
pub use paging::*;
pub use people::*;
pub use probes::*;
pub use runs::*;
pub use schedules::*;

/// Failure of the store boundary. The message is for logs, never for chat.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("store query failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Durable state. One trait, one behaviour, whichever backend is behind it.
#[async_trait]
pub trait Store:
    RunStore
    + AlertStore
    + IncidentStore
    + DeliveryLog
    + LeaseStore
    + OutboxStore
    + OncallStore
    + EscalationStore
    + ScheduleStore
    + Send
    + Sync
{
    /// Appends to the hash-chained audit log; returns once the record is committed.
    async fn append_audit(&self, entry: AuditEntry) -> Result<AuditRecord, StoreError>;
    /// The newest `limit` records, newest first.
    async fn recent_audit(&self, limit: u32) -> Result<Vec<AuditRecord>, StoreError>;
    /// Up to `limit` records with `seq > after_seq`, oldest first (for verification).
    async fn audit_after(&self, after_seq: i64, limit: u32)
    -> Result<Vec<AuditRecord>, StoreError>;
    /// Whether the store accepts writes (for `/readyz`): rewrites one tiny row.
    async fn probe_write(&self) -> Result<(), StoreError>;
}
