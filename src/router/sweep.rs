//! What the periodic sweep decides, across the services: runbook requests that expired or
//! were interrupted, escalation steps due, alert reminders and on-call handoffs (queued with their claim; the deliverer woken here, as
//! they are not among the notices returned), platform event ids old enough to forget, incidents past
//! their acknowledgement target, outbox rows delivered long ago, alerts resolved long ago. The store queues each notice
//! in the outbox with the change that decides it; `crate::outbox` posts them.

use tracing::warn;

use crate::ports::StoreError;

use super::runbook::EVENT_ID_RETENTION;
use super::{Notice, Router};

/// How long delivered and given-up outbox rows are kept (to look into a delivery).
const OUTBOX_RETENTION: chrono::Duration = chrono::Duration::days(7);

/// How long a resolved alert is kept (to look back at what fired); one an incident
/// links to is kept as long as the incident.
pub const RESOLVED_ALERT_RETENTION: chrono::Duration = chrono::Duration::days(30);

impl Router {
    /// One sweep; returns the notices it queued. Never re-runs anything.
    pub async fn sweep(&self) -> Result<Vec<Notice>, StoreError> {
        let now = self.deps.clock.now();
        let mut notices = self.runbooks.sweep_runs(now).await?;
        match self
            .deps
            .alerts
            .remind(&self.deps.escalation, &self.deps.oncall)
            .await
        {
            Ok(0) => {}
            Ok(_) => self.deps.outbox.wake(),
            Err(e) => warn!(error = %e, "alert reminders failed"),
        }
        match self.deps.oncall.announce_handoffs().await {
            Ok(0) => {}
            Ok(_) => self.deps.outbox.wake(),
            Err(e) => warn!(error = %e, "announcing on-call handoffs failed"),
        }
        let store = &self.deps.store;
        let since = now - EVENT_ID_RETENTION;
        forget(
            "old platform event ids",
            store.forget_deliveries_before(since),
        )
        .await;
        let since = now - OUTBOX_RETENTION;
        forget(
            "delivered outbox messages",
            store.forget_outbox_before(since),
        )
        .await;
        let since = now - RESOLVED_ALERT_RETENTION;
        forget("old resolved alerts", store.forget_resolved_before(since)).await;
        notices.extend(self.incidents.overdue(now).await?);
        // After `overdue`, which starts the escalations of incidents past their target.
        self.escalate().await;
        Ok(notices)
    }

    /// Takes the escalation steps due now and closes the pages of stopped escalations (the
    /// sweep does too; the sweeper also runs this alone every second, so steps fire on time).
    pub async fn escalate(&self) {
        match self.deps.escalations.tick().await {
            Ok(0) => {}
            Ok(_) => self.deps.outbox.wake(),
            Err(e) => warn!(error = %e, "escalation steps failed"),
        }
    }
}

/// Runs one of the sweep's bounded deletions; a failure is logged and retried next sweep.
async fn forget(what: &str, batch: impl std::future::Future<Output = Result<u64, StoreError>>) {
    if let Err(e) = batch.await {
        warn!(error = %e, "forgetting {what} failed");
    }
}
