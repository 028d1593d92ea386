//! Approval gates in a run of steps. Reaching one stops the run (`running -> waiting`, no
//! lease: nothing of it runs, so a crash leaves it waiting) and opens an approval request of
//! its own, bound to the steps after the gate as rendered then; votes, reactions, `/approve`,
//! `/deny`, `/cancel` and expiry are those of any request. The approval that completes it
//! moves the run back to `running` (conditional: of racing approvers or replicas, one goes
//! on) and the run continues after the gate; a denied, expired or cancelled gate runs the
//! `on_failure` steps; a runbook changed meanwhile cancels the run.

use super::execute::{ResultTo, result_post};
use super::progress::Mark;
use super::steps::{Resume, Walk};
use super::*;
use crate::actions::render::{RenderedStep, display_from, render_published, steps_hash};
use crate::catalog::OnCancel;
use crate::domain::{ChannelRef, EventPayload, Gate, StepState};
use crate::router::decision_actions;

impl RunbookService {
    /// Stops `run` at gate step `idx` (claimed and audited like any step) and opens its
    /// approval request; `None` when the run could not be stopped there.
    pub(super) async fn reach_gate(
        &self,
        ctx: (&InboundEvent, &RequestId),
        run: &Run,
        (idx, step, policy): (usize, &RenderedStep, &ApprovalSpec),
        walk: &mut Walk,
    ) -> Option<Run> {
        walk.progress.set(idx, Mark::Paused);
        match self.claim_step(ctx, run, (idx, &step.name), walk).await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(refused) => {
                self.step_ended(run, (idx, &step.name), refused, walk).await;
                return None;
            }
        }
        let (remaining, hash) = self
            .gate_binding(run, (idx, policy), &walk.published)
            .inspect_err(
                |e| error!(run = %run.id, error = %e, "could not render the steps after a gate"),
            )
            .ok()?;
        let now = self.now();
        let gate = NewRun {
            command: run.new.command.clone(),
            args: run.new.args.clone(),
            rendered: remaining,
            action_hash: hash,
            requester: run.new.requester.clone(),
            requester_name: run.new.requester_name.clone(),
            platform: run.new.platform,
            channel_id: run.new.channel_id.clone(),
            channel_name: run.new.channel_name.clone(),
            thread: run.new.thread.clone(),
            approvals_needed: policy.approvals,
            state: RunState::Pending,
            break_glass: None,
            created_at: now,
            expires_at: now + chrono::Duration::from_std(policy.expires_after).unwrap_or_default(),
        };
        // The console's gate request is the answer to whoever typed (bound by its adapter);
        // elsewhere it is posted, and its message bound to it when delivered.
        let post = |g: &Run, _: RunState| match run.new.platform {
            Platform::Console => Vec::new(),
            _ => {
                let mut q = result_post(run, &self.gate_text(run, g, &step.name, policy));
                q.message = q.message.with_actions(decision_actions(g.id));
                vec![q.binding(g.id)]
            }
        };
        match self
            .store
            .open_gate(run.id, (gate, idx as u32), now, &post)
            .await
        {
            Ok(gate) => {
                self.outbox.wake();
                gate
            }
            Err(e) => {
                error!(run = %run.id, error = %e, "could not open an approval gate");
                None
            }
        }
    }

    /// What gate `idx` of `run` is bound to: the steps after it (and the rollback steps) as
    /// rendered with the values published so far, and their hash under the gate's policy.
    fn gate_binding(
        &self,
        run: &Run,
        (idx, policy): (usize, &ApprovalSpec),
        published: &[(String, String)],
    ) -> Result<(String, String), String> {
        let spec = (self.catalog.get(&run.new.command)).ok_or("the command is no longer loaded")?;
        let rendered = self.render_with(spec, run, published)?;
        let Plan::Steps { steps, on_failure } = &rendered.plan else {
            return Err("the command no longer has steps".into());
        };
        let remaining = display_from(steps, on_failure, idx + 1);
        let hash = steps_hash(
            &run.new.command,
            &format!("gate {idx}"),
            Some(policy),
            &remaining,
        );
        Ok((remaining, hash))
    }

    pub(super) fn render_with(
        &self,
        spec: &CommandSpec,
        run: &Run,
        published: &[(String, String)],
    ) -> Result<RenderedAction, String> {
        let args = BoundArgs(run.new.args.clone());
        render_published(spec, &args, published, &*self.env)
    }

    /// The approval request of gate `gate` in `run`.
    pub(super) fn gate_text(
        &self,
        run: &Run,
        gate: &Run,
        step: &str,
        policy: &ApprovalSpec,
    ) -> String {
        let (approve, deny) = self.approvals.shown();
        format!(
            "⏸ Request #{g}: step {step} of #{p} ({line}, requested by {who}) needs {n} approval(s) \
             from {roles}, not {who}; expires in {exp}.\nThen runs:\n```\n{rest}\n```\n\
             React {approve} to approve, {deny} to deny, or /approve {g} · /deny {g}.",
            g = gate.id,
            p = run.id,
            line = command_line(&run.new.command, &run.new.args),
            who = run.new.requester_name,
            n = policy.approvals,
            roles = roles_list(&policy.approver_roles),
            exp = human_duration(policy.expires_after),
            rest = gate.new.rendered,
        )
    }

    /// The gate's run and policy, and the steps after it as they would run now. A runbook
    /// changed since the gate opened (or one whose steps render differently) cancels the gate
    /// and stops its run: approvers would approve something else.
    async fn current_gate(
        &self,
        gate_run: &Run,
        gate: Gate,
    ) -> Result<
        (
            Run,
            ApprovalSpec,
            RenderedAction,
            Vec<crate::domain::StepRecord>,
        ),
        Refusal,
    > {
        let parent =
            (self.store.run(gate.run).await).or_no_such("loading run", "request", gate.run)?;
        let records = (self.store.run_steps(parent.id).await).or_refuse("loading steps")?;
        let published = self.published_in(&parent, &records);
        let idx = gate.step as usize;
        let current = (self.catalog.get(&parent.new.command)).and_then(|spec| {
            let policy = gate_policy(spec, idx)?;
            let (_, hash) = self
                .gate_binding(&parent, (idx, &policy), &published)
                .ok()?;
            let rendered = self.render_with(spec, &parent, &published).ok()?;
            (hash == gate_run.new.action_hash).then_some((policy, rendered))
        });
        let Some((policy, rendered)) = current else {
            let why = "the runbook changed while it waited";
            self.decide(
                gate_run,
                RunState::Cancelled,
                None,
                &format!("cancelled: {why}; nothing more runs."),
                "cancelling changed gate",
            )
            .await?;
            self.stop_at_gate(&parent, gate, why).await;
            return Err(Refusal::Invalid(format!(
                "/{} changed since request #{} was made, so run #{} stops here; request it again.",
                parent.new.command, gate_run.id, parent.id
            )));
        };
        Ok((parent, policy, rendered, records))
    }

    /// An approval of gate `gate` (request `gate_run`), by `/approve` or a reaction.
    pub(super) async fn approve_gate(
        &self,
        (ev, request_id): (&InboundEvent, &RequestId),
        requester: &Requester,
        gate_run: Run,
        gate: Gate,
    ) -> Result<Done, Refusal> {
        let (parent, policy, rendered, records) = self.current_gate(&gate_run, gate).await?;
        let person = requester
            .person()
            .ok_or_else(|| Refusal::Denied("unknown users cannot approve.".into()))?;
        self.may_approve(ev, &gate_run, person, &policy)?;
        let hash = gate_run.new.action_hash.clone();
        let total = match self.vote(ev, &gate_run, person, &hash, &policy).await? {
            Ok(total) => total,
            Err(not_yet) => return Ok(not_yet),
        };
        let by = format!(
            "{} ({total}/{})",
            person.name, gate_run.new.approvals_needed
        );
        // The run goes on once: of racing approvers (or replicas) one moves it back.
        let (p, g) = (parent.id, gate_run.id);
        let now = self.now();
        if !(self.claim(
            p,
            RunState::Waiting,
            RunState::Running,
            now,
            "continuing run",
        ))
        .await?
        {
            let state = (self.store.run(p).await).or_refuse("reloading run")?;
            let state = state.map_or("gone".to_owned(), |r| r.state.to_string());
            return Ok(Done::text(format!(
                "{} approved #{g}; run #{p} is no longer waiting ({state}).",
                person.name
            )));
        }
        let outcome = format!("✅ approved by {by}; run #{p} continues.");
        self.decide(
            &gate_run,
            RunState::Succeeded,
            None,
            &outcome,
            "passing a gate",
        )
        .await?;
        let passed = gate_result(&records, gate, now, format!("approved by {by}"));
        let resume = Resume {
            from: gate.step as usize + 1,
            records,
            gate: Some((gate.step as usize, StepState::Succeeded, passed)),
            failed: None,
        };
        let head = format!(
            "Approved by {by}; run #{p} continues after step {}",
            gate.step + 1
        );
        Ok(self
            .go_on((ev, request_id), parent, rendered, resume, head)
            .await)
    }

    /// Runs `parent` (just moved back to `running`) on from `resume`: on the console as the
    /// answer, elsewhere in the background with its result posted to its channel.
    async fn go_on(
        &self,
        (ev, request_id): (&InboundEvent, &RequestId),
        parent: Run,
        rendered: RenderedAction,
        resume: Resume,
        head: String,
    ) -> Done {
        let id = parent.id;
        if parent.new.platform == Platform::Console {
            let ran =
                (self.run_started(ev, request_id, &parent, &rendered, ResultTo::Reply, resume))
                    .await;
            return Done {
                text: format!("{head}…\n{}", ran.text),
                detail: format!("continued #{id}: {}", ran.ended),
                pending_run: ran.gate,
                ran: Some(id),
                progress: false,
            };
        }
        self.run_in_background(ev, request_id, parent, rendered, resume);
        Done {
            text: format!("{head}; the result will be posted in reply to request #{id}."),
            detail: format!("continued #{id}; its result goes to the channel"),
            pending_run: None,
            ran: Some(id),
            // Its answer shows the progress of a run that has no message yet.
            progress: true,
        }
    }

    /// Gate request `gate_run` was denied, cancelled or expired (`why`): its run fails at the
    /// gate and, when `rollback`, runs its `on_failure` steps. The console's answer, if any.
    pub(super) async fn gate_closed(
        &self,
        ctx: Option<(&InboundEvent, &RequestId)>,
        gate_run: &Run,
        why: &str,
        rollback: bool,
    ) -> Option<String> {
        let gate = gate_run.gate?;
        let parent = self.store.run(gate.run).await.ok()??;
        if !rollback {
            self.stop_at_gate(&parent, gate, why).await;
            return None;
        }
        let now = self.now();
        let claimed = self.claim(
            parent.id,
            RunState::Waiting,
            RunState::Running,
            now,
            "closing a gate",
        );
        if !claimed.await.unwrap_or(false) {
            return None;
        }
        let records = self.store.run_steps(parent.id).await.unwrap_or_default();
        let published = self.published_in(&parent, &records);
        let rendered = match (self.catalog.get(&parent.new.command))
            .ok_or_else(|| "the command is no longer loaded".to_owned())
            .and_then(|spec| self.render_with(spec, &parent, &published))
        {
            Ok(r) => r,
            Err(e) => {
                error!(run = %parent.id, error = %e, "could not render the rollback steps");
                let _ = self
                    .record(parent.id, RunState::Failed, &gate_failed(why), &untold)
                    .await;
                return None;
            }
        };
        let closed = gate_result(&records, gate, now, why.to_owned());
        let resume = Resume {
            from: usize::MAX,
            records,
            gate: Some((gate.step as usize, StepState::Failed, closed)),
            failed: Some((gate.step as usize, StepState::Failed)),
        };
        let Some((ev, request_id)) = ctx else {
            // Nobody is answered (the sweep expired it): the result goes to the channel.
            let ev = acting_as_requester(&parent);
            self.run_in_background(&ev, &RequestId::new(), parent, rendered, resume);
            return None;
        };
        if parent.new.platform == Platform::Console {
            let ran =
                (self.run_started(ev, request_id, &parent, &rendered, ResultTo::Reply, resume))
                    .await;
            return Some(ran.text);
        }
        self.run_in_background(ev, request_id, parent, rendered, resume);
        None
    }

    /// The open gate's request when `id` is a run waiting at one (so approving or denying
    /// the run, by its number or on its progress message, decides its gate), else `id`.
    pub(super) async fn open_gate_of(&self, id: RunId) -> Result<RunId, Refusal> {
        let run = (self.store.run(id).await).or_refuse("loading run")?;
        if run.is_none_or(|r| r.state != RunState::Waiting) {
            return Ok(id);
        }
        let gates = (self.store.gates_of(id).await).or_refuse("loading a run's gates")?;
        let open = gates.into_iter().find(|g| g.state == RunState::Pending);
        Ok(open.map_or(id, |g| g.id))
    }

    /// Whether `/cancel` of `run`'s command runs its `on_failure` steps (`on_cancel`).
    pub(super) fn rolls_back_on_cancel(&self, run: &Run) -> bool {
        let on_cancel = (self.catalog.get(&run.new.command)).map(|s| match &s.procedure {
            Procedure::Steps(w) => w.on_cancel,
            Procedure::Single(_) => OnCancel::Stop,
        });
        on_cancel == Some(OnCancel::Rollback)
    }

    /// Ends waiting run `parent` at its gate without running anything more, telling its
    /// channel why (on the console, the person acting is told instead).
    async fn stop_at_gate(&self, parent: &Run, gate: Gate, why: &str) {
        let text = format!(
            "❌ #{} {} stopped at step {}: {why}; nothing more ran.",
            parent.id,
            command_line(&parent.new.command, &parent.new.args),
            gate.step + 1
        );
        let post = |moved: &Run, _: RunState| match moved.new.platform {
            Platform::Console => Vec::new(),
            _ => vec![result_post(moved, &text)],
        };
        let now = self.now();
        let moved = (self.store)
            .transition_queuing(
                parent.id,
                (RunState::Waiting, RunState::Cancelled),
                now,
                None,
                &post,
            )
            .await;
        match moved {
            Ok(true) => {
                self.outbox.wake();
                let ended = (StepState::Failed, &gate_failed(why), None);
                if let Err(e) = (self.store)
                    .finish_step(parent.id, gate.step, ended, now, &[])
                    .await
                {
                    warn!(run = %parent.id, error = %e, "could not record a closed gate's step");
                }
            }
            Ok(false) => {}
            Err(e) => error!(run = %parent.id, error = %e, "could not stop a run at its gate"),
        }
    }
}

/// The policy of the gate at step `idx` of `spec`, if that step is still a gate.
fn gate_policy(spec: &CommandSpec, idx: usize) -> Option<ApprovalSpec> {
    let Procedure::Steps(w) = &spec.procedure else {
        return None;
    };
    match &w.steps.get(idx)?.kind {
        crate::catalog::StepKind::Approval(policy) => Some(policy.clone()),
        _ => None,
    }
}

/// The policy a gate request's votes and denials answer to, for the router's checks.
pub(super) fn policy_of(catalog: &Catalog, run: &Run) -> Option<ApprovalSpec> {
    let spec = catalog.get(&run.new.command)?;
    match run.gate {
        Some(gate) => gate_policy(spec, gate.step as usize),
        None => spec.approval.clone(),
    }
}

/// The name of gate request `gate`'s step.
pub(super) fn step_name(catalog: &Catalog, gate: &Run) -> String {
    let step = |spec: &CommandSpec| match (&spec.procedure, gate.gate) {
        (Procedure::Steps(w), Some(g)) => w.steps.get(g.step as usize).map(|s| s.name.clone()),
        _ => None,
    };
    (catalog.get(&gate.new.command))
        .and_then(|spec| step(spec))
        .unwrap_or_else(|| "approval".into())
}

/// What the result says of a gate: how long it waited, and how it ended.
fn gate_result(
    records: &[crate::domain::StepRecord],
    gate: Gate,
    now: DateTime<Utc>,
    said: String,
) -> RunResult {
    let started = records
        .iter()
        .find(|r| r.idx == gate.step)
        .map(|r| r.started_at);
    let waited = started.map_or(Duration::ZERO, |s| (now - s).to_std().unwrap_or_default());
    RunResult {
        code: None,
        duration: waited,
        output: said,
        truncated: false,
    }
}

fn gate_failed(why: &str) -> RunResult {
    RunResult {
        code: None,
        duration: Duration::ZERO,
        output: why.to_owned(),
        truncated: false,
    }
}

/// The event a run's steps act under when nobody's command moves them (the sweep expiring
/// a gate): its requester, in its channel.
fn acting_as_requester(run: &Run) -> InboundEvent {
    let mut channel = ChannelRef::id_only(run.new.channel_id.clone());
    channel.name = run.new.channel_name.clone();
    let mut ev = InboundEvent::new(
        run.new.requester.clone(),
        channel,
        EventPayload::Command(String::new()),
    );
    ev.platform = run.new.platform;
    ev.thread = run.new.thread.clone();
    ev
}
