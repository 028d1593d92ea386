//! The router: one fixed pipeline for every command from every platform.
//! parse -> look up -> authorize -> bind arguments -> rate limit -> run -> audit -> reply.
//! Every attempt ends in one [`Outcome`], flows through [`Router::finish`] (the single error
//! sink), and is committed to the audit log before its reply is returned. Internal errors are
//! logged with their cause chain; users only ever see a short sentence and the request id.

mod alerting;
pub mod authz;
pub mod bind;
pub mod builtins;
mod finish;
mod incidents;
mod limits;
pub mod parse;
mod reactions;
pub mod runbook;
mod sweep;

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::task::TaskTracker;
use tracing::{Instrument, info_span};

use crate::actions::alerts::{AlertService, Escalation};
use crate::actions::escalation::Escalations;
use crate::actions::health::HealthChecks;
use crate::actions::oncall::OnCall;
use crate::actions::schedules::Schedules;
use crate::catalog::Catalog;
use crate::domain::{
    BoundArgs, Directory, EventPayload, InboundEvent, Outcome, RateQuota, Reply, RequestId,
    Requester, RunId, SeverityScheme, Visibility,
};
use crate::metrics::Metrics;
use crate::ports::{
    ActionRunner, ChatAction, Clock, EnvLookup, OutboundMessage, OutboxSignal, Pager, RateLimiter,
    SilenceSync, Store, StoreError,
};

use alerting::AlertCommands;
use authz::{Authorized, BuiltinAccess, Target, authorize};
use bind::bind;
use builtins::BuiltinCall;
pub use incidents::IncidentService;
use parse::{ParseError, ParsedCommand, parse};
use runbook::RunbookService;
pub use runbook::{ApprovalSettings, Notice};

/// Limits that apply to every command, from `[limits]` in the config.
#[derive(Clone, Copy, Debug, Default)]
pub struct GlobalLimits {
    pub global: Option<RateQuota>,
    pub per_user: Option<RateQuota>,
    pub per_channel: Option<RateQuota>,
    pub per_command: Option<RateQuota>,
}

/// Everything the router needs, as ports.
pub struct RouterDeps {
    pub bot_name: String,
    pub catalog: Arc<Catalog>,
    pub directory: Arc<Directory>,
    pub access: BuiltinAccess,
    pub limits: GlobalLimits,
    pub limiter: Arc<dyn RateLimiter>,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub health: Arc<HealthChecks>,
    pub metrics: Arc<Metrics>,
    pub alerts: Arc<AlertService>,
    /// The incident severities, most severe first, with their acknowledgement targets.
    pub severities: Arc<SeverityScheme>,
    pub escalation: Escalation,
    /// Schedules, overrides and mentions of the people on call.
    pub oncall: Arc<OnCall>,
    /// Pages people's phones through the `[[paging.services]]` (`/page`).
    pub pager: Arc<dyn Pager>,
    /// Escalation policies walked for alert groups and overdue incidents.
    pub escalations: Arc<Escalations>,
    /// Scheduled runs: `/schedules` and `/schedule pause|resume`.
    pub schedules: Arc<Schedules>,
    /// Writes silences back to Alertmanager, when `alerts.alertmanager_url` is set.
    pub silence_sync: Option<Arc<dyn SilenceSync>>,
    pub runner: Arc<dyn ActionRunner>,
    /// Wakes the outbox's deliverer after something is queued (a decided request's edit, an
    /// alert reminder).
    pub outbox: OutboxSignal,
    pub approvals: ApprovalSettings,
    /// Reads opsbot's environment (pass-through variables and secrets for runbooks).
    pub env: EnvLookup,
    /// Folder relative runbook paths resolve against (the config file's folder).
    pub base_dir: std::path::PathBuf,
}

/// What handling one event produced.
#[derive(Clone, Debug)]
pub struct Response {
    pub request_id: RequestId,
    /// `None` when the text was not a command attempt (nothing audited).
    pub outcome: Option<Outcome>,
    /// `None` when a reply is deliberately withheld (repeated rate-limit hits).
    pub reply: Option<Reply>,
    /// Set when the reply is an approval request: the adapter posts it, then calls
    /// [`Router::bind_message`] so reactions on that message reach the request.
    pub pending_run: Option<RunId>,
    /// The run this answer started or continued (not an approval request): the adapter
    /// offers it the answer's message with [`Router::bind_progress`], so a run of steps with
    /// no message of its own yet shows its progress there.
    pub progress_run: Option<RunId>,
}

impl Response {
    /// The reply as a message for a channel: an approval request carries Approve and Deny
    /// buttons (they run `/approve ID` and `/deny ID` as whoever presses them).
    pub fn message(&self) -> Option<OutboundMessage> {
        let reply = self.reply.as_ref()?;
        let message = OutboundMessage::text(reply.text.clone()).with_visibility(reply.visibility);
        Some(match self.pending_run {
            Some(run) => message.with_actions(decision_actions(run)),
            None => message,
        })
    }
}

/// The Approve and Deny buttons of approval request `run`.
pub(crate) fn decision_actions(run: RunId) -> Vec<ChatAction> {
    vec![
        ChatAction {
            label: "Approve".into(),
            command: format!("/approve {run}"),
            danger: false,
        },
        ChatAction {
            label: "Deny".into(),
            command: format!("/deny {run}"),
            danger: true,
        },
    ]
}

/// A command that ran: what to answer, what to add to the audit record.
struct Done {
    text: String,
    detail: String,
    pending_run: Option<RunId>,
    /// The request whose action this command started (its start is already audited); it may
    /// still be running, finished in the background.
    ran: Option<RunId>,
    /// The answer should become `ran`'s progress message (a run of steps going on in the
    /// background without a message of its own).
    progress: bool,
}

impl Done {
    fn text(text: String) -> Self {
        Self {
            text,
            detail: String::new(),
            pending_run: None,
            ran: None,
            progress: false,
        }
    }
}

/// Why a command did not run. Each variant maps to one audit outcome.
enum Refusal {
    Invalid(String),
    Denied(String),
    Limited {
        message: String,
        notify: bool,
    },
    /// Cannot run until an operator fixes something (a secret not set): audited as failed,
    /// but the person is told what, since the message names no value.
    Unavailable(String),
    Failed(anyhow::Error),
}

/// A reaction added to or removed from a message, as the pipeline passes it on.
#[derive(Clone, Copy)]
struct Reaction<'a> {
    emoji: &'a str,
    message_id: &'a str,
    added: bool,
}

/// What a reaction amounts to: `Ok(None)` when it is about nothing opsbot tracks; otherwise
/// the command it stands for (for the audit record) and that command's result.
type Reacted = Result<Option<(String, Result<Done, Refusal>)>, Refusal>;

/// A store failure while handling a command: internal, so the user sees only the request id
/// and the log gets `what` was being done with the cause chain.
trait OrRefuse<T> {
    fn or_refuse(self, what: &'static str) -> Result<T, Refusal>;
}

impl<T> OrRefuse<T> for Result<T, StoreError> {
    fn or_refuse(self, what: &'static str) -> Result<T, Refusal> {
        self.map_err(|e| Refusal::Failed(anyhow::Error::new(e).context(what)))
    }
}

/// A lookup by number: a store failure as in `OrRefuse`; no such record is the user's mistake,
/// told as "there is no {thing} #{id}."
trait OrNoSuch<T> {
    fn or_no_such(self, what: &'static str, thing: &str, id: impl Display) -> Result<T, Refusal>;
}

impl<T> OrNoSuch<T> for Result<Option<T>, StoreError> {
    fn or_no_such(self, what: &'static str, thing: &str, id: impl Display) -> Result<T, Refusal> {
        self.or_refuse(what)?
            .ok_or_else(|| Refusal::Invalid(format!("there is no {thing} #{id}.")))
    }
}

/// What was attempted, as far as it was understood; for the audit record.
struct Attempt {
    command: String,
    args: String,
    /// Who sees the answer if the command succeeds (a refusal is always the requester's).
    visibility: Visibility,
}

/// How long a "slow down" notice silences further notices to the same person for the same limit.
const LIMIT_NOTICE_MIN: Duration = Duration::from_secs(5);

pub struct Router {
    deps: RouterDeps,
    runbooks: RunbookService,
    incidents: IncidentService,
    alert_commands: AlertCommands,
    /// (limit key) -> until when further limited replies are withheld.
    limit_notices: Mutex<HashMap<String, Instant>>,
    /// (limit key) -> when each count given back for a failed attempt lapses (`limits.rs`).
    limit_credits: Mutex<HashMap<String, Vec<Instant>>>,
    in_flight: TaskTracker,
}

impl Router {
    pub fn new(deps: RouterDeps) -> Self {
        let in_flight = TaskTracker::new();
        let runbooks = RunbookService {
            store: deps.store.clone(),
            runner: deps.runner.clone(),
            health: deps.health.clone(),
            catalog: deps.catalog.clone(),
            directory: deps.directory.clone(),
            clock: deps.clock.clone(),
            outbox: deps.outbox.clone(),
            metrics: deps.metrics.clone(),
            approvals: deps.approvals.clone(),
            env: deps.env.clone(),
            base_dir: deps.base_dir.clone(),
            in_flight: in_flight.clone(),
        };
        let incidents = IncidentService::new(
            deps.store.clone(),
            deps.store.clone(),
            deps.clock.clone(),
            deps.directory.clone(),
            deps.severities.clone(),
            deps.escalations.clone(),
        );
        let alert_commands = AlertCommands::new(
            deps.store.clone(),
            deps.alerts.clone(),
            deps.clock.clone(),
            deps.access.respond.clone(),
            deps.silence_sync.clone(),
        );
        Self {
            deps,
            runbooks,
            incidents,
            alert_commands,
            limit_notices: Mutex::new(HashMap::new()),
            limit_credits: Mutex::new(HashMap::new()),
            in_flight,
        }
    }

    /// Records the chat message approvers react to, once the adapter has posted it.
    pub async fn bind_message(&self, run: RunId, message_id: &str) -> Result<(), StoreError> {
        self.runbooks.bind_message(run, message_id).await
    }

    /// Makes `message_id` the progress message of run `run` if it is still going and has no
    /// message yet (a run that needed no approval); otherwise nothing changes.
    pub async fn bind_progress(&self, run: RunId, message_id: &str) -> Result<(), StoreError> {
        self.runbooks.bind_progress(run, message_id).await
    }

    /// Cancels (audited) a pending request whose approval message the platform refused to post.
    pub async fn withdraw_unposted(
        &self,
        run: RunId,
        request_id: RequestId,
        why: &str,
    ) -> Result<bool, StoreError> {
        self.runbooks.withdraw_unposted(run, request_id, why).await
    }

    /// Work accepted from a platform and not yet answered: a command being handled and its
    /// answer being posted. Adapters run that work through it (`spawn`, or hold a `token()`)
    /// so that shutdown can wait for it: the platform was told "received" and will not send
    /// the event again.
    pub fn in_flight(&self) -> &TaskTracker {
        &self.in_flight
    }

    /// The name people address the bot by (in hints such as "invite @opsbot").
    pub fn bot_name(&self) -> &str {
        &self.deps.bot_name
    }

    pub fn catalog(&self) -> &Catalog {
        &self.deps.catalog
    }

    /// The time every stored timestamp is taken from (adapters check signature freshness by it).
    pub fn clock(&self) -> &dyn Clock {
        self.deps.clock.as_ref()
    }

    /// Incidents and their timeline (the CLI's `opsbot postmortem` drafts through it).
    pub fn incidents(&self) -> &IncidentService {
        &self.incidents
    }

    /// Runs one inbound event through the whole pipeline.
    pub async fn handle(&self, ev: &InboundEvent) -> Response {
        self.handle_as(ev, self.deps.directory.resolve(&ev.user))
            .await
    }

    /// Runs `ev` through the whole pipeline as `requester`, whom its sender is taken to be:
    /// the directory's person for a platform's event, a schedule's own identity for its runs
    /// (`crate::scheduler`), which no platform event can claim.
    pub async fn handle_as(&self, ev: &InboundEvent, requester: Requester) -> Response {
        let request_id = RequestId::new();
        let span = info_span!("command", request_id = %request_id, user = %ev.user, channel = %ev.channel.id);
        self.handle_inner(ev, request_id, requester)
            .instrument(span)
            .await
    }

    /// Scheduled runs and `/schedules`.
    pub fn schedules(&self) -> &Arc<Schedules> {
        &self.deps.schedules
    }

    async fn handle_inner(
        &self,
        ev: &InboundEvent,
        request_id: RequestId,
        requester: Requester,
    ) -> Response {
        let started = Instant::now();
        let text = match &ev.payload {
            EventPayload::Command(t) => t,
            EventPayload::Undecodable { byte_len } => {
                let attempt = Attempt {
                    command: "?".into(),
                    args: format!("<{byte_len} bytes, not UTF-8>"),
                    visibility: Visibility::Requester,
                };
                let refusal = Refusal::Invalid(
                    "that message is not valid UTF-8 text, so I ignored it.".into(),
                );
                return self
                    .finish(ev, request_id, started, attempt, Err(refusal))
                    .await;
            }
            EventPayload::Reaction {
                emoji,
                message_id,
                added,
            } => {
                let reaction = Reaction {
                    emoji,
                    message_id,
                    added: *added,
                };
                return self
                    .handle_reaction(ev, request_id, started, reaction)
                    .await;
            }
        };
        let parsed = match parse(text, &self.deps.bot_name) {
            Ok(p) => p,
            // Ordinary chatter is not a command attempt: answer with a hint, audit nothing.
            Err(e @ (ParseError::Empty | ParseError::NotACommand)) => {
                return Response {
                    outcome: None,
                    reply: Some(Reply {
                        text: e.to_string(),
                        request_id: request_id.clone(),
                        visibility: Visibility::Requester,
                    }),
                    request_id,
                    pending_run: None,
                    progress_run: None,
                };
            }
            Err(e) => {
                let attempt = Attempt {
                    command: "?".into(),
                    args: text.chars().take(200).collect(),
                    visibility: Visibility::Requester,
                };
                return self
                    .finish(
                        ev,
                        request_id,
                        started,
                        attempt,
                        Err(Refusal::Invalid(format!("I could not read that: {e}."))),
                    )
                    .await;
            }
        };
        let attempt = Attempt {
            command: parsed.name.clone(),
            args: parsed.arg_text.chars().take(500).collect(),
            visibility: self.visibility(&parsed),
        };
        let result = self.pipeline(ev, &request_id, &parsed, &requester).await;
        self.finish(ev, request_id, started, attempt, result).await
    }

    async fn pipeline(
        &self,
        ev: &InboundEvent,
        request_id: &RequestId,
        parsed: &ParsedCommand,
        requester: &Requester,
    ) -> Result<Done, Refusal> {
        let target = if let Some(b) = builtins::find(&parsed.name) {
            Target::Builtin(b)
        } else if let Some(spec) = self.deps.catalog.get(&parsed.name) {
            Target::Runbook(spec.clone())
        } else {
            return Err(Refusal::Invalid(format!(
                "I don't know /{}. Try /help for the commands you can run.",
                parsed.name
            )));
        };
        let authorized = authorize(requester, target, &ev.channel, &self.deps.access)
            .map_err(Refusal::Denied)?;
        let call = match authorized.target() {
            Target::Builtin(b) => Call::Builtin(
                b.bind_words(&parsed.words, self.bind_context())
                    .map_err(Refusal::Invalid)?,
            ),
            Target::Runbook(spec) => {
                let (mode, words) = runbook::split_mode(&parsed.words).map_err(Refusal::Invalid)?;
                Call::Runbook(bind(spec, &words).map_err(Refusal::Invalid)?, mode)
            }
        };
        let counted = self.check_limits(ev, requester, &authorized).await?;
        let result = self.run(ev, request_id, requester, authorized, call).await;
        self.settle(counted, &result);
        result
    }

    async fn run(
        &self,
        ev: &InboundEvent,
        request_id: &RequestId,
        requester: &Requester,
        authorized: Authorized<Target>,
        call: Call,
    ) -> Result<Done, Refusal> {
        match call {
            Call::Builtin(call) => {
                self.run_builtin(ev, request_id, requester, &authorized, call)
                    .await
            }
            Call::Runbook(args, mode) => {
                let Target::Runbook(spec) = authorized.target() else {
                    return Err(Refusal::Failed(anyhow::anyhow!(
                        "runbook call bound to a built-in"
                    )));
                };
                self.runbooks
                    .request_runbook(ev, request_id, requester, spec, args, mode)
                    .await
            }
        }
    }
}

impl Router {
    /// What binding a built-in's words reads of the config.
    fn bind_context(&self) -> builtins::BindContext<'_> {
        builtins::BindContext {
            severities: &self.deps.severities,
        }
    }

    /// Who sees `parsed`'s answer when it succeeds: the channel for what changes shared state
    /// (the built-ins that go on the timeline, `/incident` except its look-ups, runbook
    /// requests and runs), the requester for look-ups and dry runs.
    fn visibility(&self, parsed: &ParsedCommand) -> Visibility {
        let shared = if let Some(b) = builtins::find(&parsed.name) {
            b.on_timeline
                || matches!(
                    b.bind_words(&parsed.words, self.bind_context()),
                    Ok(BuiltinCall::Incident(cmd)) if cmd.changes_state()
                )
        } else if self.deps.catalog.get(&parsed.name).is_some() {
            !matches!(
                runbook::split_mode(&parsed.words),
                Ok((runbook::RunMode::DryRun, _))
            )
        } else {
            false
        };
        if shared {
            Visibility::Channel
        } else {
            Visibility::Requester
        }
    }
}

/// Whether a successful command belongs on the channel's incident timeline: anything that
/// changes something (runbooks, and the built-ins whose row says so), not look-ups.
fn on_timeline(command: &str, is_runbook: bool) -> bool {
    is_runbook || builtins::find(command).is_some_and(|b| b.on_timeline)
}

enum Call {
    Builtin(BuiltinCall),
    Runbook(BoundArgs, runbook::RunMode),
}

pub fn internal_error_text(request_id: &RequestId) -> String {
    format!(
        "Something went wrong on my side (request id {request_id}); the details are in opsbot's log."
    )
}
