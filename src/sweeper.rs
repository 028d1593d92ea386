//! The periodic sweep's one home: every 15 s it expires stale approval requests, reports
//! interrupted runs and overdue incidents, sends reminders, and posts every notice it decides
//! on through the outbound port to the channel the notice concerns, whatever its platform.
//!
//! It runs on the leader only (`app.rs`, `leader::run_while_leader`). Nothing else sweeps:
//! a notice is claimed by the store exactly once (conditional updates), so a second sweeper
//! that kept only some platforms' notices would silently drop the rest.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::liveness::Liveness;
use crate::ports::{ChatOutbound, OutboundMessage, OutboundTarget, StoreError};
use crate::router::{Notice, Router};

/// How often expired and interrupted runbook requests are looked for.
pub const SWEEP_EVERY: Duration = Duration::from_secs(15);

#[derive(Clone)]
pub struct Sweeper {
    router: Arc<Router>,
    outbound: Arc<dyn ChatOutbound>,
}

impl Sweeper {
    pub fn new(router: Arc<Router>, outbound: Arc<dyn ChatOutbound>) -> Self {
        Self { router, outbound }
    }

    /// One sweep: decides the notices and hands each to the outbound in its own task (one
    /// rate-limited channel must not hold up the others or the next sweep; the outbound logs
    /// and counts a failure). Returns how many notices were sent off.
    pub async fn sweep_once(&self) -> Result<usize, StoreError> {
        // Held for the whole sweep, so shutdown also waits for the notices it decides on.
        let _guard = self.router.in_flight().token();
        let notices = self.router.sweep().await?;
        let count = notices.len();
        for n in notices {
            let (to, message) = addressed(n);
            let outbound = self.outbound.clone();
            self.router
                .in_flight()
                .spawn(async move { outbound.send(&to, &message).await });
        }
        Ok(count)
    }

    /// Sweeps every [`SWEEP_EVERY`] (the first at once) until shutdown.
    pub async fn run(self, liveness: Arc<Liveness>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => match self.sweep_once().await {
                    Ok(_) => liveness.tick("sweeper", SWEEP_EVERY),
                    Err(e) => tracing::warn!(error = %e, "sweeping runbook requests failed"),
                },
            }
        }
    }
}

fn addressed(n: Notice) -> (OutboundTarget, OutboundMessage) {
    let to = OutboundTarget {
        platform: n.platform,
        channel_id: n.channel_id,
        thread: n.thread,
    };
    let message = OutboundMessage::text(n.text);
    let message = if n.urgent { message.urgent() } else { message };
    (to, message)
}
