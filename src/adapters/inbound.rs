//! The inbound path every adapter shares, once a platform's payload is an `InboundEvent`:
//! drop redeliveries by their stored id, run the work on the router's in-flight tracker (so
//! shutdown waits for what the platform was told we received), handle it, answer it the
//! platform's way, and bind an approval request to the message it was posted as.
//!
//! Adapters keep only what is truly theirs: signatures, payload shapes, acknowledgement and
//! how an answer is shown ([`Answer`]).

use std::future::Future;
use std::sync::Arc;

use chrono::Utc;

use crate::domain::{InboundEvent, Platform, RequestId, RunId};
use crate::ports::{ChatOutbound, DeliveryLog, OutboundError, OutboundMessage, OutboundTarget};
use crate::router::Router;

/// What a person is told when their command was not run because the delivery log could not
/// say whether it had run already.
pub const STORE_UNREACHABLE: &str =
    "opsbot cannot reach its database right now, so nothing ran. Try again in a minute.";

/// How one platform puts the router's answer in front of people.
#[async_trait::async_trait]
pub trait Answer: Send + Sync {
    /// Shows `message` (approval request `approval`, when it is one, or the answer that will
    /// show run `approval`'s progress); returns the id of the message reactions and buttons
    /// reach, when it posted one that the run can be bound to.
    async fn deliver(
        &self,
        ev: &InboundEvent,
        message: &OutboundMessage,
        approval: Option<RunId>,
    ) -> Result<Option<String>, OutboundError>;

    /// The answer was deliberately withheld (a repeated rate-limit hit).
    async fn withheld(&self) {}

    /// `message_id`, in the channel of `ev`, now stands for approval request `run`.
    async fn bound(&self, _ev: &InboundEvent, _run: RunId, _message_id: &str) {}

    /// Tells only the person who sent `ev`, by a way that needs no post in its channel
    /// (Slack's `response_url`); `None` where the platform has none.
    async fn tell_requester(
        &self,
        _ev: &InboundEvent,
        _message: &OutboundMessage,
    ) -> Option<Result<(), OutboundError>> {
        None
    }
}

/// The usual answer: a message in the event's channel (and thread), through the paced outbound.
pub struct InChannel<'a>(pub &'a dyn ChatOutbound);

#[async_trait::async_trait]
impl Answer for InChannel<'_> {
    async fn deliver(
        &self,
        ev: &InboundEvent,
        message: &OutboundMessage,
        _approval: Option<RunId>,
    ) -> Result<Option<String>, OutboundError> {
        self.0.send(&reply_target(ev), message).await.map(Some)
    }
}

/// Where a reply to `ev` goes: its channel, in its thread.
pub fn reply_target(ev: &InboundEvent) -> OutboundTarget {
    OutboundTarget {
        platform: ev.platform,
        channel_id: ev.channel.id.clone(),
        thread: ev.thread.clone(),
    }
}

/// How to let the bot into the channel of `ev`, on its platform.
fn let_in(ev: &InboundEvent, bot: &str) -> String {
    match ev.platform {
        Platform::Slack => format!(
            "Invite @{bot} to #{channel}: type /invite @{bot} there",
            channel = ev.channel.name
        ),
        Platform::Discord => format!(
            "Give {bot} the View Channel and Send Messages permissions in #{}",
            ev.channel.name
        ),
        Platform::Telegram => {
            format!("Add {bot} to this chat again (it was removed or never added)")
        }
        Platform::Console => format!("{bot} cannot write to this console"),
    }
}

/// What adapters hold instead of the router and the whole store.
#[derive(Clone)]
pub struct Inbound {
    router: Arc<Router>,
    deliveries: Arc<dyn DeliveryLog>,
}

impl Inbound {
    pub fn new(router: Arc<Router>, deliveries: Arc<dyn DeliveryLog>) -> Self {
        Self { router, deliveries }
    }

    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// Records a platform delivery id; false for a redelivery (here or on another replica).
    /// `Err` when the store could not say: the caller must not acknowledge as handled.
    pub async fn first_delivery(
        &self,
        platform: Platform,
        id: &str,
    ) -> Result<bool, crate::ports::StoreError> {
        let first = self
            .deliveries
            .first_delivery(platform, id, Utc::now())
            .await;
        match &first {
            Ok(false) => tracing::debug!(%platform, id, "ignoring a delivery seen before"),
            Err(e) => tracing::error!(%platform, id, error = %e, "could not record a delivery id"),
            Ok(true) => {}
        }
        first
    }

    /// Runs acknowledged work in the background, tracked so shutdown waits for it.
    pub fn spawn<F>(&self, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.router.in_flight().spawn(work);
    }

    /// Held while answering work the platform handed over outside [`Inbound::spawn`] (a
    /// gateway handler's own task), so shutdown waits for it too.
    pub fn answering(&self) -> tokio_util::task::task_tracker::TaskTrackerToken {
        self.router.in_flight().token()
    }

    /// Handles `ev`, answers it through `answer`, and binds an approval request to the
    /// message it became. Failures are logged with the request id; nothing is retried here
    /// (the outbound already retries what can be retried).
    pub async fn answer(&self, ev: &InboundEvent, answer: &dyn Answer) {
        let response = self.router.handle(ev).await;
        let Some(message) = response.message() else {
            answer.withheld().await;
            return;
        };
        let run = response.pending_run;
        // A run's progress answer needs its message id as an approval request does.
        let wants_id = run.or(response.progress_run);
        match answer.deliver(ev, &message, wants_id).await {
            Ok(Some(message_id)) => {
                if let Some(run) = run {
                    self.bind(ev, run, &message_id, answer).await;
                } else if let Some(run) = response.progress_run
                    && let Err(e) = self.router.bind_progress(run, &message_id).await
                {
                    tracing::warn!(run = %run, error = %e, "could not make the answer the run's progress message");
                }
            }
            Ok(None) if run.is_some() => tracing::warn!(
                run = ?run,
                request_id = %response.request_id,
                "the approval request has no message to react to; /approve still works"
            ),
            Ok(None) => {}
            Err(OutboundError::NotInChannel(why)) => {
                self.not_in_channel(ev, &response.request_id, run, &why, answer)
                    .await
            }
            Err(e) => tracing::error!(
                request_id = %response.request_id,
                platform = %ev.platform,
                channel = %ev.channel.id,
                error = %e,
                "could not deliver a reply"
            ),
        }
    }

    /// The platform refused the answer because opsbot may not post in the channel: a pending
    /// request is cancelled (approvers could never see it), and the requester is told why and
    /// how to let opsbot in, by whatever way still reaches them; else it is logged.
    async fn not_in_channel(
        &self,
        ev: &InboundEvent,
        request_id: &RequestId,
        run: Option<RunId>,
        why: &str,
        answer: &dyn Answer,
    ) {
        let fix = let_in(ev, self.router.bot_name());
        let text = match run {
            Some(run) => {
                if let Err(e) = self
                    .router
                    .withdraw_unposted(run, request_id.clone(), why)
                    .await
                {
                    tracing::error!(run = %run, %request_id, error = %e, "could not cancel a request that could not be posted");
                }
                format!(
                    "Request #{run} was cancelled, nothing ran: approvers could not see it because opsbot cannot post in this channel. {fix}, then request it again."
                )
            }
            None => format!("opsbot cannot post in this channel, so its answer was lost. {fix}."),
        };
        let told = answer
            .tell_requester(ev, &OutboundMessage::text(text))
            .await;
        if !matches!(told, Some(Ok(()))) {
            tracing::warn!(
                %request_id,
                run = ?run,
                platform = %ev.platform,
                channel = %ev.channel.id,
                reason = why,
                fix = %fix,
                "opsbot may not post in this channel and has no other way to tell the requester"
            );
        }
    }

    async fn bind(&self, ev: &InboundEvent, run: RunId, message_id: &str, answer: &dyn Answer) {
        match self.router.bind_message(run, message_id).await {
            Ok(()) => answer.bound(ev, run, message_id).await,
            Err(e) => tracing::error!(
                run = %run,
                error = %e,
                "could not bind the approval message; /approve still works"
            ),
        }
    }
}
