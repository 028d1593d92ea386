//! Background work on a fixed period until shutdown (SQLite checkpoints, the heartbeat ping,
//! handing memory back): the timer and the cancellation, written once. A leaf: it names
//! nothing else in the crate.

use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// Runs `work` now and then every `period` until `shutdown` is cancelled. A slow run delays
/// the next one rather than being followed by a burst of catch-up runs.
pub async fn every<F, Work>(period: Duration, shutdown: &CancellationToken, mut work: F)
where
    F: FnMut() -> Work,
    Work: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => work().await,
        }
    }
}
