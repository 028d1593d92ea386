//! [`AlertCommands`]: alert commands from chat: `/alerts`, `/ack` (and an ack reaction on a
//! group's message), `/silence`, `/unsilence`, `/resolve`. Each changes stored state with a
//! conditional update and then refreshes the group's message through the [`AlertService`];
//! silences are written back to Alertmanager when it is configured. Linking an acked alert
//! to the channel's incident is the incident service's job (the dispatch does both).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use crate::actions::alerts::{AlertService, alert_head, push_line, shown};
use crate::domain::{
    Alert, AlertId, AlertSource, AlertStatus, InboundEvent, Matcher, Requester, Role, Silence,
    human_duration,
};
use crate::ports::{AlertStore, Clock, FiringCount, SilenceSync};

use super::{Done, OrNoSuch, OrRefuse, Refusal};

/// Firing alerts `/alerts` lists at most.
const LIST_LIMIT: u32 = 25;

/// Severities `/alerts` counts the unlisted alerts by (the most common); others are "other".
const SEVERITY_KINDS: u32 = 8;

/// "…and N more: 30 critical, 12 warning" for the firing alerts `/alerts` does not list;
/// `None` when it lists them all.
fn unlisted(count: &FiringCount, listed: &[Alert], total: u64) -> Option<String> {
    let rest = total.checked_sub(listed.len() as u64).filter(|n| *n > 0)?;
    let severity = |a: &Alert| -> String {
        a.severity()
            .chars()
            .take(FiringCount::SEVERITY_CHARS)
            .collect()
    };
    let mut parts = Vec::new();
    let mut counted = 0;
    for (name, n) in &count.by_severity {
        let shown_here = listed.iter().filter(|a| severity(a) == *name).count() as u64;
        let n = n.saturating_sub(shown_here).min(rest - counted);
        if n > 0 {
            parts.push(format!("{n} {}", shown(name)));
            counted += n;
        }
    }
    if rest > counted {
        parts.push(format!("{} other", rest - counted));
    }
    Some(format!("\n…and {rest} more: {}", parts.join(", ")))
}

/// The alert commands, over the ports they need.
pub struct AlertCommands {
    store: Arc<dyn AlertStore>,
    /// Refreshes a group's message after its alerts change.
    alerts: Arc<AlertService>,
    clock: Arc<dyn Clock>,
    /// Who may ack a group by reaction (`builtins.responder_roles`): a reaction does not
    /// pass through the pipeline's authorization, so the check is here.
    responders: Vec<Role>,
    silence_sync: Option<Arc<dyn SilenceSync>>,
}

impl AlertCommands {
    pub fn new(
        store: Arc<dyn AlertStore>,
        alerts: Arc<AlertService>,
        clock: Arc<dyn Clock>,
        responders: Vec<Role>,
        silence_sync: Option<Arc<dyn SilenceSync>>,
    ) -> Self {
        Self {
            store,
            alerts,
            clock,
            responders,
            silence_sync,
        }
    }

    /// `/alerts`: how many alerts are firing, the newest in full and the rest counted by
    /// severity.
    pub(super) async fn list(&self) -> Result<String, Refusal> {
        let alerts = self
            .store
            .active_alerts(LIST_LIMIT)
            .await
            .or_refuse("listing alerts")?;
        if alerts.is_empty() {
            return Ok("No alerts are firing.".into());
        }
        let count = self
            .store
            .firing_count(SEVERITY_KINDS)
            .await
            .or_refuse("counting alerts")?;
        // Alerts may start firing between the two reads: never claim fewer than are listed.
        let total = count.total.max(alerts.len() as u64);
        let now = self.clock.now();
        let mut out = match total as usize > alerts.len() {
            true => format!("{total} firing (newest {} listed):", alerts.len()),
            false => format!("{total} firing (newest first):"),
        };
        for a in &alerts {
            let age = (now - a.incoming.starts_at).to_std().unwrap_or_default();
            let mut line = alert_head(a);
            let _ = write!(
                line,
                " · for {}",
                human_duration(Duration::from_secs(age.as_secs()))
            );
            match &a.acked_by {
                Some(by) => {
                    let _ = write!(line, " · acked by {by}");
                }
                None => line.push_str(" · not acked"),
            }
            push_line(&mut out, &line);
        }
        if let Some(rest) = unlisted(&count, &alerts, total) {
            out.push_str(&rest);
        }
        Ok(out)
    }

    /// `/ack ID`. Also returns the line for the channel's incident timeline.
    pub(super) async fn ack(
        &self,
        requester: &Requester,
        id: AlertId,
    ) -> Result<(Done, String), Refusal> {
        let store = &self.store;
        let alert = store
            .alert(id)
            .await
            .or_no_such("loading alert", "alert", id)?;
        let name = requester.name();
        let acked = store
            .ack_alert(id, &name, self.clock.now())
            .await
            .or_refuse("acknowledging alert")?;
        if !acked {
            return Err(Refusal::Invalid(
                match (&alert.acked_by, alert.incoming.status) {
                    (_, AlertStatus::Resolved) => format!("alert #{id} is already resolved."),
                    (Some(by), _) => format!("alert #{id} was already acknowledged by {by}."),
                    (None, _) => format!("alert #{id} could not be acknowledged; try again."),
                },
            ));
        }
        self.alerts.touch(&alert.incoming.group_key);
        let what = format!("alert #{id} {} acknowledged", alert.incoming.alertname());
        let done = Done {
            text: format!(
                "Alert #{id} ({}) acknowledged by {name}.",
                alert.incoming.alertname()
            ),
            detail: format!("acked alert #{id}"),
            pending_run: None,
            ran: None,
            progress: false,
        };
        Ok((done, what))
    }

    /// Acknowledges every firing, unacknowledged alert in a group (an ack reaction on its message).
    pub(super) async fn ack_group(
        &self,
        ev: &InboundEvent,
        requester: &Requester,
        group_key: &str,
    ) -> Result<Done, Refusal> {
        let may = requester
            .person()
            .is_some_and(|p| p.has_any_role(&self.responders));
        if !may {
            return Err(Refusal::Denied(format!(
                "acknowledging alerts needs a responder role; {} does not have one.",
                ev.user
            )));
        }
        let name = requester.name();
        let now = self.clock.now();
        let mut acked = Vec::new();
        for a in self
            .store
            .alerts_in_group(group_key)
            .await
            .or_refuse("loading alert group")?
        {
            if a.acked_by.is_none()
                && a.incoming.status == AlertStatus::Firing
                && self
                    .store
                    .ack_alert(a.id, &name, now)
                    .await
                    .or_refuse("acknowledging alert")?
            {
                acked.push(format!("#{}", a.id));
            }
        }
        if acked.is_empty() {
            return Err(Refusal::Invalid(
                "nothing to acknowledge in that group.".into(),
            ));
        }
        self.alerts.touch(group_key);
        Ok(Done {
            text: format!("{name} acknowledged {}.", acked.join(", ")),
            detail: format!("acked {}", acked.join(" ")),
            pending_run: None,
            ran: None,
            progress: false,
        })
    }

    pub(super) async fn silence(
        &self,
        requester: &Requester,
        matchers: Vec<Matcher>,
        duration: Duration,
        reason: String,
    ) -> Result<Done, Refusal> {
        let now = self.clock.now();
        let mut silence = Silence {
            id: 0,
            matchers,
            created_by: requester.name(),
            reason,
            starts_at: now,
            ends_at: now + chrono::Duration::from_std(duration).unwrap_or_default(),
            upstream_id: None,
        };
        silence.id = self
            .store
            .add_silence(&silence)
            .await
            .or_refuse("adding silence")?;
        let upstream = self.write_back_silence(&silence).await;
        let covered = self.refresh_matching(&silence).await?;
        let shown: Vec<String> = silence.matchers.iter().map(ToString::to_string).collect();
        Ok(Done {
            text: format!(
                "Silence #{} for {} until {} UTC ({}); {covered} firing alert(s) now silenced.{upstream}",
                silence.id,
                shown.join(" "),
                silence.ends_at.format("%Y-%m-%d %H:%M"),
                human_duration(duration)
            ),
            detail: format!("silence #{} {}", silence.id, shown.join(" ")),
            pending_run: None,
            ran: None,
            progress: false,
        })
    }

    /// Creates the silence in Alertmanager too, when configured; says how that went.
    async fn write_back_silence(&self, silence: &Silence) -> String {
        let Some(sync) = &self.silence_sync else {
            return String::new();
        };
        match sync.create(silence).await {
            Ok(upstream) => {
                if let Err(e) = self.store.set_silence_upstream(silence.id, &upstream).await {
                    tracing::warn!(silence = silence.id, error = %e, "could not record Alertmanager silence id");
                }
                format!(" Also silenced in Alertmanager ({upstream}).")
            }
            Err(e) => {
                tracing::warn!(silence = silence.id, error = %e, "Alertmanager silence write-back failed");
                " Alertmanager could not be reached, so it may still notify elsewhere.".into()
            }
        }
    }

    /// Refreshes the messages of groups with firing alerts the silence covers; returns how many.
    async fn refresh_matching(&self, silence: &Silence) -> Result<usize, Refusal> {
        let firing = self
            .store
            .active_alerts(10_000)
            .await
            .or_refuse("listing alerts")?;
        let covered: Vec<_> = firing
            .iter()
            .filter(|a| {
                silence
                    .matchers
                    .iter()
                    .all(|m| m.matches(&a.incoming.labels))
            })
            .collect();
        let groups: BTreeSet<&str> = covered
            .iter()
            .map(|a| a.incoming.group_key.as_str())
            .collect();
        for g in groups {
            self.alerts.touch(g);
        }
        Ok(covered.len())
    }

    pub(super) async fn unsilence(&self, requester: &Requester, id: i64) -> Result<Done, Refusal> {
        let now = self.clock.now();
        let active = self
            .store
            .active_silences(now)
            .await
            .or_refuse("listing silences")?;
        let Some(silence) = active.into_iter().find(|s| s.id == id) else {
            return Err(Refusal::Invalid(format!(
                "there is no active silence #{id}."
            )));
        };
        let ended = self
            .store
            .end_silence(id, now)
            .await
            .or_refuse("ending silence")?;
        if !ended {
            return Err(Refusal::Invalid(format!("silence #{id} already ended.")));
        }
        if let (Some(sync), Some(upstream)) = (&self.silence_sync, &silence.upstream_id)
            && let Err(e) = sync.expire(upstream).await
        {
            tracing::warn!(silence = id, error = %e, "could not expire the Alertmanager silence");
        }
        self.refresh_matching(&silence).await?;
        Ok(Done {
            text: format!("Silence #{id} ended by {}.", requester.name()),
            detail: format!("ended silence #{id}"),
            pending_run: None,
            ran: None,
            progress: false,
        })
    }

    pub(super) async fn resolve(
        &self,
        requester: &Requester,
        id: AlertId,
    ) -> Result<Done, Refusal> {
        let alert = self
            .store
            .alert(id)
            .await
            .or_no_such("loading alert", "alert", id)?;
        let owner = match alert.incoming.source {
            AlertSource::Webhook => None,
            AlertSource::Alertmanager => Some("Alertmanager"),
            AlertSource::HealthCheck => Some("opsbot's health check"),
        };
        if let Some(owner) = owner {
            return Err(Refusal::Invalid(format!(
                "alert #{id} comes from {owner}, which resolves it when the condition clears; /ack or /silence it instead."
            )));
        }
        let resolved = self
            .store
            .resolve_alert(id, self.clock.now())
            .await
            .or_refuse("resolving alert")?;
        if !resolved {
            return Err(Refusal::Invalid(format!("alert #{id} is not firing.")));
        }
        self.alerts.touch(&alert.incoming.group_key);
        Ok(Done {
            text: format!(
                "Alert #{id} ({}) resolved by {}.",
                alert.incoming.alertname(),
                requester.name()
            ),
            detail: format!("resolved alert #{id}"),
            pending_run: None,
            ran: None,
            progress: false,
        })
    }
}
