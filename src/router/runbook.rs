//! Runbook requests: dry runs, approval-gated requests, votes by command or reaction,
//! denial, cancellation, break-glass, and execution exactly once. Every state change goes
//! through `RunStore::transition`, a conditional update, so of any number of racing
//! approvals (or replicas) exactly one moves a request to `approved` and runs it.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::actions::render::{RenderedAction, redact, render};
use crate::catalog::CommandSpec;
use crate::domain::{
    ActionKind, AuditEntry, BoundArgs, ChannelRef, InboundEvent, NewRun, Outcome, Person, Platform,
    RequestId, Requester, Role, Run, RunResult, RunState, Severity, Vote, human_duration,
    normalize_emoji,
};
use crate::ports::{OutboundMessage, OutboundTarget, StoreError};

use super::parse::Word;
use super::{Done, Refusal, Router};

/// How long an approved or running request's lease lasts; renewed while it runs. A request
/// whose lease lapses belonged to a process that died: it becomes `interrupted`.
pub const LEASE: Duration = Duration::from_secs(60);

/// What an expired request's message says once its buttons are gone.
const EXPIRED: &str = "⌛ expired without enough approvals; nothing ran.";

/// How long platform event ids are kept to recognise redeliveries. Slack retries for about
/// an hour at most, Discord interactions live 15 minutes, Telegram keeps undelivered updates
/// for a day and never resends confirmed ones: a day covers them all and bounds the table.
pub const EVENT_ID_RETENTION: chrono::Duration = chrono::Duration::days(1);

/// Reactions and roles for approvals, from `[approvals]` in the config.
#[derive(Clone, Debug)]
pub struct ApprovalSettings {
    pub approve_emoji: Vec<String>,
    pub deny_emoji: Vec<String>,
    pub break_glass_roles: Vec<Role>,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        Self {
            approve_emoji: vec!["✅".into(), "👍".into()],
            deny_emoji: vec!["❌".into(), "👎".into()],
            break_glass_roles: Vec::new(),
        }
    }
}

impl ApprovalSettings {
    fn is_approve(&self, emoji: &str) -> bool {
        self.approve_emoji
            .iter()
            .any(|e| normalize_emoji(e) == emoji)
    }

    fn is_deny(&self, emoji: &str) -> bool {
        self.deny_emoji.iter().any(|e| normalize_emoji(e) == emoji)
    }
}

/// A message for a channel that is not a reply to anyone (expiry, interruption).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub platform: Platform,
    pub channel_id: String,
    pub thread: Option<String>,
    pub text: String,
    /// Overtakes routine messages waiting for the channel (a P1 incident past its target).
    pub urgent: bool,
}

/// What the requester asked for besides the runbook's own arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunMode {
    Normal,
    /// `--dry-run`: show exactly what would run; create nothing.
    DryRun,
    /// `--break-glass "reason"`: skip approval (configured roles only), loudly.
    BreakGlass(String),
}

/// Takes `--dry-run` and `--break-glass REASON` out of the words; the rest bind to arguments.
pub fn split_mode(words: &[Word]) -> Result<(RunMode, Vec<Word>), String> {
    let mut mode = RunMode::Normal;
    let mut rest = Vec::with_capacity(words.len());
    for w in words {
        match w {
            Word::Flag { name, value } if name == "dry-run" => {
                mode = RunMode::DryRun;
                // `--dry-run api` parsed the next word as the flag's value; it is an argument.
                if let Some(v) = value {
                    rest.push(Word::Positional(v.clone()));
                }
            }
            Word::Flag { name, value } if name == "break-glass" => match value {
                Some(reason) if !reason.trim().is_empty() => {
                    mode = RunMode::BreakGlass(reason.trim().to_owned())
                }
                _ => {
                    return Err(
                        "--break-glass needs a reason: --break-glass \"why this cannot wait\""
                            .into(),
                    );
                }
            },
            other => rest.push(other.clone()),
        }
    }
    Ok((mode, rest))
}

fn store_failed(what: &'static str) -> impl FnOnce(StoreError) -> Refusal {
    move |e| Refusal::Failed(anyhow::Error::new(e).context(what))
}

fn command_line(run_or_spec_name: &str, args: &[(String, String)]) -> String {
    let mut s = format!("/{run_or_spec_name}");
    for (n, v) in args {
        let _ = write!(s, " {n}={v}");
    }
    s
}

fn roles_list(roles: &[Role]) -> String {
    roles
        .iter()
        .map(Role::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

fn same_person(a: &Person, requester: &Requester) -> bool {
    requester.person().is_some_and(|p| p.name == a.name)
}

impl Router {
    fn now(&self) -> DateTime<Utc> {
        self.deps.clock.now()
    }

    fn render_for(&self, spec: &CommandSpec, args: &BoundArgs) -> Result<RenderedAction, Refusal> {
        render(spec, args, &*self.deps.env).map_err(|e| {
            Refusal::Failed(anyhow::anyhow!(e).context(format!("rendering /{}", spec.name)))
        })
    }

    /// A runbook command that passed authorization, binding and rate limits.
    pub(super) async fn request_runbook(
        &self,
        ev: &InboundEvent,
        request_id: &RequestId,
        requester: &Requester,
        spec: &Arc<CommandSpec>,
        args: BoundArgs,
        mode: RunMode,
    ) -> Result<Done, Refusal> {
        let line = command_line(&spec.name, &args.0);
        let approval_note = match &spec.approval {
            Some(a) => format!(
                "needs {} approval(s) from {}",
                a.approvals,
                roles_list(&a.approver_roles)
            ),
            None => "runs without approval".into(),
        };
        if mode == RunMode::DryRun {
            // Secret values are never shown, so a dry run works even where they are not set.
            let env = self.deps.env.clone();
            let lookup = move |name: &str| env(name).or_else(|| Some("unset".to_owned()));
            let rendered =
                render(spec, &args, &lookup).map_err(|e| Refusal::Failed(anyhow::anyhow!(e)))?;
            return Ok(Done::text(format!(
                "Dry run, nothing was requested. {line} would run ({approval_note}):\n```\n{}\n```",
                rendered.display
            )));
        }
        let person = requester
            .person()
            .ok_or_else(|| Refusal::Denied("unknown users cannot request runbooks".into()))?;
        let now = self.now();
        let (state, break_glass) = match (&mode, &spec.approval) {
            (RunMode::BreakGlass(reason), Some(_)) => {
                if !person.has_any_role(&self.deps.approvals.break_glass_roles) {
                    return Err(Refusal::Denied(format!(
                        "break-glass needs one of the roles {}; ask an approver instead.",
                        if self.deps.approvals.break_glass_roles.is_empty() {
                            "(none configured)".to_owned()
                        } else {
                            roles_list(&self.deps.approvals.break_glass_roles)
                        }
                    )));
                }
                (RunState::Approved, Some(reason.clone()))
            }
            (RunMode::BreakGlass(_), None) => {
                return Err(Refusal::Invalid(format!(
                    "/{} runs without approval; --break-glass is not needed.",
                    spec.name
                )));
            }
            (_, Some(_)) => (RunState::Pending, None),
            (_, None) => (RunState::Approved, None),
        };
        let rendered = self.render_for(spec, &args)?;
        let expires_after = spec.approval.as_ref().map_or(LEASE, |a| a.expires_after);
        let run = self
            .deps
            .store
            .create_run(
                NewRun {
                    command: spec.name.clone(),
                    args: args.0.clone(),
                    rendered: rendered.display.clone(),
                    action_hash: rendered.hash.clone(),
                    requester: ev.user.clone(),
                    requester_name: person.name.clone(),
                    platform: ev.platform,
                    channel_id: ev.channel.id.clone(),
                    channel_name: ev.channel.name.clone(),
                    thread: ev.thread.clone(),
                    approvals_needed: spec.approval.as_ref().map_or(0, |a| a.approvals),
                    state,
                    break_glass: break_glass.clone(),
                    created_at: now,
                    expires_at: now + chrono::Duration::from_std(expires_after).unwrap_or_default(),
                },
                now + lease(),
            )
            .await
            .map_err(store_failed("creating run request"))?;
        if state == RunState::Approved {
            let result = self.execute(ev, request_id, &run, &rendered).await?;
            let (text, detail) = match break_glass {
                Some(reason) => (
                    format!(
                        "🚨 BREAK-GLASS: {} ran {line} without approval. Reason: {reason}\n{result}",
                        person.name
                    ),
                    format!("break-glass #{}: {reason}", run.id),
                ),
                None => (result, format!("ran #{}", run.id)),
            };
            return Ok(Done {
                text,
                detail,
                pending_run: None,
                ran: Some(run.id),
            });
        }
        let a = spec
            .approval
            .as_ref()
            .expect("pending requests have an approval policy");
        let approve = self
            .deps
            .approvals
            .approve_emoji
            .first()
            .map_or("✅", String::as_str);
        let deny = self
            .deps
            .approvals
            .deny_emoji
            .first()
            .map_or("❌", String::as_str);
        Ok(Done {
            text: format!(
                "Request #{id}: {line} requested by {who} — needs {n} approval(s) from {roles}, expires in {exp}.\n\
                 Will run:\n```\n{display}\n```\nReact {approve} to approve, {deny} to deny, or /approve {id} · /deny {id}. \
                 {who} can /cancel {id}.",
                id = run.id,
                who = person.name,
                n = a.approvals,
                roles = roles_list(&a.approver_roles),
                exp = human_duration(a.expires_after),
                display = rendered.display,
            ),
            detail: format!("pending #{}", run.id),
            pending_run: Some(run.id),
            ran: None,
        })
    }

    /// Loads a request from the channel it was made in and refuses unless it is still pending
    /// and unexpired. Acting on it from elsewhere (another channel, a DM) is refused: the
    /// runbook's channel allow-list and the people watching that channel must apply.
    async fn pending_run_in(&self, ev: &InboundEvent, id: i64) -> Result<Run, Refusal> {
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
    async fn pending_run(&self, id: i64) -> Result<Run, Refusal> {
        let run = self
            .deps
            .store
            .run(id)
            .await
            .map_err(store_failed("loading run"))?
            .ok_or_else(|| Refusal::Invalid(format!("there is no request #{id}.")))?;
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
            let expired = self
                .deps
                .store
                .transition(id, RunState::Pending, RunState::Expired, self.now(), None)
                .await
                .map_err(store_failed("expiring run"))?;
            if expired {
                self.retire_request(&run, EXPIRED);
            }
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
    async fn current_action(
        &self,
        run: &Run,
    ) -> Result<(Arc<CommandSpec>, RenderedAction), Refusal> {
        let changed = |why: &str| {
            Refusal::Invalid(format!(
                "/{} {why} since request #{} was made, so it will not run; request it again.",
                run.new.command, run.id
            ))
        };
        let Some(spec) = self.deps.catalog.get(&run.new.command).cloned() else {
            self.cancel_changed(run).await?;
            return Err(changed("was removed"));
        };
        let rendered = self.render_for(&spec, &BoundArgs(run.new.args.clone()))?;
        if rendered.hash != run.new.action_hash {
            self.cancel_changed(run).await?;
            return Err(changed("changed"));
        }
        Ok((spec, rendered))
    }

    async fn cancel_changed(&self, run: &Run) -> Result<(), Refusal> {
        let cancelled = self
            .deps
            .store
            .transition(
                run.id,
                RunState::Pending,
                RunState::Cancelled,
                self.now(),
                None,
            )
            .await
            .map_err(store_failed("cancelling changed run"))?;
        if cancelled {
            self.retire_request(
                run,
                "cancelled: the runbook changed since it was requested; nothing ran.",
            );
        }
        Ok(())
    }

    /// Replaces the message of a request that is no longer pending (its buttons included)
    /// with what became of it, so nobody presses Approve on a request that was decided. In
    /// the background and best effort: the decision is already stored and answered, and a
    /// failed edit is only logged. The console shows no buttons and is left alone.
    fn retire_request(&self, run: &Run, outcome: &str) {
        if run.new.platform == Platform::Console {
            return;
        }
        let to = OutboundTarget {
            platform: run.new.platform,
            channel_id: run.new.channel_id.clone(),
            thread: run.new.thread.clone(),
        };
        let message = OutboundMessage::text(format!(
            "Request #{}: {} requested by {} — {outcome}\nWould run:\n```\n{}\n```",
            run.id,
            command_line(&run.new.command, &run.new.args),
            run.new.requester_name,
            run.new.rendered
        ));
        let (store, outbound, id) = (self.deps.store.clone(), self.deps.outbound.clone(), run.id);
        let bound = run.message_id.clone();
        self.in_flight().spawn(async move {
            // A request is bound to its message once, after it is posted. If it was not yet
            // when the command started, read it now: it may have been bound since (a typed
            // /approve can beat the request's own post). If it is bound later still,
            // `bind_message` retires it.
            let message_id = match bound {
                Some(bound) => Some(bound),
                None => match store.run(id).await {
                    Ok(run) => run.and_then(|r| r.message_id),
                    Err(e) => {
                        warn!(run = id, error = %e, "could not load a decided request to update its message");
                        None
                    }
                },
            };
            let Some(message_id) = message_id else {
                return;
            };
            if let Err(e) = outbound.edit(&to, &message_id, &message).await {
                warn!(run = id, error = %e, "could not update the message of a decided request");
            }
        });
    }

    /// An approval, by `/approve ID` or a reaction.
    pub(super) async fn approve(
        &self,
        ev: &InboundEvent,
        request_id: &RequestId,
        requester: &Requester,
        id: i64,
    ) -> Result<Done, Refusal> {
        let run = self.pending_run_in(ev, id).await?;
        let (spec, rendered) = self.current_action(&run).await?;
        let Some(policy) = spec.approval.clone() else {
            return Err(Refusal::Invalid(format!(
                "request #{id} does not need approval."
            )));
        };
        let person = requester
            .person()
            .ok_or_else(|| Refusal::Denied("unknown users cannot approve.".into()))?;
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
        let requested_by = self.deps.directory.resolve(&run.new.requester);
        let own = same_person(person, &requested_by) || run.new.requester == ev.user;
        if own && !policy.allow_self_approval {
            return Err(Refusal::Denied(format!(
                "you requested #{id}, so you cannot approve it; ask someone with {}.",
                roles_list(&policy.approver_roles)
            )));
        }
        let tally = self
            .deps
            .store
            .add_vote(
                id,
                &Vote {
                    approver: ev.user.clone(),
                    approver_name: person.name.clone(),
                    action_hash: rendered.hash.clone(),
                    at: self.now(),
                },
            )
            .await
            .map_err(store_failed("recording vote"))?;
        let needed = run.new.approvals_needed;
        if !tally.counted {
            // Either this approver voted before, or the request left `pending` meanwhile.
            let now_state = self
                .deps
                .store
                .run(id)
                .await
                .map_err(store_failed("reloading run"))?
                .map(|r| r.state);
            if now_state != Some(RunState::Pending) {
                return Ok(Done::text(format!(
                    "{} approved #{id}; it is already approved and running.",
                    person.name
                )));
            }
            return Ok(Done::text(format!(
                "You already approved #{id} ({}/{needed}); each approver counts once.",
                tally.total
            )));
        }
        if tally.total < needed {
            return Ok(Done {
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
            });
        }
        let now = self.now();
        let won = self
            .deps
            .store
            .transition(
                id,
                RunState::Pending,
                RunState::Approved,
                now,
                Some(now + lease()),
            )
            .await
            .map_err(store_failed("approving run"))?;
        if !won {
            // Another approval (here or on another replica) got there first and runs it.
            return Ok(Done::text(format!(
                "{} approved #{id}; it is already approved and running.",
                person.name
            )));
        }
        self.retire_request(
            &run,
            &format!(
                "✅ approved by {} at {} UTC; the result follows.",
                person.name,
                now.format("%H:%M")
            ),
        );
        let result = self.execute(ev, request_id, &run, &rendered).await?;
        Ok(Done {
            text: format!(
                "Approved by {} ({}/{needed}), running {}…\n{result}",
                person.name,
                tally.total,
                command_line(&run.new.command, &run.new.args)
            ),
            detail: format!("approved and ran #{id}"),
            pending_run: None,
            ran: Some(id),
        })
    }

    pub(super) async fn deny(
        &self,
        ev: &InboundEvent,
        requester: &Requester,
        id: i64,
    ) -> Result<Done, Refusal> {
        let run = self.pending_run_in(ev, id).await?;
        let policy = self
            .deps
            .catalog
            .get(&run.new.command)
            .and_then(|s| s.approval.clone());
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
        let done = self
            .deps
            .store
            .transition(id, RunState::Pending, RunState::Denied, self.now(), None)
            .await
            .map_err(store_failed("denying run"))?;
        if !done {
            return Err(Refusal::Invalid(format!(
                "request #{id} is no longer pending."
            )));
        }
        self.retire_request(&run, &format!("❌ denied by {}; nothing ran.", person.name));
        Ok(Done {
            text: format!("Request #{id} denied by {}; nothing will run.", person.name),
            detail: format!("denied #{id}"),
            pending_run: None,
            ran: None,
        })
    }

    pub(super) async fn cancel(
        &self,
        ev: &InboundEvent,
        requester: &Requester,
        id: i64,
    ) -> Result<Done, Refusal> {
        let run = self.pending_run_in(ev, id).await?;
        let requested_by = self.deps.directory.resolve(&run.new.requester);
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
        let done = self
            .deps
            .store
            .transition(id, RunState::Pending, RunState::Cancelled, self.now(), None)
            .await
            .map_err(store_failed("cancelling run"))?;
        if !done {
            return Err(Refusal::Invalid(format!(
                "request #{id} is no longer pending."
            )));
        }
        self.retire_request(&run, "cancelled by the requester; nothing ran.");
        Ok(Done {
            text: format!(
                "Request #{id} cancelled by {}; nothing will run.",
                run.new.requester_name
            ),
            detail: format!("cancelled #{id}"),
            pending_run: None,
            ran: None,
        })
    }

    /// A reaction on a message. Reactions on messages that are not approval requests, and
    /// emoji that are neither approve nor deny, are ordinary chat: `Ok(None)`.
    pub(super) async fn react(
        &self,
        ev: &InboundEvent,
        request_id: &RequestId,
        requester: &Requester,
        emoji: &str,
        message_id: &str,
        added: bool,
    ) -> Result<Option<(String, Result<Done, Refusal>)>, Refusal> {
        let emoji = normalize_emoji(emoji);
        let (approve, deny) = (
            self.deps.approvals.is_approve(&emoji),
            self.deps.approvals.is_deny(&emoji),
        );
        if !approve && !deny {
            return Ok(None);
        }
        let Some(run) = self
            .deps
            .store
            .run_by_message(ev.platform, &ev.channel.id, message_id)
            .await
            .map_err(store_failed("finding run by message"))?
        else {
            // Not an approval request: perhaps an alert group, which an approving reaction acks.
            if !(approve && added) {
                return Ok(None);
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
            return Ok(Some((
                "ack".into(),
                self.ack_group(ev, requester, &group).await,
            )));
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
            (false, true) => ("deny".into(), self.deny(ev, requester, run.id).await),
            // Taking back a deny changes nothing: the request already ended.
            (false, false) => return Ok(None),
        }))
    }

    async fn retract(&self, ev: &InboundEvent, id: i64) -> Result<Done, Refusal> {
        let withdrawn = self
            .deps
            .store
            .retract_vote(id, &ev.user)
            .await
            .map_err(store_failed("retracting vote"))?;
        if withdrawn {
            Ok(Done {
                text: format!("Approval of #{id} withdrawn by {}.", ev.display_name),
                detail: format!("retracted vote on #{id}"),
                pending_run: None,
                ran: None,
            })
        } else {
            Err(Refusal::Invalid(format!(
                "there was no pending approval of #{id} to withdraw (it may already have run)."
            )))
        }
    }

    /// Runs an `approved` request: `approved -> running` (only one caller can win), the action
    /// under its timeout with the lease renewed, then the result recorded and rendered.
    async fn execute(
        &self,
        ev: &InboundEvent,
        request_id: &RequestId,
        run: &Run,
        rendered: &RenderedAction,
    ) -> Result<String, Refusal> {
        let id = run.id;
        let store = &self.deps.store;
        let now = self.now();
        let started = store
            .transition(
                id,
                RunState::Approved,
                RunState::Running,
                now,
                Some(now + lease()),
            )
            .await
            .map_err(store_failed("starting run"))?;
        if !started {
            return Ok(format!("Request #{id} is already running or done."));
        }
        // The start is audited before anything runs: if that fails, nothing runs.
        let start = AuditEntry {
            request_id: request_id.clone(),
            at: now,
            actor: ev.user.to_string(),
            channel: format!("{}:{}", ev.platform, ev.channel.id),
            command: run.new.command.clone(),
            args: BoundArgs(run.new.args.clone()).display(),
            outcome: Outcome::Ok,
            detail: format!(
                "run #{id} started: {}",
                rendered.display.lines().next().unwrap_or("")
            ),
        };
        if let Err(e) = store.append_audit(start).await {
            let failed = RunResult {
                code: None,
                duration: Duration::ZERO,
                output: "not started: the audit log could not record the start".into(),
                truncated: false,
            };
            // Approved -> running happened above; close the record so it is not left running.
            let _ = store
                .finish_run(id, RunState::Failed, &failed, self.now())
                .await;
            return Err(Refusal::Failed(
                anyhow::Error::new(e).context("auditing run start"),
            ));
        }
        let stop_lease = CancellationToken::new();
        let renewer = {
            let (store, clock, stop) = (store.clone(), self.deps.clock.clone(), stop_lease.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(LEASE / 3);
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => {
                            if let Err(e) = store.renew_lease(id, clock.now() + lease()).await {
                                warn!(run = id, error = %e, "could not renew run lease");
                            }
                        }
                    }
                }
            })
        };
        let kind = self.resolve_paths(&rendered.kind);
        let outcome = self.deps.runner.run(&kind).await;
        stop_lease.cancel();
        let _ = renewer.await;
        let state = if outcome.timed_out {
            RunState::TimedOut
        } else if outcome.success {
            RunState::Succeeded
        } else {
            RunState::Failed
        };
        let output = redact(&outcome.output, &rendered.secret_values);
        let result = RunResult {
            code: outcome.code,
            duration: outcome.duration,
            output,
            truncated: outcome.truncated,
        };
        self.deps.metrics.run_finished(state.as_str());
        let recorded = match store.finish_run(id, state, &result, self.now()).await {
            Ok(true) => true,
            Ok(false) => {
                // The lease lapsed (renewals failed) and a sweeper marked it interrupted.
                warn!(
                    run = id,
                    "run finished after being marked interrupted; result not recorded"
                );
                false
            }
            Err(e) => {
                error!(
                    run = id,
                    error = format!("{:#}", anyhow::Error::new(e)),
                    "recording run result failed"
                );
                false
            }
        };
        let code_label = match kind {
            ActionKind::Exec { .. } => "exit",
            ActionKind::Http { .. } => "HTTP",
        };
        let mut text = render_result(
            id,
            &run.new.command,
            &run.new.args,
            state,
            &result,
            kind.timeout(),
            code_label,
        );
        if !recorded {
            text.push_str(
                "\n(This result could not be recorded on the request; see opsbot's log.)",
            );
        }
        Ok(text)
    }

    /// Relative working directories and programs resolve against the config's folder.
    fn resolve_paths(&self, kind: &ActionKind) -> ActionKind {
        match kind {
            ActionKind::Exec {
                argv,
                workdir,
                env,
                timeout,
            } => {
                let dir = match workdir {
                    Some(d) if d.is_absolute() => d.clone(),
                    Some(d) => self.deps.base_dir.join(d),
                    None => self.deps.base_dir.clone(),
                };
                let mut argv = argv.clone();
                if argv[0].contains('/') && !argv[0].starts_with('/') {
                    argv[0] = dir.join(&argv[0]).to_string_lossy().into_owned();
                }
                ActionKind::Exec {
                    argv,
                    workdir: Some(dir),
                    env: env.clone(),
                    timeout: *timeout,
                }
            }
            other @ ActionKind::Http { .. } => other.clone(),
        }
    }

    /// Records the chat message approvers react to, once the adapter has posted it.
    pub async fn bind_message(&self, run: i64, message_id: &str) -> Result<(), StoreError> {
        self.deps.store.set_run_message(run, message_id).await?;
        // Decided before its message was bound: nothing has retired the buttons yet.
        if let Some(run) = self.deps.store.run(run).await?
            && run.state != RunState::Pending
        {
            self.retire_request(&run, &format!("{}.", run.state));
        }
        Ok(())
    }

    /// Expires pending requests past their deadline and marks requests whose process died
    /// `interrupted`; returns what to post. Never re-runs anything.
    pub async fn sweep(&self) -> Result<Vec<Notice>, StoreError> {
        let now = self.now();
        let mut notices = Vec::new();
        for run in self.deps.store.interrupt_stale(now).await? {
            notices.push(notice(&run, format!(
                "⚠️ Request #{} ({}) was interrupted: opsbot stopped while it was running. \
                 It will not be re-run automatically; check the system and request it again if needed.",
                run.id,
                command_line(&run.new.command, &run.new.args)
            )));
        }
        for run in self.deps.store.expire_due(now).await? {
            self.retire_request(&run, EXPIRED);
            notices.push(notice(
                &run,
                format!(
                    "Request #{} ({}) expired without enough approvals; nothing ran.",
                    run.id,
                    command_line(&run.new.command, &run.new.args)
                ),
            ));
        }
        if let Err(e) = self.deps.alerts.remind(&self.deps.escalation).await {
            warn!(error = %e, "alert reminders failed");
        }
        if let Err(e) = self
            .deps
            .store
            .forget_deliveries_before(now - EVENT_ID_RETENTION)
            .await
        {
            warn!(error = %e, "forgetting old platform event ids failed");
        }
        for i in self.deps.store.unacked_incidents().await? {
            let due = i.severity.ack_due(i.opened_at, &self.deps.response_targets);
            if now >= due {
                self.deps.store.mark_reminded(i.id, now).await?;
                notices.push(Notice {
                    platform: i.platform,
                    channel_id: i.channel_id.clone(),
                    thread: None,
                    text: format!(
                        "⏰ Incident #{} ({} \"{}\") passed its acknowledgement target at {} UTC without an update. \
                         {}: /incident update \"...\" to acknowledge.",
                        i.id,
                        i.severity,
                        i.title,
                        due.format("%H:%M"),
                        i.commander
                    ),
                    urgent: i.severity == Severity::P1,
                });
            }
        }
        Ok(notices)
    }

    /// The channel a request lives in, as the event it came from would name it.
    pub fn run_channel(run: &Run) -> ChannelRef {
        ChannelRef {
            id: run.new.channel_id.clone(),
            name: run.new.channel_name.clone(),
        }
    }
}

fn lease() -> chrono::Duration {
    chrono::Duration::from_std(LEASE).expect("lease fits")
}

fn notice(run: &Run, text: String) -> Notice {
    Notice {
        platform: run.new.platform,
        channel_id: run.new.channel_id.clone(),
        thread: run.new.thread.clone(),
        text,
        urgent: false,
    }
}

/// Longest output posted in chat (under Slack's 40,000-character message limit; adapters of
/// platforms with smaller limits send long text as a file). The stored result keeps up to
/// the runner's cap.
const POSTED_OUTPUT_CHARS: usize = 30_000;

fn render_result(
    id: i64,
    command: &str,
    args: &[(String, String)],
    state: RunState,
    result: &RunResult,
    timeout: Duration,
    code_label: &str,
) -> String {
    let line = command_line(command, args);
    let took = human_duration(result.duration);
    let mut text = match state {
        RunState::Succeeded => format!(
            "✅ #{id} {line} succeeded ({}) in {took}.",
            result
                .code
                .map_or("done".into(), |c| format!("{code_label} {c}"))
        ),
        RunState::TimedOut => format!(
            "⏱️ #{id} {line} timed out after {}; everything it started was killed.",
            human_duration(timeout)
        ),
        _ => format!(
            "❌ #{id} {line} failed ({}) after {took}.",
            result
                .code
                .map_or("did not finish".into(), |c| format!("exit {c}"))
        ),
    };
    let output = result.output.trim_end();
    if !output.is_empty() {
        let shown: String = output.chars().take(POSTED_OUTPUT_CHARS).collect();
        let _ = write!(text, "\n```\n{shown}\n```");
        if shown.len() < output.len() || result.truncated {
            text.push_str("\n(output truncated)");
        }
    }
    text
}
