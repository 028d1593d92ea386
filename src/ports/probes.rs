//! Health probes behind `/status` and the scheduler.

use async_trait::async_trait;

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
