//! Reminders for firing, unacknowledged critical alerts, mentioning the on-call role: each
//! queued in the outbox with the claim that decides it, so a crash after the claim still
//! posts it and a replica that lost the claim queues nothing.

use super::render::ack_action;
use super::*;
use crate::ports::Queued;

/// Re-notification of unacknowledged critical alerts.
#[derive(Clone, Debug, Default)]
pub struct Escalation {
    /// How often an unacknowledged critical alert is re-announced; `None` disables it.
    pub remind_every: Option<Duration>,
    /// Mentioned in reminders (the on-call role).
    pub oncall: Option<String>,
}

impl AlertService {
    /// Queues a re-announcement of each firing, unacknowledged critical alert whose reminder
    /// is due, mentioning the on-call role, for the outbox's deliverer (the caller wakes it).
    /// Each reminder is claimed with a conditional update that queues its messages in the
    /// same transaction, so replicas never double-post. Returns how many were queued.
    pub async fn remind(&self, escalation: &Escalation) -> Result<usize, StoreError> {
        let Some(every) = escalation.remind_every else {
            return Ok(0);
        };
        let now = self.clock.now();
        let due_before = now - chrono::Duration::from_std(every).unwrap_or_default();
        let mut queued = 0;
        let silences = self.store.active_silences(now).await?;
        for (alert, reminders) in self.store.alerts_due_reminder(due_before).await? {
            // Silenced alerts page nobody; only critical ones escalate.
            let silenced = (silences.iter()).any(|s| s.covers(&alert.incoming.labels, now));
            if !alert.is_critical() || silenced {
                continue;
            }
            let message = reminder(&alert, reminders, escalation, now);
            let notices: Vec<Queued> = (self.routing.targets(&alert.incoming.labels).into_iter())
                .map(|to| Queued::post(to, message.clone()))
                .collect();
            if (self.store)
                .mark_alert_reminded(alert.id, reminders, now, &notices)
                .await?
            {
                queued += 1;
            }
        }
        Ok(queued)
    }
}

/// The `reminders + 1`th reminder of `alert`.
fn reminder(
    alert: &Alert,
    reminders: u32,
    escalation: &Escalation,
    now: chrono::DateTime<chrono::Utc>,
) -> OutboundMessage {
    let age = (now - alert.incoming.starts_at).num_minutes().max(0);
    let mention = (escalation.oncall.as_deref())
        .map(|r| format!(" @{r}:"))
        .unwrap_or_default();
    let text = format!(
        "⏰ Reminder {}:{mention} alert #{} {} [{}] has been firing for {age}m without acknowledgement. /ack {} to take it.",
        reminders + 1,
        alert.id,
        shown(alert.incoming.alertname()),
        shown(alert.severity()),
        alert.id
    );
    // Only unacknowledged critical alerts are reminded about: always urgent. The bot's own
    // post goes to the channel, whatever the default visibility.
    OutboundMessage::text(text)
        .with_actions(vec![ack_action(alert.id)])
        .with_visibility(crate::domain::Visibility::Channel)
        .urgent()
}
