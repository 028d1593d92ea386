//! The router: one fixed pipeline for every command from every platform.
//! parse -> look up -> authorize -> bind arguments -> rate limit -> run -> audit -> reply.
//! Every attempt ends in one [`Outcome`], flows through [`Router::finish`] (the single error
//! sink), and is committed to the audit log before its reply is returned. Internal errors are
//! logged with their cause chain; users only ever see a short sentence and the request id.

mod alerting;
pub mod authz;
pub mod bind;
pub mod builtins;
mod incidents;
pub mod parse;
pub mod runbook;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

use crate::actions::alerts::{AlertService, Escalation};
use crate::actions::health::HealthChecks;
use crate::catalog::Catalog;
use crate::domain::{
    AuditEntry, BoundArgs, Directory, EventPayload, InboundEvent, Outcome, RateQuota, Reply,
    RequestId, Requester, ResponseTargets,
};
use crate::metrics::Metrics;
use crate::ports::{
    ActionRunner, ChatAction, ChatOutbound, Clock, EnvLookup, LimitDecision, OutboundMessage,
    RateLimiter, SilenceSync, Store,
};

use alerting::AlertCommands;
use authz::{Authorized, BuiltinAccess, Target, authorize};
use bind::bind;
use builtins::BuiltinCall;
pub use incidents::IncidentService;
use parse::{ParseError, ParsedCommand, parse};
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
    pub response_targets: ResponseTargets,
    pub escalation: Escalation,
    /// Writes silences back to Alertmanager, when `alerts.alertmanager_url` is set.
    pub silence_sync: Option<Arc<dyn SilenceSync>>,
    pub runner: Arc<dyn ActionRunner>,
    /// Edits the bot's own messages (an approval request once it is decided).
    pub outbound: Arc<dyn ChatOutbound>,
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
    pub pending_run: Option<i64>,
}

impl Response {
    /// The reply as a message for a channel: an approval request carries Approve and Deny
    /// buttons (they run `/approve ID` and `/deny ID` as whoever presses them).
    pub fn message(&self) -> Option<OutboundMessage> {
        let reply = self.reply.as_ref()?;
        let message = OutboundMessage::text(reply.text.clone());
        Some(match self.pending_run {
            Some(run) => message.with_actions(vec![
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
            ]),
            None => message,
        })
    }
}

/// A command that ran: what to answer, what to add to the audit record.
struct Done {
    text: String,
    detail: String,
    pending_run: Option<i64>,
    /// The request whose action ran while handling this command (its start is already audited).
    ran: Option<i64>,
}

impl Done {
    fn text(text: String) -> Self {
        Self {
            text,
            detail: String::new(),
            pending_run: None,
            ran: None,
        }
    }
}

/// Why a command did not run. Each variant maps to one audit outcome.
enum Refusal {
    Invalid(String),
    Denied(String),
    Limited { message: String, notify: bool },
    Failed(anyhow::Error),
}

/// What was attempted, as far as it was understood; for the audit record.
struct Attempt {
    command: String,
    args: String,
}

/// How long a "slow down" notice silences further notices to the same person for the same limit.
const LIMIT_NOTICE_MIN: Duration = Duration::from_secs(5);

pub struct Router {
    deps: RouterDeps,
    incidents: IncidentService,
    alert_commands: AlertCommands,
    /// (limit key) -> until when further limited replies are withheld.
    limit_notices: Mutex<HashMap<String, Instant>>,
    in_flight: TaskTracker,
}

impl Router {
    pub fn new(deps: RouterDeps) -> Self {
        let incidents = IncidentService::new(
            deps.store.clone(),
            deps.store.clone(),
            deps.clock.clone(),
            deps.directory.clone(),
            deps.response_targets,
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
            incidents,
            alert_commands,
            limit_notices: Mutex::new(HashMap::new()),
            in_flight: TaskTracker::new(),
        }
    }

    /// Work accepted from a platform and not yet answered: a command being handled and its
    /// answer being posted. Adapters run that work through it (`spawn`, or hold a `token()`)
    /// so that shutdown can wait for it: the platform was told "received" and will not send
    /// the event again.
    pub fn in_flight(&self) -> &TaskTracker {
        &self.in_flight
    }

    pub fn catalog(&self) -> &Catalog {
        &self.deps.catalog
    }

    /// Incidents and their timeline (the CLI's `opsbot postmortem` drafts through it).
    pub fn incidents(&self) -> &IncidentService {
        &self.incidents
    }

    /// Runs one inbound event through the whole pipeline.
    pub async fn handle(&self, ev: &InboundEvent) -> Response {
        let request_id = RequestId::new();
        let span = info_span!("command", request_id = %request_id, user = %ev.user, channel = %ev.channel.id);
        self.handle_inner(ev, request_id).instrument(span).await
    }

    async fn handle_inner(&self, ev: &InboundEvent, request_id: RequestId) -> Response {
        let started = Instant::now();
        let text = match &ev.payload {
            EventPayload::Command(t) => t,
            EventPayload::Undecodable { byte_len } => {
                let attempt = Attempt {
                    command: "?".into(),
                    args: format!("<{byte_len} bytes, not UTF-8>"),
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
                let requester = self.deps.directory.resolve(&ev.user);
                let attempt = |command: String| Attempt {
                    command,
                    args: format!("{emoji} on message {message_id}"),
                };
                return match self
                    .react(ev, &request_id, &requester, emoji, message_id, *added)
                    .await
                {
                    // A reaction on anything else is ordinary chat.
                    Ok(None) => Response {
                        request_id,
                        outcome: None,
                        reply: None,
                        pending_run: None,
                    },
                    // Toggling a reaction costs nothing, so refusals are rate limited like
                    // commands: past the person's limit they are dropped unaudited, unanswered.
                    Ok(Some((_, Err(_)))) | Err(_)
                        if self.reaction_refusals_exhausted(&requester).await =>
                    {
                        Response {
                            request_id,
                            outcome: None,
                            reply: None,
                            pending_run: None,
                        }
                    }
                    Ok(Some((command, result))) => {
                        self.finish(ev, request_id, started, attempt(command), result)
                            .await
                    }
                    Err(refusal) => {
                        self.finish(
                            ev,
                            request_id,
                            started,
                            attempt("react".into()),
                            Err(refusal),
                        )
                        .await
                    }
                };
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
                    }),
                    request_id,
                    pending_run: None,
                };
            }
            Err(e) => {
                let attempt = Attempt {
                    command: "?".into(),
                    args: text.chars().take(200).collect(),
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
        };
        let result = self.pipeline(ev, &request_id, &parsed).await;
        self.finish(ev, request_id, started, attempt, result).await
    }

    async fn pipeline(
        &self,
        ev: &InboundEvent,
        request_id: &RequestId,
        parsed: &ParsedCommand,
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
        let requester = self.deps.directory.resolve(&ev.user);
        let authorized = authorize(&requester, target, &ev.channel, &self.deps.access)
            .map_err(Refusal::Denied)?;
        let call = match authorized.target() {
            Target::Builtin(b) => {
                Call::Builtin(b.bind_words(&parsed.words).map_err(Refusal::Invalid)?)
            }
            Target::Runbook(spec) => {
                let (mode, words) = runbook::split_mode(&parsed.words).map_err(Refusal::Invalid)?;
                Call::Runbook(bind(spec, &words).map_err(Refusal::Invalid)?, mode)
            }
        };
        self.check_limits(ev, &requester, &authorized).await?;
        self.run(ev, request_id, &requester, authorized, call).await
    }

    /// Counts the request against every limit that applies, most specific first, so a person
    /// who is over their own limit does not also burn the shared budgets.
    async fn check_limits(
        &self,
        ev: &InboundEvent,
        requester: &Requester,
        authorized: &Authorized<Target>,
    ) -> Result<(), Refusal> {
        let who = match requester.person() {
            Some(p) => format!("person:{}", p.name),
            None => format!("user:{}", requester.user()),
        };
        let channel = format!("{}:{}", ev.platform, ev.channel.id);
        let name = authorized.target().name();
        let l = &self.deps.limits;
        let mut keys: Vec<(String, Option<RateQuota>, String)> = Vec::with_capacity(6);
        if let Target::Runbook(spec) = authorized.target() {
            keys.push((
                format!("cmd:{name}:{who}"),
                spec.limits.per_user,
                format!("/{name} per person"),
            ));
            keys.push((
                format!("cmd:{name}:ch:{channel}"),
                spec.limits.per_channel,
                format!("/{name} in this channel"),
            ));
        }
        keys.push((who.clone(), l.per_user, "commands per person".into()));
        keys.push((
            format!("ch:{channel}"),
            l.per_channel,
            "commands in this channel".into(),
        ));
        keys.push((
            format!("cmd:{name}"),
            l.per_command,
            format!("/{name} for everyone"),
        ));
        keys.push(("global".into(), l.global, "commands for everyone".into()));
        for (key, quota, what) in keys {
            let Some(quota) = quota else { continue };
            let decision = self.deps.limiter.check(&key, quota).await.map_err(|e| {
                Refusal::Failed(anyhow::Error::new(e).context("rate limiter check"))
            })?;
            if let LimitDecision::Limited { retry_after } = decision {
                let retry = retry_after.max(Duration::from_secs(1));
                let notify = self.first_notice(&format!("{who}|{key}"), retry);
                return Err(Refusal::Limited {
                    message: format!(
                        "Slow down: limit for {what} reached ({} per {}). Try again in {}s.",
                        quota.count,
                        human(quota.per),
                        retry.as_secs_f64().ceil() as u64
                    ),
                    notify,
                });
            }
        }
        Ok(())
    }

    /// Counts a refused reaction against the per-person limit (its own budget, so refused
    /// reactions never use up someone's commands); true once it is exhausted. A limiter
    /// failure lets the refusal through: it is audited, nothing runs.
    async fn reaction_refusals_exhausted(&self, requester: &Requester) -> bool {
        let Some(quota) = self.deps.limits.per_user else {
            return false;
        };
        let who = match requester.person() {
            Some(p) => format!("person:{}", p.name),
            None => format!("user:{}", requester.user()),
        };
        match self
            .deps
            .limiter
            .check(&format!("react:{who}"), quota)
            .await
        {
            Ok(LimitDecision::Limited { .. }) => {
                tracing::debug!(%who, "dropping a refused reaction over the limit");
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(error = %e, "rate limiter unavailable for a reaction");
                false
            }
        }
    }

    /// True the first time a person hits a limit within its window, so repeats get no reply.
    fn first_notice(&self, key: &str, retry: Duration) -> bool {
        let now = Instant::now();
        let mut notices = self.limit_notices.lock().expect("limit notices poisoned");
        if notices.len() > 10_000 {
            notices.retain(|_, until| *until > now);
        }
        match notices.get(key) {
            Some(until) if *until > now => false,
            _ => {
                notices.insert(key.to_owned(), now + retry.max(LIMIT_NOTICE_MIN));
                true
            }
        }
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
                self.request_runbook(ev, request_id, requester, spec, args, mode)
                    .await
            }
        }
    }

    /// The single sink: audits the attempt, logs failures with their cause chain, counts
    /// metrics, and chooses what the user sees.
    async fn finish(
        &self,
        ev: &InboundEvent,
        request_id: RequestId,
        started: Instant,
        attempt: Attempt,
        result: Result<Done, Refusal>,
    ) -> Response {
        let pending_run = result.as_ref().ok().and_then(|d| d.pending_run);
        let ran = result.as_ref().ok().and_then(|d| d.ran);
        let (outcome, detail, mut text) = match result {
            Ok(done) => (Outcome::Ok, done.detail, Some(done.text)),
            Err(Refusal::Invalid(m)) => (Outcome::Invalid, m.clone(), Some(m)),
            Err(Refusal::Denied(m)) => (Outcome::Denied, m.clone(), Some(m)),
            Err(Refusal::Limited { message, notify }) => {
                (Outcome::Limited, message.clone(), notify.then_some(message))
            }
            Err(Refusal::Failed(err)) => {
                error!(request_id = %request_id, error = format!("{err:#}"), "command failed");
                (
                    Outcome::Failed,
                    "internal error (see log)".to_owned(),
                    Some(internal_error_text(&request_id)),
                )
            }
        };
        let mut outcome_final = outcome;
        let detail_for_timeline = detail.clone();
        let entry = AuditEntry {
            request_id: request_id.clone(),
            at: self.deps.clock.now(),
            actor: ev.user.to_string(),
            channel: format!("{}:{}", ev.platform, ev.channel.id),
            command: attempt.command.clone(),
            args: attempt.args.clone(),
            outcome,
            detail,
        };
        if let Err(e) = self.deps.store.append_audit(entry).await {
            // No unaudited answers: the result is withheld rather than returned unrecorded.
            error!(request_id = %request_id, error = format!("{:#}", anyhow::Error::new(e)), "audit append failed");
            outcome_final = Outcome::Failed;
            text = Some(match (ran, text) {
                // The action already ran (its start is audited): report it, flag the gap.
                (Some(run), Some(result)) => format!(
                    "{result}\n(The result of #{run} could not be written to the audit log; request id {request_id}.)"
                ),
                _ => format!(
                    "I could not record this request in the audit log, so I did not act on it (request id {request_id})."
                ),
            });
        }
        if outcome_final == Outcome::Ok
            && on_timeline(
                &attempt.command,
                self.deps.catalog.get(&attempt.command).is_some(),
            )
        {
            let args = if attempt.args.is_empty() {
                String::new()
            } else {
                format!(" {}", attempt.args)
            };
            let note = if detail_for_timeline.is_empty() {
                String::new()
            } else {
                format!(" ({detail_for_timeline})")
            };
            self.incidents
                .record_on_incident(ev, format!("/{}{args}{note}", attempt.command))
                .await;
        }
        let elapsed = started.elapsed();
        let label = if builtins::find(&attempt.command).is_some()
            || self.deps.catalog.get(&attempt.command).is_some()
        {
            attempt.command.as_str()
        } else {
            "unknown"
        };
        self.deps
            .metrics
            .observe_command(label, outcome_final, elapsed);
        match outcome_final {
            Outcome::Ok => {
                info!(command = label, outcome = %outcome_final, elapsed_ms = elapsed.as_millis() as u64, "command handled")
            }
            Outcome::Failed => {
                warn!(command = label, outcome = %outcome_final, elapsed_ms = elapsed.as_millis() as u64, "command failed")
            }
            Outcome::Denied | Outcome::Limited | Outcome::Invalid => {
                info!(command = label, outcome = %outcome_final, elapsed_ms = elapsed.as_millis() as u64, "command refused")
            }
        }
        Response {
            outcome: Some(outcome_final),
            reply: text.map(|text| Reply {
                text,
                request_id: request_id.clone(),
            }),
            request_id,
            pending_run: if outcome_final == Outcome::Ok {
                pending_run
            } else {
                None
            },
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

fn human(d: Duration) -> String {
    match d.as_secs() {
        1 => "second".into(),
        60 => "minute".into(),
        3600 => "hour".into(),
        86_400 => "day".into(),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        _ => format!("{}s", d.as_secs_f64()),
    }
}
