//! Bringing one alert group's messages up to date: its view (alerts and rendered text),
//! the post or edit per routed channel with the first post claimed in the store, the
//! bookkeeping of message ids the store has not taken yet, the group webhooks, and linking
//! routed alerts to the channel's open incident.

use super::*;

impl AlertService {
    /// Brings every message of one group up to date.
    pub async fn refresh_group(&self, group_key: &str) -> Result<(), RefreshError> {
        let Some(view) = self.group_view(group_key).await? else {
            return Ok(());
        };
        // Each chat target and each notifier is delivered on its own: one that fails neither
        // blocks nor drops the others. A retryable failure is returned at the end so the whole
        // group is tried again; targets already up to date are skipped then (same text).
        let mut failures = Failures {
            group_key,
            metrics: &self.metrics,
            retry: None,
        };
        for target in self.routing.targets(&common_labels(&view.alerts)) {
            self.update_target(&view, &target, &mut failures).await?;
        }
        // After the group's own message, so a first step never comes before it.
        if let Some(escalations) = self.escalations.get() {
            (escalations.group_changed(group_key, &view.alerts, &view.silences)).await?;
        }
        self.notify_hooks(&view, &mut failures).await;
        match failures.retry {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The group's alerts and the message that shows them; `None` for an empty group.
    async fn group_view<'k>(
        &self,
        group_key: &'k str,
    ) -> Result<Option<GroupView<'k>>, RefreshError> {
        let alerts = self.store.alerts_in_group(group_key).await?;
        if alerts.is_empty() {
            return Ok(None);
        }
        let now = self.clock.now();
        let silences = self.store.active_silences(now).await?;
        let silenced: HashSet<AlertId> = alerts
            .iter()
            .filter(|a| silences.iter().any(|s| s.covers(&a.incoming.labels, now)))
            .map(|a| a.id)
            .collect();
        let max_listed = self.routing.max_listed.max(1);
        let text = render_group(group_key, &alerts, &silenced, max_listed);
        // A new critical alert overtakes routine messages waiting for the same channel.
        let urgent = alerts.iter().any(|a| {
            a.incoming.status == AlertStatus::Firing && a.is_critical() && !silenced.contains(&a.id)
        });
        let mut message = OutboundMessage::text(text.clone())
            .with_actions(ack_actions(&alerts, &silenced, max_listed));
        if urgent {
            message = message.urgent();
        }
        let all_quiet = alerts
            .iter()
            .all(|a| a.incoming.status == AlertStatus::Resolved || silenced.contains(&a.id));
        Ok(Some(GroupView {
            key: group_key,
            alerts,
            silences,
            text,
            message,
            all_quiet,
        }))
    }

    /// Posts or edits the group's message in one channel, unless it already shows this text.
    async fn update_target(
        &self,
        view: &GroupView<'_>,
        target: &OutboundTarget,
        failures: &mut Failures<'_>,
    ) -> Result<(), RefreshError> {
        self.link_to_open_incident(target, &view.alerts).await?;
        let slot = (
            view.key.to_owned(),
            target.platform,
            target.channel_id.clone(),
        );
        let stored = self
            .store
            .group_message(view.key, target.platform, &target.channel_id)
            .await?;
        // A message posted whose id could not be stored (a full disk) is still that message:
        // storing its id is what is retried, never the post.
        let unrecorded = self
            .unrecorded
            .lock()
            .expect("unrecorded poisoned")
            .get(&slot)
            .cloned();
        let delivered = match (stored, unrecorded) {
            (_, Some((message_id, last))) if last == view.text => Ok(message_id),
            (Some((_, last)), None) if last == view.text => return Ok(()),
            (_, Some((message_id, _))) | (Some((message_id, _)), None) => self
                .outbound
                .edit(target, &message_id, &view.message)
                .await
                .map(|()| message_id),
            // Nothing worth a new message: everything already resolved or silenced.
            (None, None) if view.all_quiet => return Ok(()),
            (None, None) => {
                if !self.claim_post(view.key, target).await? {
                    failures.claimed(target);
                    return Ok(());
                }
                self.outbound.send(target, &view.message).await
            }
        };
        match delivered {
            Ok(message_id) => self.record(slot, message_id, &view.text).await?,
            Err(e) => failures.note(e, &format!("{}:{}", target.platform, target.channel_id)),
        }
        Ok(())
    }

    /// Claims the post of the group's first message in one channel; false while another
    /// replica holds the claim (it is posting, or was until it died: see [`CLAIM_STALE`]).
    async fn claim_post(
        &self,
        group_key: &str,
        target: &OutboundTarget,
    ) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let claim = PostClaim {
            holder: &self.holder,
            at: now,
            stale_before: now - chrono::Duration::from_std(CLAIM_STALE).unwrap_or_default(),
        };
        (self.store)
            .claim_group_post(group_key, target.platform, &target.channel_id, &claim)
            .await
    }

    /// Stores which message shows a group in a channel, remembering it in memory until the
    /// store has it.
    async fn record(&self, slot: Slot, message_id: String, text: &str) -> Result<(), RefreshError> {
        self.unrecorded
            .lock()
            .expect("unrecorded poisoned")
            .insert(slot.clone(), (message_id.clone(), text.to_owned()));
        let (key, platform, channel_id) = &slot;
        self.store
            .set_group_message(key, *platform, channel_id, &message_id, text)
            .await?;
        self.unrecorded
            .lock()
            .expect("unrecorded poisoned")
            .remove(&slot);
        Ok(())
    }

    /// Stores every message id the store has not taken yet; true once none is left. An id
    /// replaced meanwhile (the message edited again) stays to be stored.
    pub(super) async fn record_unrecorded(&self) -> bool {
        let pending: Vec<(Slot, (String, String))> = (self.unrecorded.lock())
            .expect("unrecorded poisoned")
            .iter()
            .map(|(slot, shown)| (slot.clone(), shown.clone()))
            .collect();
        for (slot, shown) in pending {
            let (key, platform, channel_id) = &slot;
            let (message_id, text) = &shown;
            let stored = self
                .store
                .set_group_message(key, *platform, channel_id, message_id, text)
                .await;
            if let Err(e) = stored {
                warn!(group = %key, error = %e, "could not store an alert group message's id; will retry");
                return false;
            }
            let mut unrecorded = self.unrecorded.lock().expect("unrecorded poisoned");
            if unrecorded.get(&slot) == Some(&shown) {
                unrecorded.remove(&slot);
            }
        }
        true
    }

    /// Tells the group webhooks, once per text: only when every one took it (or can never
    /// take it) is the text remembered as notified.
    async fn notify_hooks(&self, view: &GroupView<'_>, failures: &mut Failures<'_>) {
        let already = self
            .notified
            .lock()
            .expect("notified poisoned")
            .get(view.key)
            == Some(&view.text);
        if already || self.notifiers.is_empty() {
            return;
        }
        let mut all_done = true;
        for n in &self.notifiers {
            if let Err(e) = n.group_changed(view.key, &view.alerts).await {
                all_done &= e.is_permanent();
                failures.note(e, "webhook");
            }
        }
        if all_done {
            self.notified
                .lock()
                .expect("notified poisoned")
                .insert(view.key.to_owned(), view.text.clone());
        }
    }
}

impl AlertService {
    /// Alerts routed to a channel with an open incident become part of that incident.
    async fn link_to_open_incident(
        &self,
        target: &OutboundTarget,
        alerts: &[Alert],
    ) -> Result<(), StoreError> {
        let Some(incident) = self
            .store
            .open_incident_in(target.platform, &target.channel_id)
            .await?
        else {
            return Ok(());
        };
        let now = self.clock.now();
        let note = |text: String| crate::domain::TimelineEntry {
            at: now,
            kind: crate::domain::TimelineKind::Alert,
            actor: "opsbot".into(),
            text,
        };
        for a in alerts
            .iter()
            .filter(|a| a.incoming.status == AlertStatus::Firing)
        {
            if self.store.link_alert(incident.id, a.id).await? {
                let text = format!(
                    "alert #{} {} [{}] firing",
                    a.id,
                    shown(a.incoming.alertname()),
                    shown(a.severity())
                );
                self.store.add_timeline(incident.id, &note(text)).await?;
            }
        }
        // Resolutions of linked alerts go on the timeline once each.
        let resolved: Vec<&Alert> = alerts
            .iter()
            .filter(|a| a.incoming.status == AlertStatus::Resolved)
            .collect();
        if !resolved.is_empty() {
            let linked: HashSet<AlertId> = self
                .store
                .linked_alerts(incident.id)
                .await?
                .iter()
                .map(|a| a.id)
                .collect();
            let timeline = self.store.timeline(incident.id).await?;
            for a in resolved.into_iter().filter(|a| linked.contains(&a.id)) {
                let text = format!("alert #{} {} resolved", a.id, shown(a.incoming.alertname()));
                if !timeline.iter().any(|e| e.text == text) {
                    self.store.add_timeline(incident.id, &note(text)).await?;
                }
            }
        }
        Ok(())
    }
}

/// One alert group as its messages show it.
struct GroupView<'k> {
    key: &'k str,
    alerts: Vec<Alert>,
    /// Silences active when it was read.
    silences: Vec<crate::domain::Silence>,
    text: String,
    message: OutboundMessage,
    /// Everything resolved or silenced.
    all_quiet: bool,
}

/// Delivery failures while refreshing one group: counted, logged when permanent, and the
/// first retryable one kept so the group is tried again.
struct Failures<'a> {
    group_key: &'a str,
    metrics: &'a crate::metrics::Metrics,
    retry: Option<RefreshError>,
}

impl Failures<'_> {
    /// Another replica holds the claim on the group's first post here: tried again later,
    /// to edit its message once stored (or to post, once the claim is stale).
    fn claimed(&mut self, target: &OutboundTarget) {
        let what = format!("{}:{}", target.platform, target.channel_id);
        self.retry.get_or_insert(RefreshError::Claimed(what));
    }

    fn note(&mut self, e: OutboundError, what: &str) {
        match e {
            OutboundError::Undeliverable(why) | OutboundError::NotInChannel(why) => {
                self.metrics.outbound_failure("undeliverable");
                error!(group = %self.group_key, target = %what, reason = %why, "alert group message cannot be delivered")
            }
            other => {
                self.metrics.outbound_failure(match other {
                    OutboundError::RetryAfter(_) => "retry_after",
                    _ => "failed",
                });
                self.retry.get_or_insert(RefreshError::Outbound(other));
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Outbound(#[from] OutboundError),
    #[error("another replica is posting this group's first message in {0}")]
    Claimed(String),
}
