//! Argument binders for the built-ins: typed words in, a [`BuiltinCall`] or a message that
//! ends with the built-in's usage out. Each table row names its binder.

use std::time::Duration;

use super::{
    AUDIT_DEFAULT, AUDIT_MAX, BindContext, BuiltinCall, BuiltinSpec, IncidentCmd, OnCallCmd,
};
use crate::domain::{AlertId, IncidentId, Matcher, SeverityScheme, parse_duration};
use crate::router::parse::Word;

/// The positional words given to one built-in, and the built-in, for error messages.
pub struct Args<'a> {
    spec: &'a BuiltinSpec,
    words: Vec<&'a str>,
    context: BindContext<'a>,
}

impl<'a> Args<'a> {
    /// Refuses options: no built-in takes any.
    pub(super) fn new(
        spec: &'a BuiltinSpec,
        words: &'a [Word],
        context: BindContext<'a>,
    ) -> Result<Self, String> {
        let mut positional = Vec::with_capacity(words.len());
        for w in words {
            match w {
                Word::Positional(p) => positional.push(p.as_str()),
                Word::Flag { name, .. } => {
                    return Err(format!("unknown option --{name}; usage: {}", spec.usage));
                }
            }
        }
        Ok(Self {
            spec,
            words: positional,
            context,
        })
    }

    /// `problem`, followed by how to call the built-in.
    fn wrong(&self, problem: impl std::fmt::Display) -> String {
        format!("{problem}; usage: {}", self.spec.usage)
    }

    pub fn at_most_one(&self) -> Result<Option<&'a str>, String> {
        match self.words[..] {
            [] => Ok(None),
            [one] => Ok(Some(one)),
            _ => Err(self.wrong("too many arguments")),
        }
    }

    pub fn none(&self) -> Result<(), String> {
        match self.at_most_one()? {
            None => Ok(()),
            Some(_) => Err(self.wrong(format_args!("/{} takes no arguments", self.spec.name))),
        }
    }

    /// One positive number (`12` or `#12`): a request, alert or silence.
    pub fn id(&self) -> Result<i64, String> {
        let raw = self
            .at_most_one()?
            .ok_or_else(|| format!("which one? usage: {}", self.spec.usage))?;
        raw.trim_start_matches('#')
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| self.wrong(format_args!("{raw:?} is not a number")))
    }
}

/// `ID`, `ID STEP` or `ID from STEP`.
pub(super) fn retry(a: &Args) -> Result<BuiltinCall, String> {
    let (id, from) = match a.words[..] {
        [id] => (id, None),
        [id, step] | [id, "from", step] => (id, Some(step.to_owned())),
        [] => return Err(format!("which one? usage: {}", a.spec.usage)),
        _ => return Err(a.wrong("too many arguments")),
    };
    let run = (id.trim_start_matches('#').parse::<i64>().ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| a.wrong(format_args!("{id:?} is not a number")))?;
    Ok(BuiltinCall::Retry {
        run: crate::domain::RunId(run),
        from,
    })
}

pub(super) fn help(a: &Args) -> Result<BuiltinCall, String> {
    let topic = a.at_most_one()?;
    Ok(BuiltinCall::Help {
        topic: topic.map(|t| t.trim_start_matches('/').to_ascii_lowercase()),
    })
}

pub(super) fn audit(a: &Args) -> Result<BuiltinCall, String> {
    let limit = match a.at_most_one()? {
        None => AUDIT_DEFAULT,
        Some(n) => n
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=AUDIT_MAX).contains(n))
            .ok_or_else(|| a.wrong(format_args!("N must be a number from 1 to {AUDIT_MAX}")))?,
    };
    Ok(BuiltinCall::Audit { limit })
}

pub(super) fn postmortem(a: &Args) -> Result<BuiltinCall, String> {
    let incident = a
        .at_most_one()?
        .map(|raw| {
            raw.trim_start_matches('#')
                .parse::<i64>()
                .map_err(|_| a.wrong(format_args!("{raw:?} is not an incident number")))
        })
        .transpose()?;
    Ok(BuiltinCall::Postmortem {
        incident: incident.map(IncidentId),
    })
}

/// `MATCHER... DURATION [REASON]`: matchers are the words with `=` before the duration.
pub(super) fn silence(a: &Args) -> Result<BuiltinCall, String> {
    let usage = a.spec.usage;
    let mut matchers = Vec::new();
    let mut rest = a.words.iter();
    let duration = loop {
        let Some(word) = rest.next() else {
            return Err(format!("how long? usage: {usage}"));
        };
        if word.contains('=') {
            matchers.push(word.parse::<Matcher>()?);
        } else {
            break parse_duration(word).map_err(|e| a.wrong(e))?;
        }
    };
    if matchers.is_empty() {
        return Err(format!("silence what? usage: {usage}"));
    }
    if duration.is_zero() || duration > Duration::from_secs(30 * 86_400) {
        return Err("a silence lasts between 1s and 30 days".into());
    }
    let reason = rest.copied().collect::<Vec<_>>().join(" ");
    Ok(BuiltinCall::Silence {
        matchers,
        duration,
        reason,
    })
}

/// Nothing (show), or `override SCHEDULE PERSON DURATION [REASON]`.
pub(super) fn oncall(a: &Args) -> Result<BuiltinCall, String> {
    let cmd = match a.words[..] {
        [] => OnCallCmd::Show,
        ["override", schedule, person, duration, ref reason @ ..] => OnCallCmd::Override {
            schedule: schedule.to_owned(),
            person: person.to_owned(),
            duration: parse_duration(duration).map_err(|e| a.wrong(e))?,
            reason: reason.join(" "),
        },
        _ => return Err(a.wrong("expected nothing, or override SCHEDULE PERSON DURATION")),
    };
    Ok(BuiltinCall::OnCall(cmd))
}

/// Longest `/page` reason: it is shown in chat and pushed to a phone.
const PAGE_REASON_MAX: usize = 500;

/// `PERSON|SCHEDULE REASON...`: the first word says who, the rest (quoted or not) why.
pub(super) fn page(a: &Args) -> Result<BuiltinCall, String> {
    let [who, ref reason @ ..] = a.words[..] else {
        return Err(a.wrong("page whom?"));
    };
    let reason = reason.join(" ");
    if reason.trim().is_empty() {
        return Err(a.wrong("say why: the reason goes to their phone"));
    }
    if reason.chars().count() > PAGE_REASON_MAX {
        return Err(format!(
            "the reason is longer than {PAGE_REASON_MAX} characters"
        ));
    }
    Ok(BuiltinCall::Page {
        who: who.trim_start_matches('@').to_owned(),
        reason,
    })
}

/// `pause NAME` or `resume NAME`.
pub(super) fn schedule(a: &Args) -> Result<BuiltinCall, String> {
    let (pause, name) = match a.words[..] {
        ["pause", name] => (true, name),
        ["resume", name] => (false, name),
        _ => return Err(a.wrong("expected pause NAME or resume NAME")),
    };
    Ok(BuiltinCall::Schedule {
        pause,
        name: name.to_owned(),
    })
}

pub(super) fn incident(a: &Args) -> Result<BuiltinCall, String> {
    incident_cmd(&a.words, a.context.severities)
        .map(BuiltinCall::Incident)
        .map_err(|e| a.wrong(e))
}

fn incident_cmd(words: &[&str], severities: &SeverityScheme) -> Result<IncidentCmd, String> {
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
            let Some(word) = words.get(1) else {
                return Err(format!("which severity? {}", severities.names()));
            };
            let severity = severities.parse(word).map_err(|e| e.to_string())?;
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
            alert: AlertId(number(words.get(1))?),
        }),
        Some("resolve") => Ok(IncidentCmd::Resolve),
        Some("timeline") => Ok(IncidentCmd::Timeline),
        Some(other) => Err(format!("unknown subcommand {other:?}")),
        None => Err("which subcommand?".into()),
    }
}
