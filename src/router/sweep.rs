//! What the periodic sweep decides, across the services: runbook requests that expired or
//! were interrupted, alert reminders, platform event ids old enough to forget, incidents past
//! their acknowledgement target. Posting the notices is `crate::sweeper`'s job.

use tracing::warn;

use crate::ports::StoreError;

use super::runbook::EVENT_ID_RETENTION;
use super::{Notice, Router};

impl Router {
    /// One sweep; returns what to post. Never re-runs anything.
    pub async fn sweep(&self) -> Result<Vec<Notice>, StoreError> {
        let now = self.deps.clock.now();
        let mut notices = self.runbooks.sweep_runs(now).await?;
        if let Err(e) = self.deps.alerts.remind(&self.deps.escalation).await {
            warn!(error = %e, "alert reminders failed");
        }
        if let Err(e) = self
            .deps
            .store
            .forget_deliveries_before(now - EVENT_ID_RETENTION)
            .await
        {
            warn!(error = %e, "forgetting old platform event ids failed");
        }
        notices.extend(self.incidents.overdue(now).await?);
        Ok(notices)
    }
}
