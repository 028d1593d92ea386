//! `[[steps]]` and `[[on_failure]]` in a command file: a procedure of several steps (exec and
//! http actions as in `[action]`, waiting for a health check or URL, a message to the
//! channel) with the rollback steps that run when one fails. A file has either one
//! `[action]` or `[[steps]]`, never both.

use super::action::{RawKind, parse_template};
use super::*;

/// The steps of a command, in order, and the steps that roll it back when one fails.
#[derive(Debug, Clone)]
pub struct Workflow {
    pub steps: Vec<StepSpec>,
    pub on_failure: Vec<StepSpec>,
}

#[derive(Debug, Clone)]
pub struct StepSpec {
    /// Unique among the command's steps and rollback steps.
    pub name: String,
    /// Line of its `[[steps]]` or `[[on_failure]]` header.
    pub line: usize,
    /// A failure is reported and the next step runs anyway.
    pub continue_on_error: bool,
    pub kind: StepKind,
}

#[derive(Debug, Clone)]
pub enum StepKind {
    /// A process or an HTTP request, exactly as an `[action]`.
    Action(ActionSpec),
    WaitFor(WaitFor),
    /// Text posted to the run's channel.
    Message(Template),
}

/// Probing something until it is up, every `interval`, giving up after `deadline`.
#[derive(Debug, Clone)]
pub struct WaitFor {
    pub target: WaitTarget,
    pub interval: Duration,
    pub deadline: Duration,
    /// How long one probe may take.
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum WaitTarget {
    /// A `[[checks]]` entry of the config, by name (checked against the config at load).
    Check(String),
    /// A GET that answers 2xx when the thing is up.
    Url(Template),
}

/// How often a `wait_for` probes when the file does not say.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// The command's procedure and the offset to name it at: its `[action]`, or its steps.
pub(super) fn procedure(
    raw: &RawCommand,
    arg_names: &BTreeSet<String>,
    problems: &mut Problems,
) -> (Procedure, usize) {
    let empty = || {
        Procedure::Steps(Workflow {
            steps: Vec::new(),
            on_failure: Vec::new(),
        })
    };
    match (&raw.action, &raw.steps) {
        (Some(action), steps) => {
            let at = action.span().start;
            let (spec, found) = action.get_ref().single(arg_names);
            for m in found {
                problems.at(at, format!("action: {m}"));
            }
            if steps.is_some() {
                problems.at(
                    at,
                    "a command has either [action] or [[steps]], not both".into(),
                );
            }
            if let Some(first) = raw.on_failure.first() {
                problems.at(
                    first.span().start,
                    "on_failure needs [[steps]]; a single [action] has nothing to roll back".into(),
                );
            }
            (Procedure::Single(spec), at)
        }
        (None, None) => {
            problems.at(0, "a command needs an [action] or [[steps]]".into());
            (empty(), 0)
        }
        (None, Some(steps)) => {
            let at = steps
                .get_ref()
                .first()
                .map_or(steps.span().start, |s| s.span().start);
            if steps.get_ref().is_empty() {
                problems.at(steps.span().start, "steps must not be empty".into());
            }
            let mut names = BTreeSet::new();
            let mut parse =
                |list: &[Spanned<RawAction>], problems: &mut Problems| -> Vec<StepSpec> {
                    (list.iter())
                        .map(|s| step(s, arg_names, &mut names, problems))
                        .collect()
                };
            let steps = parse(steps.get_ref(), problems);
            let on_failure = parse(&raw.on_failure, problems);
            (Procedure::Steps(Workflow { steps, on_failure }), at)
        }
    }
}

fn step(
    raw: &Spanned<RawAction>,
    arg_names: &BTreeSet<String>,
    names: &mut BTreeSet<String>,
    problems: &mut Problems,
) -> StepSpec {
    let at = raw.span().start;
    let s = raw.get_ref();
    let name = s.name.clone().unwrap_or_default();
    let label = format!("step {name:?}");
    let name_ok = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !name_ok {
        problems.at(
            at,
            format!("{label}: name must be 1-32 characters of a-z, 0-9, '-' or '_'"),
        );
    }
    if !names.insert(name.clone()) {
        problems.at(
            at,
            format!("{label}: step names must be unique; this one is used twice"),
        );
    }
    let mut found = Vec::new();
    let kind = match s.kind {
        RawKind::Exec | RawKind::Http => {
            s.misplaced(&s.step_only_keys(), NOT_THIS_KIND, &mut found);
            StepKind::Action(s.action(arg_names, &mut found))
        }
        RawKind::WaitFor => StepKind::WaitFor(wait_for(s, &mut found, arg_names)),
        RawKind::Message => StepKind::Message(message(s, &mut found, arg_names)),
    };
    for m in found {
        problems.at(at, format!("{label}: {m}"));
    }
    StepSpec {
        name,
        line: line_col(problems.src, at).0,
        continue_on_error: s.continue_on_error.unwrap_or(false),
        kind,
    }
}

/// Why a key is refused on a step of the wrong kind.
const NOT_THIS_KIND: &str = "does not apply to this kind of step";

fn wait_for(s: &RawAction, found: &mut Vec<String>, arg_names: &BTreeSet<String>) -> WaitFor {
    not_an_action(s, found);
    s.misplaced(&[("text", s.text.is_some())], NOT_THIS_KIND, found);
    let target = match (&s.check, &s.url) {
        (Some(check), None) => WaitTarget::Check(check.clone()),
        (None, Some(url)) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                found.push("url must start with http:// or https://".into());
            }
            WaitTarget::Url(parse_template("url", url, false, arg_names, &[], found))
        }
        _ => {
            found.push("kind wait_for needs either check (a health check's name) or url".into());
            WaitTarget::Check(String::new())
        }
    };
    let interval = s.interval.map_or(DEFAULT_INTERVAL, |d| d.0);
    let deadline = match s.deadline {
        Some(d) if !d.0.is_zero() && d.0 <= MAX_TIMEOUT => d.0,
        _ => {
            found.push("kind wait_for needs a deadline between 1s and 6h".into());
            Duration::from_secs(1)
        }
    };
    if interval.is_zero() || interval > deadline {
        found.push("interval must be more than 0 and at most the deadline".into());
    }
    let timeout = s
        .timeout
        .map_or(interval.min(Duration::from_secs(10)), |d| d.0);
    if timeout.is_zero() {
        found.push("timeout must be more than 0".into());
    }
    WaitFor {
        target,
        interval,
        deadline,
        timeout,
    }
}

fn message(s: &RawAction, found: &mut Vec<String>, arg_names: &BTreeSet<String>) -> Template {
    not_an_action(s, found);
    s.misplaced(
        &[
            ("url", s.url.is_some()),
            ("check", s.check.is_some()),
            ("interval", s.interval.is_some()),
            ("deadline", s.deadline.is_some()),
            ("timeout", s.timeout.is_some()),
        ],
        NOT_THIS_KIND,
        found,
    );
    match &s.text {
        Some(text) if !text.trim().is_empty() => {
            parse_template("text", text, false, arg_names, &[], found)
        }
        _ => {
            found.push("kind message needs text".into());
            Template(Vec::new())
        }
    }
}

/// The keys only exec and http steps have.
fn not_an_action(s: &RawAction, found: &mut Vec<String>) {
    s.misplaced(
        &[
            ("argv", s.argv.is_some()),
            ("workdir", s.workdir.is_some()),
            ("env", !s.env.is_empty()),
            ("secrets", !s.secrets.is_empty()),
            ("method", s.method.is_some()),
            ("body", s.body.is_some()),
            ("headers", !s.headers.is_empty()),
            ("expect_status", s.expect_status.is_some()),
        ],
        NOT_THIS_KIND,
        found,
    );
}
