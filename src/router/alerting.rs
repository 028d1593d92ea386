//! Alert commands from chat: `/alerts`, `/ack`, `/silence`, `/unsilence`, `/resolve`. Each
//! changes stored state with a conditional update and then refreshes the group's message.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Duration;

use crate::domain::{AlertSource, AlertStatus, Matcher, Requester, Silence, human_duration};
use crate::ports::StoreError;

use super::{Done, Refusal, Router};

/// Firing alerts `/alerts` lists at most.
const LIST_LIMIT: u32 = 25;

fn store_failed(what: &'static str) -> impl FnOnce(StoreError) -> Refusal {
    move |e| Refusal::Failed(anyhow::Error::new(e).context(what))
}

fn who(requester: &Requester) -> String {
    requester
        .person()
        .map_or_else(|| requester.user().to_string(), |p| p.name.clone())
}

impl Router {
    pub(super) async fn list_alerts(&self) -> Result<String, Refusal> {
        let alerts = self
            .deps
            .store
            .active_alerts(LIST_LIMIT)
            .await
            .map_err(store_failed("listing alerts"))?;
        if alerts.is_empty() {
            return Ok("No alerts are firing.".into());
        }
        let now = self.deps.clock.now();
        let mut out = format!("{} firing (newest first):", alerts.len());
        for a in &alerts {
            let icon = if a.is_critical() { "🔴" } else { "🟠" };
            let age = (now - a.incoming.starts_at).to_std().unwrap_or_default();
            let _ = write!(
                out,
                "\n{icon} #{} [{}] {}",
                a.id,
                a.severity(),
                a.incoming.alertname()
            );
            if let Some(i) = a.incoming.labels.get("instance") {
                let _ = write!(out, " {i}");
            }
            if !a.summary().is_empty() {
                let _ = write!(out, ": {}", a.summary());
            }
            let _ = write!(
                out,
                " · for {}",
                human_duration(Duration::from_secs(age.as_secs()))
            );
            match &a.acked_by {
                Some(by) => {
                    let _ = write!(out, " · acked by {by}");
                }
                None => out.push_str(" · not acked"),
            }
        }
        Ok(out)
    }

    pub(super) async fn ack(
        &self,
        ev: &crate::domain::InboundEvent,
        requester: &Requester,
        id: i64,
    ) -> Result<Done, Refusal> {
        let store = &self.deps.store;
        let alert = store
            .alert(id)
            .await
            .map_err(store_failed("loading alert"))?
            .ok_or_else(|| Refusal::Invalid(format!("there is no alert #{id}.")))?;
        let name = who(requester);
        let acked = store
            .ack_alert(id, &name, self.deps.clock.now())
            .await
            .map_err(store_failed("acknowledging alert"))?;
        if !acked {
            return Err(Refusal::Invalid(
                match (&alert.acked_by, alert.incoming.status) {
                    (_, AlertStatus::Resolved) => format!("alert #{id} is already resolved."),
                    (Some(by), _) => format!("alert #{id} was already acknowledged by {by}."),
                    (None, _) => format!("alert #{id} could not be acknowledged; try again."),
                },
            ));
        }
        self.deps.alerts.touch(&alert.incoming.group_key);
        let what = format!("alert #{id} {} acknowledged", alert.incoming.alertname());
        self.link_to_channel_incident(ev, id, what).await;
        Ok(Done {
            text: format!(
                "Alert #{id} ({}) acknowledged by {name}.",
                alert.incoming.alertname()
            ),
            detail: format!("acked alert #{id}"),
            pending_run: None,
            ran: None,
        })
    }

    /// Acknowledges every firing, unacknowledged alert in a group (an ack reaction on its message).
    pub(super) async fn ack_group(
        &self,
        ev: &crate::domain::InboundEvent,
        requester: &Requester,
        group_key: &str,
    ) -> Result<Done, Refusal> {
        let may = requester
            .person()
            .is_some_and(|p| p.has_any_role(&self.deps.access.respond));
        if !may {
            return Err(Refusal::Denied(format!(
                "acknowledging alerts needs a responder role; {} does not have one.",
                ev.user
            )));
        }
        let name = who(requester);
        let now = self.deps.clock.now();
        let mut acked = Vec::new();
        for a in self
            .deps
            .store
            .alerts_in_group(group_key)
            .await
            .map_err(store_failed("loading alert group"))?
        {
            if a.acked_by.is_none()
                && a.incoming.status == AlertStatus::Firing
                && self
                    .deps
                    .store
                    .ack_alert(a.id, &name, now)
                    .await
                    .map_err(store_failed("acknowledging alert"))?
            {
                acked.push(format!("#{}", a.id));
            }
        }
        if acked.is_empty() {
            return Err(Refusal::Invalid(
                "nothing to acknowledge in that group.".into(),
            ));
        }
        self.deps.alerts.touch(group_key);
        Ok(Done {
            text: format!("{name} acknowledged {}.", acked.join(", ")),
            detail: format!("acked {}", acked.join(" ")),
            pending_run: None,
            ran: None,
        })
    }

    pub(super) async fn silence(
        &self,
        requester: &Requester,
        matchers: Vec<Matcher>,
        duration: Duration,
        reason: String,
    ) -> Result<Done, Refusal> {
        let now = self.deps.clock.now();
        let mut silence = Silence {
            id: 0,
            matchers,
            created_by: who(requester),
            reason,
            starts_at: now,
            ends_at: now + chrono::Duration::from_std(duration).unwrap_or_default(),
            upstream_id: None,
        };
        silence.id = self
            .deps
            .store
            .add_silence(&silence)
            .await
            .map_err(store_failed("adding silence"))?;
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
        })
    }

    /// Creates the silence in Alertmanager too, when configured; says how that went.
    async fn write_back_silence(&self, silence: &Silence) -> String {
        let Some(sync) = &self.deps.silence_sync else {
            return String::new();
        };
        match sync.create(silence).await {
            Ok(upstream) => {
                if let Err(e) = self
                    .deps
                    .store
                    .set_silence_upstream(silence.id, &upstream)
                    .await
                {
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
            .deps
            .store
            .active_alerts(10_000)
            .await
            .map_err(store_failed("listing alerts"))?;
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
            self.deps.alerts.touch(g);
        }
        Ok(covered.len())
    }

    pub(super) async fn unsilence(&self, requester: &Requester, id: i64) -> Result<Done, Refusal> {
        let now = self.deps.clock.now();
        let active = self
            .deps
            .store
            .active_silences(now)
            .await
            .map_err(store_failed("listing silences"))?;
        let Some(silence) = active.into_iter().find(|s| s.id == id) else {
            return Err(Refusal::Invalid(format!(
                "there is no active silence #{id}."
            )));
        };
        let ended = self
            .deps
            .store
            .end_silence(id, now)
            .await
            .map_err(store_failed("ending silence"))?;
        if !ended {
            return Err(Refusal::Invalid(format!("silence #{id} already ended.")));
        }
        if let (Some(sync), Some(upstream)) = (&self.deps.silence_sync, &silence.upstream_id)
            && let Err(e) = sync.expire(upstream).await
        {
            tracing::warn!(silence = id, error = %e, "could not expire the Alertmanager silence");
        }
        self.refresh_matching(&silence).await?;
        Ok(Done {
            text: format!("Silence #{id} ended by {}.", who(requester)),
            detail: format!("ended silence #{id}"),
            pending_run: None,
            ran: None,
        })
    }

    pub(super) async fn resolve(&self, requester: &Requester, id: i64) -> Result<Done, Refusal> {
        let alert = self
            .deps
            .store
            .alert(id)
            .await
            .map_err(store_failed("loading alert"))?
            .ok_or_else(|| Refusal::Invalid(format!("there is no alert #{id}.")))?;
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
            .deps
            .store
            .resolve_alert(id, self.deps.clock.now())
            .await
            .map_err(store_failed("resolving alert"))?;
        if !resolved {
            return Err(Refusal::Invalid(format!("alert #{id} is not firing.")));
        }
        self.deps.alerts.touch(&alert.incoming.group_key);
        Ok(Done {
            text: format!(
                "Alert #{id} ({}) resolved by {}.",
                alert.incoming.alertname(),
                who(requester)
            ),
            detail: format!("resolved alert #{id}"),
            pending_run: None,
            ran: None,
        })
    }
}
