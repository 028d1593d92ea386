//! Running an approved request exactly once: `approved -> running` (one winner), the start
//! audited before the process starts, the lease renewed while it runs, the result recorded.

use super::gates;
use super::steps::{Finished, Resume};
use super::*;
use crate::domain::exec_location;
use crate::ports::ActionOutcome;

/// Where a run's result goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ResultTo {
    /// The reply to whoever made it run: a command run at once answers its own requester, and
    /// the console's channel is the terminal of the person typing.
    Reply,
    /// The request's channel, in reply to the request's message: queued in the outbox by the
    /// run's final transition, so a result decided is a result posted, by the leader, once.
    Channel,
}

/// What running (or going on with) a request came to.
pub(super) struct Ran {
    /// The result's text (or, for a run stopped at a gate, the gate's request).
    pub text: String,
    /// How it ended, in a few words, for the audit detail and the incident timeline.
    pub ended: String,
    /// The approval request of the gate it stopped at, to be bound to the answer's message.
    pub gate: Option<RunId>,
}

impl RunbookService {
    /// Runs an `approved` request: `approved -> running` (only one caller can win), the action
    /// under its timeout with the lease renewed, then the result recorded and rendered.
    pub(super) async fn execute(
        &self,
        ev: &InboundEvent,
        request_id: &RequestId,
        run: &Run,
        rendered: &RenderedAction,
    ) -> Result<Ran, Refusal> {
        if !self.start(ev, request_id, run, rendered).await? {
            return Ok(Ran {
                text: format!("Request #{} is already running or done.", run.id),
                ended: "already running or done".into(),
                gate: None,
            });
        }
        let to = ResultTo::Reply;
        Ok((self.run_started(ev, request_id, run, rendered, to, Resume::default())).await)
    }

    /// Runs a request `start` moved to `running` in the router's in-flight work (shutdown
    /// waits for it), so the approver is answered at once; its result goes to the channel.
    pub(super) fn run_in_background(
        &self,
        ev: &InboundEvent,
        request_id: &RequestId,
        run: Run,
        rendered: RenderedAction,
        resume: Resume,
    ) {
        let this = self.clone();
        let (ev, request_id) = (ev.clone(), request_id.clone());
        let work = async move {
            let to = ResultTo::Channel;
            (this.run_started(&ev, &request_id, &run, &rendered, to, resume)).await;
        };
        self.in_flight
            .spawn(work.instrument(tracing::Span::current()));
    }

    /// Runs a request already `running` (a run of steps from `resume`), records its result
    /// (with its post, for `to` the channel) and audits how it ended.
    pub(super) async fn run_started(
        &self,
        ev: &InboundEvent,
        request_id: &RequestId,
        run: &Run,
        rendered: &RenderedAction,
        to: ResultTo,
        resume: Resume,
    ) -> Ran {
        let id = run.id;
        let (
            Finished {
                state,
                result,
                text,
                gate,
            },
            code_label,
        ) = match &rendered.plan {
            Plan::Single(kind) => self.run_single(run, kind, rendered).await,
            Plan::Steps { steps, on_failure } => {
                let resume = self.retried_from(run, resume).await;
                let (ctx, plan) = ((ev, request_id), (&steps[..], &on_failure[..]));
                let done = (self.run_workflow(ctx, run, rendered, plan, resume)).await;
                (done, "exit")
            }
        };
        if let Some(gate) = gate {
            return self.paused(ev, request_id, run, text, &gate).await;
        }
        self.metrics
            .run_finished(&run.new.command, state, result.duration);
        let mut text = text;
        let recorded = {
            let post = |finished: &Run, _: RunState| match to {
                ResultTo::Reply => Vec::new(),
                ResultTo::Channel => vec![result_post(finished, &text)],
            };
            self.record(id, state, &result, &post).await
        };
        let ended = self
            .audit_outcome(ev, request_id, run, state, &result, code_label)
            .await;
        if !recorded {
            text.push_str(
                "\n(This result could not be recorded on the request; see opsbot's log.)",
            );
        }
        if to == ResultTo::Channel {
            self.result_queued(run, &text, recorded).await;
        }
        Ran {
            text,
            ended,
            gate: None,
        }
    }

    /// Where a run starts: a `/retry` started from its beginning starts at its `from` step,
    /// with the records copied from the run it retries.
    async fn retried_from(&self, run: &Run, resume: Resume) -> Resume {
        match run.retry {
            Some(retry) if resume.is_fresh() => Resume {
                from: retry.from as usize,
                records: self.store.run_steps(run.id).await.unwrap_or_default(),
                ..resume
            },
            _ => resume,
        }
    }

    /// A run stopped at gate `gate` (already `waiting`, its request queued where it is
    /// posted): audited, and on the console answered with the gate's request.
    async fn paused(
        &self,
        ev: &InboundEvent,
        request_id: &RequestId,
        run: &Run,
        text: String,
        gate: &Run,
    ) -> Ran {
        let ended = format!("waiting at a gate for approval request #{}", gate.id);
        let detail = format!("run #{} {ended}", run.id);
        let entry = self.run_entry(run, (ev, request_id), Outcome::Ok, detail);
        if let Err(e) = self.store.append_audit(entry).await {
            warn!(run = %run.id, error = %e, "could not audit a run stopping at a gate");
        }
        let request = match (run.new.platform, gates::policy_of(&self.catalog, gate)) {
            (Platform::Console, Some(policy)) => {
                let step = gates::step_name(&self.catalog, gate);
                format!("\n{}", self.gate_text(run, gate, &step, &policy))
            }
            _ => String::new(),
        };
        Ran {
            text: format!("{text}{request}"),
            ended,
            gate: Some(gate.id).filter(|_| run.new.platform == Platform::Console),
        }
    }

    /// Runs a single action under the run's lease: how it ended, and what its code is.
    async fn run_single(
        &self,
        run: &Run,
        kind: &ActionKind,
        rendered: &RenderedAction,
    ) -> (Finished, &'static str) {
        let kind = self.resolve_paths(kind);
        let started = tokio::time::Instant::now();
        let (state, result) = match self.run_cancellable(run.id, &kind).await {
            Ok(outcome) => ended_as(outcome, &rendered.secret_values),
            Err(by) => {
                let result = RunResult {
                    code: None,
                    duration: started.elapsed(),
                    output: format!("cancelled by {by}"),
                    truncated: false,
                };
                (RunState::Cancelled, result)
            }
        };
        let code_label = match kind {
            ActionKind::Exec { .. } => "exit",
            ActionKind::Http { .. } => "HTTP",
        };
        let (command, args) = (&run.new.command, &run.new.args);
        let text = render_result(
            run.id,
            command,
            args,
            state,
            &result,
            kind.timeout(),
            code_label,
        );
        let finished = Finished {
            state,
            result,
            text,
            gate: None,
        };
        (finished, code_label)
    }

    /// Runs the action under the run's lease until it ends or a `/cancel` of the run (asked on
    /// any replica) is seen: then the action's future is dropped, which kills its process
    /// group, and who cancelled it is returned.
    async fn run_cancellable(&self, id: RunId, kind: &ActionKind) -> Result<ActionOutcome, String> {
        let (cancel, seen) = tokio::sync::watch::channel(None);
        let watcher = self.watch_cancel(id, cancel);
        let work = async {
            tokio::select! {
                outcome = self.runner.run(kind) => Ok(outcome),
                by = super::steps::cancelled(seen) => Err(by),
            }
        };
        let ran = self.under_lease(id, work).await;
        watcher.abort();
        ran
    }

    /// Wakes the deliverer for a result its final transition queued; a result that could not
    /// be recorded (so nothing was queued with it) is queued on its own, as the only way
    /// left to tell the channel.
    async fn result_queued(&self, run: &Run, text: &str, recorded: bool) {
        if recorded {
            self.outbox.wake();
            return;
        }
        // Bound to its message since the run started, perhaps: reply to it if so.
        let latest = self.store.run(run.id).await.ok().flatten();
        let run = latest.as_ref().unwrap_or(run);
        if let Err(e) = self
            .store
            .enqueue(&result_post(run, text), self.now())
            .await
        {
            error!(run = %run.id, error = %e, "the result of a run could not be recorded or queued for its channel");
            return;
        }
        self.outbox.wake();
    }

    /// `approved -> running`, then the start audited. False when another caller won; `Err`
    /// (with the request closed as failed) when the start could not be audited: then nothing
    /// runs.
    pub(super) async fn start(
        &self,
        ev: &InboundEvent,
        request_id: &RequestId,
        run: &Run,
        rendered: &RenderedAction,
    ) -> Result<bool, Refusal> {
        let (id, now) = (run.id, self.now());
        let started = self
            .claim(
                id,
                RunState::Approved,
                RunState::Running,
                now,
                "starting run",
            )
            .await?;
        if !started {
            return Ok(false);
        }
        let detail = format!(
            "run #{id} started: {}",
            rendered.display.lines().next().unwrap_or("")
        );
        let start = run_audit_entry(
            run,
            request_id.clone(),
            ev.user.to_string(),
            now,
            Outcome::Ok,
            detail,
        );
        let Err(e) = self.store.append_audit(start).await else {
            return Ok(true);
        };
        let failed = RunResult {
            code: None,
            duration: Duration::ZERO,
            output: "not started: the audit log could not record the start".into(),
            truncated: false,
        };
        // Approved -> running happened above; close the record so it is not left running,
        // and tell the request's channel, which was told its result follows.
        let told = |finished: &Run, _: RunState| match finished.message_id {
            Some(_) if finished.new.platform != Platform::Console => {
                vec![result_post(finished, &not_started(id, request_id))]
            }
            _ => Vec::new(),
        };
        let _ = self
            .store
            .finish_run(id, RunState::Failed, &failed, self.now(), &told)
            .await;
        self.outbox.wake();
        Err(Refusal::Failed(
            anyhow::Error::new(e).context("auditing run start"),
        ))
    }

    /// Runs `work` (the action, or all the steps), renewing the request's lease until it
    /// ends, so a sweeper never takes a live run for one whose process died.
    pub(super) async fn under_lease<T>(&self, id: RunId, work: impl Future<Output = T>) -> T {
        let stop_lease = CancellationToken::new();
        let renewer = {
            let (store, clock, stop) = (self.store.clone(), self.clock.clone(), stop_lease.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(LEASE / 3);
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => {
                            if let Err(e) = store.renew_lease(id, clock.now() + lease()).await {
                                warn!(run = %id, error = %e, "could not renew run lease");
                            }
                        }
                    }
                }
            })
        };
        let outcome = work.await;
        stop_lease.cancel();
        let _ = renewer.await;
        outcome
    }

    /// How the run ended is its own audit record (the approval's record only says it ran), so
    /// `/audit` and `opsbot audit` show failures as failures; returns that ending in words.
    /// Best effort: the result is already stored on the run and answered.
    async fn audit_outcome(
        &self,
        ev: &InboundEvent,
        request_id: &RequestId,
        run: &Run,
        state: RunState,
        result: &RunResult,
        code_label: &str,
    ) -> String {
        let code = result
            .code
            .map_or("no exit status".into(), |c| format!("{code_label} {c}"));
        let ended = format!("{state} ({code}) after {}", human_duration(result.duration));
        let detail = format!("run #{} {ended}", run.id);
        let outcome = match state {
            RunState::Succeeded => Outcome::Ok,
            _ => Outcome::Failed,
        };
        let entry = self.run_entry(run, (ev, request_id), outcome, detail);
        if let Err(e) = self.store.append_audit(entry).await {
            warn!(run = %run.id, error = %e, "could not audit how a run ended");
        }
        ended
    }

    /// Records the result (`running -> state`) with `notice`'s messages; false when it could
    /// not be. A store error is retried a few times with backoff, reading the run back first:
    /// a commit whose answer was lost may have landed, and recording (or queuing) it again
    /// would post the result twice.
    pub(super) async fn record(
        &self,
        id: RunId,
        state: RunState,
        result: &RunResult,
        notice: &RunNotice<'_>,
    ) -> bool {
        let mut wait = Duration::from_millis(250);
        for attempt in 1..=RECORD_TRIES {
            match (self.store)
                .finish_run(id, state, result, self.now(), notice)
                .await
            {
                Ok(true) => return true,
                Ok(false) => {
                    // The lease lapsed (renewals failed) and a sweeper marked it interrupted.
                    warn!(
                        run = %id,
                        "run finished after being marked interrupted; result not recorded"
                    );
                    return false;
                }
                Err(e) => error!(
                    run = %id,
                    attempt,
                    error = format!("{:#}", anyhow::Error::new(e)),
                    "recording run result failed"
                ),
            }
            tokio::time::sleep(wait).await;
            wait *= 2;
            match self.store.run(id).await {
                // Only this caller moves it from running to `state`: that commit landed.
                Ok(Some(now)) if now.state == state => return true,
                Ok(Some(now)) if now.state != RunState::Running => return false,
                _ => {}
            }
        }
        false
    }

    /// Relative working directories and programs resolve against the config's folder.
    pub(super) fn resolve_paths(&self, kind: &ActionKind) -> ActionKind {
        match kind {
            ActionKind::Exec {
                argv,
                workdir,
                env,
                timeout,
            } => {
                let (dir, program) = exec_location(&argv[0], workdir.as_deref(), &self.base_dir);
                let mut argv = argv.clone();
                argv[0] = program;
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
}

/// The post of a run's result in its request's channel: in reply to the request's message
/// (as stored when the result was recorded), else in the request's thread. On Slack a
/// thread hangs off a top-level message, never off a reply: a request made in a thread is
/// answered in that thread.
pub(super) fn result_post(run: &Run, text: &str) -> Queued {
    let (message, thread) = (run.message_id.clone(), run.new.thread.clone());
    let to = OutboundTarget {
        platform: run.new.platform,
        channel_id: run.new.channel_id.clone(),
        thread: match run.new.platform {
            Platform::Slack => thread.or(message),
            Platform::Discord | Platform::Telegram | Platform::Console => message.or(thread),
        },
    };
    Queued::post(
        to,
        OutboundMessage::text(text.to_owned()).with_visibility(Visibility::Channel),
    )
}

/// How an action that ran to its end (or its timeout) ended, its output redacted of `secrets`.
fn ended_as(outcome: ActionOutcome, secrets: &[secrecy::SecretString]) -> (RunState, RunResult) {
    let state = if outcome.timed_out {
        RunState::TimedOut
    } else if outcome.success {
        RunState::Succeeded
    } else {
        RunState::Failed
    };
    let result = RunResult {
        code: outcome.code,
        duration: outcome.duration,
        output: redact(&outcome.output, secrets),
        truncated: outcome.truncated,
    };
    (state, result)
}

/// What a request's channel is told when its start could not be audited (so nothing ran).
fn not_started(id: RunId, request_id: &RequestId) -> String {
    format!(
        "❌ Request #{id} did not run: opsbot could not record its start in the audit log, so it \
         started nothing. Ask again once opsbot's store is healthy (reference {request_id})."
    )
}

/// Longest output posted in chat (under Slack's 40,000-character message limit; adapters of
/// platforms with smaller limits send long text as a file). The stored result keeps up to
/// the runner's cap.
const POSTED_OUTPUT_CHARS: usize = 30_000;

/// Tries at recording a run's result when the store fails (about 4 s in all).
const RECORD_TRIES: u32 = 4;

fn render_result(
    id: RunId,
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
        RunState::Cancelled => {
            format!("⏹ #{id} {line} was cancelled after {took}; everything it started was killed.")
        }
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
