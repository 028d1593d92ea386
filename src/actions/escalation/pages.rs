//! The pages of stopped escalations, closed (acknowledged, or resolved) upstream on the
//! leader's tick, retried until done.

use tracing::warn;

use super::Escalations;
use crate::domain::StopReason;
use crate::ports::{Page, PageAction, PageSeverity, StoreError};

/// Stopped escalations whose pages one tick closes at most.
const CLOSE_BATCH: u32 = 100;

impl Escalations {
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
