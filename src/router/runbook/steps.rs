//! Running a command's steps in order under the run's lease: each step claimed in the store
//! (a conditional insert, so no step runs twice), its start audited before it starts, its
//! end recorded with the edit of the run's progress message queued in the same transaction;
//! on a failure the `on_failure` steps roll back, and the result lists every step. A run
//! stops at an approval gate (`gates.rs`) and is resumed from the step after it.

use tokio::sync::watch;
use tokio::time::Instant;

use super::execute::result_post;
use super::progress::{Mark, Progress};
use super::*;
use crate::actions::render::{RenderedStep, StepWork, WaitProbe, render_published};
use crate::domain::{StepRecord, StepState};
use crate::ports::StepStart;

/// Output kept for a whole run of steps; each step's output is capped by the runner.
const OUTPUT_KEPT: usize = 64 * 1024;

/// How a run ended, for the record and the reply.
pub(super) struct Finished {
    pub state: RunState,
    pub result: RunResult,
    pub text: String,
    /// The approval request of the gate the run waits at (its state is then `waiting`).
    pub gate: Option<Run>,
}

/// Where a run of steps starts: at the top, or after a gate was decided.
#[derive(Default)]
pub(super) struct Resume {
    /// The first step to run.
    pub from: usize,
    /// The steps recorded before (their marks, and the values they published).
    pub records: Vec<StepRecord>,
    /// The gate just decided: its index, how it ended, and what the result says of it.
    pub gate: Option<(usize, StepState, RunResult)>,
    /// The step that failed before `from` (a gate denied, expired or changed): only the
    /// `on_failure` steps run.
    pub failed: Option<(usize, StepState)>,
}

impl Resume {
    /// Whether it starts at the top with nothing decided before.
    pub fn is_fresh(&self) -> bool {
        self.from == 0 && self.records.is_empty() && self.gate.is_none() && self.failed.is_none()
    }
}

/// How one step went.
pub(super) struct StepRun {
    state: StepState,
    result: RunResult,
    /// Text to post in the run's channel (a message step).
    post: Option<String>,
    /// The value it published, by name.
    published: Option<(String, String)>,
}

impl StepRun {
    /// A step that did not run, and why.
    fn refused(why: String) -> Self {
        StepRun {
            state: StepState::Failed,
            result: RunResult {
                code: None,
                duration: Duration::ZERO,
                output: why,
                truncated: false,
            },
            post: None,
            published: None,
        }
    }
}

/// What became of the steps.
enum Ended {
    /// All ran (or failed and were rolled back).
    Completed,
    /// A step could not be claimed or recorded (the run was interrupted or cancelled).
    Lost,
    /// The run waits at a gate: its approval request.
    Paused(Box<Run>),
}

/// A run of steps as it goes: its progress, the values published so far, and whether
/// someone asked to cancel it (and who).
pub(super) struct Walk {
    pub progress: Progress,
    pub published: Vec<(String, String)>,
    cancel: watch::Receiver<Option<String>>,
    /// The step that failed (and did not continue on error), and how.
    failed: Option<(usize, StepState)>,
    /// A cancel stopped the steps.
    stopped: bool,
    /// The message showing the run's progress, once it has one.
    message_id: Option<String>,
}

impl Walk {
    fn cancelled_by(&self) -> Option<String> {
        self.cancel.borrow().clone()
    }
}

/// How often a running run (of steps, or a single action) looks for a `/cancel` of it (asked on any replica).
const CANCEL_POLL: Duration = Duration::from_secs(1);

/// Who cancelled, once someone has; never, if the watcher is gone.
pub(super) async fn cancelled(mut cancel: watch::Receiver<Option<String>>) -> String {
    let seen = (cancel.wait_for(Option::is_some).await).map(|by| by.clone().unwrap_or_default());
    match seen {
        Ok(by) => by,
        Err(_) => std::future::pending().await,
    }
}

impl RunbookService {
    /// Runs `steps` in order from `resume.from`, then `on_failure` if one failed (and did not
    /// continue on error), all under the run's lease; stops at an approval gate, and between
    /// steps (or within one, killing it) on a `/cancel`.
    pub(super) async fn run_workflow(
        &self,
        ctx: (&InboundEvent, &RequestId),
        run: &Run,
        rendered: &RenderedAction,
        plan: (&[RenderedStep], &[RenderedStep]),
        resume: Resume,
    ) -> Finished {
        let started = Instant::now();
        let Resume {
            from,
            records,
            gate,
            failed,
        } = resume;
        let (cancel, cancel_seen) = watch::channel(None);
        let watcher = self.watch_cancel(run.id, cancel);
        let mut walk = Walk {
            progress: Progress::new(run, plan, &records),
            published: self.published_in(run, &records),
            cancel: cancel_seen,
            failed,
            stopped: false,
            message_id: run.message_id.clone(),
        };
        let work = self.walk(ctx, (run, rendered), plan, (from, gate), &mut walk);
        let ended = self.under_lease(run.id, work).await;
        watcher.abort();
        self.workflow_finished(run, &walk, ended, started.elapsed())
    }

    /// The steps from `from` (after recording the gate just decided, if any), then the
    /// rollback steps when one failed or a cancel says so.
    async fn walk(
        &self,
        ctx: (&InboundEvent, &RequestId),
        (run, rendered): (&Run, &RenderedAction),
        (steps, on_failure): (&[RenderedStep], &[RenderedStep]),
        (from, gate): (usize, Option<(usize, StepState, RunResult)>),
        walk: &mut Walk,
    ) -> Ended {
        if let Some((idx, state, result)) = gate {
            let name = walk.progress.name(idx).to_owned();
            let ended = StepRun {
                state,
                result,
                post: None,
                published: None,
            };
            if self
                .step_ended(run, (idx, &name), ended, walk)
                .await
                .is_none()
            {
                return Ended::Lost;
            }
        }
        if walk.failed.is_none()
            && let Some(ended) = self
                .main_steps(ctx, (run, rendered), steps, from, walk)
                .await
        {
            return ended;
        }
        if walk.failed.is_none() && !walk.stopped {
            return Ended::Completed;
        }
        walk.progress.skip_rest(false);
        if walk.stopped && !self.rolls_back_on_cancel(run) {
            walk.progress.skip_rest(true);
            return Ended::Completed;
        }
        for (j, step) in on_failure.iter().enumerate() {
            let at = steps.len() + j;
            match self.step(ctx, run, rendered, (at, step), walk).await {
                None => return Ended::Lost,
                Some(StepState::Succeeded) => {}
                Some(_) if step.continue_on_error => {}
                // A rollback step that fails stops the rollback, unless it may.
                Some(_) => {
                    walk.progress.skip_rest(true);
                    break;
                }
            }
        }
        Ended::Completed
    }

    /// The steps from `from` until one fails (noted in `walk`), a cancel stops them, or a
    /// gate or a lost claim ends the run here (returned).
    async fn main_steps(
        &self,
        ctx: (&InboundEvent, &RequestId),
        (run, rendered): (&Run, &RenderedAction),
        steps: &[RenderedStep],
        from: usize,
        walk: &mut Walk,
    ) -> Option<Ended> {
        for (i, step) in steps.iter().enumerate().skip(from) {
            if walk.cancelled_by().is_some() {
                walk.stopped = true;
                return None;
            }
            if let StepWork::Approval(policy) = &step.work {
                let gate = self.reach_gate(ctx, run, (i, step, policy), walk).await;
                return Some(gate.map_or(Ended::Lost, |g| Ended::Paused(Box::new(g))));
            }
            match self.step(ctx, run, rendered, (i, step), walk).await {
                Some(StepState::Succeeded) => {}
                Some(state) if walk.cancelled_by().is_some() => {
                    (walk.stopped, walk.failed) = (true, Some((i, state)));
                    return None;
                }
                Some(_) if step.continue_on_error => {}
                Some(state) => {
                    walk.failed = Some((i, state));
                    return None;
                }
                // Claimed elsewhere or no longer running: stop without running more.
                None => return Some(Ended::Lost),
            }
        }
        None
    }

    /// The edit of the run's progress message as `walk` stands. A run that needed no
    /// approval gets its message (the answer that started it) after it started: until then
    /// it is looked up before each edit.
    async fn progress_edit(&self, run: &Run, walk: &mut Walk) -> Vec<Queued> {
        if walk.message_id.is_none()
            && run.new.platform != Platform::Console
            && let Ok(Some(now)) = self.store.run(run.id).await
        {
            walk.message_id = now.message_id;
        }
        let edit = walk.progress.edit(run, walk.message_id.as_deref());
        edit.into_iter().collect()
    }

    /// Watches the store for a `/cancel` of run `id` (made on any replica), telling `seen`.
    pub(super) fn watch_cancel(
        &self,
        id: RunId,
        seen: watch::Sender<Option<String>>,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CANCEL_POLL);
            loop {
                tick.tick().await;
                if let Ok(Some(run)) = store.run(id).await
                    && run.cancel_requested.is_some()
                {
                    let _ = seen.send(run.cancel_requested);
                    return;
                }
            }
        })
    }

    /// The values the steps recorded in `records` published, by name.
    pub(super) fn published_in(&self, run: &Run, records: &[StepRecord]) -> Vec<(String, String)> {
        let Some(w) = self.workflow_of(run) else {
            return Vec::new();
        };
        (records.iter())
            .filter_map(|r| {
                let value = r.published.clone()?;
                let step = w.steps.iter().find(|s| s.name == r.name)?;
                Some((step.publish.as_ref()?.value.name.clone(), value))
            })
            .collect()
    }

    /// The run's state, stored result and text once its steps are over (or paused).
    fn workflow_finished(&self, run: &Run, walk: &Walk, ended: Ended, took: Duration) -> Finished {
        let (gate, ended) = match ended {
            Ended::Paused(g) => (Some(*g), None),
            other => (None, Some(other)),
        };
        let (state, head) = match (&gate, ended) {
            (Some(g), _) => {
                let step = (g.gate).map_or("approval", |at| walk.progress.name(at.step as usize));
                let line = command_line(&run.new.command, &run.new.args);
                let head = format!(
                    "⏸ #{} {line} is waiting at step {step} for approval request #{}:",
                    run.id, g.id
                );
                (RunState::Waiting, head)
            }
            (None, lost) => ended_head(run, walk, matches!(lost, Some(Ended::Lost)), took),
        };
        let (output, truncated) = walk.progress.notes(OUTPUT_KEPT);
        let result = RunResult {
            code: None,
            duration: took,
            output,
            truncated,
        };
        let text = format!("{head}\n{}", walk.progress.list(true));
        Finished {
            state,
            result,
            text,
            gate,
        }
    }

    /// Claims step `idx` with the progress edit showing it current, and audits its start.
    /// False when it could not be claimed (the run is no longer running, or another claimed
    /// it) or its start could not be audited (then it is recorded as failed, not run).
    pub(super) async fn claim_step(
        &self,
        (ev, request_id): (&InboundEvent, &RequestId),
        run: &Run,
        (idx, name): (usize, &str),
        walk: &mut Walk,
    ) -> Result<bool, StepRun> {
        let rollback = walk.progress.is_rollback(idx);
        let start = StepStart {
            idx: idx as u32,
            name,
            rollback,
        };
        let edit = self.progress_edit(run, walk).await;
        match (self.store)
            .start_step(run.id, &start, self.now(), &edit)
            .await
        {
            Ok(true) => self.outbox.wake(),
            Ok(false) => {
                warn!(run = %run.id, step = %name, "step already claimed or run no longer running");
                return Ok(false);
            }
            Err(e) => {
                error!(run = %run.id, step = %name, error = %e, "could not claim a step");
                return Ok(false);
            }
        }
        let detail = format!("run #{} step {} ({name}) started", run.id, idx + 1);
        let entry = self.run_entry(run, (ev, request_id), Outcome::Ok, detail);
        match self.store.append_audit(entry).await {
            Ok(_) => Ok(true),
            Err(e) => {
                error!(run = %run.id, step = %name, error = %e, "could not audit a step's start; not running it");
                Err(StepRun::refused(
                    "not started: the audit log could not record the start".into(),
                ))
            }
        }
    }

    /// One step: claimed with its progress edit, its start audited, run, its end recorded
    /// with the next edit. `None` when it could not be claimed or recorded.
    async fn step(
        &self,
        ctx: (&InboundEvent, &RequestId),
        run: &Run,
        rendered: &RenderedAction,
        (idx, step): (usize, &RenderedStep),
        walk: &mut Walk,
    ) -> Option<StepState> {
        walk.progress.set(idx, Mark::Current);
        let ran = match self.claim_step(ctx, run, (idx, &step.name), walk).await {
            Ok(false) => return None,
            Err(refused) => refused,
            Ok(true) => match self.as_published(run, (idx, step), &walk.published) {
                Ok(fresh) => {
                    let work = self.run_step(fresh.as_ref().unwrap_or(step), rendered);
                    if walk.progress.is_rollback(idx) {
                        work.await
                    } else {
                        // A cancel drops the step's future, which kills its process group.
                        tokio::select! {
                            ran = work => ran,
                            by = cancelled(walk.cancel.clone()) => StepRun::refused(format!(
                                "cancelled by {by}; everything it started was killed"
                            )),
                        }
                    }
                }
                Err(why) => StepRun::refused(why),
            },
        };
        self.step_ended(run, (idx, &step.name), ran, walk).await
    }

    /// The step rendered again with the values published so far, when it uses any (`None`
    /// when it uses none); refused when one it uses was never published.
    fn as_published(
        &self,
        run: &Run,
        (idx, step): (usize, &RenderedStep),
        published: &[(String, String)],
    ) -> Result<Option<RenderedStep>, String> {
        if step.uses.is_empty() {
            return Ok(None);
        }
        if let Some(missing) = (step.uses.iter()).find(|n| !published.iter().any(|(p, _)| p == *n))
        {
            return Err(format!(
                "not started: it uses {{{missing}}}, which no step that ran published"
            ));
        }
        let spec = (self.catalog.get(&run.new.command))
            .ok_or_else(|| "not started: its command is no longer loaded".to_owned())?;
        let args = BoundArgs(run.new.args.clone());
        let again = render_published(spec, &args, published, &*self.env)
            .map_err(|e| format!("not started: {e}"))?;
        let Plan::Steps { steps, on_failure } = again.plan else {
            return Err("not started: its command no longer has steps".into());
        };
        let fresh = steps.into_iter().chain(on_failure).nth(idx);
        fresh
            .filter(|s| s.name == step.name)
            .map(Some)
            .ok_or_else(|| "not started: its command changed".into())
    }

    /// Records how a step ended, with its progress edit (and a message step's post).
    pub(super) async fn step_ended(
        &self,
        run: &Run,
        (idx, name): (usize, &str),
        ran: StepRun,
        walk: &mut Walk,
    ) -> Option<StepState> {
        walk.progress.ended(idx, ran.state, &ran.result);
        let mut queued = self.progress_edit(run, walk).await;
        if let Some(text) = &ran.post
            && run.new.platform != Platform::Console
        {
            queued.push(result_post(run, text));
        }
        let at = self.now();
        let published = ran.published.as_ref().map(|(_, v)| v.as_str());
        match (self.store)
            .finish_step(
                run.id,
                idx as u32,
                (ran.state, &ran.result, published),
                at,
                &queued,
            )
            .await
        {
            Ok(true) => {
                self.outbox.wake();
                walk.published.extend(ran.published);
                Some(ran.state)
            }
            Ok(false) => None,
            Err(e) => {
                error!(run = %run.id, step = %name, error = %e, "could not record a step's end");
                None
            }
        }
    }

    async fn run_step(&self, step: &RenderedStep, rendered: &RenderedAction) -> StepRun {
        let started = Instant::now();
        let (state, code, output, truncated, post) = match &step.work {
            StepWork::Action(kind) => {
                let o = self.runner.run(&self.resolve_paths(kind)).await;
                let state = match (o.timed_out, o.success) {
                    (true, _) => StepState::TimedOut,
                    (false, true) => StepState::Succeeded,
                    (false, false) => StepState::Failed,
                };
                (state, o.code, o.output, o.truncated, None)
            }
            StepWork::WaitFor {
                target,
                interval,
                deadline,
            } => {
                let (up, detail) = self.wait_for(target, *interval, *deadline).await;
                let state = if up {
                    StepState::Succeeded
                } else {
                    StepState::Failed
                };
                (state, None, detail, false, None)
            }
            StepWork::Message(text) => (
                StepState::Succeeded,
                None,
                String::new(),
                false,
                Some(text.clone()),
            ),
            // Gates are reached, not run (`reach_gate`); one in the rollback steps is refused
            // when the file loads.
            StepWork::Approval(_) => (
                StepState::Failed,
                None,
                "an approval gate cannot run here".into(),
                false,
                None,
            ),
        };
        let output = redact(&output, &rendered.secret_values);
        let mut ran = StepRun {
            state,
            result: RunResult {
                code,
                duration: started.elapsed(),
                output,
                truncated,
            },
            post,
            published: None,
        };
        if let (StepState::Succeeded, Some(publish)) = (state, &step.publish) {
            match super::publish::extract(publish, &ran.result.output) {
                Ok(value) => ran.published = Some((publish.value.name.clone(), value)),
                Err(why) => {
                    ran.state = StepState::Failed;
                    let out = &mut ran.result.output;
                    out.push_str(if out.is_empty() { "" } else { "\n" });
                    out.push_str(&why);
                }
            }
        }
        ran
    }

    /// Probes `target` every `interval` until it is up or `deadline` has passed: whether it
    /// came up, and what the last probe said. Timed on tokio's clock, so paused time drives
    /// it in tests.
    async fn wait_for(
        &self,
        target: &WaitProbe,
        interval: Duration,
        deadline: Duration,
    ) -> (bool, String) {
        let until = Instant::now() + deadline;
        loop {
            let (up, detail) = match target {
                WaitProbe::Check(name) => match self.health.run(Some(name)).await.pop() {
                    Some(r) => (r.state == CheckState::Up, r.detail),
                    None => (false, format!("no health check {name}")),
                },
                WaitProbe::Url(get) => {
                    let o = self.runner.run(get).await;
                    let said = o
                        .code
                        .map_or_else(|| o.output.clone(), |c| format!("HTTP {c}"));
                    (o.success, said)
                }
            };
            if up {
                return (true, String::new());
            }
            if Instant::now() + interval > until {
                return (
                    false,
                    format!("not up within {}; last: {detail}", human_duration(deadline)),
                );
            }
            tokio::time::sleep(interval).await;
        }
    }
}

/// How a run of steps that is over ended, and the first line of its result.
fn ended_head(run: &Run, walk: &Walk, lost: bool, took: Duration) -> (RunState, String) {
    let line = command_line(&run.new.command, &run.new.args);
    let (id, took) = (run.id, human_duration(took));
    let rolled_back = if walk.progress.rolled_back() {
        "; rolled back"
    } else {
        ""
    };
    if lost {
        let head = format!("❌ #{id} {line} stopped: a step could not be started or recorded.");
        return (RunState::Failed, head);
    }
    if let Some(by) = walk.cancelled_by().filter(|_| walk.stopped) {
        let head = format!("⏹ #{id} {line} cancelled by {by} after {took}{rolled_back}:");
        return (RunState::Cancelled, head);
    }
    match walk.failed {
        None => (
            RunState::Succeeded,
            format!("✅ #{id} {line} succeeded in {took}:"),
        ),
        Some((i, state)) => (
            if state == StepState::TimedOut {
                RunState::TimedOut
            } else {
                RunState::Failed
            },
            format!(
                "❌ #{id} {line} failed at step {} after {took}{rolled_back}:",
                walk.progress.name(i)
            ),
        ),
    }
}
