//! Runbook requests: dry runs, approval-gated requests, votes by command or reaction,
//! denial, cancellation, break-glass, and execution exactly once. Every state change goes
//! through `RunStore::transition`, a conditional update, so of any number of racing
//! approvals (or replicas) exactly one moves a request to `approved` and runs it.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, warn};

use crate::actions::health::{CheckState, HealthChecks};
use crate::actions::render::{Plan, RenderedAction, redact, render};
use crate::catalog::{ApprovalSpec, Catalog, CommandSpec, Procedure};
use crate::domain::{
    ActionKind, AuditEntry, BoundArgs, Directory, InboundEvent, NewRun, Outcome, Person, Platform,
    RequestId, Requester, Role, Run, RunId, RunResult, RunState, Visibility, Vote, human_duration,
    normalize_emoji,
};
use crate::metrics::Metrics;
use crate::ports::{
    ActionRunner, Clock, EnvLookup, OutboundMessage, OutboundTarget, OutboxSignal, Queued,
    RunNotice, Store, StoreError, untold,
};

use super::parse::Word;
use super::{Done, OrNoSuch, OrRefuse, Reacted, Reaction, Refusal};

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

impl ApprovalSettings {
    pub(crate) fn is_approve(&self, emoji: &str) -> bool {
        self.approve_emoji
            .iter()
            .any(|e| normalize_emoji(e) == emoji)
    }

    fn is_deny(&self, emoji: &str) -> bool {
        self.deny_emoji.iter().any(|e| normalize_emoji(e) == emoji)
    }

    /// The approve and deny reactions an approval request names (the first of each).
    fn shown(&self) -> (String, String) {
        let first = |emoji: &[String], default: &'static str| {
            emoji.first().cloned().unwrap_or_else(|| default.to_owned())
        };
        (
            first(&self.approve_emoji, "✅"),
            first(&self.deny_emoji, "❌"),
        )
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

impl Notice {
    /// The notice as the outbox queues it.
    pub fn queued(&self) -> Queued {
        let message = OutboundMessage::text(self.text.clone()).with_visibility(Visibility::Channel);
        let to = OutboundTarget {
            platform: self.platform,
            channel_id: self.channel_id.clone(),
            thread: self.thread.clone(),
        };
        Queued::post(
            to,
            if self.urgent {
                message.urgent()
            } else {
                message
            },
        )
    }
}

/// An audit record about `run` (its start, how it ended, its interruption), in the run's own
/// channel and with its command and arguments.
fn run_audit_entry(
    run: &Run,
    request_id: RequestId,
    actor: String,
    at: DateTime<Utc>,
    outcome: Outcome,
    detail: String,
) -> AuditEntry {
    AuditEntry {
        request_id,
        at,
        actor,
        channel: format!("{}:{}", run.new.platform, run.new.channel_id),
        command: run.new.command.clone(),
        args: BoundArgs(run.new.args.clone()).display(),
        outcome,
        detail,
    }
}

/// How a pending request ends without running: `/deny` or `/cancel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    Denied,
    Cancelled,
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
                    crate::router::bind::check_visible("the break-glass reason", reason)?;
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

mod execute;
mod gates;
mod lifecycle;
mod progress;
mod publish;
mod request;
mod retry;
mod steps;
mod votes;

/// Runbook requests and runs, with only what they need: the runs (and the audit log, for
/// a run's start; the outbox, where a run's result and a decided request's edit are
/// queued with the move that decides them), the runner, the
/// catalogue and directory, the clock, the outbox's wake-up and the approval settings.
/// Cheap to clone (shared handles), for the runs it finishes in the background.
#[derive(Clone)]
pub struct RunbookService {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) runner: Arc<dyn ActionRunner>,
    /// The config's health checks, for `wait_for` steps that name one.
    pub(crate) health: Arc<HealthChecks>,
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) directory: Arc<Directory>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) outbox: OutboxSignal,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) approvals: ApprovalSettings,
    /// Reads opsbot's environment (pass-through variables and secrets for runbooks).
    pub(crate) env: EnvLookup,
    /// Folder relative runbook paths resolve against (the config file's folder).
    pub(crate) base_dir: std::path::PathBuf,
    /// The router's in-flight work, so shutdown waits for approved runs it finishes there.
    pub(crate) in_flight: TaskTracker,
}

impl RunbookService {
    /// The steps of run `run`'s command as the catalogue has them now; `None` for a single
    /// action, or a command no longer there.
    fn workflow_of(&self, run: &Run) -> Option<&crate::catalog::Workflow> {
        match self.catalog.get(&run.new.command).map(|s| &s.procedure) {
            Some(Procedure::Steps(w)) => Some(w),
            _ => None,
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Moves run `id` from `from` to `to` (conditional: false when it is no longer `from`) and
    /// leases it from `now`, so the sweeper leaves it alone while it is being run.
    async fn claim(
        &self,
        id: RunId,
        from: RunState,
        to: RunState,
        now: DateTime<Utc>,
        what: &'static str,
    ) -> Result<bool, Refusal> {
        self.store
            .transition(id, from, to, now, Some(now + lease()))
            .await
            .or_refuse(what)
    }

    /// An audit record about `run` by the person whose event `ev` (request `request_id`)
    /// moves it, at the clock's now.
    fn run_entry(
        &self,
        run: &Run,
        (ev, request_id): (&InboundEvent, &RequestId),
        outcome: Outcome,
        detail: String,
    ) -> AuditEntry {
        let (actor, at) = (ev.user.to_string(), self.now());
        run_audit_entry(run, request_id.clone(), actor, at, outcome, detail)
    }

    fn render_for(&self, spec: &CommandSpec, args: &BoundArgs) -> Result<RenderedAction, Refusal> {
        // The reasons are opsbot's own sentences naming variables, never their values.
        render(spec, args, &*self.env)
            .map_err(|e| Refusal::Unavailable(format!("/{} cannot run: {e}.", spec.name)))
    }
}

pub(crate) fn lease() -> chrono::Duration {
    chrono::Duration::from_std(LEASE).expect("lease fits")
}
