//! Deciding a pending request: approvals (by command or reaction), withdrawals, denial and
//! cancellation. Only the caller whose conditional update wins moves it on.

use super::*;

impl RunbookService {
    /// Loads a request from the channel it was made in and refuses unless it is still pending
    /// and unexpired. Acting on it from elsewhere (another channel, a DM) is refused: the
    /// runbook's channel allow-list and the people watching that channel must apply.
    pub(super) async fn pending_run_in(
        &self,
        ev: &InboundEvent,
        id: RunId,
    ) -> Result<Run, Refusal> {
        let run = self.pending_run(id).await?;
        if run.new.platform != ev.platform || run.new.channel_id != ev.channel.id {
            return Err(Refusal::Denied(format!(
                "request #{id} was made in #{}; act on it there.",
                run.new.channel_name
            )));
        }
        Ok(run)
    }

    /// Loads a request and refuses unless it is still pending and unexpired.
    pub(super) async fn pending_run(&self, id: RunId) -> Result<Run, Refusal> {
        let run = self
            .store
            .run(id)
            .await
            .or_no_such("loading run", "request", id)?;
        match run.state {
            RunState::Pending => {}
            RunState::Approved => {
                return Err(Refusal::Invalid(format!(
                    "request #{id} is already approved and starting."
                )));
            }
            s if s.has_run() => {
                return Err(Refusal::Invalid(format!(
                    "request #{id} already ran ({s}); nothing more to do."
                )));
            }
            s => {
                return Err(Refusal::Invalid(format!(
                    "request #{id} was {s}; nothing will run."
                )));
            }
        }
        if self.now() >= run.new.expires_at {
            self.decide(&run, RunState::Expired, None, EXPIRED, "expiring run")
                .await?;
            return Err(Refusal::Invalid(format!(
                "request #{id} expired at {} UTC and can no longer be approved; request it again.",
                run.new.expires_at.format("%H:%M:%S")
            )));
        }
        Ok(run)
    }

    /// The command file as it is now, and the action as it would run now. If the file or the
    /// action changed since the request, the request is cancelled: approvers approved
    /// something else.
    pub(super) async fn current_action(
        &self,
        run: &Run,
    ) -> Result<(Arc<CommandSpec>, RenderedAction), Refusal> {
        let changed = |why: &str| {
            Refusal::Invalid(format!(
                "/{} {why} since request #{} was made, so it will not run; request it again.",
                run.new.command, run.id
            ))
        };
        let Some(spec) = self.catalog.get(&run.new.command).cloned() else {
            self.cancel_changed(run).await?;
            return Err(changed("was removed"));
        };
        let (rendered, hash) = match run.retry {
            Some(retry) => self.retry_now(&spec, run, retry).await?,
            None => {
                let rendered = self.render_for(&spec, &BoundArgs(run.new.args.clone()))?;
                let hash = rendered.hash.clone();
                (rendered, hash)
            }
        };
        if hash != run.new.action_hash {
            self.cancel_changed(run).await?;
            return Err(changed("changed"));
        }
        Ok((spec, rendered))
    }

    pub(super) async fn cancel_changed(&self, run: &Run) -> Result<(), Refusal> {
        self.decide(
            run,
            RunState::Cancelled,
            None,
            "cancelled: the runbook changed since it was requested; nothing ran.",
            "cancelling changed run",
        )
        .await
        .map(drop)
    }

    /// An approval, by `/approve ID` or a reaction.
    pub(in crate::router) async fn approve(
        &self,
        ev: &InboundEvent,
        request_id: &RequestId,
        requester: &Requester,
        id: RunId,
    ) -> Result<Done, Refusal> {
        let id = self.open_gate_of(id).await?;
        let run = self.pending_run_in(ev, id).await?;
        if let Some(gate) = run.gate {
            return self
                .approve_gate((ev, request_id), requester, run, gate)
                .await;
        }
        let (spec, rendered) = self.current_action(&run).await?;
        let Some(policy) = spec.approval.clone() else {
            return Err(Refusal::Invalid(format!(
                "request #{id} does not need approval."
            )));
        };
        let person = requester
            .person()
            .ok_or_else(|| Refusal::Denied("unknown users cannot approve.".into()))?;
        self.may_approve(ev, &run, person, &policy)?;
        let needed = run.new.approvals_needed;
        let hash = run.new.action_hash.clone();
        let total = match self.vote(ev, &run, person, &hash, &policy).await? {
            Ok(total) => total,
            Err(not_yet) => return Ok(not_yet),
        };
        let (now, by) = (self.now(), &person.name);
        let outcome = format!(
            "✅ approved by {by} at {} UTC; the result follows.",
            now.format("%H:%M")
        );
        let won = (self.decide(
            &run,
            RunState::Approved,
            Some(now + lease()),
            &outcome,
            "approving run",
        ))
        .await?;
        if !won {
            // Another decision (here or on another replica) got there first.
            let now_state = self.store.run(id).await.or_refuse("reloading run")?;
            return Ok(Done::text(decided_meanwhile(
                by,
                id,
                now_state.map(|r| r.state),
            )));
        }
        self.run_approved(
            ev,
            request_id,
            run,
            rendered,
            format!("{by} ({total}/{needed})"),
        )
        .await
    }

    /// Runs a request just approved by `by` (name and tally). On the console the result is
    /// the answer; elsewhere the approver is answered once it has started, and its result is
    /// posted in the channel when it ends.
    async fn run_approved(
        &self,
        ev: &InboundEvent,
        request_id: &RequestId,
        run: Run,
        rendered: RenderedAction,
        by: String,
    ) -> Result<Done, Refusal> {
        let id = run.id;
        let running = format!(
            "Approved by {by}, running {}",
            command_line(&run.new.command, &run.new.args)
        );
        if run.new.platform == Platform::Console {
            // The console's channel is the terminal of whoever typed: the result is the reply.
            let ran = self.execute(ev, request_id, &run, &rendered).await?;
            return Ok(Done {
                text: format!("{running}…\n{}", ran.text),
                detail: format!("approved and ran #{id}: {}", ran.ended),
                pending_run: ran.gate,
                ran: Some(id),
                progress: false,
            });
        }
        if !self.start(ev, request_id, &run, &rendered).await? {
            return Ok(Done::text(format!(
                "Request #{id} is already running or done."
            )));
        }
        let resume = super::steps::Resume::default();
        self.run_in_background(ev, request_id, run, rendered, resume);
        Ok(Done {
            text: format!("{running}; the result will be posted in reply to request #{id}."),
            detail: format!("approved #{id}; running, its result goes to the channel"),
            pending_run: None,
            ran: Some(id),
            progress: false,
        })
    }

    /// Refuses approvers without an approver role, and the requester (unless the file
    /// allows self-approval; a gate never does).
    pub(super) fn may_approve(
        &self,
        ev: &InboundEvent,
        run: &Run,
        person: &Person,
        policy: &ApprovalSpec,
    ) -> Result<(), Refusal> {
        let id = run.id;
        if !person.has_any_role(&policy.approver_roles) {
            return Err(Refusal::Denied(format!(
                "approving #{id} needs one of the roles {}; you have {}.",
                roles_list(&policy.approver_roles),
                if person.roles.is_empty() {
                    "none".to_owned()
                } else {
                    roles_list(&person.roles.iter().cloned().collect::<Vec<_>>())
                }
            )));
        }
        let requested_by = self.directory.resolve(&run.new.requester);
        let own = same_person(person, &requested_by) || run.new.requester == ev.user;
        if own && !policy.allow_self_approval {
            return Err(Refusal::Denied(format!(
                "you requested #{id}, so you cannot approve it; ask someone with {}.",
                roles_list(&policy.approver_roles)
            )));
        }
        Ok(())
    }

    /// Records the vote. `Ok(total)` once enough approvals are in; otherwise `Err` with the
    /// answer to give (counted and waiting for more, a repeat, or already decided).
    pub(super) async fn vote(
        &self,
        ev: &InboundEvent,
        run: &Run,
        person: &Person,
        hash: &str,
        policy: &ApprovalSpec,
    ) -> Result<Result<u32, Done>, Refusal> {
        let (id, needed) = (run.id, run.new.approvals_needed);
        let vote = Vote {
            approver: ev.user.clone(),
            approver_name: person.name.clone(),
            action_hash: hash.to_owned(),
            at: self.now(),
        };
        let tally = self
            .store
            .add_vote(id, &vote)
            .await
            .or_refuse("recording vote")?;
        if !tally.counted {
            // Either this approver voted before, or the request left `pending` meanwhile.
            let now_state = self
                .store
                .run(id)
                .await
                .or_refuse("reloading run")?
                .map(|r| r.state);
            return Ok(Err(Done::text(if now_state != Some(RunState::Pending) {
                decided_meanwhile(&person.name, id, now_state)
            } else {
                format!(
                    "You already approved #{id} ({}/{needed}); each approver counts once.",
                    tally.total
                )
            })));
        }
        if tally.total >= needed {
            return Ok(Ok(tally.total));
        }
        Ok(Err(Done {
            text: format!(
                "{} approved #{id} ({}/{needed}); waiting for {} more from {}.",
                person.name,
                tally.total,
                needed - tally.total,
                roles_list(&policy.approver_roles)
            ),
            detail: format!("vote {}/{needed} for #{id}", tally.total),
            pending_run: None,
            ran: None,
            progress: false,
        }))
    }

    /// Ends a pending request without running it: `/deny` by an approver (any approver role
    /// of the command), `/cancel` by the person who asked for it. A gate's request ended so
    /// stops its run there (its `on_failure` steps run; after `/cancel`, as `on_cancel` says).
    pub(in crate::router) async fn end(
        &self,
        (ev, request_id): (&InboundEvent, &RequestId),
        requester: &Requester,
        id: RunId,
        to: Ending,
    ) -> Result<Done, Refusal> {
        let id = match to {
            Ending::Denied => self.open_gate_of(id).await?,
            Ending::Cancelled => id,
        };
        let run = self.pending_run_in(ev, id).await?;
        let (by, outcome) = match to {
            Ending::Denied => {
                let approver = self.approver_denying(&run, requester)?;
                let outcome = format!("❌ denied by {approver}; nothing ran.");
                (approver, outcome)
            }
            Ending::Cancelled => {
                self.own_request(&run, ev, requester)?;
                let outcome = "cancelled by the requester; nothing ran.".to_owned();
                (run.new.requester_name.clone(), outcome)
            }
        };
        let state = match to {
            Ending::Denied => RunState::Denied,
            Ending::Cancelled => RunState::Cancelled,
        };
        let id = run.id;
        if !(self.decide(&run, state, None, &outcome, "ending a pending run")).await? {
            return Err(Refusal::Invalid(format!(
                "request #{id} is no longer pending."
            )));
        }
        if let Some(gate) = run.gate {
            let why = format!("{state} by {by}");
            let rollback = to == Ending::Denied || self.rolls_back_on_cancel(&run);
            let result = self
                .gate_closed(Some((ev, request_id)), &run, &why, rollback)
                .await;
            let text = match result {
                Some(result) => format!(
                    "Request #{id} {why}; run #{} stops there.\n{result}",
                    gate.run
                ),
                None => format!("Request #{id} {why}; run #{} stops there.", gate.run),
            };
            return Ok(Done {
                text,
                detail: format!("{state} gate #{id} of #{}", gate.run),
                pending_run: None,
                ran: None,
                progress: false,
            });
        }
        Ok(Done {
            text: format!("Request #{id} {state} by {by}; nothing will run."),
            detail: format!("{state} #{id}"),
            pending_run: None,
            ran: None,
            progress: false,
        })
    }

    /// The name of the approver denying `run`; refused for anyone else.
    fn approver_denying(&self, run: &Run, requester: &Requester) -> Result<String, Refusal> {
        let id = run.id;
        let policy = super::gates::policy_of(&self.catalog, run);
        let person = requester
            .person()
            .ok_or_else(|| Refusal::Denied("unknown users cannot deny.".into()))?;
        let may = policy
            .as_ref()
            .is_none_or(|p| person.has_any_role(&p.approver_roles));
        if !may {
            return Err(Refusal::Denied(format!(
                "denying #{id} needs an approver role; the requester can /cancel {id} instead."
            )));
        }
        Ok(person.name.clone())
    }

    /// Refused unless `requester` is the person who asked for `run`.
    pub(super) fn own_request(
        &self,
        run: &Run,
        ev: &InboundEvent,
        requester: &Requester,
    ) -> Result<(), Refusal> {
        let id = run.id;
        let requested_by = self.directory.resolve(&run.new.requester);
        let own = run.new.requester == ev.user
            || requester
                .person()
                .is_some_and(|p| same_person(p, &requested_by));
        if !own {
            return Err(Refusal::Denied(format!(
                "only {} (who requested #{id}) can cancel it; approvers can /deny {id}.",
                run.new.requester_name
            )));
        }
        Ok(())
    }

    /// A reaction on an approval request's message. Reactions on other messages, and emoji
    /// that are neither approve nor deny, are not about a request: `Ok(None)`.
    pub(in crate::router) async fn react(
        &self,
        ev: &InboundEvent,
        request_id: &RequestId,
        requester: &Requester,
        reaction: Reaction<'_>,
    ) -> Reacted {
        let Reaction {
            emoji,
            message_id,
            added,
        } = reaction;
        let emoji = normalize_emoji(emoji);
        let (approve, deny) = (
            self.approvals.is_approve(&emoji),
            self.approvals.is_deny(&emoji),
        );
        if !approve && !deny {
            return Ok(None);
        }
        let Some(run) = self
            .store
            .run_by_message(ev.platform, &ev.channel.id, message_id)
            .await
            .or_refuse("finding run by message")?
        else {
            // Not an approval request (perhaps an alert group: the router looks there).
            return Ok(None);
        };
        if requester.person().is_none() {
            return Ok(Some((
                "react".into(),
                Err(Refusal::Denied(format!(
                    "I don't know {}, so your reaction on #{} does not count.",
                    ev.user, run.id
                ))),
            )));
        }
        Ok(Some(match (approve, added) {
            (true, true) => (
                "approve".into(),
                self.approve(ev, request_id, requester, run.id).await,
            ),
            (true, false) => ("retract".into(), self.retract(ev, run.id).await),
            (false, true) => (
                "deny".into(),
                (self.end((ev, request_id), requester, run.id, Ending::Denied)).await,
            ),
            // Taking back a deny changes nothing: the request already ended.
            (false, false) => return Ok(None),
        }))
    }

    pub(super) async fn retract(&self, ev: &InboundEvent, id: RunId) -> Result<Done, Refusal> {
        let withdrawn = self
            .store
            .retract_vote(id, &ev.user)
            .await
            .or_refuse("retracting vote")?;
        if withdrawn {
            Ok(Done {
                text: format!("Approval of #{id} withdrawn by {}.", ev.display_name),
                detail: format!("retracted vote on #{id}"),
                pending_run: None,
                ran: None,
                progress: false,
            })
        } else {
            Err(Refusal::Invalid(format!(
                "there was no pending approval of #{id} to withdraw (it may already have run)."
            )))
        }
    }
}

/// What an approver is told whose vote came after the request was decided: what it became,
/// never "running" for a request denied, cancelled or expired meanwhile.
fn decided_meanwhile(by: &str, id: RunId, state: Option<RunState>) -> String {
    let what = match state {
        Some(s) if s.has_run() => "it is already approved and running (or has run)",
        Some(RunState::Denied) => "it was denied meanwhile; nothing runs",
        Some(RunState::Cancelled) => "it was cancelled meanwhile; nothing runs",
        Some(RunState::Expired) => "it expired meanwhile; nothing runs",
        Some(_) | None => "it is no longer waiting for approval; nothing more runs",
    };
    format!("{by} approved #{id}; {what}.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_approver_hears_what_the_request_became() {
        let told = |s| decided_meanwhile("bob", RunId(7), Some(s));
        assert_eq!(
            told(RunState::Denied),
            "bob approved #7; it was denied meanwhile; nothing runs."
        );
        assert!(told(RunState::Expired).contains("expired meanwhile"));
        assert!(told(RunState::Cancelled).contains("cancelled meanwhile"));
        assert!(told(RunState::Running).contains("already approved"));
    }
}
