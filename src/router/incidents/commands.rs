//! The `/incident` sub-commands, one function each: open, lead, update, status, link,
//! resolve, timeline. Each acts on the channel's open incident (open starts one) and notes
//! what it changed on the incident's timeline.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::domain::{
    Alert, AlertId, AlertStatus, InboundEvent, Incident, IncidentId, IncidentStatus, Severity,
    SeverityScheme, StopReason, TimelineEntry, TimelineKind,
};

use super::{IncidentService, ago, done};
use crate::router::{Done, OrNoSuch, OrRefuse, Refusal};

impl IncidentService {
    pub(super) async fn open(
        &self,
        ev: &InboundEvent,
        me: &str,
        now: DateTime<Utc>,
        severity: Severity,
        title: String,
    ) -> Result<Done, Refusal> {
        let draft = Incident {
            id: IncidentId(0),
            title: title.clone(),
            severity: severity.clone(),
            status: IncidentStatus::Open,
            commander: me.to_owned(),
            platform: ev.platform,
            channel_id: ev.channel.id.clone(),
            opened_by: me.to_owned(),
            opened_at: now,
            acked_at: None,
            resolved_at: None,
        };
        let Some(incident) = self
            .incidents
            .open_incident(&draft)
            .await
            .or_refuse("opening incident")?
        else {
            let open = self.require_incident(ev).await?;
            return Err(Refusal::Invalid(format!(
                "this channel already has open incident #{} ({}); resolve it first.",
                open.id, open.title
            )));
        };
        self.note(
            incident.id,
            TimelineKind::Opened,
            me,
            format!("{severity} \"{title}\" opened"),
        )
        .await?;
        let due = (self.severities.ack_due(&severity, now))
            .map(|due| format!(" Acknowledge by {} UTC", due.format("%Y-%m-%d %H:%M")))
            .unwrap_or_default();
        Ok(done(
            format!(
                "🚨 Incident #{} opened: {severity} \"{title}\". Commander: {me}.{due} (/incident update \"...\").",
                incident.id,
            ),
            format!("opened incident #{}", incident.id),
        ))
    }

    /// Hands the incident to `person`; naming a commander acknowledges it.
    pub(super) async fn lead(
        &self,
        ev: &InboundEvent,
        me: &str,
        now: DateTime<Utc>,
        person: &str,
    ) -> Result<Done, Refusal> {
        let incident = self.require_incident(ev).await?;
        let Some(p) = self.directory.person(person) else {
            return Err(Refusal::Invalid(format!(
                "there is no person named {person:?}."
            )));
        };
        self.incidents
            .set_commander(incident.id, &p.name)
            .await
            .or_refuse("setting commander")?;
        self.acknowledge(&incident, now).await?;
        self.note(
            incident.id,
            TimelineKind::Lead,
            me,
            format!("{} is now commander", p.name),
        )
        .await?;
        Ok(done(
            format!("{} now leads incident #{}.", p.name, incident.id),
            format!("incident #{} commander {}", incident.id, p.name),
        ))
    }

    /// Posts an update; the first one acknowledges the incident.
    pub(super) async fn update(
        &self,
        ev: &InboundEvent,
        me: &str,
        now: DateTime<Utc>,
        text: String,
    ) -> Result<Done, Refusal> {
        let incident = self.require_incident(ev).await?;
        self.acknowledge(&incident, now).await?;
        self.note(incident.id, TimelineKind::Update, me, text.clone())
            .await?;
        Ok(done(
            format!("📣 Incident #{} update from {me}: {text}", incident.id),
            format!("incident #{} update", incident.id),
        ))
    }

    async fn acknowledge(&self, incident: &Incident, now: DateTime<Utc>) -> Result<(), Refusal> {
        self.incidents
            .ack_incident(incident.id, now)
            .await
            .or_refuse("acknowledging incident")?;
        self.stop_escalation(incident.id, StopReason::Acknowledged)
            .await;
        Ok(())
    }

    pub(super) async fn status(
        &self,
        ev: &InboundEvent,
        now: DateTime<Utc>,
    ) -> Result<Done, Refusal> {
        let i = self.require_incident(ev).await?;
        let alerts = self
            .incidents
            .linked_alerts(i.id)
            .await
            .or_refuse("listing linked alerts")?;
        let timeline = self.read_timeline(&i).await?;
        let text = render_status(&i, &alerts, &timeline, now, &self.severities);
        Ok(done(text, String::new()))
    }

    pub(super) async fn link(
        &self,
        ev: &InboundEvent,
        me: &str,
        alert: AlertId,
    ) -> Result<Done, Refusal> {
        let incident = self.require_incident(ev).await?;
        let a = self
            .alerts
            .alert(alert)
            .await
            .or_no_such("loading alert", "alert", alert)?;
        let linked = self
            .incidents
            .link_alert(incident.id, alert)
            .await
            .or_refuse("linking alert")?;
        if !linked {
            return Err(Refusal::Invalid(format!(
                "alert #{alert} is already linked to incident #{}.",
                incident.id
            )));
        }
        self.note(
            incident.id,
            TimelineKind::Alert,
            me,
            format!(
                "linked alert #{alert} {} ({})",
                a.incoming.alertname(),
                a.incoming.status
            ),
        )
        .await?;
        Ok(done(
            format!("Alert #{alert} linked to incident #{}.", incident.id),
            format!("incident #{} linked alert #{alert}", incident.id),
        ))
    }

    pub(super) async fn resolve(
        &self,
        ev: &InboundEvent,
        me: &str,
        now: DateTime<Utc>,
    ) -> Result<Done, Refusal> {
        let i = self.require_incident(ev).await?;
        if !self
            .incidents
            .resolve_incident(i.id, now)
            .await
            .or_refuse("resolving incident")?
        {
            return Err(Refusal::Invalid(format!("incident #{} is not open.", i.id)));
        }
        self.stop_escalation(i.id, StopReason::Resolved).await;
        self.note(i.id, TimelineKind::Resolved, me, "resolved".into())
            .await?;
        let acked = i.acked_at.unwrap_or(now);
        Ok(done(
            format!(
                "✅ Incident #{} resolved by {me} after {} (acknowledged after {}). /postmortem {} drafts the postmortem.",
                i.id,
                ago(i.opened_at, now),
                ago(i.opened_at, acked),
                i.id
            ),
            format!("resolved incident #{}", i.id),
        ))
    }

    pub(super) async fn timeline(&self, ev: &InboundEvent) -> Result<Done, Refusal> {
        let i = self.require_incident(ev).await?;
        let timeline = self.read_timeline(&i).await?;
        let mut out = format!("Timeline of incident #{} ({}):", i.id, i.title);
        for e in timeline {
            let _ = write!(out, "\n{} {e}", e.at.format("%H:%M:%S"));
        }
        Ok(done(out, String::new()))
    }

    async fn read_timeline(&self, incident: &Incident) -> Result<Vec<TimelineEntry>, Refusal> {
        self.incidents
            .timeline(incident.id)
            .await
            .or_refuse("reading timeline")
    }
}

/// `/incident status`: age, commander, acknowledgement, linked alerts and the last update.
fn render_status(
    i: &Incident,
    alerts: &[Alert],
    timeline: &[TimelineEntry],
    now: DateTime<Utc>,
    severities: &SeverityScheme,
) -> String {
    let mut out = format!(
        "Incident #{} {} \"{}\" — open for {}, commander {}.",
        i.id,
        i.severity,
        i.title,
        ago(i.opened_at, now),
        i.commander
    );
    match i.acked_at {
        Some(at) => {
            let _ = write!(out, " Acknowledged after {}.", ago(i.opened_at, at));
        }
        None => match severities.ack_due(&i.severity, i.opened_at) {
            Some(due) => {
                let _ = write!(out, " Not acknowledged (due {} UTC).", due.format("%H:%M"));
            }
            None => {
                let _ = write!(
                    out,
                    " Not acknowledged ({} is no longer a configured severity: no target).",
                    i.severity
                );
            }
        },
    }
    let firing = alerts
        .iter()
        .filter(|a| a.incoming.status == AlertStatus::Firing)
        .count();
    let _ = write!(out, " {} linked alert(s), {firing} firing.", alerts.len());
    if let Some(last) = timeline
        .iter()
        .rev()
        .find(|e| e.kind == TimelineKind::Update)
    {
        let _ = write!(
            out,
            " Last update ({} ago, {}): {}",
            ago(last.at, now),
            last.actor,
            last.text
        );
    }
    out
}
