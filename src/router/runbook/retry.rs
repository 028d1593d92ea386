//! `/retry ID [from STEP]`: a new request that runs an ended run's steps again from the step
//! it failed at (or the one named), with the values the steps before it published (their
//! records are copied into it). It needs approval again when the command does, bound to the
//! steps it will run; it is refused while the original has not ended.

use super::*;
use crate::actions::render::{display_from, steps_hash};
use crate::catalog::Workflow;
use crate::domain::{Retry, StepRecord, StepState};

impl RunbookService {
    /// The run `/retry ID` names and its command, for the router to authorize the retry as a
    /// request of that command.
    pub(in crate::router) async fn retry_target(
        &self,
        id: RunId,
    ) -> Result<(Run, Arc<CommandSpec>), Refusal> {
        let run = (self.store.run(id).await).or_no_such("loading run", "request", id)?;
        if let Some(gate) = run.gate {
            return Err(Refusal::Invalid(format!(
                "request #{id} is an approval gate of run #{}; retry that run.",
                gate.run
            )));
        }
        let spec = self.catalog.get(&run.new.command).cloned();
        let spec = spec.ok_or_else(|| {
            Refusal::Invalid(format!("/{} is no longer loaded.", run.new.command))
        })?;
        Ok((run, spec))
    }

    /// A retry of `original` (a command of steps that has ended) from `from` (a step's
    /// number or name; by default the step it failed at), requested by `requester`.
    pub(in crate::router) async fn retry(
        &self,
        (ev, request_id): (&InboundEvent, &RequestId),
        requester: &Requester,
        (original, spec): (Run, Arc<CommandSpec>),
        from: Option<&str>,
    ) -> Result<Done, Refusal> {
        let id = original.id;
        let Procedure::Steps(w) = &spec.procedure else {
            return Err(Refusal::Invalid(format!(
                "/{} runs one action, not steps: request it again instead.",
                spec.name
            )));
        };
        ended(&original)?;
        let person = (requester.person())
            .ok_or_else(|| Refusal::Denied("unknown users cannot retry runbooks.".into()))?;
        let records = (self.store.run_steps(id).await).or_refuse("loading steps")?;
        let first = start_of(w, &spec.name, &records, from).map_err(Refusal::Invalid)?;
        let before: Vec<StepRecord> = (records.into_iter())
            .filter(|r| !r.rollback && (r.idx as usize) < first)
            .collect();
        let published = self.published_in(&original, &before);
        let (rendered, hash) = self.retry_rendering(&spec, &original, &published, first)?;
        let run = self
            .create_retry(ev, person, &spec, (&original, first), (&rendered, hash))
            .await?;
        let what = format!(
            "Retry of #{id} from step {} ({}) is #{}",
            first + 1,
            w.steps[first].name,
            run.id
        );
        if run.state == RunState::Pending {
            let line = command_line(&spec.name, &run.new.args);
            let shown = RenderedAction {
                display: run.new.rendered.clone(),
                ..rendered
            };
            let done = self.pending(&run, person, &spec, &shown, &line);
            return Ok(Done {
                text: format!("{what}.\n{}", done.text),
                detail: format!(
                    "retry of #{id} from step {} as #{}: pending",
                    first + 1,
                    run.id
                ),
                ..done
            });
        }
        let ran = self.execute(ev, request_id, &run, &rendered).await?;
        Ok(Done {
            text: format!("{what}:\n{}", ran.text),
            detail: format!(
                "retry of #{id} from step {} as #{}: {}",
                first + 1,
                run.id,
                ran.ended
            ),
            pending_run: ran.gate,
            ran: Some(run.id),
            progress: false,
        })
    }

    /// Stores the retry (pending when the command needs approval), with the records of the
    /// steps before `first` copied from `original`.
    async fn create_retry(
        &self,
        ev: &InboundEvent,
        person: &Person,
        spec: &CommandSpec,
        (original, first): (&Run, usize),
        (rendered, hash): (&RenderedAction, String),
    ) -> Result<Run, Refusal> {
        let Plan::Steps { steps, on_failure } = &rendered.plan else {
            return Err(Refusal::Invalid(format!("/{} has no steps.", spec.name)));
        };
        let state = match &spec.approval {
            Some(_) => RunState::Pending,
            None => RunState::Approved,
        };
        let shown = (display_from(steps, on_failure, first), hash);
        let args = &original.new.args;
        let new = self.new_request(ev, person, spec, args, shown, (state, None));
        let now = self.now();
        let retry = Retry {
            of: original.id,
            from: first as u32,
        };
        (self.store.create_retry(new, now + lease(), retry).await).or_refuse("creating a retry")
    }

    /// The command rendered with `published`, and the hash a retry from step `first` is
    /// bound to: the steps it runs as shown, under the command's approval policy.
    fn retry_rendering(
        &self,
        spec: &CommandSpec,
        run: &Run,
        published: &[(String, String)],
        first: usize,
    ) -> Result<(RenderedAction, String), Refusal> {
        let rendered = (self.render_with(spec, run, published))
            .map_err(|e| Refusal::Unavailable(format!("/{} cannot run: {e}.", spec.name)))?;
        let Plan::Steps { steps, on_failure } = &rendered.plan else {
            return Err(Refusal::Invalid(format!("/{} has no steps.", spec.name)));
        };
        let shown = display_from(steps, on_failure, first);
        let start = format!("retry from {first}");
        let hash = steps_hash(&spec.name, &start, spec.approval.as_ref(), &shown);
        Ok((rendered, hash))
    }

    /// A pending retry as it would run now, and its hash (compared with the stored one when
    /// it is approved).
    pub(super) async fn retry_now(
        &self,
        spec: &CommandSpec,
        run: &Run,
        retry: Retry,
    ) -> Result<(RenderedAction, String), Refusal> {
        let records = (self.store.run_steps(run.id).await).or_refuse("loading steps")?;
        let published = self.published_in(run, &records);
        self.retry_rendering(spec, run, &published, retry.from as usize)
    }
}

/// Refuses a run that has not ended, or of which nothing ran.
fn ended(run: &Run) -> Result<(), Refusal> {
    let (id, state) = (run.id, run.state);
    match state {
        RunState::Pending | RunState::Approved | RunState::Running | RunState::Waiting => {
            Err(Refusal::Invalid(format!(
                "request #{id} is still {state}; retry it once it has ended."
            )))
        }
        RunState::Denied | RunState::Expired => Err(Refusal::Invalid(format!(
            "nothing of request #{id} ran ({state}); request it again."
        ))),
        RunState::Succeeded
        | RunState::Failed
        | RunState::TimedOut
        | RunState::Interrupted
        | RunState::Cancelled => Ok(()),
    }
}

/// The index of the step a retry starts at: the one named (number or name), else the first
/// step that did not succeed (or never started).
fn start_of(
    w: &Workflow,
    command: &str,
    records: &[StepRecord],
    from: Option<&str>,
) -> Result<usize, String> {
    let main: Vec<&StepRecord> = records.iter().filter(|r| !r.rollback).collect();
    match from {
        Some(named) => (named.parse::<usize>().ok())
            .filter(|n| (1..=w.steps.len()).contains(n))
            .map(|n| n - 1)
            .or_else(|| w.steps.iter().position(|s| s.name == named))
            .ok_or_else(|| {
                format!(
                    "{named:?} is not a step of /{command}: give its number (1-{}) or its name",
                    w.steps.len()
                )
            }),
        None => (main.iter())
            .find(|r| r.state != StepState::Succeeded)
            .map(|r| r.idx as usize)
            .or_else(|| Some(main.len()).filter(|n| *n < w.steps.len()))
            .ok_or_else(|| "every step succeeded; say where to start: /retry ID from STEP".into()),
    }
}
