//! Escalations: an alert group with a firing, unacknowledged alert routed to a policy, or an
//! incident past its acknowledgement target whose severity has one, walks the policy's
//! steps until someone acknowledges, silences or resolves it. The state is in the store
//! ([`crate::ports::EscalationStore`]), so a restarted or new leader continues from the stored
//! step; each step is claimed with the outbox message that announces it (the mentions of
//! who it notifies), so with several replicas it fires once. A `page:` step's trigger is
//! queued with its claim and sent after it (`pages.rs`); stopping acknowledges or resolves
//! what was paged. Every step and stop is audited and noted on the incident's timeline (an
//! alert group's: the open incident of a channel it is routed to; its stop also on every
//! open incident its alerts are linked to).

mod pages;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::warn;

use crate::actions::alerts::{AlertRouting, ack_action, common_labels, shown};
use crate::actions::oncall::OnCall;
use crate::domain::{
    Alert, AlertStatus, AuditEntry, Directory, DueStep, EscalationPolicy, EscalationRecord,
    EscalationSubject, IncidentId, IncidentStatus, MentionOf, Notify, Outcome, Platform, RequestId,
    Role, Severity, SeverityScheme, Silence, StopReason, TimelineEntry, TimelineKind, Visibility,
    group_stop_reason,
};
use crate::metrics::{Metrics, StepOutcome};
use crate::ports::{
    Clock, OutboundMessage, OutboundTarget, Page, PageSeverity, Pager, Queued, QueuedPage, Store,
    StoreError,
};

/// Due escalations one tick takes at most (the rest wait for the next tick, a second later).
const DUE_BATCH: u32 = 500;

/// Who the audit log names as taking escalation steps.
const ACTOR: &str = "opsbot:escalation";

/// The escalation policies and what walking them needs.
pub struct Escalations {
    policies: HashMap<String, Arc<EscalationPolicy>>,
    /// The policy of each incident severity that has one.
    by_severity: BTreeMap<Severity, String>,
    /// Which severity is the most severe (its pages are critical).
    severities: Arc<SeverityScheme>,
    /// A Slack user group pinged for a role instead of its holders, on Slack.
    slack_groups: BTreeMap<Role, String>,
    routing: AlertRouting,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    oncall: Arc<OnCall>,
    directory: Arc<Directory>,
    pager: Arc<dyn Pager>,
    metrics: Arc<Metrics>,
}

/// What a step is about, as its message and page need it.
struct Context {
    targets: Vec<OutboundTarget>,
    /// What the message says after its step header.
    text: String,
    /// Ack buttons for the alerts concerned (none for an incident).
    actions: Vec<crate::ports::ChatAction>,
    dedup_key: String,
    summary: String,
    severity: PageSeverity,
    /// Where the step goes on a timeline.
    incident: Option<IncidentId>,
    /// `platform:channel` for the audit record.
    channel: String,
}

/// Where walking an escalation stands.
enum Standing {
    Live(Box<Context>),
    Stop(StopReason),
}

/// The parts of [`Escalations`] that come from the config.
pub struct EscalationSettings {
    pub policies: Vec<EscalationPolicy>,
    pub by_severity: BTreeMap<Severity, String>,
    pub severities: Arc<SeverityScheme>,
    pub slack_groups: BTreeMap<Role, String>,
}

/// The ports [`Escalations`] works through.
pub struct EscalationPorts {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub oncall: Arc<OnCall>,
    pub directory: Arc<Directory>,
    pub pager: Arc<dyn Pager>,
    /// Steps by outcome, their lateness, stops by reason.
    pub metrics: Arc<Metrics>,
}

impl Escalations {
    pub fn new(
        settings: EscalationSettings,
        routing: AlertRouting,
        ports: EscalationPorts,
    ) -> Self {
        ports.metrics.known_escalations(&settings.policies);
        Self {
            policies: (settings.policies.into_iter())
                .map(|p| (p.name.clone(), Arc::new(p)))
                .collect(),
            by_severity: settings.by_severity,
            severities: settings.severities,
            slack_groups: settings.slack_groups,
            routing,
            store: ports.store,
            clock: ports.clock,
            oncall: ports.oncall,
            directory: ports.directory,
            pager: ports.pager,
            metrics: ports.metrics,
        }
    }

    /// After an alert group changed (new alerts, an ack, a silence, a resolution): starts its
    /// escalation when it is routed to a policy and has a firing, unacknowledged, unsilenced
    /// alert; stops the one under way when it has none any more.
    pub async fn group_changed(
        &self,
        group_key: &str,
        alerts: &[Alert],
        silences: &[Silence],
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        let subject = EscalationSubject::AlertGroup(group_key.to_owned());
        // Read first: most refreshes change nothing here, and a read costs no write lock.
        let active = self.store.active_escalation(&subject).await?.is_some();
        match (group_stop_reason(alerts, silences, now), active) {
            (Some(why), true) => self.stop(&subject, why).await,
            (None, false) => {
                let policy = (self.routing)
                    .policy(&common_labels(alerts))
                    .and_then(|name| self.policies.get(name));
                if let Some(policy) = policy {
                    self.start(&subject, policy, now).await?;
                }
                Ok(())
            }
            (Some(_), false) | (None, true) => Ok(()),
        }
    }

    /// An incident past its acknowledgement target at `due`: escalates through its
    /// severity's policy, the steps counted from `due`. False when its severity has none.
    pub async fn incident_overdue(
        &self,
        id: IncidentId,
        severity: &Severity,
        due: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let Some(policy) = (self.by_severity.get(severity)).and_then(|p| self.policies.get(p))
        else {
            return Ok(false);
        };
        self.start(&EscalationSubject::Incident(id), policy, due)
            .await?;
        Ok(true)
    }

    async fn start(
        &self,
        subject: &EscalationSubject,
        policy: &EscalationPolicy,
        started: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let Some(first) = policy.due_at(0, started) else {
            return Ok(false);
        };
        let now = self.clock.now();
        (self.store)
            .start_escalation(subject, &policy.name, started.min(now), first)
            .await
    }

    /// Stops the escalation of `subject` under way, if any: audited and on the timeline; its
    /// pages are closed upstream by the next tick.
    pub async fn stop(
        &self,
        subject: &EscalationSubject,
        why: StopReason,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        let Some(stopped) = self.store.stop_escalation(subject, why, now).await? else {
            return Ok(());
        };
        self.metrics.escalation_stopped(why);
        let detail = format!(
            "escalation through {} stopped after {} step(s): {why}",
            stopped.policy, stopped.next_step
        );
        let incidents = match subject {
            EscalationSubject::Incident(id) => vec![*id],
            EscalationSubject::AlertGroup(key) => self.incidents_of_group(key).await,
        };
        self.record(subject, &incidents, "", &detail).await;
        Ok(())
    }

    /// The open incidents a group's stop goes on the timeline of: those its alerts are
    /// linked to, and the open incident of a channel it is routed to (where its steps were
    /// noted). Best effort: the stop already happened, so a failed look-up only loses the note.
    async fn incidents_of_group(&self, key: &str) -> Vec<IncidentId> {
        let found = async {
            let mut ids = self.store.open_incidents_linked_to_group(key).await?;
            let alerts = self.store.alerts_in_group(key).await?;
            let targets = self.routing.targets(&common_labels(&alerts));
            if let Some(id) = self.incident_of(&targets).await?
                && !ids.contains(&id)
            {
                ids.push(id);
            }
            Ok::<_, StoreError>(ids)
        };
        found.await.unwrap_or_else(|e| {
            warn!(group = key, error = %e, "could not find the incident of a stopped escalation");
            Vec::new()
        })
    }

    /// Takes every step due now, sends the pages queued (by these steps, or left unsent by a
    /// failure or a crash), then closes the pages of stopped escalations. Returns how
    /// many steps were taken (their messages are queued in the outbox; the caller wakes it).
    pub async fn tick(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let mut taken = 0;
        for e in self.store.due_escalations(now, DUE_BATCH).await? {
            match self.advance(e, now).await {
                Ok(n) => taken += n,
                Err(err) => warn!(error = %err, "an escalation step failed; will retry"),
            }
        }
        self.send_pages().await?;
        self.close_pages().await?;
        Ok(taken)
    }

    /// Takes the steps of one escalation due at `now`, in order, each claimed on its own.
    async fn advance(
        &self,
        mut e: EscalationRecord,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let Some(policy) = self.policies.get(&e.policy).cloned() else {
            self.stop(&e.subject, StopReason::PolicyRemoved).await?;
            return Ok(0);
        };
        let context = match self.standing(&e.subject, now).await? {
            Standing::Live(context) => context,
            Standing::Stop(why) => {
                self.stop(&e.subject, why).await?;
                return Ok(0);
            }
        };
        let mut taken = 0;
        while let Some(step) = policy.step(e.next_step) {
            if policy
                .due_at(step.index, e.started_at)
                .is_none_or(|at| at > now)
            {
                break;
            }
            if !self.take(&e, &policy, step, &context, now).await? {
                break;
            }
            taken += 1;
            e.next_step += 1;
        }
        Ok(taken)
    }

    /// Claims one step with its messages and pages (sent by [`Self::send_pages`] after the
    /// claim), then records it. False when another sweep took it first (or it stopped
    /// meanwhile).
    async fn take(
        &self,
        e: &EscalationRecord,
        policy: &EscalationPolicy,
        step: DueStep<'_>,
        context: &Context,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let pages: Vec<QueuedPage> = (step.step.notify.iter())
            .filter_map(|n| match n {
                Notify::Page(service) => Some(QueuedPage {
                    service: service.clone(),
                    page: self.page(context),
                }),
                _ => None,
            })
            .collect();
        let mut notices = Vec::new();
        for to in &context.targets {
            let message = self
                .step_message(policy, step, context, to.platform)
                .await?;
            notices.push(Queued::post(to.clone(), message));
        }
        let next_due = policy.due_at(step.index + 1, e.started_at);
        if !(self.store)
            .claim_escalation_step(e.id, step.index, next_due, &pages, &notices, now)
            .await?
        {
            return Ok(false);
        }
        self.count_step(policy, step, now, e.started_at).await;
        let detail = format!(
            "escalation through {} step {}/{}: notified {}",
            policy.name,
            step.index + 1,
            policy.total_steps(),
            (step.step.notify.iter())
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        let incidents: Vec<IncidentId> = context.incident.into_iter().collect();
        self.record(&e.subject, &incidents, &context.channel, &detail)
            .await;
        Ok(true)
    }

    /// A step taken, in the metrics: how late, and what each of its chat targets came to
    /// (a page's outcome is counted when it is sent).
    async fn count_step(
        &self,
        policy: &EscalationPolicy,
        step: DueStep<'_>,
        now: DateTime<Utc>,
        started: DateTime<Utc>,
    ) {
        if let Some(due) = policy.due_at(step.index, started) {
            (self.metrics).escalation_step_late((now - due).to_std().unwrap_or_default());
        }
        for n in &step.step.notify {
            let outcome = match n {
                Notify::Schedule { schedule, layer } => {
                    match self.oncall.on_call_now(schedule, layer.as_deref()).await {
                        Ok(None) => StepOutcome::NobodyOnCall,
                        Ok(Some(_)) | Err(_) => StepOutcome::Notified,
                    }
                }
                Notify::Person(_) | Notify::Role(_) => StepOutcome::Notified,
                Notify::Page(_) => continue,
            };
            self.metrics.escalation_step(&policy.name, n, outcome);
        }
    }

    fn page(&self, context: &Context) -> Page {
        Page {
            dedup_key: context.dedup_key.clone(),
            summary: context.summary.clone(),
            source: "opsbot".into(),
            severity: context.severity,
        }
    }

    /// The message of one step for a channel on `platform`: the header, what it is about,
    /// and a mention of each person (or group) the step notifies there.
    async fn step_message(
        &self,
        policy: &EscalationPolicy,
        step: DueStep<'_>,
        context: &Context,
        platform: Platform,
    ) -> Result<OutboundMessage, StoreError> {
        let mut m = OutboundMessage::text(format!(
            "🚨 Escalation {}/{} ({}): {}",
            step.index + 1,
            policy.total_steps(),
            policy.name,
            context.text
        ));
        for n in &step.step.notify {
            m.text.push(' ');
            self.push_notify(&mut m, n, platform).await?;
        }
        Ok(m.with_actions(context.actions.clone())
            .with_visibility(Visibility::Channel)
            .urgent())
    }

    async fn push_notify(
        &self,
        m: &mut OutboundMessage,
        n: &Notify,
        platform: Platform,
    ) -> Result<(), StoreError> {
        match n {
            Notify::Schedule { schedule, layer } => {
                match self.oncall.on_call_now(schedule, layer.as_deref()).await? {
                    Some(person) => self.oncall.mention(m, &person, platform),
                    None => {
                        let layer = layer.as_deref().unwrap_or("on-call");
                        let _ = write!(m.text, "(nobody on {schedule} {layer} now)");
                    }
                }
            }
            Notify::Person(person) => self.oncall.mention(m, person, platform),
            Notify::Role(role) => self.push_role(m, role, platform),
            Notify::Page(service) => {
                let _ = write!(m.text, "(paging {service})");
            }
        }
        Ok(())
    }

    /// A role: its Slack user group on Slack where one is configured, else each holder.
    fn push_role(&self, m: &mut OutboundMessage, role: &Role, platform: Platform) {
        if platform == Platform::Slack
            && let Some(group) = self.slack_groups.get(role)
        {
            m.push_mention(role.as_str(), Some(MentionOf::Group(group.clone())));
            return;
        }
        let mut holders: Vec<&str> = (self.directory.people())
            .filter(|p| p.roles.contains(role))
            .map(|p| p.name.as_str())
            .collect();
        holders.sort_unstable();
        for (i, person) in holders.into_iter().enumerate() {
            if i > 0 {
                m.text.push(' ');
            }
            self.oncall.mention(m, person, platform);
        }
    }

    /// Whether the subject still escalates, and what its steps say about it.
    async fn standing(
        &self,
        subject: &EscalationSubject,
        now: DateTime<Utc>,
    ) -> Result<Standing, StoreError> {
        match subject {
            EscalationSubject::AlertGroup(key) => self.group_standing(key, now).await,
            EscalationSubject::Incident(id) => self.incident_standing(*id).await,
        }
    }

    async fn group_standing(&self, key: &str, now: DateTime<Utc>) -> Result<Standing, StoreError> {
        let alerts = self.store.alerts_in_group(key).await?;
        let silences = self.store.active_silences(now).await?;
        if let Some(why) = group_stop_reason(&alerts, &silences, now) {
            return Ok(Standing::Stop(why));
        }
        let live: Vec<&Alert> = (alerts.iter())
            .filter(|a| {
                a.incoming.status == AlertStatus::Firing
                    && a.acked_by.is_none()
                    && !silences.iter().any(|s| s.covers(&a.incoming.labels, now))
            })
            .collect();
        let targets = self.routing.targets(&common_labels(&alerts));
        let first = live[0];
        let (text, dedup_key) = describe(key, &live, now);
        let incident = self.incident_of(&targets).await?;
        Ok(Standing::Live(Box::new(Context {
            channel: targets
                .first()
                .map_or_else(String::new, |t| format!("{}:{}", t.platform, t.channel_id)),
            actions: live.iter().take(5).map(|a| ack_action(a.id)).collect(),
            summary: format!(
                "{} [{}] firing, not acknowledged",
                first.incoming.alertname(),
                first.severity()
            ),
            severity: if first.is_critical() {
                PageSeverity::Critical
            } else {
                PageSeverity::Error
            },
            targets,
            text,
            dedup_key,
            incident,
        })))
    }

    /// The open incident of the first routed channel that has one (for its timeline).
    async fn incident_of(
        &self,
        targets: &[OutboundTarget],
    ) -> Result<Option<IncidentId>, StoreError> {
        for t in targets {
            if let Some(i) = self
                .store
                .open_incident_in(t.platform, &t.channel_id)
                .await?
            {
                return Ok(Some(i.id));
            }
        }
        Ok(None)
    }

    async fn incident_standing(&self, id: IncidentId) -> Result<Standing, StoreError> {
        let Some(i) = self.store.incident(id).await? else {
            return Ok(Standing::Stop(StopReason::Resolved));
        };
        if i.status == IncidentStatus::Resolved {
            return Ok(Standing::Stop(StopReason::Resolved));
        }
        if i.acked_at.is_some() {
            return Ok(Standing::Stop(StopReason::Acknowledged));
        }
        let target = OutboundTarget {
            platform: i.platform,
            channel_id: i.channel_id.clone(),
            thread: None,
        };
        Ok(Standing::Live(Box::new(Context {
            channel: format!("{}:{}", i.platform, i.channel_id),
            targets: vec![target],
            text: format!(
                "incident #{} ({} \"{}\") is not acknowledged; /incident update \"...\" to acknowledge.",
                i.id,
                i.severity,
                shown(&i.title)
            ),
            actions: Vec::new(),
            dedup_key: format!("incident-{}", i.id),
            summary: format!("Incident #{} ({}): {}", i.id, i.severity, i.title),
            severity: if self.severities.is_most_severe(&i.severity) {
                PageSeverity::Critical
            } else {
                PageSeverity::Error
            },
            incident: Some(i.id),
        })))
    }

    /// A step or stop in the audit log and on the incident's timeline. Best effort: what it
    /// records already happened, and a sweep must not stop at one failure.
    async fn record(
        &self,
        subject: &EscalationSubject,
        incidents: &[IncidentId],
        channel: &str,
        detail: &str,
    ) {
        let now = self.clock.now();
        let args = match subject {
            EscalationSubject::AlertGroup(key) => format!("alert group {key}"),
            EscalationSubject::Incident(id) => format!("incident #{id}"),
        };
        let entry = AuditEntry {
            request_id: RequestId::new(),
            at: now,
            actor: ACTOR.into(),
            channel: channel.to_owned(),
            command: "escalate".into(),
            args,
            outcome: Outcome::Ok,
            detail: detail.to_owned(),
        };
        if let Err(e) = self.store.append_audit(entry).await {
            warn!(error = %e, "could not audit an escalation step");
        }
        for &id in incidents {
            let note = TimelineEntry {
                at: now,
                kind: TimelineKind::Alert,
                actor: "opsbot".into(),
                text: detail.to_owned(),
            };
            if let Err(e) = self.store.add_timeline(id, &note).await {
                warn!(incident = %id, error = %e, "could not note an escalation on the timeline");
            }
        }
    }
}

/// What a step says about a group's unacknowledged alerts, and the dedup key of its page:
/// the alert's fingerprint when one is unacknowledged, the group's key when several are.
fn describe(key: &str, live: &[&Alert], now: DateTime<Utc>) -> (String, String) {
    let first = live[0];
    let age = (now - first.incoming.starts_at).num_minutes().max(0);
    match live {
        [one] => (
            format!(
                "alert #{} {} [{}] firing for {age}m, not acknowledged; /ack {} to take it.",
                one.id,
                shown(one.incoming.alertname()),
                shown(one.severity()),
                one.id
            ),
            one.incoming.fingerprint.clone(),
        ),
        many => (
            format!(
                "{} alerts of {} firing, not acknowledged; /ack ID to take one.",
                many.len(),
                shown(first.incoming.alertname())
            ),
            key.to_owned(),
        ),
    }
}
