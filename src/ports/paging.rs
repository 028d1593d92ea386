//! Paging services (PagerDuty, ntfy, webhooks) as the core sees them.

use async_trait::async_trait;

use super::OutboundError;

/// What a page asks of the paging service: open it, say someone is on it, close it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageAction {
    Trigger,
    Acknowledge,
    Resolve,
}

/// How loudly a page rings (PagerDuty's `payload.severity`; ntfy priority 5 for `Critical`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSeverity {
    Critical,
    Error,
    Warning,
    Info,
}

impl PageSeverity {
    pub const ALL: [PageSeverity; 4] = [Self::Critical, Self::Error, Self::Warning, Self::Info];

    /// PagerDuty's word for it, also how a queued page stores it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Info => "info",
        }
    }
}

impl std::str::FromStr for PageSeverity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        (Self::ALL.into_iter())
            .find(|x| x.as_str() == s)
            .ok_or_else(|| format!("unknown page severity {s:?}"))
    }
}

/// One page to a paging service (`[[paging.services]]`). The same `dedup_key` names the same
/// thing across trigger, acknowledge and resolve (an alert's fingerprint, `incident-7`), so
/// a trigger sent twice opens one page upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub dedup_key: String,
    /// One line; outside text in it is the service's to show, never chat markup.
    pub summary: String,
    /// What the page is about (a service label, `opsbot`).
    pub source: String,
    pub severity: PageSeverity,
}

/// Sends pages to the paging services named in the config (PagerDuty Events v2, ntfy, a
/// signed webhook). Retries what may succeed later (429, 5xx, transport) with backoff inside
/// `page`; an error returned is final for this call.
#[async_trait]
pub trait Pager: Send + Sync {
    /// `service` is a `[[paging.services]] name`; an unknown one is `Undeliverable`.
    async fn page(
        &self,
        service: &str,
        action: PageAction,
        page: &Page,
    ) -> Result<(), OutboundError>;
}
