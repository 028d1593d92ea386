//! Alert handling: ingest (store first, then notify), routing alert groups to channels by
//! label matchers, and keeping one chat message per group and channel up to date (edited in
//! place, summarised when the group is too large). Delivery runs on one replica (the
//! leader, see [`Delivery`]) in one loop fed with "this group changed" signals from this
//! process and with the groups the store marks as changed by any replica, so bursts of
//! deliveries coalesce into a few edits and the HTTP answer never waits for chat; a group's
//! first post is claimed in the store, so it gets one message across replicas.
//!
//! This module owns intake and the service's state; [`refresh`] brings one group's messages
//! up to date, [`delivery`] is the leader's loop over changed groups, [`remind`] re-announces
//! unacknowledged critical alerts and [`render`] turns a group into chat text.

mod delivery;
mod refresh;
mod remind;
mod render;

pub use delivery::Delivery;
pub use refresh::RefreshError;
pub use remind::Escalation;
pub use render::{
    LINE_MAX, VALUE_MAX, ack_action, ack_actions, alert_head, common_labels, console_target,
    push_line, render_group, shown,
};

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
    /// The escalation policy of groups this route matches, if any.
    pub escalation: Option<String>,
}

/// Where alert groups go.
#[derive(Clone, Debug, Default)]
pub struct AlertRouting {
    pub routes: Vec<AlertRoute>,
    pub default: Option<OutboundTarget>,
    /// The escalation policy of groups that go to `default`.
    pub default_escalation: Option<String>,
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

    /// Whether any route names an escalation policy.
    pub fn escalates(&self) -> bool {
        self.default_escalation.is_some() || self.routes.iter().any(|r| r.escalation.is_some())
    }

    /// The escalation policy of a group with these common labels: the first matching route
    /// (within those that route it) that names one, else the default route's when no route
    /// matches.
    pub fn policy(&self, labels: &BTreeMap<String, String>) -> Option<&str> {
        let mut matched = false;
        for r in &self.routes {
            if r.matchers.iter().all(|m| m.matches(labels)) {
                matched = true;
                if let Some(p) = &r.escalation {
                    return Some(p);
                }
                if !r.continue_matching {
                    break;
                }
            }
        }
        match matched {
            true => None,
            false => self.default_escalation.as_deref(),
        }
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
    /// Escalations started and stopped as groups change (set once at wiring).
    escalations: std::sync::OnceLock<Arc<crate::actions::escalation::Escalations>>,
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
            escalations: std::sync::OnceLock::new(),
        })
    }

    /// Starts and stops escalations through `escalations` as groups change (ignored when
    /// set already: one set of policies per service).
    pub fn escalate_with(&self, escalations: Arc<crate::actions::escalation::Escalations>) {
        let _ = self.escalations.set(escalations);
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
}

impl Drop for AlertService {
    fn drop(&mut self) {
        self.stopped.cancel();
    }
}
