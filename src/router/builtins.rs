//! The built-in commands (help, whoami, status, audit): their names, usage and argument
//! binding. Running them is in `router::mod`, next to the rest of the pipeline.

use std::time::Duration;

use super::parse::Word;
use crate::domain::{Matcher, Severity, parse_duration};

fn bind_incident(words: &[&str]) -> Result<IncidentCmd, String> {
    let rest = |from: usize| words.get(from..).map(|w| w.join(" ")).unwrap_or_default();
    let number = |w: Option<&&str>| -> Result<i64, String> {
        w.and_then(|w| w.trim_start_matches('#').parse::<i64>().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| "expected an alert number".to_owned())
    };
    let nonempty = |text: String, what: &str| {
        if text.trim().is_empty() {
            Err(format!("{what} must not be empty"))
        } else if text.len() > 500 {
            Err(format!("{what} is longer than 500 characters"))
        } else {
            Ok(text)
        }
    };
    match words.first().copied() {
        Some("open") => {
            let severity: Severity = words.get(1).ok_or("which severity?")?.parse()?;
            Ok(IncidentCmd::Open {
                severity,
                title: nonempty(rest(2), "the title")?,
            })
        }
        Some("lead") => {
            let person = words
                .get(1)
                .ok_or("who leads?")?
                .trim_start_matches('@')
                .to_owned();
            Ok(IncidentCmd::Lead { person })
        }
        Some("update") => Ok(IncidentCmd::Update {
            text: nonempty(rest(1), "the update")?,
        }),
        Some("status") => Ok(IncidentCmd::Status),
        Some("link") => Ok(IncidentCmd::Link {
            alert: number(words.get(1))?,
        }),
        Some("resolve") => Ok(IncidentCmd::Resolve),
        Some("timeline") => Ok(IncidentCmd::Timeline),
        Some(other) => Err(format!("unknown subcommand {other:?}")),
        None => Err("which subcommand?".into()),
    }
}

/// Built-in commands. Closed: adding one makes the compiler list every place to update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builtin {
    Help,
    Whoami,
    Status,
    Audit,
    Approve,
    Deny,
    Cancel,
    Alerts,
    Ack,
    Silence,
    Unsilence,
    Resolve,
    Incident,
    Postmortem,
}

/// A built-in with its arguments bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuiltinCall {
    Help {
        topic: Option<String>,
    },
    Whoami,
    Status {
        check: Option<String>,
    },
    Audit {
        limit: u32,
    },
    Approve {
        run: i64,
    },
    Deny {
        run: i64,
    },
    Cancel {
        run: i64,
    },
    Alerts,
    Ack {
        alert: i64,
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
        alert: i64,
    },
    Incident(IncidentCmd),
    Postmortem {
        incident: Option<i64>,
    },
}

/// `/incident` subcommands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IncidentCmd {
    Open { severity: Severity, title: String },
    Lead { person: String },
    Update { text: String },
    Status,
    Link { alert: i64 },
    Resolve,
    Timeline,
}

pub const AUDIT_DEFAULT: u32 = 10;
pub const AUDIT_MAX: u32 = 100;

impl Builtin {
    pub const ALL: [Builtin; 14] = [
        Builtin::Help,
        Builtin::Whoami,
        Builtin::Status,
        Builtin::Audit,
        Builtin::Approve,
        Builtin::Deny,
        Builtin::Cancel,
        Builtin::Alerts,
        Builtin::Ack,
        Builtin::Silence,
        Builtin::Unsilence,
        Builtin::Resolve,
        Builtin::Incident,
        Builtin::Postmortem,
    ];

    pub fn from_name(name: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Builtin::Help => "help",
            Builtin::Whoami => "whoami",
            Builtin::Status => "status",
            Builtin::Audit => "audit",
            Builtin::Approve => "approve",
            Builtin::Deny => "deny",
            Builtin::Cancel => "cancel",
            Builtin::Alerts => "alerts",
            Builtin::Ack => "ack",
            Builtin::Silence => "silence",
            Builtin::Unsilence => "unsilence",
            Builtin::Resolve => "resolve",
            Builtin::Incident => "incident",
            Builtin::Postmortem => "postmortem",
        }
    }

    pub fn usage(self) -> &'static str {
        match self {
            Builtin::Help => "/help [COMMAND]",
            Builtin::Whoami => "/whoami",
            Builtin::Status => "/status [CHECK]",
            Builtin::Audit => "/audit [N]",
            Builtin::Approve => "/approve ID",
            Builtin::Deny => "/deny ID",
            Builtin::Cancel => "/cancel ID",
            Builtin::Alerts => "/alerts",
            Builtin::Ack => "/ack ID",
            Builtin::Silence => "/silence MATCHER... DURATION [REASON]",
            Builtin::Unsilence => "/unsilence ID",
            Builtin::Resolve => "/resolve ID",
            Builtin::Incident => {
                "/incident open P1..P4 \"title\" | lead NAME | update \"text\" | status | link ALERT_ID | timeline | resolve"
            }
            Builtin::Postmortem => "/postmortem [INCIDENT_ID]",
        }
    }

    pub fn summary(self) -> &'static str {
        match self {
            Builtin::Help => "list the commands you may run here, or explain one",
            Builtin::Whoami => "show who opsbot thinks you are and your roles",
            Builtin::Status => "run the health checks (all, or one by name)",
            Builtin::Audit => "show the newest audit records (default 10, at most 100)",
            Builtin::Approve => "approve a pending runbook request (approvers only)",
            Builtin::Deny => "deny a pending runbook request (approvers only)",
            Builtin::Cancel => "cancel your own pending runbook request",
            Builtin::Alerts => "list firing alerts, newest first",
            Builtin::Ack => "acknowledge a firing alert (stops reminders and escalation)",
            Builtin::Silence => "silence alerts matching label=value / label=~regex for a while",
            Builtin::Unsilence => "end a silence early",
            Builtin::Resolve => {
                "resolve an alert that came from a webhook (Alertmanager resolves its own)"
            }
            Builtin::Incident => {
                "run this channel's incident: open, lead, update, status, link, timeline, resolve"
            }
            Builtin::Postmortem => "draft a postmortem (markdown) from an incident's timeline",
        }
    }

    pub fn bind(self, words: &[Word]) -> Result<BuiltinCall, String> {
        let usage = || format!("usage: {}", self.usage());
        let mut positional = Vec::new();
        for w in words {
            match w {
                Word::Positional(p) => positional.push(p.as_str()),
                Word::Flag { name, .. } => {
                    return Err(format!("unknown option --{name}; {}", usage()));
                }
            }
        }
        let at_most_one = |v: &[&str]| -> Result<Option<String>, String> {
            match v {
                [] => Ok(None),
                [one] => Ok(Some((*one).to_owned())),
                _ => Err(format!("too many arguments; {}", usage())),
            }
        };
        Ok(match self {
            Builtin::Help => BuiltinCall::Help {
                topic: at_most_one(&positional)?
                    .map(|t| t.trim_start_matches('/').to_ascii_lowercase()),
            },
            Builtin::Whoami => {
                at_most_one(&positional)?.map_or(Ok(()), |_| {
                    Err(format!("/whoami takes no arguments; {}", usage()))
                })?;
                BuiltinCall::Whoami
            }
            Builtin::Status => BuiltinCall::Status {
                check: at_most_one(&positional)?,
            },
            Builtin::Audit => {
                let limit = match at_most_one(&positional)? {
                    None => AUDIT_DEFAULT,
                    Some(n) => match n.parse::<u32>() {
                        Ok(n) if (1..=AUDIT_MAX).contains(&n) => n,
                        _ => {
                            return Err(format!(
                                "N must be a number from 1 to {AUDIT_MAX}; {}",
                                usage()
                            ));
                        }
                    },
                };
                BuiltinCall::Audit { limit }
            }
            Builtin::Approve
            | Builtin::Deny
            | Builtin::Cancel
            | Builtin::Ack
            | Builtin::Unsilence
            | Builtin::Resolve => {
                let raw =
                    at_most_one(&positional)?.ok_or_else(|| format!("which one? {}", usage()))?;
                let run = raw
                    .trim_start_matches('#')
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{raw:?} is not a number; {}", usage()))?;
                match self {
                    Builtin::Approve => BuiltinCall::Approve { run },
                    Builtin::Deny => BuiltinCall::Deny { run },
                    Builtin::Cancel => BuiltinCall::Cancel { run },
                    Builtin::Ack => BuiltinCall::Ack { alert: run },
                    Builtin::Unsilence => BuiltinCall::Unsilence { silence: run },
                    _ => BuiltinCall::Resolve { alert: run },
                }
            }
            Builtin::Incident => BuiltinCall::Incident(
                bind_incident(&positional).map_err(|e| format!("{e}; {}", usage()))?,
            ),
            Builtin::Postmortem => {
                let incident = at_most_one(&positional)?
                    .map(|raw| {
                        raw.trim_start_matches('#')
                            .parse::<i64>()
                            .map_err(|_| format!("{raw:?} is not an incident number; {}", usage()))
                    })
                    .transpose()?;
                BuiltinCall::Postmortem { incident }
            }
            Builtin::Alerts => {
                at_most_one(&positional)?.map_or(Ok(()), |_| {
                    Err(format!("/alerts takes no arguments; {}", usage()))
                })?;
                BuiltinCall::Alerts
            }
            Builtin::Silence => {
                let mut matchers = Vec::new();
                let mut rest = positional.iter();
                let duration = loop {
                    let Some(word) = rest.next() else {
                        return Err(format!("how long? {}", usage()));
                    };
                    if word.contains('=') {
                        matchers.push(word.parse::<Matcher>()?);
                    } else {
                        break parse_duration(word).map_err(|e| format!("{e}; {}", usage()))?;
                    }
                };
                if matchers.is_empty() {
                    return Err(format!("silence what? {}", usage()));
                }
                if duration.is_zero() || duration > Duration::from_secs(30 * 86_400) {
                    return Err("a silence lasts between 1s and 30 days".into());
                }
                let reason = rest.copied().collect::<Vec<_>>().join(" ");
                BuiltinCall::Silence {
                    matchers,
                    duration,
                    reason,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Position in `ALL`. The match is exhaustive, so a new variant fails to compile here
    /// until it is given a place, and the test below then demands it be listed in `ALL`.
    fn position(b: Builtin) -> usize {
        match b {
            Builtin::Help => 0,
            Builtin::Whoami => 1,
            Builtin::Status => 2,
            Builtin::Audit => 3,
            Builtin::Approve => 4,
            Builtin::Deny => 5,
            Builtin::Cancel => 6,
            Builtin::Alerts => 7,
            Builtin::Ack => 8,
            Builtin::Silence => 9,
            Builtin::Unsilence => 10,
            Builtin::Resolve => 11,
            Builtin::Incident => 12,
            Builtin::Postmortem => 13,
        }
    }

    #[test]
    fn all_lists_every_builtin_once_and_names_round_trip() {
        for (i, b) in Builtin::ALL.into_iter().enumerate() {
            assert_eq!(position(b), i);
            assert_eq!(Builtin::from_name(b.name()), Some(b));
            assert!(crate::catalog::RESERVED_NAMES.contains(&b.name()));
        }
    }
}
