//! Running a command's steps in order under the run's lease: each step claimed in the store
//! (a conditional insert, so no step runs twice), its start audited before it starts, its
//! end recorded with the edit of the run's progress message queued in the same transaction;
//! on a failure the `on_failure` steps roll back, and the result lists every step.

use tokio::time::Instant;

use super::execute::result_post;
use super::*;
use crate::actions::render::{RenderedStep, StepWork, WaitProbe};
use crate::domain::StepState;
use crate::ports::StepStart;

/// Output kept for a whole run of steps; each step's output is capped by the runner.
const OUTPUT_KEPT: usize = 64 * 1024;

/// How a run ended, for the record and the reply.
pub(super) struct Finished {
    pub state: RunState,
    pub result: RunResult,
    pub text: String,
}

/// Where one step stands, as the progress message shows it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    Waiting,
    Current,
    Done(Duration),
    Failed(Duration),
    RolledBack(Duration),
    NotRun,
}

struct Line {
    name: String,
    rollback: bool,
    mark: Mark,
    /// What the result says besides the mark: exit status or why it failed.
    note: String,
}

/// The run's steps and where each stands: the progress message's text and the result's list.
struct Progress {
    header: String,
    lines: Vec<Line>,
}

impl Progress {
    fn new(run: &Run, steps: &[RenderedStep], on_failure: &[RenderedStep]) -> Self {
        let line = |s: &RenderedStep, rollback| Line {
            name: s.name.clone(),
            rollback,
            mark: Mark::Waiting,
            note: String::new(),
        };
        let lines = (steps.iter().map(|s| line(s, false)))
            .chain(on_failure.iter().map(|s| line(s, true)))
            .collect();
        Progress {
            header: format!(
                "Request #{}: {} requested by {}",
                run.id,
                command_line(&run.new.command, &run.new.args),
                run.new.requester_name
            ),
            lines,
        }
    }

    /// The steps, one a line: ✅ done, ⏳ current, ❌ failed, ↩ rolled back.
    fn list(&self, with_notes: bool) -> String {
        let mut out = String::new();
        let mut rollback_seen = false;
        for l in &self.lines {
            if l.rollback && !rollback_seen {
                rollback_seen = true;
                out.push_str("on failure:\n");
            }
            let (mark, took) = match l.mark {
                Mark::Waiting => ("▫️", None),
                Mark::NotRun => ("⏭️", None),
                Mark::Current => ("⏳", None),
                Mark::Done(d) => ("✅", Some(d)),
                Mark::Failed(d) => ("❌", Some(d)),
                Mark::RolledBack(d) => ("↩", Some(d)),
            };
            let _ = write!(out, "{mark} {}", l.name);
            if let Some(d) = took {
                let _ = write!(out, " ({})", human_duration(d));
            }
            if with_notes && !l.note.is_empty() {
                let _ = write!(out, ": {}", l.note);
            }
            out.push('\n');
        }
        out.trim_end().to_owned()
    }

    /// The edit of the run's request message showing this progress, when the run has one on
    /// a chat platform (the console's requests are answered, not edited).
    fn edit(&self, run: &Run) -> Option<Queued> {
        let id = run.message_id.clone()?;
        if run.new.platform == Platform::Console {
            return None;
        }
        let to = OutboundTarget {
            platform: run.new.platform,
            channel_id: run.new.channel_id.clone(),
            thread: run.new.thread.clone(),
        };
        let text = format!("{}\n{}", self.header, self.list(false));
        let message = OutboundMessage::text(text).with_visibility(Visibility::Channel);
        Some(Queued::edit(to, id, message))
    }
}

/// How one step went.
struct StepRun {
    state: StepState,
    result: RunResult,
    /// Text to post in the run's channel (a message step).
    post: Option<String>,
}

impl RunbookService {
    /// Runs `steps` in order, then `on_failure` if one failed (and did not continue on error),
    /// all under the run's lease.
    pub(super) async fn run_workflow(
        &self,
        ctx: (&InboundEvent, &RequestId),
        run: &Run,
        rendered: &RenderedAction,
        (steps, on_failure): (&[RenderedStep], &[RenderedStep]),
    ) -> Finished {
        let started = Instant::now();
        let mut progress = Progress::new(run, steps, on_failure);
        let mut failed: Option<(usize, StepState)> = None;
        let work = async {
            for (i, step) in steps.iter().enumerate() {
                match self
                    .step(ctx, run, rendered, (i, step), &mut progress)
                    .await
                {
                    Some(StepState::Succeeded) => {}
                    Some(_) if step.continue_on_error => {}
                    Some(state) => {
                        failed = Some((i, state));
                        break;
                    }
                    // Claimed elsewhere or no longer running: stop without running more.
                    None => return false,
                }
            }
            if failed.is_none() {
                return true;
            }
            for l in progress
                .lines
                .iter_mut()
                .filter(|l| l.mark == Mark::Waiting && !l.rollback)
            {
                l.mark = Mark::NotRun;
            }
            for (j, step) in on_failure.iter().enumerate() {
                let at = steps.len() + j;
                if self
                    .step(ctx, run, rendered, (at, step), &mut progress)
                    .await
                    .is_none()
                {
                    return false;
                }
            }
            true
        };
        let completed = self.under_lease(run.id, work).await;
        self.workflow_finished(run, &progress, (failed, completed), started.elapsed())
    }

    /// The run's state, stored result and text once its steps are over.
    fn workflow_finished(
        &self,
        run: &Run,
        progress: &Progress,
        (failed, completed): (Option<(usize, StepState)>, bool),
        took: Duration,
    ) -> Finished {
        let line = command_line(&run.new.command, &run.new.args);
        let rolled_back = progress
            .lines
            .iter()
            .any(|l| l.rollback && l.mark != Mark::Waiting);
        let (state, head) = match failed {
            _ if !completed => (
                RunState::Failed,
                format!(
                    "❌ #{} {line} stopped: a step could not be started or recorded.",
                    run.id
                ),
            ),
            None => (
                RunState::Succeeded,
                format!(
                    "✅ #{} {line} succeeded in {}:",
                    run.id,
                    human_duration(took)
                ),
            ),
            Some((i, state)) => (
                if state == StepState::TimedOut {
                    RunState::TimedOut
                } else {
                    RunState::Failed
                },
                format!(
                    "❌ #{} {line} failed at step {} after {}{}:",
                    run.id,
                    progress.lines[i].name,
                    human_duration(took),
                    if rolled_back { "; rolled back" } else { "" }
                ),
            ),
        };
        let mut output = String::new();
        let mut truncated = false;
        for l in progress.lines.iter().filter(|l| !l.note.is_empty()) {
            let _ = writeln!(output, "{}: {}", l.name, l.note);
        }
        if output.len() > OUTPUT_KEPT {
            output = output.chars().take(OUTPUT_KEPT).collect();
            truncated = true;
        }
        let result = RunResult {
            code: None,
            duration: took,
            output,
            truncated,
        };
        let text = format!("{head}\n{}", progress.list(true));
        Finished {
            state,
            result,
            text,
        }
    }

    /// One step: claimed with its progress edit, its start audited, run, its end recorded
    /// with the next edit. `None` when it could not be claimed or recorded.
    async fn step(
        &self,
        (ev, request_id): (&InboundEvent, &RequestId),
        run: &Run,
        rendered: &RenderedAction,
        (idx, step): (usize, &RenderedStep),
        progress: &mut Progress,
    ) -> Option<StepState> {
        let rollback = progress.lines[idx].rollback;
        progress.lines[idx].mark = Mark::Current;
        let start = StepStart {
            idx: idx as u32,
            name: &step.name,
            rollback,
        };
        let edit: Vec<Queued> = progress.edit(run).into_iter().collect();
        match self
            .store
            .start_step(run.id, &start, self.now(), &edit)
            .await
        {
            Ok(true) => self.outbox.wake(),
            Ok(false) => {
                warn!(run = %run.id, step = %step.name, "step already claimed or run no longer running");
                return None;
            }
            Err(e) => {
                error!(run = %run.id, step = %step.name, error = %e, "could not claim a step");
                return None;
            }
        }
        let detail = format!("run #{} step {} ({}) started", run.id, idx + 1, step.name);
        let entry = run_audit_entry(
            run,
            request_id.clone(),
            ev.user.to_string(),
            self.now(),
            Outcome::Ok,
            detail,
        );
        let ran = match self.store.append_audit(entry).await {
            Ok(_) => self.run_step(step, rendered).await,
            Err(e) => {
                error!(run = %run.id, step = %step.name, error = %e, "could not audit a step's start; not running it");
                StepRun {
                    state: StepState::Failed,
                    result: RunResult {
                        code: None,
                        duration: Duration::ZERO,
                        output: "not started: the audit log could not record the start".into(),
                        truncated: false,
                    },
                    post: None,
                }
            }
        };
        self.step_ended(run, (idx, step), ran, progress).await
    }

    /// Records how a step ended, with its progress edit (and a message step's post).
    async fn step_ended(
        &self,
        run: &Run,
        (idx, step): (usize, &RenderedStep),
        ran: StepRun,
        progress: &mut Progress,
    ) -> Option<StepState> {
        let took = ran.result.duration;
        let line = &mut progress.lines[idx];
        line.mark = match (ran.state, line.rollback) {
            (StepState::Succeeded, false) => Mark::Done(took),
            (StepState::Succeeded, true) => Mark::RolledBack(took),
            _ => Mark::Failed(took),
        };
        line.note = step_note(ran.state, &ran.result);
        let mut queued: Vec<Queued> = progress.edit(run).into_iter().collect();
        if let Some(text) = &ran.post
            && run.new.platform != Platform::Console
        {
            queued.push(result_post(run, text));
        }
        let at = self.now();
        match (self.store)
            .finish_step(run.id, idx as u32, (ran.state, &ran.result), at, &queued)
            .await
        {
            Ok(true) => {
                self.outbox.wake();
                Some(ran.state)
            }
            Ok(false) => None,
            Err(e) => {
                error!(run = %run.id, step = %step.name, error = %e, "could not record a step's end");
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
        };
        StepRun {
            state,
            result: RunResult {
                code,
                duration: started.elapsed(),
                output: redact(&output, &rendered.secret_values),
                truncated,
            },
            post,
        }
    }

    /// Probes `target` every `interval` until it is up or `deadline` has passed: whether it
    /// came up, and what the last probe said.
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

/// What the result says about a step besides its mark.
fn step_note(state: StepState, result: &RunResult) -> String {
    let output = result.output.trim();
    let last_lines: Vec<&str> = output.lines().rev().take(5).collect();
    let shown = last_lines.into_iter().rev().collect::<Vec<_>>().join(" / ");
    let code = result.code.map(|c| format!("exit {c}"));
    match state {
        StepState::Succeeded | StepState::Running => {
            code.filter(|_| !shown.is_empty()).unwrap_or_default()
        }
        StepState::TimedOut => "timed out; everything it started was killed".into(),
        StepState::Failed => [code.unwrap_or_default(), shown]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(": "),
    }
}
