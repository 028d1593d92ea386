//! Alert handling: ingest (store first, then notify), routing alert groups to channels by
//! label matchers, and keeping one chat message per group and channel up to date (edited in
//! place, summarised when the group is too large). Delivery runs on one replica (the
//! leader, see [`Delivery`]) in one loop fed with "this group changed" signals from this
//! process and with the groups the store marks as changed by any replica, so bursts of
//! deliveries coalesce into a few edits and the HTTP answer never waits for chat; a group's
//! first post is claimed in the store, so it gets one message across replicas.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::domain::{
    Alert, AlertId, AlertStatus, IncomingAlert, Matcher, Platform, clip, group_key_labels,
};
use crate::ports::{
    ChatAction, ChatOutbound, Clock, GroupNotifier, OutboundError, OutboundMessage, OutboundTarget,
    PostClaim, Store, StoreError,
};

/// A routing rule: groups whose common labels match every matcher go to `target`.
#[derive(Clone, Debug)]
pub struct AlertRoute {
    pub matchers: Vec<Matcher>,
    pub target: OutboundTarget,
    /// Keep evaluating later routes after this one matched (Alertmanager's `continue`).
    pub continue_matching: bool,
}

/// Where alert groups go.
#[derive(Clone, Debug, Default)]
pub struct AlertRouting {
    pub routes: Vec<AlertRoute>,
    pub default: Option<OutboundTarget>,
    /// Alerts listed in full per message; the rest are summarised.
    pub max_listed: usize,
}

impl AlertRouting {
    pub fn targets(&self, labels: &BTreeMap<String, String>) -> Vec<OutboundTarget> {
        let mut out = Vec::new();
        for r in &self.routes {
            if r.matchers.iter().all(|m| m.matches(labels)) {
                if !out.contains(&r.target) {
                    out.push(r.target.clone());
                }
                if !r.continue_matching {
                    break;
                }
            }
        }
        if out.is_empty() {
            out.extend(self.default.clone());
        }
        out
    }
}

pub struct AlertService {
    store: Arc<dyn Store>,
    metrics: Arc<crate::metrics::Metrics>,
    outbound: Arc<dyn ChatOutbound>,
    notifiers: Vec<Arc<dyn GroupNotifier>>,
    /// Groups waiting for delivery, with when they first started waiting (for `/readyz`).
    backlog: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// Last group text each notifier was sent, so unchanged groups are not re-sent.
    notified: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// Group messages posted or edited whose id and text the store has not taken yet, by
    /// (group, platform, channel).
    unrecorded: std::sync::Mutex<std::collections::HashMap<Slot, (String, String)>>,
    clock: Arc<dyn Clock>,
    routing: AlertRouting,
    /// In-process "this group changed" signals to the delivery loop, sent only while it runs
    /// (a follower's would pile up unread; the store's marks reach the leader instead).
    changed: mpsc::UnboundedSender<String>,
    /// The receiving end, held by the one delivery loop running (one term at a time).
    inbox: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>>,
    /// Whether this replica's delivery loop runs (it leads).
    delivering: Arc<AtomicBool>,
    /// Groups whose delivery failed, not to be tried again before then (Retry-After).
    retry_at: std::sync::Mutex<HashMap<String, Instant>>,
    /// This replica's name, which its claims on first posts carry.
    holder: String,
    /// Cancelled when the service is dropped: ends its delivery loop.
    stopped: CancellationToken,
}

/// One group's message in one channel: (group key, platform, channel id).
type Slot = (String, Platform, String);

/// Delay before a group whose notification failed is tried again.
const RETRY_DELAY: Duration = Duration::from_secs(2);

/// How often the delivering replica asks the store for groups changed by other replicas
/// (or left undelivered by a leader that died).
const POLL_EVERY: Duration = Duration::from_secs(1);

/// Pending groups read from the store per round.
const PENDING_BATCH: u32 = 1000;

/// Age after which another replica's claim on a group's first post is taken over: longer
/// than any post takes (pacing and Retry-After included), so it only frees the claims of
/// replicas that died between claim and post. A newer leader does not take a claim at once:
/// the old leader may be finishing that very post during the handover.
const CLAIM_STALE: Duration = Duration::from_secs(60);

impl AlertService {
    /// Builds the service for the replica named `holder`. Nothing is delivered until its
    /// [`Delivery`] runs (on the leader).
    pub fn start(
        store: Arc<dyn Store>,
        metrics: Arc<crate::metrics::Metrics>,
        outbound: Arc<dyn ChatOutbound>,
        notifiers: Vec<Arc<dyn GroupNotifier>>,
        clock: Arc<dyn Clock>,
        routing: AlertRouting,
        holder: &str,
    ) -> Arc<Self> {
        let (changed, rx) = mpsc::unbounded_channel();
        Arc::new(Self {
            store,
            metrics,
            outbound,
            notifiers,
            notified: std::sync::Mutex::new(HashMap::new()),
            unrecorded: std::sync::Mutex::new(HashMap::new()),
            backlog: std::sync::Mutex::new(HashMap::new()),
            clock,
            routing,
            changed,
            inbox: Arc::new(tokio::sync::Mutex::new(rx)),
            delivering: Arc::new(AtomicBool::new(false)),
            retry_at: std::sync::Mutex::new(HashMap::new()),
            holder: holder.to_owned(),
            stopped: CancellationToken::new(),
        })
    }

    /// The delivery loop's handle, to run on the replica that delivers (see [`Delivery`]).
    pub fn delivery(self: &Arc<Self>) -> Delivery {
        Delivery {
            service: Arc::downgrade(self),
            inbox: self.inbox.clone(),
            stopped: self.stopped.clone(),
        }
    }

    /// Stores the alerts (one transaction) and schedules their groups' messages. Returns
    /// once the alerts are committed; chat delivery happens afterwards.
    pub async fn ingest(&self, mut alerts: Vec<IncomingAlert>) -> Result<usize, StoreError> {
        // A stable order keeps concurrent deliveries from locking rows in opposite orders.
        alerts.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
        alerts.dedup_by(|a, b| a.fingerprint == b.fingerprint);
        self.store.ingest_alerts(&alerts, self.clock.now()).await?;
        self.metrics.alerts_received(alerts.len());
        // The store marked the groups changed with the alerts; this is the fast path.
        let groups: BTreeSet<&str> = alerts.iter().map(|a| a.group_key.as_str()).collect();
        for g in groups {
            self.signal(g);
        }
        Ok(alerts.len())
    }

    /// Fingerprints of firing alerts that start with `prefix` (e.g. `check:`).
    pub async fn firing_fingerprints(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .store
            .active_alerts(100_000)
            .await?
            .into_iter()
            .map(|a| a.incoming.fingerprint)
            .filter(|f| f.starts_with(prefix))
            .collect())
    }

    /// Schedules a refresh of a group's messages (after an ack, resolve or silence): marked
    /// changed in the store, so the replica that delivers learns of it wherever it runs, then
    /// signalled here. In the background, because the change is already stored.
    pub fn touch(&self, group_key: &str) {
        let (store, group) = (self.store.clone(), group_key.to_owned());
        let (changed, delivering) = (self.changed.clone(), self.delivering.clone());
        tokio::spawn(async move {
            if let Err(e) = store
                .mark_groups_changed(std::slice::from_ref(&group))
                .await
            {
                warn!(group = %group, error = %e, "could not mark an alert group changed");
            }
            if delivering.load(Ordering::SeqCst) {
                let _ = changed.send(group);
            }
        });
    }

    /// Tells this process's delivery loop, if it runs, that a group changed.
    fn signal(&self, group_key: &str) {
        if self.delivering.load(Ordering::SeqCst) {
            let _ = self.changed.send(group_key.to_owned());
        }
    }

    /// How many groups wait for delivery, and for how long the oldest has waited: on the
    /// replica that delivers (elsewhere none).
    pub fn backlog(&self) -> (usize, Option<Duration>) {
        let backlog = self.backlog.lock().expect("backlog poisoned");
        let oldest = backlog.values().min().map(|t| t.elapsed());
        self.metrics.alert_backlog(backlog.len());
        (backlog.len(), oldest)
    }

    /// Counts `groups` as waiting, keeping when each started to.
    fn waiting<'g>(&self, groups: impl Iterator<Item = &'g String>) {
        let mut backlog = self.backlog.lock().expect("backlog poisoned");
        for g in groups {
            backlog.entry(g.clone()).or_insert_with(Instant::now);
        }
        self.metrics.alert_backlog(backlog.len());
    }

    fn delivered(&self, group_key: &str) {
        let mut backlog = self.backlog.lock().expect("backlog poisoned");
        backlog.remove(group_key);
        self.metrics.alert_backlog(backlog.len());
    }

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

/// One alert group as its messages show it.
struct GroupView<'k> {
    key: &'k str,
    alerts: Vec<Alert>,
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

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Outbound(#[from] OutboundError),
    #[error("another replica is posting this group's first message in {0}")]
    Claimed(String),
}

/// The delivery loop of one [`AlertService`], run by the replica that delivers (the
/// leader; on SQLite the one process) for as long as it does: each round it brings up to
/// date the groups signalled in this process and those the store marks as changed (by any
/// replica, or left undelivered by a previous leader), then records them delivered. Holds
/// the service weakly: it ends when the service is dropped.
#[derive(Clone)]
pub struct Delivery {
    service: std::sync::Weak<AlertService>,
    inbox: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>>,
    stopped: CancellationToken,
}

impl Delivery {
    /// Cancelled once the service is dropped.
    pub fn stopped(&self) -> CancellationToken {
        self.stopped.clone()
    }

    /// Delivers until `token` is cancelled (leadership lost) or the service is dropped. The
    /// first round runs at once: what changed while no one delivered goes out first. A
    /// refresh under way when `token` is cancelled finishes (claims keep it from posting a
    /// group a second time).
    pub async fn run(self, token: CancellationToken) {
        let mut inbox = self.inbox.lock().await;
        let Some(service) = self.service.upgrade() else {
            return;
        };
        service.delivering.store(true, Ordering::SeqCst);
        drop(service);
        let mut poll = tokio::time::interval(POLL_EVERY);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                _ = token.cancelled() => break,
                _ = self.stopped.cancelled() => break,
                n = inbox.recv_many(&mut batch, 1024) => if n == 0 { break },
                _ = poll.tick() => {}
            }
            let Some(service) = self.service.upgrade() else {
                return;
            };
            let signalled: BTreeSet<String> = batch.drain(..).collect();
            service.deliver_round(signalled, &token).await;
        }
        if let Some(service) = self.service.upgrade() {
            service.delivering.store(false, Ordering::SeqCst);
            // Another replica delivers now: nothing here is waiting any more.
            service.backlog.lock().expect("backlog poisoned").clear();
            service.metrics.alert_backlog(0);
        }
    }
}

impl AlertService {
    /// One delivery round: the groups `signalled`, those the store holds as changed, and
    /// those whose retry is due; each refreshed unless its retry is not due yet.
    async fn deliver_round(&self, signalled: BTreeSet<String>, token: &CancellationToken) {
        let mut due: BTreeMap<String, Option<i64>> =
            signalled.into_iter().map(|g| (g, None)).collect();
        match self.store.pending_groups(PENDING_BATCH).await {
            Ok(pending) => due.extend(pending.into_iter().map(|(g, v)| (g, Some(v)))),
            Err(e) => warn!(error = %e, "could not read which alert groups changed"),
        }
        let now = Instant::now();
        let waiting: HashSet<String> = {
            let retry_at = self.retry_at.lock().expect("retry_at poisoned");
            for g in retry_at.keys() {
                due.entry(g.clone()).or_default();
            }
            (retry_at.iter())
                .filter(|(_, at)| **at > now)
                .map(|(g, _)| g.clone())
                .collect()
        };
        self.waiting(due.keys());
        for (group, version) in due {
            if token.is_cancelled() {
                return;
            }
            if !waiting.contains(&group) {
                self.deliver_group(&group, version).await;
            }
        }
    }

    /// Refreshes one group; once done, records it delivered up to `version` (when it was
    /// read from the store), or else schedules it again.
    async fn deliver_group(&self, group: &str, version: Option<i64>) {
        let e = match self.refresh_group(group).await {
            Ok(()) => return self.done(group, version).await,
            Err(e) => e,
        };
        if let RefreshError::Outbound(
            OutboundError::Undeliverable(why) | OutboundError::NotInChannel(why),
        ) = &e
        {
            error!(group = %group, reason = %why, "alert group message cannot be delivered");
            return self.done(group, version).await;
        }
        let delay = match &e {
            RefreshError::Outbound(OutboundError::RetryAfter(d)) => *d,
            _ => RETRY_DELAY,
        };
        warn!(group = %group, error = %e, retry_in_ms = delay.as_millis() as u64, "alert notification failed; will retry");
        (self.retry_at.lock().expect("retry_at poisoned"))
            .insert(group.to_owned(), Instant::now() + delay);
        let (tx, group) = (self.changed.clone(), group.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(group);
        });
    }

    async fn done(&self, group: &str, version: Option<i64>) {
        self.retry_at
            .lock()
            .expect("retry_at poisoned")
            .remove(group);
        self.delivered(group);
        let Some(version) = version else {
            return;
        };
        if let Err(e) = self.store.group_delivered(group, version).await {
            // Delivered again next round: unchanged text sends nothing.
            warn!(group = %group, error = %e, "could not record an alert group delivered");
        }
    }
}

impl Drop for AlertService {
    fn drop(&mut self) {
        self.stopped.cancel();
    }
}

/// Labels every alert in the group shares; routing decides on them.
pub fn common_labels(alerts: &[Alert]) -> BTreeMap<String, String> {
    let mut iter = alerts.iter();
    let Some(first) = iter.next() else {
        return BTreeMap::new();
    };
    let mut common = first.incoming.labels.clone();
    for a in iter {
        common.retain(|k, v| a.incoming.labels.get(k) == Some(v));
    }
    common
}

/// Longest label or annotation value shown in chat; the store keeps the whole value.
pub const VALUE_MAX: usize = 200;

/// Longest line about one alert (or one kind of alert) in chat.
pub const LINE_MAX: usize = 300;

/// Kinds of alert (name, severity, status) counted one per line under "…and N more".
const SUMMARY_KINDS: usize = 10;

/// An outside value (label, annotation, group key) as chat shows it.
pub fn shown(value: &str) -> std::borrow::Cow<'_, str> {
    clip(value, VALUE_MAX)
}

/// Appends `line` on a line of its own, clipped to [`LINE_MAX`].
pub fn push_line(out: &mut String, line: &str) {
    out.push('\n');
    out.push_str(&clip(line, LINE_MAX));
}

/// An alert's number, severity, name, instance and summary: how chat names it.
pub fn alert_head(a: &Alert) -> String {
    let icon = match (a.incoming.status, a.is_critical()) {
        (AlertStatus::Resolved, _) => "✅",
        (AlertStatus::Firing, true) => "🔴",
        (AlertStatus::Firing, false) => "🟠",
    };
    let mut out = format!(
        "{icon} #{} [{}] {}",
        a.id,
        shown(a.severity()),
        shown(a.incoming.alertname())
    );
    if let Some(i) = a.incoming.labels.get("instance") {
        let _ = write!(out, " {}", shown(i));
    }
    if !a.summary().is_empty() {
        let _ = write!(out, ": {}", shown(a.summary()));
    }
    out
}

/// One alert in full, on a line of its own: [`alert_head`], who acked it, whether it is
/// silenced, and its links.
fn write_alert_line(out: &mut String, a: &Alert, silenced: bool) {
    let mut line = alert_head(a);
    if let Some(by) = &a.acked_by {
        let _ = write!(line, " (acked by {by})");
    }
    if silenced && a.incoming.status == AlertStatus::Firing {
        line.push_str(" (silenced)");
    }
    if let Some(url) = a.incoming.annotations.get("runbook_url") {
        let _ = write!(line, " · runbook: {}", shown(url));
    }
    if let Some(url) = &a.incoming.generator_url {
        let _ = write!(line, " · source: {}", shown(url));
    }
    push_line(out, &line);
}

/// The alerts beyond those listed, counted by name, severity and status (the most common
/// kinds one per line, the others together).
fn summarise(out: &mut String, rest: &[&Alert]) {
    let mut counts: BTreeMap<(&str, &str, &str), usize> = BTreeMap::new();
    for a in rest {
        *counts
            .entry((
                a.incoming.alertname(),
                a.severity(),
                a.incoming.status.as_str(),
            ))
            .or_default() += 1;
    }
    let mut kinds: Vec<_> = counts.into_iter().collect();
    // Most common first; ties keep the name order.
    kinds.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let _ = write!(out, "\n…and {} more:", rest.len());
    for ((name, severity, status), n) in kinds.iter().take(SUMMARY_KINDS) {
        let line = format!("  {n} × {} [{}] {status}", shown(name), shown(severity));
        push_line(out, &line);
    }
    if kinds.len() > SUMMARY_KINDS {
        let others: usize = kinds[SUMMARY_KINDS..].iter().map(|(_, n)| n).sum();
        let _ = write!(
            out,
            "\n  {others} of {} other kinds",
            kinds.len() - SUMMARY_KINDS
        );
    }
}

/// One message for a whole group: a headline with counts, the first `max_listed` alerts in
/// full (firing first), and the rest summarised by alert name and severity.
pub fn render_group(
    group_key: &str,
    alerts: &[Alert],
    silenced: &HashSet<AlertId>,
    max_listed: usize,
) -> String {
    let firing = alerts
        .iter()
        .filter(|a| a.incoming.status == AlertStatus::Firing)
        .count();
    let resolved = alerts.len() - firing;
    let name = common_labels(alerts)
        .get("alertname")
        .map_or_else(|| "alerts".into(), |n| shown(n).into_owned());
    let headline = if firing == 0 {
        format!("✅ RESOLVED · {name}: all {resolved} resolved")
    } else {
        format!("🔥 FIRING {firing} · resolved {resolved} · {name}")
    };
    let mut out = headline;
    let sorted = listing_order(alerts);
    for a in sorted.iter().take(max_listed) {
        write_alert_line(&mut out, a, silenced.contains(&a.id));
    }
    if sorted.len() > max_listed {
        summarise(&mut out, &sorted[max_listed..]);
    }
    // The key stays the group's identity; people read its labels.
    let group = group_key_labels(group_key).unwrap_or_else(|| group_key.to_owned());
    let _ = write!(
        out,
        "\nGroup {}. /ack ID to acknowledge, /silence MATCHERS DURATION to silence.",
        shown(&group)
    );
    out
}

/// The order alerts are listed in a group message: firing before resolved, critical first.
fn listing_order(alerts: &[Alert]) -> Vec<&Alert> {
    let mut sorted: Vec<&Alert> = alerts.iter().collect();
    sorted.sort_by_key(|a| {
        (
            a.incoming.status != AlertStatus::Firing,
            !a.is_critical(),
            a.id,
        )
    });
    sorted
}

/// At most this many Ack buttons under a group message: one row on every platform (Discord
/// allows five per row). Other alerts are acknowledged by typing `/ack ID`.
const MAX_ACK_BUTTONS: usize = 5;

/// One "Ack" button per listed alert that still needs someone: firing, unacknowledged, not
/// silenced. Only alerts listed in full get one, so the buttons change only when the text
/// does, and the stored text stays enough to tell whether a message is up to date.
pub fn ack_actions(
    alerts: &[Alert],
    silenced: &HashSet<AlertId>,
    max_listed: usize,
) -> Vec<ChatAction> {
    listing_order(alerts)
        .into_iter()
        .take(max_listed)
        .filter(|a| {
            a.incoming.status == AlertStatus::Firing
                && a.acked_by.is_none()
                && !silenced.contains(&a.id)
        })
        .take(MAX_ACK_BUTTONS)
        .map(|a| ack_action(a.id))
        .collect()
}

fn ack_action(alert_id: AlertId) -> ChatAction {
    ChatAction {
        label: format!("Ack #{alert_id}"),
        command: format!("/ack {alert_id}"),
        danger: false,
    }
}

/// The default place alerts go when no route matches and none is configured.
pub fn console_target(channel: &str) -> OutboundTarget {
    OutboundTarget {
        platform: Platform::Console,
        channel_id: channel.to_owned(),
        thread: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AlertSource;

    fn alert(id: i64, status: AlertStatus, severity: &str) -> Alert {
        let at = chrono::DateTime::UNIX_EPOCH;
        Alert {
            id: AlertId(id),
            incoming: IncomingAlert {
                source: AlertSource::Webhook,
                fingerprint: format!("f{id}"),
                group_key: "g".into(),
                status,
                labels: [("severity".to_owned(), severity.to_owned())].into(),
                annotations: BTreeMap::new(),
                starts_at: at,
                ends_at: None,
                generator_url: None,
            },
            first_seen: at,
            last_seen: at,
            acked_by: None,
            acked_at: None,
            resolved_at: None,
        }
    }

    fn commands(actions: &[ChatAction]) -> Vec<&str> {
        actions.iter().map(|a| a.command.as_str()).collect()
    }

    #[test]
    fn ack_buttons_are_for_listed_alerts_that_still_need_someone() {
        let mut alerts = vec![
            alert(1, AlertStatus::Firing, "warning"),
            alert(2, AlertStatus::Resolved, "critical"),
            alert(3, AlertStatus::Firing, "critical"),
            alert(4, AlertStatus::Firing, "warning"),
            alert(5, AlertStatus::Firing, "warning"),
        ];
        alerts[3].acked_by = Some("alice".into());
        let silenced = HashSet::from([AlertId(5)]);
        assert_eq!(
            commands(&ack_actions(&alerts, &silenced, 10)),
            ["/ack 3", "/ack 1"],
            "critical first; resolved, acked and silenced alerts get none"
        );
        assert_eq!(
            commands(&ack_actions(&alerts, &silenced, 1)),
            ["/ack 3"],
            "summarised alerts get none, so buttons change only with the text"
        );
    }

    #[test]
    fn at_most_one_row_of_ack_buttons() {
        let alerts: Vec<Alert> = (1..=8)
            .map(|id| alert(id, AlertStatus::Firing, "critical"))
            .collect();
        let actions = ack_actions(&alerts, &HashSet::new(), 10);
        assert_eq!(actions.len(), MAX_ACK_BUTTONS);
        assert_eq!(actions[0].label, "Ack #1");
    }
}
