//! What happens to requests around their decision: deciding with the edit that retires the
//! request's buttons, binding to the chat message, and the sweep's part (expiry, interrupted
//! runs).

use super::progress::Progress;
use super::*;
use crate::domain::StepRecord;

impl RunbookService {
    /// Moves pending request `run` to `to` (conditional: false, and nothing queued, when
    /// another decision won) and, in the same transaction, queues in the outbox the edit that
    /// replaces its message (its buttons included) with `outcome`, so nobody presses Approve
    /// on a request that was decided. The message id is the one stored when the move commits;
    /// a request bound later still is retired by `bind_message`. The deliverer (on the leader)
    /// makes the edit, retrying as it does posts; a newer edit of the message supersedes one
    /// still waiting. The console shows no buttons and is left alone.
    pub(super) async fn decide(
        &self,
        run: &Run,
        to: RunState,
        lease_until: Option<DateTime<Utc>>,
        outcome: &str,
        what: &'static str,
    ) -> Result<bool, Refusal> {
        let retire = |moved: &Run, _: RunState| retirement(moved, outcome).into_iter().collect();
        let moved = self
            .store
            .transition_queuing(
                run.id,
                (RunState::Pending, to),
                self.now(),
                lease_until,
                &retire,
            )
            .await
            .or_refuse(what)?;
        if moved {
            self.outbox.wake();
        }
        Ok(moved)
    }

    /// Records the chat message approvers react to, once the adapter has posted it. A request
    /// decided before its message was bound (its decision had no message to retire) has the
    /// message's buttons retired in the binding's own transaction.
    pub async fn bind_message(&self, run: RunId, message_id: &str) -> Result<(), StoreError> {
        let retire = |bound: &Run, _: RunState| match bound.state {
            RunState::Pending => Vec::new(),
            decided => retirement(bound, &format!("{decided}."))
                .into_iter()
                .collect(),
        };
        if (self.store)
            .set_run_message(run, message_id, self.now(), &retire)
            .await?
        {
            self.outbox.wake();
        }
        Ok(())
    }

    /// Makes `message_id` (the answer to the command that started run `run`) its progress
    /// message, if it is still going and has none; the next step's edit goes there.
    pub async fn bind_progress(&self, run: RunId, message_id: &str) -> Result<(), StoreError> {
        self.store.bind_progress(run, message_id).await.map(drop)
    }

    /// Expires pending requests past their deadline and marks requests whose process died
    /// `interrupted`; the store queues each notice in the outbox with the move it tells of,
    /// and they are returned too. Never re-runs anything.
    pub async fn sweep_runs(&self, now: DateTime<Utc>) -> Result<Vec<Notice>, StoreError> {
        let mut notices = Vec::new();
        let notice = |run: &Run, was| interruption_notice(run, was, self.step_at(run).as_ref());
        let queued = |run: &Run, was: RunState| vec![notice(run, was).queued()];
        for (run, was) in self.store.interrupt_stale(now, &queued).await? {
            self.audit_interruption(&run, was, now).await;
            if was == RunState::Running {
                self.show_interruption(&run, now).await;
            }
            notices.push(notice(&run, was));
        }
        // An expired request's buttons are retired with its expiry, when its message is
        // bound; one bound later is retired by `bind_message`.
        let queued = |run: &Run, _: RunState| {
            [expiry_notice(run).queued()]
                .into_iter()
                .chain(retirement(run, EXPIRED))
                .collect()
        };
        for run in self.store.expire_due(now, &queued).await? {
            notices.push(expiry_notice(&run));
            if run.gate.is_some() {
                // Its run fails at the gate and rolls back, in the in-flight work (the sweep
                // does not wait for steps).
                let this = self.clone();
                let work = async move {
                    (this.gate_closed(None, &run, "expired without enough approvals", true)).await;
                };
                self.in_flight
                    .spawn(work.instrument(tracing::Span::current()));
            }
        }
        Ok(notices)
    }
}

/// The edit of a decided request's message saying `outcome`, once the message is bound; the
/// console's requests have no buttons to retire.
fn retirement(run: &Run, outcome: &str) -> Option<Queued> {
    let id = run.message_id.clone()?;
    if run.new.platform == Platform::Console {
        return None;
    }
    let (to, message) = retired(run, outcome);
    Some(Queued::edit(to, id, message))
}

/// Where a decided request's message is and what it says once its buttons are gone.
fn retired(run: &Run, outcome: &str) -> (OutboundTarget, OutboundMessage) {
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
    (to, message.with_visibility(Visibility::Channel))
}

impl RunbookService {
    /// Where in its steps run `run` was, numbered as its progress and `/retry ID from N` number
    /// them; `None` for a single action.
    fn step_at(&self, run: &Run) -> Option<StepAt> {
        let name = run.current_step.clone()?;
        let workflow = self.workflow_of(run);
        let number = workflow.and_then(|w| w.steps.iter().position(|s| s.name == name));
        let rollback = workflow.is_some_and(|w| w.on_failure.iter().any(|s| s.name == name));
        Some(StepAt {
            name,
            number: number.map(|i| i + 1),
            rollback,
        })
    }
}

/// The step a run was at: its number among the main steps (none when it is a rollback step,
/// or its command no longer has it).
struct StepAt {
    name: String,
    number: Option<usize>,
    rollback: bool,
}

/// What the channel is told about a run interrupted while in state `was` (`at`: the step).
fn interruption_notice(run: &Run, was: RunState, at: Option<&StepAt>) -> Notice {
    let what = command_line(&run.new.command, &run.new.args);
    let id = run.id;
    let text = if was == RunState::Running {
        let (at, then) = match at {
            Some(StepAt {
                name,
                number: Some(n),
                ..
            }) => (
                format!(" at step {n} ({name})"),
                format!("check the system, then /retry {id} runs it again from step {n}"),
            ),
            Some(StepAt { name, rollback, .. }) => {
                let kind = if *rollback { "rollback step" } else { "step" };
                (format!(" at {kind} {name}"), AGAIN.to_owned())
            }
            None => (String::new(), AGAIN.to_owned()),
        };
        format!(
            "⚠️ Request #{id} ({what}) was interrupted{at}: opsbot stopped while it was running, \
             and its process was stopped with it, so it may have done only part of its work. \
             It will not be re-run automatically; {then}."
        )
    } else {
        format!(
            "⚠️ Request #{id} ({what}) was interrupted: opsbot stopped after it was approved \
             and before it started, so nothing ran. Request it again if it is still needed."
        )
    };
    notice(run, text)
}

/// What to do about an interrupted run that cannot be retried from a numbered step.
const AGAIN: &str = "check the system and request it again if needed";

fn expiry_notice(run: &Run) -> Notice {
    let text = format!(
        "Request #{} ({}) expired without enough approvals; nothing ran.",
        run.id,
        command_line(&run.new.command, &run.new.args)
    );
    notice(run, text)
}

impl RunbookService {
    /// `/cancel ID`, by the requester: a pending request (or gate) ends without running; a
    /// run of steps waiting at a gate stops there; a running one stops between steps, the
    /// current step's processes killed, and a running single action has its processes killed
    /// (its process sees the request within a second, on whichever replica runs it). A
    /// stopped run of steps rolls back when its file says `on_cancel = "rollback"`.
    pub(in crate::router) async fn cancel(
        &self,
        ctx: (&InboundEvent, &RequestId),
        requester: &Requester,
        id: RunId,
    ) -> Result<Done, Refusal> {
        let ev = ctx.0;
        let run = (self.store.run(id).await).or_no_such("loading run", "request", id)?;
        let steps = self.workflow_of(&run).is_some();
        // Only a run of steps waits at a gate; either kind may be running.
        if !matches!(run.state, RunState::Running | RunState::Waiting) {
            return self.end(ctx, requester, id, Ending::Cancelled).await;
        }
        if run.new.platform != ev.platform || run.new.channel_id != ev.channel.id {
            return Err(Refusal::Denied(format!(
                "run #{id} was requested in #{}; cancel it there.",
                run.new.channel_name
            )));
        }
        self.own_request(&run, ev, requester)?;
        let by = run.new.requester_name.clone();
        let rollback = self.rolls_back_on_cancel(&run);
        let then = if rollback {
            "its on_failure steps run"
        } else {
            "nothing more runs"
        };
        let text = if run.state == RunState::Waiting {
            self.cancel_at_gate(ctx, &run, &by, rollback).await?
        } else {
            if !(self.store.request_cancel(id, &by).await).or_refuse("cancelling a run")? {
                return Err(Refusal::Invalid(format!(
                    "run #{id} is no longer running, or its cancel was asked for already."
                )));
            }
            let stopped = if steps {
                "its current step is stopped"
            } else {
                "its action is stopped"
            };
            format!(
                "Cancelling run #{id}: {stopped} (everything it started is killed) and {then}; \
                 the result follows."
            )
        };
        Ok(Done {
            text,
            detail: format!("cancel of running #{id} ({then})"),
            pending_run: None,
            ran: None,
            progress: false,
        })
    }

    /// Cancels the open gate of waiting run `run`, which then stops (or rolls back).
    async fn cancel_at_gate(
        &self,
        ctx: (&InboundEvent, &RequestId),
        run: &Run,
        by: &str,
        rollback: bool,
    ) -> Result<String, Refusal> {
        let id = run.id;
        let gates = (self.store.gates_of(id).await).or_refuse("loading a run's gates")?;
        let no_longer = || Refusal::Invalid(format!("run #{id} is no longer waiting at a gate."));
        let gate = (gates.into_iter())
            .find(|g| g.state == RunState::Pending)
            .ok_or_else(no_longer)?;
        let outcome = "cancelled by the requester; nothing more runs.";
        if !(self.decide(
            &gate,
            RunState::Cancelled,
            None,
            outcome,
            "cancelling a gate",
        ))
        .await?
        {
            return Err(no_longer());
        }
        let why = format!("cancelled by {by}");
        let result = self.gate_closed(Some(ctx), &gate, &why, rollback).await;
        let head = format!("Run #{id} {why} at its gate (request #{}).", gate.id);
        Ok(match result {
            Some(result) => format!("{head}\n{result}"),
            None => head,
        })
    }

    /// Cancels pending request `id` whose message could not be posted (`why`: the bot may not
    /// post in its channel), so it does not wait for approvals nobody can see; audited under
    /// the request id that created it. False when it was no longer pending.
    pub async fn withdraw_unposted(
        &self,
        id: RunId,
        request_id: RequestId,
        why: &str,
    ) -> Result<bool, StoreError> {
        let Some(run) = self.store.run(id).await? else {
            return Ok(false);
        };
        let now = self.now();
        let cancelled = self
            .store
            .transition(id, RunState::Pending, RunState::Cancelled, now, None)
            .await?;
        if cancelled {
            let detail = format!(
                "cancelled #{id}: the approval request could not be posted in the channel ({why}); nothing ran"
            );
            let entry = run_audit_entry(
                &run,
                request_id,
                "opsbot".into(),
                now,
                Outcome::Failed,
                detail,
            );
            self.store.append_audit(entry).await?;
        }
        Ok(cancelled)
    }

    /// A run of steps' progress message, edited to show the step it stopped in (⚠️) and the
    /// steps that never ran, instead of ⏳ forever. Best effort: the notice that tells the
    /// channel was queued with the interruption itself.
    async fn show_interruption(&self, run: &Run, now: DateTime<Utc>) {
        let Some(w) = self.workflow_of(run) else {
            return;
        };
        let records = match self.store.run_steps(run.id).await {
            Ok(records) => records,
            Err(e) => {
                warn!(run = %run.id, error = %e, "could not read an interrupted run's steps");
                return;
            }
        };
        let steps: Vec<&str> = w.steps.iter().map(|s| s.name.as_str()).collect();
        let on_failure: Vec<&str> = w.on_failure.iter().map(|s| s.name.as_str()).collect();
        // A command file changed since the run started would mark the wrong lines.
        let all = || steps.iter().chain(&on_failure);
        let matches = |r: &StepRecord| all().nth(r.idx as usize).is_some_and(|n| *n == r.name);
        if !records.iter().all(matches) {
            return;
        }
        let mut progress = Progress::named(run, (&steps, &on_failure), &records);
        progress.interrupted();
        let Some(edit) = progress.edit(run, run.message_id.as_deref()) else {
            return;
        };
        match self.store.enqueue(&edit, now).await {
            Ok(_) => self.outbox.wake(),
            Err(e) => {
                warn!(run = %run.id, error = %e, "could not queue an interrupted run's progress edit")
            }
        }
    }

    /// The interruption goes in the audit log like the start it cuts short. Best effort: the
    /// state change is already stored, and a sweep must not stop at one audit failure.
    async fn audit_interruption(&self, run: &Run, was: RunState, now: DateTime<Utc>) {
        let detail = format!("run #{} interrupted while {was}: its lease lapsed", run.id);
        let actor = "opsbot:sweep".to_owned();
        let entry = run_audit_entry(run, RequestId::new(), actor, now, Outcome::Failed, detail);
        if let Err(e) = self.store.append_audit(entry).await {
            warn!(run = %run.id, error = %e, "could not audit an interrupted run");
        }
    }
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
