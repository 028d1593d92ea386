//! [`IncidentService`]: incidents from chat and their timeline. It owns the `/incident ...`
//! sub-commands (in [`commands`]), `/postmortem`, recording every consequential command in a
//! channel with an open incident on that incident, and the reminder for incidents past their
//! acknowledgement target. It needs the incident store, the alert store (to link alerts),
//! the clock, the people directory and the severity scheme; nothing else of the router.

mod commands;

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::actions::escalation::Escalations;
use crate::actions::postmortem;
use crate::domain::{
    AlertId, Directory, EscalationSubject, InboundEvent, Incident, IncidentId, Requester,
    SeverityScheme, StopReason, TimelineEntry, TimelineKind, human_duration,
};
use crate::ports::{AlertStore, Clock, IncidentStore, StoreError};

use super::builtins::IncidentCmd;
use super::{Done, Notice, OrNoSuch, OrRefuse, Refusal};

fn done(text: String, detail: String) -> Done {
    Done {
        text,
        detail,
        pending_run: None,
        ran: None,
        progress: false,
    }
}

fn ago(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    human_duration(std::time::Duration::from_secs(
        (to - from).num_seconds().max(0) as u64,
    ))
}

/// Incident commands and the incident timeline, over the ports they need.
pub struct IncidentService {
    incidents: Arc<dyn IncidentStore>,
    /// `/incident link` checks the alert exists and describes it on the timeline.
    alerts: Arc<dyn AlertStore>,
    clock: Arc<dyn Clock>,
    directory: Arc<Directory>,
    /// The severities `/incident open` accepts, with their acknowledgement targets.
    severities: Arc<SeverityScheme>,
    /// Escalates overdue incidents through their severity's policy; stopped by an ack.
    escalations: Arc<Escalations>,
}

impl IncidentService {
    pub fn new(
        incidents: Arc<dyn IncidentStore>,
        alerts: Arc<dyn AlertStore>,
        clock: Arc<dyn Clock>,
        directory: Arc<Directory>,
        severities: Arc<SeverityScheme>,
        escalations: Arc<Escalations>,
    ) -> Self {
        Self {
            incidents,
            alerts,
            clock,
            directory,
            severities,
            escalations,
        }
    }

    /// Stops the incident's escalation, if one is under way. Best effort: the ack or
    /// resolution is stored, and the escalation's next step stops on seeing it anyway.
    async fn stop_escalation(&self, id: IncidentId, why: StopReason) {
        let subject = EscalationSubject::Incident(id);
        if let Err(e) = self.escalations.stop(&subject, why).await {
            tracing::warn!(incident = %id, error = %e, "could not stop the incident's escalation");
        }
    }

    /// Runs one `/incident` sub-command for `requester`.
    pub(in crate::router) async fn command(
        &self,
        ev: &InboundEvent,
        requester: &Requester,
        cmd: IncidentCmd,
    ) -> Result<Done, Refusal> {
        let me = requester.name();
        let now = self.clock.now();
        match cmd {
            IncidentCmd::Open { severity, title } => self.open(ev, &me, now, severity, title).await,
            IncidentCmd::Lead { person } => self.lead(ev, &me, now, &person).await,
            IncidentCmd::Update { text } => self.update(ev, &me, now, text).await,
            IncidentCmd::Status => self.status(ev, now).await,
            IncidentCmd::Link { alert } => self.link(ev, &me, alert).await,
            IncidentCmd::Resolve => self.resolve(ev, &me, now).await,
            IncidentCmd::Timeline => self.timeline(ev).await,
        }
    }

    async fn channel_incident(&self, ev: &InboundEvent) -> Result<Option<Incident>, Refusal> {
        self.incidents
            .open_incident_in(ev.platform, &ev.channel.id)
            .await
            .or_refuse("finding open incident")
    }

    async fn require_incident(&self, ev: &InboundEvent) -> Result<Incident, Refusal> {
        self.channel_incident(ev).await?.ok_or_else(|| {
            Refusal::Invalid(format!(
                "there is no open incident in this channel; /incident open {} \"title\" starts one.",
                self.severities.range()
            ))
        })
    }

    async fn note(
        &self,
        id: IncidentId,
        kind: TimelineKind,
        actor: &str,
        text: String,
    ) -> Result<(), Refusal> {
        let entry = TimelineEntry {
            at: self.clock.now(),
            kind,
            actor: actor.to_owned(),
            text,
        };
        self.incidents
            .add_timeline(id, &entry)
            .await
            .or_refuse("writing incident timeline")
    }

    /// `/postmortem [ID]`: the draft for incident `id`, or for this channel's open incident.
    pub(in crate::router) async fn postmortem(
        &self,
        ev: &InboundEvent,
        id: Option<IncidentId>,
    ) -> Result<String, Refusal> {
        let incident = match id {
            Some(id) => {
                self.incidents
                    .incident(id)
                    .await
                    .or_no_such("loading incident", "incident", id)?
            }
            None => self.channel_incident(ev).await?.ok_or_else(|| {
                Refusal::Invalid(
                    "which incident? /postmortem ID (no incident is open here).".into(),
                )
            })?,
        };
        self.postmortem_for(&incident)
            .await
            .or_refuse("rendering postmortem")
    }

    /// The postmortem draft for an incident (also what `opsbot postmortem ID` prints).
    pub async fn postmortem_for(&self, incident: &Incident) -> Result<String, StoreError> {
        let timeline = self.incidents.timeline(incident.id).await?;
        let alerts = self.incidents.linked_alerts(incident.id).await?;
        let target = self.severities.target(&incident.severity);
        Ok(postmortem::render(incident, target, &timeline, &alerts))
    }

    /// Records a consequential command on the channel's open incident, if there is one.
    /// Best effort: the command already happened, so a store failure is only logged.
    pub(in crate::router) async fn record_on_incident(&self, ev: &InboundEvent, text: String) {
        match self.channel_incident(ev).await {
            Ok(Some(i)) => {
                let actor = self.directory.resolve(&ev.user).name();
                if let Err(Refusal::Failed(e)) =
                    self.note(i.id, TimelineKind::Command, &actor, text).await
                {
                    tracing::warn!(
                        incident = %i.id,
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
    pub(in crate::router) async fn link_to_channel_incident(
        &self,
        ev: &InboundEvent,
        alert_id: AlertId,
        what: String,
    ) {
        // The ack is recorded even when routing linked the alert a moment earlier.
        if let Ok(Some(i)) = self.channel_incident(ev).await
            && self.incidents.link_alert(i.id, alert_id).await.is_ok()
        {
            let actor = self.directory.resolve(&ev.user).name();
            let _ = self.note(i.id, TimelineKind::Alert, &actor, what).await;
        }
    }

    /// Open incidents past their acknowledgement target and not yet reminded: marks each
    /// reminded and queues its ⏰ notice in the outbox in one transaction (so it is posted
    /// once, whoever sweeps), and returns the notices queued. An incident whose severity has
    /// an escalation policy starts escalating through it then, its steps counted from the
    /// target (the escalation's own steps remind it again, until it is acknowledged).
    pub async fn overdue(&self, now: DateTime<Utc>) -> Result<Vec<Notice>, StoreError> {
        let mut notices = Vec::new();
        for i in self.incidents.unacked_incidents().await? {
            // A severity no longer configured has no target: never overdue.
            let Some(due) = self.severities.ack_due(&i.severity, i.opened_at) else {
                continue;
            };
            if now < due {
                continue;
            }
            self.escalations
                .incident_overdue(i.id, &i.severity, due)
                .await?;
            let notice = Notice {
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
                urgent: self.severities.is_most_severe(&i.severity),
            };
            if self
                .incidents
                .mark_reminded(i.id, now, &notice.queued())
                .await?
            {
                notices.push(notice);
            }
        }
        Ok(notices)
    }
}
