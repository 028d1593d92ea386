//! What the periodic sweep decides, across the services: runbook requests that expired or
//! were interrupted, alert reminders, platform event ids old enough to forget, incidents past
//! their acknowledgement target. Posting the notices is `crate::sweeper`'s job.

use tracing::warn;

use crate::domain::Severity;
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
        for i in self.deps.store.unacked_incidents().await? {
            let due = i.severity.ack_due(i.opened_at, &self.deps.response_targets);
            if now >= due {
                self.deps.store.mark_reminded(i.id, now).await?;
                notices.push(Notice {
                    platform: i.platform,
                    channel_id: i.channel_id.clone(),
                    thread: None,
                    text: format!(
                        "⏰ Incident #{} ({} \"{}\") passed its acknowledgement target at {} UTC without an update. \
                         {}: /incident update \"...\" to acknowledge.",
                        i.id,
                        i.severity,
                        i.title,
                        due.format("%H:%M"),
                        i.commander
                    ),
                    urgent: i.severity == Severity::P1,
                });
            }
        }
        Ok(notices)
    }
}
