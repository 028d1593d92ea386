//! The rate limiter the router asks before running a command.

use std::time::Duration;

use async_trait::async_trait;

use crate::domain::RateQuota;

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
