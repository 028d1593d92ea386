//! A reaction is routed to what its message stands for: an approval request's vote (the
//! runbook service), else an alert group's ack (an approving reaction acks the group), else
//! nothing: reactions on other messages are ordinary chat.

use crate::domain::{InboundEvent, RequestId, Requester, normalize_emoji};
use crate::ports::StoreError;

use super::{Done, Refusal, Router};

fn store_failed(what: &'static str) -> impl FnOnce(StoreError) -> Refusal {
    move |e| Refusal::Failed(anyhow::Error::new(e).context(what))
}

impl Router {
    /// `Ok(None)`: not about anything opsbot tracks. Otherwise the command it amounts to (for
    /// the audit record) and its result.
    pub(super) async fn react(
        &self,
        ev: &InboundEvent,
        request_id: &RequestId,
        requester: &Requester,
        emoji: &str,
        message_id: &str,
        added: bool,
    ) -> Result<Option<(String, Result<Done, Refusal>)>, Refusal> {
        let voted = self
            .runbooks
            .react(ev, request_id, requester, emoji, message_id, added)
            .await?;
        if voted.is_some() || !added || !self.deps.approvals.is_approve(&normalize_emoji(emoji)) {
            return Ok(voted);
        }
        let Some(group) = self
            .deps
            .store
            .group_by_message(ev.platform, &ev.channel.id, message_id)
            .await
            .map_err(store_failed("finding alert group by message"))?
        else {
            return Ok(None);
        };
        Ok(Some((
            "ack".into(),
            self.ack_group(ev, requester, &group).await,
        )))
    }
}
