//! The leader's delivery loop: coalesces "group changed" signals from this process with
//! the groups the store marks as changed by any replica, and records them delivered.

use super::*;

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
        self.record_while_following();
    }

    /// After stepping down, keeps storing the ids of messages posted here that the store
    /// refused (leadership is often lost to the same outage): they are known only to this
    /// process, and the next leader, finding no message once this replica's claim is stale,
    /// would post the group again. Ends once all are stored, or this replica delivers again
    /// (its refresh stores them then), or the service is dropped.
    fn record_while_following(&self) {
        let (service, stopped) = (self.service.clone(), self.stopped.clone());
        tokio::spawn(async move {
            let mut poll = tokio::time::interval(POLL_EVERY);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stopped.cancelled() => return,
                    _ = poll.tick() => {}
                }
                let Some(service) = service.upgrade() else {
                    return;
                };
                if service.delivering.load(Ordering::SeqCst) || service.record_unrecorded().await {
                    return;
                }
            }
        });
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

impl AlertService {
    /// The delivery loop's handle, to run on the replica that delivers (see [`Delivery`]).
    pub fn delivery(self: &Arc<Self>) -> Delivery {
        Delivery {
            service: Arc::downgrade(self),
            inbox: self.inbox.clone(),
            stopped: self.stopped.clone(),
        }
    }
}
