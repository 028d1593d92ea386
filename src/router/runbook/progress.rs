//! A run of steps as its progress message and result show it: one line per step with its
//! mark (▫️ waiting, ⏳ current, ⏸ waiting for approval, ✅ done, ❌ failed, ↩ rolled back,
//! ⏭️ not run, ⚠️ where an interrupted run stopped) and, in the result, what each said.

use super::*;
use crate::actions::render::RenderedStep;
use crate::domain::{StepRecord, StepState};

/// Where one step stands, as the progress message shows it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Mark {
    Waiting,
    Current,
    /// An approval gate waiting for its approvals.
    Paused,
    Done(Duration),
    Failed(Duration),
    RolledBack(Duration),
    NotRun,
    /// The step opsbot was running when it stopped (the run is `interrupted`).
    Interrupted,
}

struct Line {
    name: String,
    rollback: bool,
    mark: Mark,
    /// What the result says besides the mark: exit status or why it failed.
    note: String,
}

/// The run's steps and where each stands: the progress message's text and the result's list.
pub(super) struct Progress {
    header: String,
    lines: Vec<Line>,
}

impl Progress {
    /// The steps of `run`, marked as `records` (the steps run before a gate) left them.
    pub(super) fn new(
        run: &Run,
        (steps, on_failure): (&[RenderedStep], &[RenderedStep]),
        records: &[StepRecord],
    ) -> Self {
        let steps: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        let on_failure: Vec<&str> = on_failure.iter().map(|s| s.name.as_str()).collect();
        Self::named(run, (&steps, &on_failure), records)
    }

    /// The same from the steps' names: the main ones, then the `on_failure` ones.
    pub(super) fn named(
        run: &Run,
        (steps, on_failure): (&[&str], &[&str]),
        records: &[StepRecord],
    ) -> Self {
        let line = |name: &&str, rollback| Line {
            name: (*name).to_owned(),
            rollback,
            mark: Mark::Waiting,
            note: String::new(),
        };
        let lines = (steps.iter().map(|n| line(n, false)))
            .chain(on_failure.iter().map(|n| line(n, true)))
            .collect();
        let mut progress = Progress {
            header: format!(
                "Request #{}: {} requested by {}",
                run.id,
                command_line(&run.new.command, &run.new.args),
                run.new.requester_name
            ),
            lines,
        };
        for r in records {
            match &r.result {
                Some(result) => progress.ended(r.idx as usize, r.state, result),
                // Only a gate is left running while its run waits.
                None => progress.set(r.idx as usize, Mark::Paused),
            }
        }
        progress
    }

    pub(super) fn set(&mut self, idx: usize, mark: Mark) {
        if let Some(l) = self.lines.get_mut(idx) {
            l.mark = mark;
        }
    }

    pub(super) fn is_rollback(&self, idx: usize) -> bool {
        self.lines.get(idx).is_some_and(|l| l.rollback)
    }

    pub(super) fn name(&self, idx: usize) -> &str {
        self.lines.get(idx).map_or("?", |l| l.name.as_str())
    }

    /// Marks step `idx` as it ended, with what the result says of it.
    pub(super) fn ended(&mut self, idx: usize, state: StepState, result: &RunResult) {
        let Some(line) = self.lines.get_mut(idx) else {
            return;
        };
        let took = result.duration;
        line.mark = match (state, line.rollback) {
            (StepState::Succeeded, false) => Mark::Done(took),
            (StepState::Succeeded, true) => Mark::RolledBack(took),
            (StepState::Running, _) => Mark::Paused,
            (StepState::Failed | StepState::TimedOut, _) => Mark::Failed(took),
        };
        line.note = step_note(state, result);
    }

    /// Marks the steps still waiting (the rollback steps' when `rollback`) as not run.
    pub(super) fn skip_rest(&mut self, rollback: bool) {
        for l in
            (self.lines.iter_mut()).filter(|l| l.mark == Mark::Waiting && l.rollback == rollback)
        {
            l.mark = Mark::NotRun;
        }
    }

    /// The run stopped with opsbot: the step it was in (`Paused` by its record, which has no
    /// result) is marked interrupted and nothing after it ran.
    pub(super) fn interrupted(&mut self) {
        for l in &mut self.lines {
            if matches!(l.mark, Mark::Paused | Mark::Current) {
                l.mark = Mark::Interrupted;
            }
        }
        self.skip_rest(false);
        self.skip_rest(true);
    }

    /// Whether a rollback step ran.
    pub(super) fn rolled_back(&self) -> bool {
        (self.lines.iter()).any(|l| l.rollback && !matches!(l.mark, Mark::Waiting | Mark::NotRun))
    }

    /// What each step said, one a line, cut at `cap` bytes: (text, whether it was cut).
    pub(super) fn notes(&self, cap: usize) -> (String, bool) {
        let mut output = String::new();
        for l in self.lines.iter().filter(|l| !l.note.is_empty()) {
            let _ = writeln!(output, "{}: {}", l.name, l.note);
        }
        if output.len() > cap {
            return (output.chars().take(cap).collect(), true);
        }
        (output, false)
    }

    /// The steps, one a line, with their marks (and notes, for the result).
    pub(super) fn list(&self, with_notes: bool) -> String {
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
                Mark::Paused => ("⏸", None),
                Mark::Interrupted => ("⚠️", None),
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

    /// The edit of the run's message (`message_id`: its request's, or the answer that
    /// started it) showing this progress, on a chat platform (the console's runs are
    /// answered, not edited).
    pub(super) fn edit(&self, run: &Run, message_id: Option<&str>) -> Option<Queued> {
        let id = message_id?.to_owned();
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

/// What the result says about a step besides its mark.
fn step_note(state: StepState, result: &RunResult) -> String {
    let output = result.output.trim();
    let last_lines: Vec<&str> = output.lines().rev().take(5).collect();
    let shown = last_lines.into_iter().rev().collect::<Vec<_>>().join(" / ");
    let code = result.code.map(|c| format!("exit {c}"));
    match state {
        // A quiet success needs no note; otherwise what a step printed is part of its
        // result whichever way it ended (a backup's size, the release now running), and a
        // step without an exit status (a gate, a message) says what it has to say.
        StepState::Succeeded | StepState::Running if shown.is_empty() => String::new(),
        StepState::Succeeded | StepState::Running | StepState::Failed => {
            [code.unwrap_or_default(), shown]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(": ")
        }
        StepState::TimedOut => "timed out; everything it started was killed".into(),
    }
}
