//! Running the built-ins: [`Router::run_builtin`] matches every [`BuiltinCall`], so a new
//! built-in does not compile until it has a handler. The small handlers (help, whoami, status,
//! audit, oncall, page) live here; alert, incident and approval ones in their own router
//! modules.

use std::fmt::Write as _;
use std::sync::Arc;

use super::{BUILTINS, BuiltinCall, OnCallCmd, find};
use crate::actions::health;
use crate::actions::oncall::OverrideError;
use crate::actions::schedules::PauseError;
use crate::catalog::{ArgKind, CommandSpec};
use crate::domain::{AuditRecord, InboundEvent, Person, RequestId, Requester, Visibility, clip};
use crate::ports::{
    OutboundMessage, OutboundTarget, Page, PageAction, PageSeverity, Queued, StoreError,
};
use crate::router::authz::{Authorized, RoleList, Target, authorize, authorize_sub, may_run};
use crate::router::runbook::Ending;
use crate::router::{Done, OrRefuse, Refusal, Router};

impl Router {
    pub(in crate::router) async fn run_builtin(
        &self,
        ev: &InboundEvent,
        request_id: &RequestId,
        requester: &Requester,
        authorized: &Authorized<Target>,
        call: BuiltinCall,
    ) -> Result<Done, Refusal> {
        let text = match call {
            BuiltinCall::Help { topic } => self.help(ev, requester, topic.as_deref())?,
            BuiltinCall::Whoami => whoami(requester, authorized),
            BuiltinCall::Version => version(),
            BuiltinCall::Status { check } => self.status(check.as_deref()).await?,
            BuiltinCall::Audit { limit } => {
                let records = self.deps.store.recent_audit(limit).await.map_err(|e| {
                    Refusal::Failed(anyhow::Error::new(e).context("reading audit log"))
                })?;
                render_audit(&records)
            }
            BuiltinCall::Approve { run } => {
                return self.runbooks.approve(ev, request_id, requester, run).await;
            }
            BuiltinCall::Deny { run } => {
                return (self.runbooks)
                    .end((ev, request_id), requester, run, Ending::Denied)
                    .await;
            }
            BuiltinCall::Retry { run, from } => {
                // A retry is a new request of the command: the same people, in the same places.
                let (original, spec) = self.runbooks.retry_target(run).await?;
                let target = Target::Runbook(spec.clone());
                authorize(requester, target, &ev.channel, &self.deps.access)
                    .map_err(Refusal::Denied)?;
                // ... and within the command file's own limits, or /retry would get round them.
                let counted = self.check_command_limits(ev, requester, &spec).await?;
                let ctx = (ev, request_id);
                let retried = (self.runbooks)
                    .retry(ctx, requester, (original, spec), from.as_deref())
                    .await;
                self.settle(counted, &retried);
                return retried;
            }
            BuiltinCall::Cancel { run } => {
                return self.runbooks.cancel((ev, request_id), requester, run).await;
            }
            BuiltinCall::Alerts => self.alert_commands.list().await?,
            BuiltinCall::Ack { alert } => {
                let (done, what) = self.alert_commands.ack(requester, alert).await?;
                self.incidents
                    .link_to_channel_incident(ev, alert, what)
                    .await;
                return Ok(done);
            }
            BuiltinCall::Silence {
                matchers,
                duration,
                reason,
            } => {
                return self
                    .alert_commands
                    .silence(requester, matchers, duration, reason)
                    .await;
            }
            BuiltinCall::Unsilence { silence } => {
                return self.alert_commands.unsilence(requester, silence).await;
            }
            BuiltinCall::Resolve { alert } => {
                return self.alert_commands.resolve(requester, alert).await;
            }
            BuiltinCall::Incident(cmd) => {
                return self.incidents.command(ev, requester, cmd).await;
            }
            BuiltinCall::Postmortem { incident } => self.incidents.postmortem(ev, incident).await?,
            BuiltinCall::OnCall(cmd) => self.oncall(requester, authorized, cmd).await?,
            BuiltinCall::Page { who, reason } => {
                return self.page(ev, request_id, requester, &who, &reason).await;
            }
            BuiltinCall::Schedules => (self.deps.schedules.list().await)
                .map_err(|e| Refusal::Failed(anyhow::Error::new(e).context("listing schedules")))?,
            BuiltinCall::Schedule { pause, name } => {
                let by = requester.name();
                let text = (self.deps.schedules.set_paused(&name, pause, &by).await).map_err(
                    |e| match e {
                        PauseError::Store(e) => {
                            Refusal::Failed(anyhow::Error::new(e).context("pausing a schedule"))
                        }
                        unknown @ PauseError::Unknown(..) => Refusal::Invalid(unknown.to_string()),
                    },
                )?;
                return Ok(Done {
                    detail: format!("{} {name}", if pause { "paused" } else { "resumed" }),
                    ..Done::text(text)
                });
            }
        };
        Ok(Done::text(text))
    }

    async fn oncall(
        &self,
        requester: &Requester,
        authorized: &Authorized<Target>,
        cmd: OnCallCmd,
    ) -> Result<String, Refusal> {
        let oncall = &self.deps.oncall;
        let failed = |e: StoreError| Refusal::Failed(anyhow::Error::new(e).context("on-call"));
        match cmd {
            OnCallCmd::Show => oncall.show().await.map_err(failed),
            OnCallCmd::Override {
                schedule,
                person,
                duration,
                reason,
            } => {
                authorize_sub(
                    authorized,
                    RoleList::OnCall,
                    "oncall override",
                    &self.deps.access,
                )
                .map_err(Refusal::Denied)?;
                oncall
                    .add_override(&schedule, &person, duration, &requester.name(), &reason)
                    .await
                    .map_err(|e| match e {
                        OverrideError::Store(e) => failed(e),
                        invalid => Refusal::Invalid(invalid.to_string()),
                    })
            }
        }
    }

    /// `/page`: mentions whom it names in this channel (a schedule: its primary on call now)
    /// and pages their phone through their own paging service, when they have one. The
    /// mention is queued in the outbox (urgent), so it is posted even if the answer is not.
    async fn page(
        &self,
        ev: &InboundEvent,
        request_id: &RequestId,
        requester: &Requester,
        who: &str,
        reason: &str,
    ) -> Result<Done, Refusal> {
        let (person, schedule) = self.page_target(who).await?;
        let by = requester.name();
        let notice = self.page_notice(ev, &person.name, schedule, &by, reason);
        (self.deps.store)
            .enqueue(&notice, self.deps.clock.now())
            .await
            .or_refuse("queuing a page's mention")?;
        self.deps.outbox.wake();
        let name = &person.name;
        let Some(service) = person.page.as_deref() else {
            return Ok(Done::text(format!(
                "Mentioned {name} here; they have no paging service, so nothing went to their phone."
            )));
        };
        let page = Page {
            dedup_key: format!("page-{request_id}"),
            summary: format!(
                "{by} pages {name} from {} #{}: {reason}",
                ev.platform, ev.channel.name
            ),
            source: "opsbot".into(),
            severity: PageSeverity::Critical,
        };
        let paged = self.deps.pager.page(service, PageAction::Trigger, &page);
        let (text, detail) = match paged.await {
            Ok(()) => (
                format!("Paged {name} via {service} and mentioned them here."),
                format!("paged via {service}"),
            ),
            Err(e) => (
                format!(
                    "Mentioned {name} here, but paging them via {service} failed (request id {request_id}); reach them another way."
                ),
                format!("paging via {service} failed: {e}"),
            ),
        };
        Ok(Done {
            detail,
            ..Done::text(text)
        })
    }

    /// The channel's message: a native mention of `name`, who asked, and the reason as
    /// plain text (the adapters keep outside text from pinging anyone).
    fn page_notice(
        &self,
        ev: &InboundEvent,
        name: &str,
        schedule: Option<&str>,
        by: &str,
        reason: &str,
    ) -> Queued {
        let mut message = OutboundMessage::text("📟 ");
        (self.deps.oncall).mention(&mut message, name, ev.platform);
        let _ = write!(message.text, ": {by} pages you");
        if let Some(schedule) = schedule {
            let _ = write!(message.text, " (on call for {schedule})");
        }
        let _ = write!(message.text, ": {reason}");
        let to = OutboundTarget {
            platform: ev.platform,
            channel_id: ev.channel.id.clone(),
            thread: ev.thread.clone(),
        };
        Queued::post(to, message.with_visibility(Visibility::Channel).urgent())
    }

    /// Who `/page WHO` means: a schedule's primary on call now (and the schedule), or a
    /// person by name.
    async fn page_target<'a>(
        &self,
        who: &'a str,
    ) -> Result<(Arc<Person>, Option<&'a str>), Refusal> {
        let oncall = &self.deps.oncall;
        let known = |name: &str| self.deps.directory.person(name).cloned();
        if oncall.schedules().iter().any(|s| s.schedule.name == who) {
            let primary = (oncall.primary(who).await)
                .or_refuse("finding who is on call")?
                .ok_or_else(|| {
                    Refusal::Invalid(format!(
                        "nobody is on call for {who} right now; page a person by name."
                    ))
                })?;
            let person = known(&primary).ok_or_else(|| {
                Refusal::Failed(anyhow::anyhow!(
                    "on-call {primary:?} is not in the directory"
                ))
            })?;
            return Ok((person, Some(who)));
        }
        let person = known(who).ok_or_else(|| {
            Refusal::Invalid(format!(
                "there is no person or on-call schedule named {who:?}."
            ))
        })?;
        Ok((person, None))
    }

    async fn status(&self, check: Option<&str>) -> Result<String, Refusal> {
        if let Some(name) = check
            && !self.deps.health.names().any(|n| n == name)
        {
            let known: Vec<&str> = self.deps.health.names().collect();
            return Err(Refusal::Invalid(format!(
                "there is no check named {name:?}; checks: {}",
                if known.is_empty() {
                    "none configured".to_owned()
                } else {
                    known.join(", ")
                }
            )));
        }
        let results = self.deps.health.run(check).await;
        Ok(health::render(&results))
    }

    /// Explains `topic`, or lists every command the asker may run in this channel.
    fn help(
        &self,
        ev: &InboundEvent,
        requester: &Requester,
        topic: Option<&str>,
    ) -> Result<String, Refusal> {
        let Some(topic) = topic else {
            return Ok(self.list_commands(ev, requester));
        };
        if let Some(b) = find(topic) {
            let mut out = format!("{} — {}", b.usage, b.summary);
            if b.name == "incident" {
                // The one built-in whose words a team defines: say which they are.
                out.push_str("\nSeverities, most severe first:");
                for l in self.deps.severities.levels() {
                    let _ = write!(out, "\n  {} — acknowledge {}", l.name, l.ack);
                }
            }
            return Ok(out);
        }
        match self.deps.catalog.get(topic) {
            Some(spec) => Ok(explain_runbook(spec)),
            None => Err(Refusal::Invalid(format!(
                "there is no command /{topic}; try /help"
            ))),
        }
    }

    fn list_commands(&self, ev: &InboundEvent, requester: &Requester) -> String {
        let access = &self.deps.access;
        let mut out = String::from("Commands you can run here:\n");
        for b in BUILTINS {
            if may_run(requester, Target::Builtin(b), &ev.channel, access) {
                let _ = writeln!(out, "  {} — {}", b.usage, b.summary);
            }
        }
        for spec in self.deps.catalog.iter() {
            if may_run(
                requester,
                Target::Runbook(spec.clone()),
                &ev.channel,
                access,
            ) {
                let gate = if spec.approval.is_some() {
                    " (needs approval)"
                } else {
                    ""
                };
                let _ = writeln!(out, "  {} — {}{gate}", spec.usage(), spec.summary);
            }
        }
        if requester.person().is_none() {
            out.push_str(
                "I don't know you yet; ask an opsbot admin to map your identity (see /whoami).\n",
            );
        }
        out.trim_end().to_owned()
    }
}

fn explain_runbook(spec: &CommandSpec) -> String {
    let mut out = format!("{} — {}\n", spec.usage(), spec.summary);
    for a in &spec.args {
        let kind = match &a.kind {
            ArgKind::Choice(c) => format!("one of {}", c.join(", ")),
            ArgKind::String { .. } => "text".into(),
            ArgKind::Int { min, max } => format!("whole number {min}..{max}"),
            ArgKind::Duration => "duration (30s, 10m, 2h)".into(),
        };
        let req = if a.required { "required" } else { "optional" };
        let help = a
            .help
            .as_deref()
            .map(|h| format!(" — {h}"))
            .unwrap_or_default();
        let _ = writeln!(out, "  {}: {kind}, {req}{help}", a.name);
    }
    if let Some(ap) = &spec.approval {
        let roles: Vec<&str> = ap.approver_roles.iter().map(|r| r.as_str()).collect();
        let _ = writeln!(
            out,
            "  needs {} approval(s) from {}",
            ap.approvals,
            roles.join(", ")
        );
    }
    out.trim_end().to_owned()
}

/// The crate version, and the commit when the build names it
/// (`OPSBOT_GIT_COMMIT=$(git rev-parse --short HEAD) cargo build --release`).
fn version() -> String {
    let version = env!("CARGO_PKG_VERSION");
    match option_env!("OPSBOT_GIT_COMMIT") {
        Some(commit) if !commit.is_empty() => format!("opsbot {version} (git {commit})"),
        _ => format!("opsbot {version}"),
    }
}

fn whoami(requester: &Requester, authorized: &Authorized<Target>) -> String {
    match (requester, authorized.person()) {
        (Requester::Known { user, .. }, Some(person)) => {
            let roles: Vec<&str> = person.roles.iter().map(|r| r.as_str()).collect();
            let roles = if roles.is_empty() {
                "none".to_owned()
            } else {
                roles.join(", ")
            };
            format!("You are {} ({user}). Roles: {roles}.", person.name)
        }
        _ => format!(
            "You are {}; I don't know you, so only /help and /whoami are open to you.",
            requester.user()
        ),
    }
}

/// Detail shown per record in chat; `opsbot audit` prints it whole.
const AUDIT_DETAIL_CHARS: usize = 160;

fn render_audit(records: &[AuditRecord]) -> String {
    if records.is_empty() {
        return "The audit log is empty.".into();
    }
    let mut out = String::from("```\n");
    for r in records {
        let e = &r.entry;
        let args = if e.args.is_empty() {
            String::new()
        } else {
            format!(" {}", e.args)
        };
        let _ = writeln!(
            out,
            "#{} {} {:<7} {} in {}: /{}{} [{}] {}",
            r.seq,
            e.at.format("%Y-%m-%d %H:%M:%S"),
            e.outcome.as_str(),
            e.actor,
            e.channel,
            e.command,
            args,
            e.request_id,
            clip(&e.detail, AUDIT_DETAIL_CHARS)
        );
    }
    out.push_str("```");
    out
}
