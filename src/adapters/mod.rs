//! Platform adapters: each turns its platform's events into `domain::InboundEvent`s for the
//! router and delivers the replies. `PlatformOutbound` sends the bot's own messages to
//! whichever platform a target names.

pub mod console;
pub mod discord;
pub mod inbound;
mod markup;
pub mod slack;
pub mod telegram;
pub mod throttle;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::domain::Platform;
use crate::ports::{ChatOutbound, OutboundError, OutboundMessage, OutboundTarget, Sent};

/// Routes outbound messages to the adapter of the target's platform.
#[derive(Default, Clone)]
pub struct PlatformOutbound {
    adapters: HashMap<Platform, Arc<dyn ChatOutbound>>,
}

impl PlatformOutbound {
    pub fn with(mut self, platform: Platform, adapter: Arc<dyn ChatOutbound>) -> Self {
        self.adapters.insert(platform, adapter);
        self
    }

    fn adapter(&self, to: &OutboundTarget) -> Result<&Arc<dyn ChatOutbound>, OutboundError> {
        self.adapters.get(&to.platform).ok_or_else(|| {
            OutboundError::Undeliverable(format!("no {} adapter is configured", to.platform))
        })
    }
}

#[async_trait::async_trait]
impl ChatOutbound for PlatformOutbound {
    async fn send(&self, to: &OutboundTarget, message: &OutboundMessage) -> Sent {
        self.adapter(to)?.send(to, message).await
    }

    async fn edit(&self, to: &OutboundTarget, id: &str, message: &OutboundMessage) -> Sent<()> {
        self.adapter(to)?.edit(to, id, message).await
    }
}

/// Doubling waits between reconnection attempts: the one reconnect policy of every adapter
/// that connects out (Telegram polling, Slack Socket Mode, the Discord gateway).
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Default for Backoff {
    /// From half a second, capped at a minute.
    fn default() -> Self {
        Self::new(Duration::from_millis(500), Duration::from_secs(60))
    }
}

impl Backoff {
    pub(crate) fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first,
        }
    }

    /// The wait before the next attempt.
    pub(crate) fn delay(&self) -> Duration {
        self.next
    }

    /// A connection that was healthy starts the waits afresh.
    pub(crate) fn reset(&mut self) {
        self.next = self.first;
    }

    /// Waits the current delay and doubles it; `Err` when shutdown came first.
    pub(crate) async fn wait(&mut self, shutdown: &CancellationToken) -> Result<(), ()> {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        tokio::select! {
            _ = shutdown.cancelled() => Err(()),
            _ = tokio::time::sleep(delay) => Ok(()),
        }
    }
}
