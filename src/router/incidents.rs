//! Incident commands (`/incident ...`, `/postmortem`) and the incident timeline: every
//! consequential command in a channel with an open incident is recorded on it.

use std::fmt::Write as _;

use crate::actions::postmortem;
use crate::domain::{
    InboundEvent, Incident, IncidentStatus, Requester, TimelineEntry, TimelineKind, human_duration,
};
use crate::ports::StoreError;

use super::builtins::IncidentCmd;
use super::{Done, Refusal, Router};

fn store_failed(what: &'static str) -> impl FnOnce(StoreError) -> Refusal {
    move |e| Refusal::Failed(anyhow::Error::new(e).context(what))
}

fn done(text: String, detail: String) -> Done {
    Done {
        text,
        detail,
        pending_run: None,
        ran: None,
    }
}

fn ago(from: chrono::DateTime<chrono::Utc>, to: chrono::DateTime<chrono::Utc>) -> String {
    human_duration(std::time::Duration::from_secs(
        (to - from).num_seconds().max(0) as u64,
    ))
}

impl Router {
    async fn channel_incident(&self, ev: &InboundEvent) -> Result<Option<Incident>, Refusal> {
        self.deps
            .store
            .open_incident_in(ev.platform, &ev.channel.id)
            .await
            .map_err(store_failed("finding open incident"))
    }

    async fn require_incident(&self, ev: &InboundEvent) -> Result<Incident, Refusal> {
        self.channel_incident(ev).await?.ok_or_else(|| {
            Refusal::Invalid("there is no open incident in this channel; /incident open P1..P4 \"title\" starts one.".into())
        })
    }

    async fn note(
        &self,
        id: i64,
        kind: TimelineKind,
        actor: &str,
        text: String,
    ) -> Result<(), Refusal> {
        let entry = TimelineEntry {
            at: self.deps.clock.now(),
            kind,
            actor: actor.to_owned(),
            text,
        };
        self.deps
            .store
            .add_timeline(id, &entry)
            .await
            .map_err(store_failed("writing incident timeline"))
    }

    pub(super) async fn incident(
        &self,
        ev: &InboundEvent,
        requester: &Requester,
        cmd: IncidentCmd,
    ) -> Result<Done, Refusal> {
        let me = requester
            .person()
            .map_or_else(|| requester.user().to_string(), |p| p.name.clone());
        let store = &self.deps.store;
        let now = self.deps.clock.now();
        match cmd {
            IncidentCmd::Open { severity, title } => {
                let draft = Incident {
                    id: 0,
                    title: title.clone(),
                    severity,
                    status: IncidentStatus::Open,
                    commander: me.clone(),
                    platform: ev.platform,
                    channel_id: ev.channel.id.clone(),
                    opened_by: me.clone(),
                    opened_at: now,
                    acked_at: None,
                    resolved_at: None,
                };
                let Some(incident) = store
                    .open_incident(&draft)
                    .await
                    .map_err(store_failed("opening incident"))?
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
                    &me,
                    format!("{severity} \"{title}\" opened"),
                )
                .await?;
                let due = severity.ack_due(now, &self.deps.response_targets);
                Ok(done(
                    format!(
                        "🚨 Incident #{} opened: {severity} \"{title}\". Commander: {me}. Acknowledge by {} UTC (/incident update \"...\").",
                        incident.id,
                        due.format("%Y-%m-%d %H:%M")
                    ),
                    format!("opened incident #{}", incident.id),
                ))
            }
            IncidentCmd::Lead { person } => {
                let incident = self.require_incident(ev).await?;
                let Some(p) = self.deps.directory.person(&person) else {
                    return Err(Refusal::Invalid(format!(
                        "there is no person named {person:?}."
                    )));
                };
                store
                    .set_commander(incident.id, &p.name)
                    .await
                    .map_err(store_failed("setting commander"))?;
                store
                    .ack_incident(incident.id, now)
                    .await
                    .map_err(store_failed("acknowledging incident"))?;
                self.note(
                    incident.id,
                    TimelineKind::Lead,
                    &me,
                    format!("{} is now commander", p.name),
                )
                .await?;
                Ok(done(
                    format!("{} now leads incident #{}.", p.name, incident.id),
                    format!("incident #{} commander {}", incident.id, p.name),
                ))
            }
            IncidentCmd::Update { text } => {
                let incident = self.require_incident(ev).await?;
                store
                    .ack_incident(incident.id, now)
                    .await
                    .map_err(store_failed("acknowledging incident"))?;
                self.note(incident.id, TimelineKind::Update, &me, text.clone())
                    .await?;
                Ok(done(
                    format!("📣 Incident #{} update from {me}: {text}", incident.id),
                    format!("incident #{} update", incident.id),
                ))
            }
            IncidentCmd::Status => {
                let i = self.require_incident(ev).await?;
                let alerts = store
                    .linked_alerts(i.id)
                    .await
                    .map_err(store_failed("listing linked alerts"))?;
                let timeline = store
                    .timeline(i.id)
                    .await
                    .map_err(store_failed("reading timeline"))?;
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
                    None => {
                        let due = i.severity.ack_due(i.opened_at, &self.deps.response_targets);
                        let _ = write!(out, " Not acknowledged (due {} UTC).", due.format("%H:%M"));
                    }
                }
                let firing = alerts
                    .iter()
                    .filter(|a| a.incoming.status == crate::domain::AlertStatus::Firing)
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
                Ok(done(out, String::new()))
            }
            IncidentCmd::Link { alert } => {
                let incident = self.require_incident(ev).await?;
                let a = store
                    .alert(alert)
                    .await
                    .map_err(store_failed("loading alert"))?
                    .ok_or_else(|| Refusal::Invalid(format!("there is no alert #{alert}.")))?;
                let linked = store
                    .link_alert(incident.id, alert)
                    .await
                    .map_err(store_failed("linking alert"))?;
                if !linked {
                    return Err(Refusal::Invalid(format!(
                        "alert #{alert} is already linked to incident #{}.",
                        incident.id
                    )));
                }
                self.note(
                    incident.id,
                    TimelineKind::Alert,
                    &me,
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
            IncidentCmd::Resolve => {
                let i = self.require_incident(ev).await?;
                if !store
                    .resolve_incident(i.id, now)
                    .await
                    .map_err(store_failed("resolving incident"))?
                {
                    return Err(Refusal::Invalid(format!("incident #{} is not open.", i.id)));
                }
                self.note(i.id, TimelineKind::Resolved, &me, "resolved".into())
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
            IncidentCmd::Timeline => {
                let i = self.require_incident(ev).await?;
                let timeline = store
                    .timeline(i.id)
                    .await
                    .map_err(store_failed("reading timeline"))?;
                let mut out = format!("Timeline of incident #{} ({}):", i.id, i.title);
                for e in timeline {
                    let _ = write!(
                        out,
                        "\n{} {} · {}: {}",
                        e.at.format("%H:%M:%S"),
                        e.kind.as_str(),
                        e.actor,
                        e.text
                    );
                }
                Ok(done(out, String::new()))
            }
        }
    }

    pub(super) async fn postmortem(
        &self,
        ev: &InboundEvent,
        id: Option<i64>,
    ) -> Result<String, Refusal> {
        let incident = match id {
            Some(id) => self
                .deps
                .store
                .incident(id)
                .await
                .map_err(store_failed("loading incident"))?
                .ok_or_else(|| Refusal::Invalid(format!("there is no incident #{id}.")))?,
            None => self.channel_incident(ev).await?.ok_or_else(|| {
                Refusal::Invalid(
                    "which incident? /postmortem ID (no incident is open here).".into(),
                )
            })?,
        };
        self.postmortem_markdown(&incident).await
    }

    async fn postmortem_markdown(&self, incident: &Incident) -> Result<String, Refusal> {
        self.postmortem_for(incident)
            .await
            .map_err(store_failed("rendering postmortem"))
    }

    /// The postmortem draft for an incident (also what `opsbot postmortem ID` prints).
    pub async fn postmortem_for(&self, incident: &Incident) -> Result<String, StoreError> {
        let timeline = self.deps.store.timeline(incident.id).await?;
        let alerts = self.deps.store.linked_alerts(incident.id).await?;
        Ok(postmortem::render(incident, &timeline, &alerts))
    }

    /// Records a consequential command on the channel's open incident, if there is one.
    pub(super) async fn record_on_incident(&self, ev: &InboundEvent, text: String) {
        match self.channel_incident(ev).await {
            Ok(Some(i)) => {
                let actor = self
                    .deps
                    .directory
                    .resolve(&ev.user)
                    .person()
                    .map_or_else(|| ev.user.to_string(), |p| p.name.clone());
                if let Err(Refusal::Failed(e)) =
                    self.note(i.id, TimelineKind::Command, &actor, text).await
                {
                    tracing::warn!(
                        incident = i.id,
                        error = format!("{e:#}"),
                        "could not add to incident timeline"
                    );
                }
            }
            Ok(None) => {}
            Err(Refusal::Failed(e)) => {
                tracing::warn!(error = format!("{e:#}"), "could not look up open incident")
            }
            Err(_) => {}
        }
    }

    /// Links an alert acknowledged in a channel with an open incident to that incident.
    pub(super) async fn link_to_channel_incident(
        &self,
        ev: &InboundEvent,
        alert_id: i64,
        what: String,
    ) {
        // The ack is recorded even when routing linked the alert a moment earlier.
        if let Ok(Some(i)) = self.channel_incident(ev).await
            && self.deps.store.link_alert(i.id, alert_id).await.is_ok()
        {
            let actor = self
                .deps
                .directory
                .resolve(&ev.user)
                .person()
                .map_or_else(|| ev.user.to_string(), |p| p.name.clone());
            let _ = self.note(i.id, TimelineKind::Alert, &actor, what).await;
        }
    }
}
