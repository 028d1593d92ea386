//! The periodic sweep's one home: every 15 s it expires stale approval requests, reports
//! interrupted runs and overdue incidents and sends reminders; every second it takes the
//! escalation steps that are due. The store queues each notice
//! in the outbox with the change that decides it; the sweep wakes the deliverer
//! (`crate::outbox`), which posts it to the channel it concerns, whatever its platform.
//!
//! It runs on the leader only (`app.rs`, `leader::run_while_leader`). Nothing else sweeps:
//! a notice is claimed by the store exactly once (conditional updates), so a second sweeper
//! that kept only some platforms' notices would silently drop the rest.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::liveness::Liveness;
use crate::outbox::OutboxSignal;
use crate::ports::StoreError;
use crate::router::Router;

/// How often expired and interrupted runbook requests are looked for.
pub const SWEEP_EVERY: Duration = Duration::from_secs(15);

/// How often due escalation steps are looked for: a step fires within this of its time.
pub const ESCALATE_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Sweeper {
    router: Arc<Router>,
    outbox: OutboxSignal,
}

impl Sweeper {
    pub fn new(router: Arc<Router>, outbox: OutboxSignal) -> Self {
        Self { router, outbox }
    }

    /// One sweep: decides the notices (queued in the outbox as they are decided) and wakes
    /// the deliverer. Returns how many notices were queued.
    pub async fn sweep_once(&self) -> Result<usize, StoreError> {
        let count = self.router.sweep().await?.len();
        if count > 0 {
            self.outbox.wake();
        }
        Ok(count)
    }

    /// Sweeps every [`SWEEP_EVERY`] (the first at once), and takes due escalation steps
    /// every [`ESCALATE_EVERY`], until shutdown.
    pub async fn run(self, liveness: Arc<Liveness>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        let mut escalate = tokio::time::interval(ESCALATE_EVERY);
        escalate.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = escalate.tick() => self.router.escalate().await,
                _ = tick.tick() => match self.sweep_once().await {
                    Ok(_) => liveness.tick("sweeper", SWEEP_EVERY),
                    Err(e) => tracing::warn!(error = %e, "sweeping runbook requests failed"),
                },
            }
        }
    }
}
