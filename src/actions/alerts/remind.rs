//! Reminders for firing, unacknowledged critical alerts, mentioning the schedule's primary
//! on-call natively on each platform (or naming the on-call role): each
//! queued in the outbox with the claim that decides it, so a crash after the claim still
//! posts it and a replica that lost the claim queues nothing. A group routed to an
//! escalation policy is not reminded: its policy's steps supersede these reminders.

use super::render::ack_action;
use super::*;
use crate::actions::oncall::OnCall;
use crate::ports::Queued;

/// Re-notification of unacknowledged critical alerts.
#[derive(Clone, Debug, Default)]
pub struct Escalation {
    /// How often an unacknowledged critical alert is re-announced; `None` disables it.
    pub remind_every: Option<Duration>,
    /// Named in reminders (the on-call role) when no schedule says who is on call.
    pub oncall: Option<String>,
    /// The schedule whose primary on-call reminders mention.
    pub schedule: Option<String>,
}

impl AlertService {
    /// Queues a re-announcement of each firing, unacknowledged critical alert whose reminder
    /// is due, mentioning the on-call role, for the outbox's deliverer (the caller wakes it).
    /// Each reminder is claimed with a conditional update that queues its messages in the
    /// same transaction, so replicas never double-post. Returns how many were queued.
    pub async fn remind(
        &self,
        escalation: &Escalation,
        oncall: &OnCall,
    ) -> Result<usize, StoreError> {
        let Some(every) = escalation.remind_every else {
            return Ok(0);
        };
        let primary = match &escalation.schedule {
            Some(schedule) => oncall.primary(schedule).await?,
            None => None,
        };
        let now = self.clock.now();
        let due_before = now - chrono::Duration::from_std(every).unwrap_or_default();
        let mut queued = 0;
        let silences = self.store.active_silences(now).await?;
        let mut escalating = HashMap::new();
        for (alert, reminders) in self.store.alerts_due_reminder(due_before).await? {
            // Silenced alerts page nobody; only critical ones escalate.
            let silenced = (silences.iter()).any(|s| s.covers(&alert.incoming.labels, now));
            if !alert.is_critical() || silenced || self.escalates(&alert, &mut escalating).await? {
                continue;
            }
            let notices: Vec<Queued> = (self.routing.targets(&alert.incoming.labels).into_iter())
                .map(|to| {
                    let mut message =
                        OutboundMessage::text(format!("⏰ Reminder {}:", reminders + 1));
                    match (&primary, &escalation.oncall) {
                        (Some(person), _) => {
                            message.text.push(' ');
                            oncall.mention(&mut message, person, to.platform);
                            message.text.push(':');
                        }
                        (None, Some(role)) => message.text.push_str(&format!(" @{role}:")),
                        (None, None) => {}
                    }
                    Queued::post(to, reminder(message, &alert, now))
                })
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

impl AlertService {
    /// Whether `alert`'s group walks an escalation policy (then the policy's steps are its
    /// reminders). `seen` keeps the answer per group for one pass over the due alerts.
    async fn escalates(
        &self,
        alert: &Alert,
        seen: &mut HashMap<String, bool>,
    ) -> Result<bool, StoreError> {
        if self.escalations.get().is_none() || !self.routing.escalates() {
            return Ok(false);
        }
        if let Some(&yes) = seen.get(&alert.incoming.group_key) {
            return Ok(yes);
        }
        let group = self
            .store
            .alerts_in_group(&alert.incoming.group_key)
            .await?;
        let yes = self.routing.policy(&common_labels(&group)).is_some();
        seen.insert(alert.incoming.group_key.clone(), yes);
        Ok(yes)
    }
}

/// The reminder of `alert`, after `head` (its number and who it is for).
fn reminder(
    mut head: OutboundMessage,
    alert: &Alert,
    now: chrono::DateTime<chrono::Utc>,
) -> OutboundMessage {
    let age = (now - alert.incoming.starts_at).num_minutes().max(0);
    let _ = write!(
        head.text,
        " alert #{} {} [{}] has been firing for {age}m without acknowledgement. /ack {} to take it.",
        alert.id,
        shown(alert.incoming.alertname()),
        shown(alert.severity()),
        alert.id
    );
    // Only unacknowledged critical alerts are reminded about: always urgent. The bot's own
    // post goes to the channel, whatever the default visibility.
    head.with_actions(vec![ack_action(alert.id)])
        .with_visibility(crate::domain::Visibility::Channel)
        .urgent()
}
