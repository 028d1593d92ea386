//! `[[steps]]` and `[[on_failure]]` in a command file: a procedure of several steps (exec and
//! http actions as in `[action]`, waiting for a health check or URL, a message to the
//! channel, an approval gate) with the rollback steps that run when one fails. A file has
//! either one `[action]` or `[[steps]]`, never both. A step may publish a value from its
//! output for the steps after it.

use super::action::{RawKind, RawPublish, parse_template};
use super::*;

/// The steps of a command, in order, and the steps that roll it back when one fails.
#[derive(Debug, Clone)]
pub struct Workflow {
    pub steps: Vec<StepSpec>,
    pub on_failure: Vec<StepSpec>,
    /// Whether `/cancel` of a running workflow runs the `on_failure` steps.
    pub on_cancel: OnCancel,
}

/// What `/cancel` of a running workflow does after stopping it (`on_cancel` in the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnCancel {
    /// Stop; nothing more runs.
    #[default]
    Stop,
    /// Run the `on_failure` steps, as after a failure.
    Rollback,
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
    /// The value it publishes from its output for later steps (exec and http steps).
    pub publish: Option<Publish>,
}

/// A value a step takes from its output, usable as `{name}` by the steps after it.
#[derive(Debug, Clone)]
pub struct Publish {
    /// Its name and the rules it must pass, exactly as an argument's.
    pub value: ArgSpec,
    pub from: PublishFrom,
}

#[derive(Debug, Clone)]
pub enum PublishFrom {
    /// The first capture group of the first match.
    Regex(Regex),
    /// A JSON pointer into the output parsed as JSON; a string is taken as it is, a number
    /// or boolean as written.
    Json(String),
}

#[derive(Debug, Clone)]
pub enum StepKind {
    /// A process or an HTTP request, exactly as an `[action]`.
    Action(ActionSpec),
    WaitFor(WaitFor),
    /// Text posted to the run's channel.
    Message(Template),
    /// A gate: the steps after it wait for approvals (never the requester's), bound to them
    /// as rendered when the gate is reached.
    Approval(ApprovalSpec),
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
            on_cancel: OnCancel::Stop,
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
            if let Some(on_cancel) = &raw.on_cancel {
                problems.at(
                    on_cancel.span().start,
                    "on_cancel needs [[steps]]; a single [action] is stopped by /cancel".into(),
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
            let workflow = workflow(raw, steps.get_ref(), arg_names, problems);
            (Procedure::Steps(workflow), at)
        }
    }
}

/// The steps and rollback steps, each template checked against the arguments and the
/// values published before it.
fn workflow(
    raw: &RawCommand,
    steps: &[Spanned<RawAction>],
    arg_names: &BTreeSet<String>,
    problems: &mut Problems,
) -> Workflow {
    let mut names = Names {
        steps: BTreeSet::new(),
        known: arg_names.clone(),
    };
    let steps: Vec<StepSpec> = (steps.iter())
        .map(|s| step(s, &mut names, problems))
        .collect();
    // A rollback step may use any value a step publishes (it fails, naming the value, if the
    // step that publishes it never ran); it publishes none of its own.
    let on_failure = (raw.on_failure.iter())
        .map(|s| {
            let step = step(s, &mut names, problems);
            if step.publish.is_some() || matches!(step.kind, StepKind::Approval(_)) {
                problems.at(
                    s.span().start,
                    format!(
                        "step {:?}: an on_failure step neither publishes values nor waits for approval",
                        step.name
                    ),
                );
            }
            step
        })
        .collect();
    let on_cancel = (raw.on_cancel.as_ref()).map_or(OnCancel::Stop, |c| *c.get_ref());
    Workflow {
        steps,
        on_failure,
        on_cancel,
    }
}

/// The names seen so far: steps' (unique), and those templates may use (arguments and the
/// values published by earlier steps).
struct Names {
    steps: BTreeSet<String>,
    known: BTreeSet<String>,
}

fn step(raw: &Spanned<RawAction>, names: &mut Names, problems: &mut Problems) -> StepSpec {
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
    if !names.steps.insert(name.clone()) {
        problems.at(
            at,
            format!("{label}: step names must be unique; this one is used twice"),
        );
    }
    let mut found = Vec::new();
    let known = &names.known;
    let kind = match s.kind {
        RawKind::Exec | RawKind::Http => {
            s.misplaced(&s.step_only_keys(), NOT_THIS_KIND, &mut found);
            StepKind::Action(s.action(known, &mut found))
        }
        RawKind::WaitFor => StepKind::WaitFor(wait_for(s, &mut found, known)),
        RawKind::Message => StepKind::Message(message(s, &mut found, known)),
        RawKind::Approval => StepKind::Approval(gate(s, &mut found, line_col(problems.src, at).0)),
    };
    if s.publish.is_some() && !matches!(kind, StepKind::Action(_)) {
        found.push("publish applies only to exec and http steps".into());
    }
    for m in found {
        problems.at(at, format!("{label}: {m}"));
    }
    let publish = (s.publish.as_ref())
        .filter(|_| matches!(kind, StepKind::Action(_)))
        .map(|p| publish(p, names, (&label, at), problems));
    StepSpec {
        name,
        line: line_col(problems.src, at).0,
        continue_on_error: s.continue_on_error.unwrap_or(false),
        kind,
        publish,
    }
}

/// A `publish` table: its value checked as an argument of that name and kind would be.
fn publish(
    p: &RawPublish,
    names: &mut Names,
    (label, at): (&str, usize),
    problems: &mut Problems,
) -> Publish {
    let as_arg = RawArg {
        name: p.name.clone(),
        kind: p.kind.unwrap_or(RawArgKind::String),
        choices: p.choices.clone(),
        pattern: p.pattern.clone(),
        min: p.min,
        max: p.max,
        required: true,
        help: p.help.clone(),
    };
    let what = format!("{label}: publish {:?}", p.name);
    if !template_name(&p.name) {
        problems.at(
            at,
            format!("{what}: name must be a-z, 0-9 or '_', starting with a letter"),
        );
    } else if !names.known.insert(p.name.clone()) {
        problems.at(
            at,
            format!("{what}: an argument or an earlier step already has that name"),
        );
    }
    let kind = arg_kind(&as_arg, &what, at, problems);
    let from = publish_from(p).unwrap_or_else(|why| {
        problems.at(at, format!("{what}: {why}"));
        PublishFrom::Json(String::new())
    });
    Publish {
        value: ArgSpec {
            name: p.name.clone(),
            kind,
            required: true,
            help: p.help.clone(),
        },
        from,
    }
}

/// Where a published value comes from: a regex with a capture group, or a JSON pointer.
fn publish_from(p: &RawPublish) -> Result<PublishFrom, String> {
    match (&p.regex, &p.json) {
        (Some(re), None) => match Regex::new(&ascii_classes(re)) {
            Ok(re) if re.captures_len() > 1 => Ok(PublishFrom::Regex(re)),
            Ok(_) => Err("regex needs a capture group (the value)".into()),
            Err(e) => Err(format!("regex does not compile: {e}")),
        },
        (None, Some(pointer)) if pointer.is_empty() || pointer.starts_with('/') => {
            Ok(PublishFrom::Json(pointer.clone()))
        }
        (None, Some(_)) => Err("json must be a JSON pointer such as \"/version\"".into()),
        _ => Err("needs either regex (with a capture group) or json (a JSON pointer)".into()),
    }
}

/// An approval gate: like `[approval]`, except that the requester never approves.
fn gate(s: &RawAction, found: &mut Vec<String>, line: usize) -> ApprovalSpec {
    not_a_probe(s, found);
    s.misplaced(
        &[
            ("text", s.text.is_some()),
            ("continue_on_error", s.continue_on_error.is_some()),
        ],
        NOT_THIS_KIND,
        found,
    );
    let approvals = s.approvals.unwrap_or(1);
    if approvals == 0 {
        found.push("approvals must be at least 1".into());
    }
    let approver_roles = s.approver_roles.clone().unwrap_or_default();
    if approver_roles.is_empty() {
        found.push("kind approval needs approver_roles naming at least one role".into());
    }
    let expires_after = match s.expires_after {
        Some(d) if !d.0.is_zero() => d.0,
        _ => {
            found.push("kind approval needs expires_after (more than 0)".into());
            Duration::from_secs(1)
        }
    };
    ApprovalSpec {
        line,
        approvals,
        approver_roles,
        allow_self_approval: false,
        expires_after,
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
    not_a_probe(s, found);
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

/// The keys only exec, http and wait_for steps have, refused on messages and gates.
fn not_a_probe(s: &RawAction, found: &mut Vec<String>) {
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
}

/// The keys only exec and http steps (and approval gates) have, refused on other kinds.
fn not_an_action(s: &RawAction, found: &mut Vec<String>) {
    if s.kind != RawKind::Approval {
        s.misplaced(
            &[
                ("approvals", s.approvals.is_some()),
                ("approver_roles", s.approver_roles.is_some()),
                ("expires_after", s.expires_after.is_some()),
            ],
            NOT_THIS_KIND,
            found,
        );
    }
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
