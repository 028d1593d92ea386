//! The built-in commands as one table, [`BUILTINS`]: each row holds a built-in's name, usage,
//! summary, who may run it, whether it goes on an incident timeline, its options for platforms
//! with forms (Discord) and its argument binder. Binders are in `bind`; handlers in `run`,
//! where one exhaustive `match` on [`BuiltinCall`] makes the compiler ask for a new one's.

mod bind;
mod run;

use std::time::Duration;

use super::authz::{Access, RoleList};
use super::parse::Word;
use crate::domain::{AlertId, IncidentId, Matcher, RunId, Severity, SeverityScheme};

pub use bind::Args;

/// One built-in command. Everything about it that is data lives here.
#[derive(Debug)]
pub struct BuiltinSpec {
    pub name: &'static str,
    pub usage: &'static str,
    pub summary: &'static str,
    pub access: Access,
    /// Whether a successful run is noted on the channel's incident timeline: commands that
    /// change something, not look-ups.
    pub on_timeline: bool,
    /// Its arguments as named fields, in the order they are typed.
    pub params: &'static [Param],
    /// Turns the typed words (flags already refused) into a call.
    pub bind: fn(&Args) -> Result<BuiltinCall, String>,
}

/// What binding may read of the config: the words a built-in accepts that a team defines.
#[derive(Clone, Copy, Debug)]
pub struct BindContext<'a> {
    /// `/incident open SEVERITY`: the configured severities.
    pub severities: &'a SeverityScheme,
}

/// An argument of a built-in as a named field (a Discord option). All are text.
#[derive(Debug)]
pub struct Param {
    pub name: &'static str,
    pub description: &'static str,
    pub required: bool,
    /// The value carries the built-in's own syntax (`alertname=X 2h`) and is passed through
    /// as typed; otherwise it is one word, quoted if need be.
    pub raw: bool,
}

const fn opt(name: &'static str, description: &'static str) -> Param {
    Param {
        name,
        description,
        required: false,
        raw: false,
    }
}

const fn req(name: &'static str, description: &'static str) -> Param {
    Param {
        required: true,
        ..opt(name, description)
    }
}

const fn raw(name: &'static str, description: &'static str) -> Param {
    Param {
        raw: true,
        ..req(name, description)
    }
}

/// Every built-in, in the order `/help` lists them.
pub const BUILTINS: &[BuiltinSpec] = &[
    BuiltinSpec {
        name: "help",
        usage: "/help [COMMAND]",
        summary: "list the commands you may run here, or explain one",
        access: Access::Everyone,
        on_timeline: false,
        params: &[opt("command", "a command to explain")],
        bind: bind::help,
    },
    BuiltinSpec {
        name: "whoami",
        usage: "/whoami",
        summary: "show who opsbot thinks you are and your roles",
        access: Access::Everyone,
        on_timeline: false,
        params: &[],
        bind: |a| a.none().map(|()| BuiltinCall::Whoami),
    },
    BuiltinSpec {
        name: "version",
        usage: "/version",
        summary: "show which opsbot version is running",
        access: Access::Everyone,
        on_timeline: false,
        params: &[],
        bind: |a| a.none().map(|()| BuiltinCall::Version),
    },
    BuiltinSpec {
        name: "status",
        usage: "/status [CHECK]",
        summary: "run the health checks (all, or one by name)",
        access: Access::Roles(RoleList::Status),
        on_timeline: false,
        params: &[opt("check", "one health check by name")],
        bind: |a| {
            Ok(BuiltinCall::Status {
                check: a.at_most_one()?.map(str::to_owned),
            })
        },
    },
    BuiltinSpec {
        name: "audit",
        usage: "/audit [N]",
        summary: "show the newest audit records (default 10, at most 100)",
        access: Access::Roles(RoleList::Audit),
        on_timeline: false,
        params: &[opt("count", "how many records (default 10, at most 100)")],
        bind: bind::audit,
    },
    BuiltinSpec {
        name: "approve",
        usage: "/approve ID",
        summary: "approve a pending runbook request (approvers only)",
        // Whether they may act on *this* request (approver roles, requester) is decided per
        // request in `router::runbook`.
        access: Access::AnyKnown,
        on_timeline: true,
        params: &[req("id", "the request number")],
        bind: |a| a.id().map(|run| BuiltinCall::Approve { run: RunId(run) }),
    },
    BuiltinSpec {
        name: "deny",
        usage: "/deny ID",
        summary: "deny a pending runbook request (approvers only)",
        access: Access::AnyKnown,
        on_timeline: true,
        params: &[req("id", "the request number")],
        bind: |a| a.id().map(|run| BuiltinCall::Deny { run: RunId(run) }),
    },
    BuiltinSpec {
        name: "cancel",
        usage: "/cancel ID",
        summary: "cancel your own runbook request, or stop your running one",
        access: Access::AnyKnown,
        on_timeline: true,
        params: &[req("id", "the request number")],
        bind: |a| a.id().map(|run| BuiltinCall::Cancel { run: RunId(run) }),
    },
    BuiltinSpec {
        name: "retry",
        usage: "/retry ID [from STEP]",
        summary: "run an ended runbook's steps again from the step that failed (or STEP)",
        access: Access::AnyKnown,
        on_timeline: true,
        params: &[
            req("id", "the request number"),
            opt("from", "the step to start from: its number or name"),
        ],
        bind: bind::retry,
    },
    BuiltinSpec {
        name: "alerts",
        usage: "/alerts",
        summary: "list firing alerts, newest first",
        access: Access::Roles(RoleList::Alerts),
        on_timeline: false,
        params: &[],
        bind: |a| a.none().map(|()| BuiltinCall::Alerts),
    },
    BuiltinSpec {
        name: "ack",
        usage: "/ack ID",
        summary: "acknowledge a firing alert (stops reminders and escalation)",
        access: Access::Roles(RoleList::Respond),
        on_timeline: true,
        params: &[req("id", "the alert number")],
        bind: |a| {
            a.id().map(|alert| BuiltinCall::Ack {
                alert: AlertId(alert),
            })
        },
    },
    BuiltinSpec {
        name: "silence",
        usage: "/silence MATCHER... DURATION [REASON]",
        summary: "silence alerts matching label=value / label=~regex for a while",
        access: Access::Roles(RoleList::Respond),
        on_timeline: true,
        params: &[raw(
            "args",
            "MATCHER... DURATION [REASON], e.g. alertname=HighLatency 2h deploy",
        )],
        bind: bind::silence,
    },
    BuiltinSpec {
        name: "unsilence",
        usage: "/unsilence ID",
        summary: "end a silence early",
        access: Access::Roles(RoleList::Respond),
        on_timeline: true,
        params: &[req("id", "the silence number")],
        bind: |a| a.id().map(|silence| BuiltinCall::Unsilence { silence }),
    },
    BuiltinSpec {
        name: "resolve",
        usage: "/resolve ID",
        summary: "resolve an alert that came from a webhook (Alertmanager resolves its own)",
        access: Access::Roles(RoleList::Respond),
        on_timeline: true,
        params: &[req("id", "the alert number")],
        bind: |a| {
            a.id().map(|alert| BuiltinCall::Resolve {
                alert: AlertId(alert),
            })
        },
    },
    BuiltinSpec {
        name: "incident",
        usage: "/incident open SEVERITY \"title\" | lead NAME | update \"text\" | status | link ALERT_ID | timeline | resolve",
        summary: "run this channel's incident: open, lead, update, status, link, timeline, resolve",
        access: Access::Roles(RoleList::Respond),
        on_timeline: false,
        params: &[raw(
            "args",
            "open SEVERITY \"title\" | lead NAME | update \"text\" | status | link ID | timeline | resolve",
        )],
        bind: bind::incident,
    },
    BuiltinSpec {
        name: "postmortem",
        usage: "/postmortem [INCIDENT_ID]",
        summary: "draft a postmortem (markdown) from an incident's timeline",
        access: Access::Roles(RoleList::Alerts),
        on_timeline: false,
        params: &[opt("id", "the incident number (default: this channel's)")],
        bind: bind::postmortem,
    },
    BuiltinSpec {
        name: "oncall",
        usage: "/oncall [override SCHEDULE PERSON DURATION [REASON]]",
        summary: "show who is on call and the next handoffs, or stand someone in (override)",
        // Overriding needs `builtins.oncall_roles` too, checked by the handler.
        access: Access::Roles(RoleList::Alerts),
        on_timeline: false,
        params: &[Param {
            required: false,
            ..raw(
                "args",
                "override SCHEDULE PERSON DURATION [REASON], or nothing to show",
            )
        }],
        bind: bind::oncall,
    },
    BuiltinSpec {
        name: "page",
        usage: "/page PERSON|SCHEDULE \"reason\"",
        summary: "pull someone in: mention them here (a schedule: its primary on call) and page their phone",
        access: Access::Roles(RoleList::Page),
        // A page is a step of the response, on the incident's timeline; the answer says to
        // the channel whether it reached a phone.
        on_timeline: true,
        params: &[
            req("who", "a person, or a schedule to page its primary on call"),
            req("reason", "why (shown in chat and on their phone)"),
        ],
        bind: bind::page,
    },
    BuiltinSpec {
        name: "schedules",
        usage: "/schedules",
        summary: "list the scheduled runs with their next run and whether they are paused",
        access: Access::Roles(RoleList::Status),
        on_timeline: false,
        params: &[],
        bind: |a| a.none().map(|()| BuiltinCall::Schedules),
    },
    BuiltinSpec {
        name: "schedule",
        usage: "/schedule pause|resume NAME",
        summary: "pause or resume a scheduled run (for every replica, until resumed)",
        access: Access::Roles(RoleList::Schedule),
        on_timeline: true,
        params: &[
            req("action", "pause or resume"),
            req("name", "the schedule (see /schedules)"),
        ],
        bind: bind::schedule,
    },
];

/// The names the built-ins own: the catalogue refuses command files that take one.
pub const NAMES: [&str; BUILTINS.len()] = {
    let mut names = [""; BUILTINS.len()];
    let mut i = 0;
    while i < BUILTINS.len() {
        names[i] = BUILTINS[i].name;
        i += 1;
    }
    names
};

/// The built-in called `name`, if there is one.
pub fn find(name: &str) -> Option<&'static BuiltinSpec> {
    BUILTINS.iter().find(|b| b.name == name)
}

impl BuiltinSpec {
    /// Binds the words typed after the name. Built-ins take no options.
    pub fn bind_words(
        &self,
        words: &[Word],
        context: BindContext<'_>,
    ) -> Result<BuiltinCall, String> {
        (self.bind)(&Args::new(self, words, context)?)
    }
}

/// A built-in with its arguments bound. Closed: `run` matches it exhaustively.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuiltinCall {
    Help {
        topic: Option<String>,
    },
    Whoami,
    Version,
    Status {
        check: Option<String>,
    },
    Audit {
        limit: u32,
    },
    Approve {
        run: RunId,
    },
    Deny {
        run: RunId,
    },
    Cancel {
        run: RunId,
    },
    /// `/retry ID [from STEP]`: the step's number or name, if given.
    Retry {
        run: RunId,
        from: Option<String>,
    },
    Alerts,
    Ack {
        alert: AlertId,
    },
    Silence {
        matchers: Vec<Matcher>,
        duration: Duration,
        reason: String,
    },
    Unsilence {
        silence: i64,
    },
    Resolve {
        alert: AlertId,
    },
    Incident(IncidentCmd),
    Postmortem {
        incident: Option<IncidentId>,
    },
    OnCall(OnCallCmd),
    Page {
        /// A person's name or a schedule's, as typed (without a leading `@`).
        who: String,
        reason: String,
    },
    Schedules,
    /// `/schedule pause|resume NAME`.
    Schedule {
        pause: bool,
        name: String,
    },
}

/// `/oncall` subcommands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OnCallCmd {
    Show,
    Override {
        schedule: String,
        person: String,
        duration: Duration,
        reason: String,
    },
}

/// `/incident` subcommands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IncidentCmd {
    Open { severity: Severity, title: String },
    Lead { person: String },
    Update { text: String },
    Status,
    Link { alert: AlertId },
    Resolve,
    Timeline,
}

impl IncidentCmd {
    /// Everything but the look-ups changes the incident (and so concerns the whole channel).
    pub fn changes_state(&self) -> bool {
        match self {
            Self::Open { .. } | Self::Lead { .. } | Self::Update { .. } => true,
            Self::Link { .. } | Self::Resolve => true,
            Self::Status | Self::Timeline => false,
        }
    }
}

pub const AUDIT_DEFAULT: u32 = 10;
pub const AUDIT_MAX: u32 = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_usage_starts_with_the_name() {
        for (i, b) in BUILTINS.iter().enumerate() {
            assert!(
                !NAMES[..i].contains(&b.name),
                "{} is in the table twice",
                b.name
            );
            assert_eq!(find(b.name).map(|f| f.usage), Some(b.usage));
            assert!(b.usage.starts_with(&format!("/{}", b.name)), "{}", b.usage);
        }
    }
}
