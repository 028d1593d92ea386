//! A reaction is routed to what its message stands for: an approval request's vote (the
//! runbook service), else an alert group's ack (an approving reaction acks the group), else
//! nothing: reactions on other messages are ordinary chat. Refused reactions are rate limited
//! on their own budget, since toggling one costs nothing.

use crate::domain::{InboundEvent, RequestId, Requester, Visibility, normalize_emoji};

use std::time::Instant;

use super::{Attempt, OrRefuse, Reacted, Reaction, Response, Router};

impl Router {
    /// A reaction through the pipeline's sink, like a command: audited when it is about
    /// something opsbot tracks, silent otherwise.
    pub(super) async fn handle_reaction(
        &self,
        ev: &InboundEvent,
        request_id: RequestId,
        started: Instant,
        reaction: Reaction<'_>,
    ) -> Response {
        let Reaction {
            emoji, message_id, ..
        } = reaction;
        let requester = self.deps.directory.resolve(&ev.user);
        // A vote or an ack by reaction is shared like the command it stands for.
        let attempt = |command: String| Attempt {
            command,
            args: format!("{emoji} on message {message_id}"),
            visibility: Visibility::Channel,
        };
        let silent = |request_id| Response {
            request_id,
            outcome: None,
            reply: None,
            pending_run: None,
            progress_run: None,
        };
        match self.react(ev, &request_id, &requester, reaction).await {
            // A reaction on anything else is ordinary chat.
            Ok(None) => silent(request_id),
            // Toggling a reaction costs nothing, so refusals are rate limited like commands:
            // past the person's limit they are dropped unaudited, unanswered.
            Ok(Some((_, Err(_)))) | Err(_)
                if self.reaction_refusals_exhausted(&requester).await =>
            {
                silent(request_id)
            }
            Ok(Some((command, result))) => {
                self.finish(ev, request_id, started, attempt(command), result)
                    .await
            }
            Err(refusal) => {
                let attempt = attempt("react".into());
                self.finish(ev, request_id, started, attempt, Err(refusal))
                    .await
            }
        }
    }

    /// A vote on an approval request, else an ack of the alert group the message shows.
    pub(super) async fn react(
        &self,
        ev: &InboundEvent,
        request_id: &RequestId,
        requester: &Requester,
        reaction: Reaction<'_>,
    ) -> Reacted {
        let voted = self
            .runbooks
            .react(ev, request_id, requester, reaction)
            .await?;
        let acks = reaction.added
            && self
                .deps
                .approvals
                .is_approve(&normalize_emoji(reaction.emoji));
        if voted.is_some() || !acks {
            return Ok(voted);
        }
        let Some(group) = self
            .deps
            .store
            .group_by_message(ev.platform, &ev.channel.id, reaction.message_id)
            .await
            .or_refuse("finding alert group by message")?
        else {
            return Ok(None);
        };
        Ok(Some((
            "ack".into(),
            self.alert_commands.ack_group(ev, requester, &group).await,
        )))
    }
}
