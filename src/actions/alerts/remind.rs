//! Reminders for firing, unacknowledged critical alerts, mentioning the on-call role.

use super::render::ack_action;
use super::*;

/// Re-notification of unacknowledged critical alerts.
#[derive(Clone, Debug, Default)]
pub struct Escalation {
    /// How often an unacknowledged critical alert is re-announced; `None` disables it.
    pub remind_every: Option<Duration>,
    /// Mentioned in reminders (the on-call role).
    pub oncall: Option<String>,
}

impl AlertService {
    /// Re-announces firing, unacknowledged critical alerts whose reminder is due, mentioning the
    /// on-call role. Each reminder is claimed with a conditional update, so replicas never
    /// double-post. Returns how many were sent.
    pub async fn remind(&self, escalation: &Escalation) -> Result<usize, RefreshError> {
        let Some(every) = escalation.remind_every else {
            return Ok(0);
        };
        let now = self.clock.now();
        let due_before = now - chrono::Duration::from_std(every).unwrap_or_default();
        let mut sent = 0;
        let silences = self.store.active_silences(now).await?;
        for (alert, reminders) in self.store.alerts_due_reminder(due_before).await? {
            // Silenced alerts page nobody; only critical ones escalate.
            if !alert.is_critical()
                || silences
                    .iter()
                    .any(|s| s.covers(&alert.incoming.labels, now))
                || !self
                    .store
                    .mark_alert_reminded(alert.id, reminders, now)
                    .await?
            {
                continue;
            }
            let age = (now - alert.incoming.starts_at).num_minutes().max(0);
            let mention = escalation
                .oncall
                .as_deref()
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
            // Only unacknowledged critical alerts are reminded about: always urgent.
            let message = OutboundMessage::text(text)
                .with_actions(vec![ack_action(alert.id)])
                .urgent();
            for target in self.routing.targets(&alert.incoming.labels) {
                self.outbound.send(&target, &message).await?;
            }
            sent += 1;
        }
        Ok(sent)
    }
}
