//! The pages escalations send, on the leader's tick: each step's triggers were queued with
//! its claim (`escalation_pages`), so they are sent here, each attempt claimed first, with
//! retries over ticks and given up after [`PAGE_ATTEMPTS`]; a crash between the claim and the
//! send leaves the page queued for the next leader. Stopped escalations' pages are closed
//! (acknowledged, or resolved) upstream, retried until done.

use chrono::{DateTime, Utc};
use tracing::warn;

use super::Escalations;
use crate::domain::{Notify, StopReason};
use crate::metrics::StepOutcome;
use crate::ports::{Page, PageAction, PageEnd, PageSeverity, PendingPage, StoreError};

/// Queued pages one tick sends at most.
const PAGE_BATCH: u32 = 100;

/// Stopped escalations whose pages one tick closes at most.
const CLOSE_BATCH: u32 = 100;

/// Attempts at one page (each already retried inside the pager) before it is given up.
pub const PAGE_ATTEMPTS: u32 = 8;

/// How long an attempt holds its page: longer than the pager's own retries take, so only a
/// sender that died mid-send is succeeded (and PagerDuty's dedup_key absorbs that resend).
const PAGE_HOLD: chrono::Duration = chrono::Duration::minutes(2);

/// The wait before attempt `attempts + 1`: 30 s, doubling, at most 10 minutes.
fn backoff(attempts: u32) -> chrono::Duration {
    let secs = 30i64.saturating_mul(1 << attempts.min(5));
    chrono::Duration::seconds(secs.min(600))
}

impl Escalations {
    /// Sends every queued page that is due, each attempt claimed first so two sweepers never
    /// send one at once. A page whose escalation stopped before it went out is cancelled: a
    /// trigger now would reopen what was handled.
    pub(super) async fn send_pages(&self) -> Result<(), StoreError> {
        let now = self.clock.now();
        for p in self.store.due_pages(now, PAGE_BATCH).await? {
            if p.stopped {
                self.store.end_page(p.id, now, PageEnd::Cancelled).await?;
                continue;
            }
            if !self.store.claim_page(p.id, now, now + PAGE_HOLD).await? {
                continue;
            }
            self.send_page(&p, now).await?;
        }
        Ok(())
    }

    /// One attempt at a claimed page, and what it came to.
    async fn send_page(&self, p: &PendingPage, now: DateTime<Utc>) -> Result<(), StoreError> {
        let end = match self
            .pager
            .page(&p.service, PageAction::Trigger, &p.page)
            .await
        {
            Ok(()) => PageEnd::Sent,
            Err(e) if e.is_permanent() => {
                warn!(service = %p.service, error = %e, "escalation page refused; not sent again");
                PageEnd::Rejected
            }
            Err(e) if p.attempts + 1 >= PAGE_ATTEMPTS => {
                warn!(service = %p.service, error = %e, attempts = p.attempts + 1, "escalation page still failing; given up");
                PageEnd::GivenUp
            }
            Err(e) => {
                warn!(service = %p.service, error = %e, "escalation page failed; will retry");
                return self.store.retry_page(p.id, now + backoff(p.attempts)).await;
            }
        };
        self.store.end_page(p.id, self.clock.now(), end).await?;
        let outcome = match end {
            PageEnd::Sent => StepOutcome::Paged,
            PageEnd::Rejected | PageEnd::GivenUp | PageEnd::Cancelled => StepOutcome::PageFailed,
        };
        let target = Notify::Page(p.service.clone());
        self.metrics.escalation_step(&p.policy, &target, outcome);
        Ok(())
    }

    /// Acknowledges (or resolves) upstream what stopped escalations paged; an escalation
    /// whose pages could not all be closed is tried again next tick.
    pub(super) async fn close_pages(&self) -> Result<(), StoreError> {
        for e in self.store.pages_to_close(CLOSE_BATCH).await? {
            let action = match e.stopped.map(|(_, why)| why) {
                Some(StopReason::Resolved | StopReason::PolicyRemoved) => PageAction::Resolve,
                _ => PageAction::Acknowledge,
            };
            let mut done = true;
            for p in &e.pages {
                let page = Page {
                    dedup_key: p.dedup_key.clone(),
                    summary: "handled in chat".into(),
                    source: "opsbot".into(),
                    severity: PageSeverity::Info,
                };
                if let Err(err) = self.pager.page(&p.service, action, &page).await {
                    warn!(service = %p.service, error = %err, "closing an escalation page failed");
                    done &= err.is_permanent();
                }
            }
            if done {
                self.store.pages_closed(e.id, self.clock.now()).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_ten_minutes() {
        let secs: Vec<i64> = (0..7).map(|a| backoff(a).num_seconds()).collect();
        assert_eq!(secs, [30, 60, 120, 240, 480, 600, 600]);
    }
}
