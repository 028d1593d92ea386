//! The traits the core needs from the outside world: a store, a rate limiter, a clock,
//! health probes and outbound chat. Backends and adapters implement them at the edge;
//! the core never names sqlx, redis, axum or a platform crate.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{AuditEntry, AuditRecord, RateQuota};

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
pub trait Store: Send + Sync {
    /// Appends to the hash-chained audit log; returns once the record is committed.
    async fn append_audit(&self, entry: AuditEntry) -> Result<AuditRecord, StoreError>;
    /// The newest `limit` records, newest first.
    async fn recent_audit(&self, limit: u32) -> Result<Vec<AuditRecord>, StoreError>;
    /// Up to `limit` records with `seq > after_seq`, oldest first (for verification).
    async fn audit_after(&self, after_seq: i64, limit: u32)
    -> Result<Vec<AuditRecord>, StoreError>;
    /// Cheap reachability check for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
}

#[derive(Debug, thiserror::Error)]
#[error("rate limiter unavailable: {0}")]
pub struct LimiterError(pub String);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitDecision {
    Allowed,
    Limited { retry_after: Duration },
}

/// Counts one event against `key` under `quota`.
#[async_trait]
pub trait RateLimiter: Send + Sync {
    async fn check(&self, key: &str, quota: RateQuota) -> Result<LimitDecision, LimiterError>;
}

/// Wall-clock time for stored timestamps. Tests use [`FakeClock`].
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct FakeClock(Mutex<DateTime<Utc>>);

impl FakeClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self(Mutex::new(start))
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().expect("fake clock poisoned");
        *now += chrono::Duration::from_std(by).expect("duration fits");
    }
}

impl Clock for FakeClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("fake clock poisoned")
    }
}

/// Result of one health probe run to completion (timeouts are applied by the caller).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeReport {
    pub up: bool,
    pub detail: String,
}

impl ProbeReport {
    pub fn up(detail: impl Into<String>) -> Self {
        Self {
            up: true,
            detail: detail.into(),
        }
    }

    pub fn down(detail: impl Into<String>) -> Self {
        Self {
            up: false,
            detail: detail.into(),
        }
    }
}

/// One health check's probe (HTTP, TCP, Postgres, Redis, exec...).
#[async_trait]
pub trait Probe: Send + Sync {
    async fn probe(&self) -> ProbeReport;
}
