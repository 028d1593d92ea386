//! Work that runs once cluster-wide: the election, and the loops only the leader runs (the
//! outbox's deliverer, the sweep, the scheduler, alert group delivery, scheduled health
//! checks and the heartbeat), each stopped at once when leadership is lost.

use super::*;

impl App {
    /// Starts electing the leader among the replicas on this store (Postgres; once, later
    /// calls do nothing). The task ends after `shutdown`, once it has released the lease.
    pub fn start_election(&self, shutdown: &CancellationToken) -> Option<JoinHandle<()>> {
        let election = self.election.lock().expect("election poisoned").take()?;
        tracing::info!(
            replica = %self.replica,
            lease_secs = self.config.cluster.lease_secs,
            "electing the leader among the replicas on this store"
        );
        Some(election.spawn(shutdown.clone()))
    }

    /// Runs `work` only while this replica leads (`leader::run_while_leader`); meanwhile
    /// `standby` says what this replica shows for it.
    pub(super) fn spawn_leader_only<F, Fut>(
        &self,
        shutdown: &CancellationToken,
        standby: Standby,
        mut work: F,
    ) where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let liveness = self.liveness.clone();
        let show = move || match standby {
            Standby::Loop(name) => liveness.forget(name),
            Standby::Adapter(name) => liveness.set_adapter(name, AdapterState::Standby),
        };
        if self.leader.current() == Leadership::Follower {
            show();
        }
        let gate = self.leader.clone();
        tokio::spawn(run_while_leader(gate, shutdown.clone(), move |token| {
            let (work, show) = (work(token.clone()), show.clone());
            async move {
                work.await;
                // Stopped, not failed: an adapter that gave up keeps saying why.
                if token.is_cancelled() {
                    show();
                }
            }
        }));
    }

    /// The outbox's deliverer, on the leader (on SQLite, the one process).
    pub fn spawn_outbox(&self, shutdown: &CancellationToken) {
        let (deliverer, liveness) = (self.deliverer(), self.liveness.clone());
        self.spawn_leader_only(shutdown, Standby::Loop("outbox"), move |token| {
            deliverer.clone().run(liveness.clone(), token)
        });
    }

    /// The periodic sweep, on the leader (on SQLite, the one process).
    pub(super) fn spawn_sweeper(&self, shutdown: &CancellationToken) {
        let (sweeper, liveness) = (self.sweeper(), self.liveness.clone());
        self.spawn_leader_only(shutdown, Standby::Loop("sweeper"), move |token| {
            sweeper.clone().run(liveness.clone(), token)
        });
    }

    /// The scheduler (`[schedule]` in command files, the daily report), on the leader: each
    /// slot is claimed in the store too, so a handover never fires one twice.
    pub(super) fn spawn_scheduler(&self, shutdown: &CancellationToken) {
        if self.router.schedules().entries().is_empty() {
            return;
        }
        let (scheduler, liveness) = (self.scheduler(), self.liveness.clone());
        self.spawn_leader_only(shutdown, Standby::Loop("scheduler"), move |token| {
            scheduler.clone().run_forever(liveness.clone(), token)
        });
    }

    /// The scheduled health checks and the heartbeat ping, when configured, on the leader.
    /// A new leader's monitor starts from the alerts already firing in the store.
    pub(super) fn spawn_health(&self, shutdown: &CancellationToken) {
        let h = &self.config.health;
        if let Some(every) = h.every {
            let (fail_after, severity) = (h.fail_after, h.severity.clone());
            let (checks, alerts) = (self.health.clone(), self.alerts.clone());
            let (clock, liveness) = (self.clock.clone(), self.liveness.clone());
            let monitor = move |token| {
                let monitor = HealthMonitor::new(fail_after, &severity);
                let (checks, alerts) = (checks.clone(), alerts.clone());
                let (clock, liveness) = (clock.clone(), liveness.clone());
                monitor_forever(checks, monitor, alerts, clock, every.0, liveness, token)
            };
            self.spawn_leader_only(shutdown, Standby::Loop("health scheduler"), monitor);
        }
        if let Some(url) = h.heartbeat_url.clone() {
            let (every, liveness) = (h.heartbeat_every.0, self.liveness.clone());
            self.spawn_leader_only(shutdown, Standby::Loop("heartbeat"), move |token| {
                heartbeat_forever(url.clone(), every, liveness.clone(), token)
            });
        }
    }
}

/// What a replica shows for leader-only work while it does not lead.
#[derive(Clone, Copy)]
pub(super) enum Standby {
    /// A loop that reports to liveness: forgotten, so not called stalled.
    Loop(&'static str),
    /// A chat adapter: shown on standby.
    Adapter(&'static str),
}

/// How this process takes part in leadership: on SQLite it is the store's one user (the
/// lock says so), so it always leads with no lease traffic; on Postgres it is elected.
pub(super) fn leadership(
    config: &Config,
    core: &Core,
    replica: &str,
) -> (LeaderGate, Option<Election>) {
    if config
        .store
        .database_url
        .expose_secret()
        .starts_with("sqlite:")
    {
        return (LeaderGate::always(), None);
    }
    let store: Arc<dyn crate::ports::LeaseStore> = core.store.clone();
    let ttl = config.cluster.lease();
    let (election, gate) = Election::new(store, core.clock.clone(), replica.to_owned(), ttl);
    (gate, Some(election))
}

/// This process's name among replicas: `hostname:pid:random` (the random part tells apart
/// processes that reuse a pid, as containers do).
pub(super) fn replica_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}:{}:{}", std::process::id(), &random[..8])
}

/// Alert group messages are delivered by the leader alone (on SQLite, the one process),
/// whichever replica stored the change; the loop ends when the service is dropped.
pub(super) fn spawn_alert_delivery(alerts: &Arc<AlertService>, leader: &LeaderGate) {
    let delivery = alerts.delivery();
    let stopped = delivery.stopped();
    tokio::spawn(run_while_leader(leader.clone(), stopped, move |token| {
        delivery.clone().run(token)
    }));
}

/// Runs the health checks on a schedule and turns state changes into alerts.
pub(super) async fn monitor_forever(
    checks: Arc<HealthChecks>,
    mut monitor: HealthMonitor,
    alerts: Arc<AlertService>,
    clock: Arc<dyn Clock>,
    every: std::time::Duration,
    liveness: Arc<Liveness>,
    shutdown: CancellationToken,
) {
    match alerts.firing_fingerprints("check:").await {
        Ok(firing) => monitor.seed_firing(firing.iter().map(|f| &f["check:".len()..])),
        Err(e) => tracing::warn!(error = %e, "could not read firing health-check alerts"),
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let results = checks.run(None).await;
                let changes = monitor.observe(&results, clock.now());
                if !changes.is_empty()
                    && let Err(e) = alerts.ingest(changes.clone()).await
                {
                    tracing::error!(error = %e, "could not store health-check alerts; will retry");
                    monitor.revert(&changes);
                }
                liveness.tick("health scheduler", every);
            }
        }
    }
}

/// Pings the configured heartbeat URL, an external dead-man's switch for opsbot itself.
pub(super) async fn heartbeat_forever(
    url: secrecy::SecretString,
    every: std::time::Duration,
    liveness: Arc<Liveness>,
    shutdown: CancellationToken,
) {
    let (client, url, liveness) = (&reqwest::Client::new(), &url, &liveness);
    crate::periodic::every(every, &shutdown, move || async move {
        match client.get(url.expose_secret()).timeout(every).send().await {
            Ok(r) if r.status().is_success() => liveness.tick("heartbeat", every),
            Ok(r) => tracing::warn!(status = r.status().as_u16(), "heartbeat ping rejected"),
            Err(e) => tracing::warn!(error = %e.without_url(), "heartbeat ping failed"),
        }
    })
    .await;
}
