//! What the periodic sweep decides, across the services: runbook requests that expired or
//! were interrupted, escalation steps due, alert reminders and on-call handoffs (queued with their claim; the deliverer woken here, as
//! they are not among the notices returned), platform event ids old enough to forget, incidents past
//! their acknowledgement target, outbox rows delivered long ago. The store queues each notice
//! in the outbox with the change that decides it; `crate::outbox` posts them.

use tracing::warn;

use crate::ports::StoreError;

use super::runbook::EVENT_ID_RETENTION;
use super::{Notice, Router};

/// How long delivered and given-up outbox rows are kept (to look into a delivery).
const OUTBOX_RETENTION: chrono::Duration = chrono::Duration::days(7);

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
        if let Err(e) = self
            .deps
            .store
            .forget_deliveries_before(now - EVENT_ID_RETENTION)
            .await
        {
            warn!(error = %e, "forgetting old platform event ids failed");
        }
        if let Err(e) = self
            .deps
            .store
            .forget_outbox_before(now - OUTBOX_RETENTION)
            .await
        {
            warn!(error = %e, "forgetting delivered outbox messages failed");
        }
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
