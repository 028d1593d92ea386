//! `[[steps]]` and `[[on_failure]]` in a command file: a procedure of several steps (exec and
//! http actions as in `[action]`, waiting for a health check or URL, a message to the
//! channel) with the rollback steps that run when one fails. A file has either one
//! `[action]` or `[[steps]]`, never both.

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

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum RawStepKind {
    Exec,
    Http,
    WaitFor,
    Message,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    name: String,
    kind: RawStepKind,
    #[serde(default)]
    continue_on_error: bool,
    timeout: Option<HumanDuration>,
    argv: Option<Vec<String>>,
    workdir: Option<PathBuf>,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    secrets: Vec<String>,
    method: Option<String>,
    url: Option<String>,
    body: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    expect_status: Option<u16>,
    check: Option<String>,
    interval: Option<HumanDuration>,
    deadline: Option<HumanDuration>,
    text: Option<String>,
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
            let (spec, found) = validate_action(action.get_ref(), arg_names);
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
            let mut parse = |list: &[Spanned<RawStep>], problems: &mut Problems| -> Vec<StepSpec> {
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
    raw: &Spanned<RawStep>,
    arg_names: &BTreeSet<String>,
    names: &mut BTreeSet<String>,
    problems: &mut Problems,
) -> StepSpec {
    let at = raw.span().start;
    let s = raw.get_ref();
    let label = format!("step {:?}", s.name);
    let name_ok = !s.name.is_empty()
        && s.name.len() <= 32
        && s.name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !name_ok {
        problems.at(
            at,
            format!("{label}: name must be 1-32 characters of a-z, 0-9, '-' or '_'"),
        );
    }
    if !names.insert(s.name.clone()) {
        problems.at(
            at,
            format!("{label}: step names must be unique; this one is used twice"),
        );
    }
    let mut found = Vec::new();
    let kind = match s.kind {
        RawStepKind::Exec | RawStepKind::Http => StepKind::Action(s.action(&mut found, arg_names)),
        RawStepKind::WaitFor => StepKind::WaitFor(s.wait_for(&mut found, arg_names)),
        RawStepKind::Message => StepKind::Message(s.message(&mut found, arg_names)),
    };
    for m in found {
        problems.at(at, format!("{label}: {m}"));
    }
    StepSpec {
        name: s.name.clone(),
        line: line_col(problems.src, at).0,
        continue_on_error: s.continue_on_error,
        kind,
    }
}

impl RawStep {
    /// Keys of other step kinds that this one has.
    fn misplaced(&self, keys: &[(&str, bool)], found: &mut Vec<String>) {
        for (key, present) in keys {
            if *present {
                found.push(format!("{key} does not apply to this kind of step"));
            }
        }
    }

    fn action(&self, found: &mut Vec<String>, arg_names: &BTreeSet<String>) -> ActionSpec {
        self.misplaced(
            &[
                ("check", self.check.is_some()),
                ("interval", self.interval.is_some()),
                ("deadline", self.deadline.is_some()),
                ("text", self.text.is_some()),
            ],
            found,
        );
        let timeout = self.timeout.unwrap_or_else(|| {
            found.push("timeout is required".into());
            HumanDuration(Duration::from_secs(1))
        });
        let raw = RawAction {
            kind: match self.kind {
                RawStepKind::Http => RawActionKind::Http,
                _ => RawActionKind::Exec,
            },
            timeout,
            argv: self.argv.clone(),
            workdir: self.workdir.clone(),
            env: self.env.clone(),
            secrets: self.secrets.clone(),
            method: self.method.clone(),
            url: self.url.clone(),
            body: self.body.clone(),
            headers: self.headers.clone(),
            expect_status: self.expect_status,
        };
        let (spec, more) = validate_action(&raw, arg_names);
        found.extend(more);
        spec
    }

    fn wait_for(&self, found: &mut Vec<String>, arg_names: &BTreeSet<String>) -> WaitFor {
        self.not_an_action(found);
        self.misplaced(&[("text", self.text.is_some())], found);
        let target = match (&self.check, &self.url) {
            (Some(check), None) => WaitTarget::Check(check.clone()),
            (None, Some(url)) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    found.push("url must start with http:// or https://".into());
                }
                WaitTarget::Url(parse_template("url", url, false, arg_names, &[], found))
            }
            _ => {
                found
                    .push("kind wait_for needs either check (a health check's name) or url".into());
                WaitTarget::Check(String::new())
            }
        };
        let interval = self.interval.map_or(DEFAULT_INTERVAL, |d| d.0);
        let deadline = match self.deadline {
            Some(d) if !d.0.is_zero() && d.0 <= MAX_TIMEOUT => d.0,
            _ => {
                found.push("kind wait_for needs a deadline between 1s and 6h".into());
                Duration::from_secs(1)
            }
        };
        if interval.is_zero() || interval > deadline {
            found.push("interval must be more than 0 and at most the deadline".into());
        }
        let timeout = self
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

    fn message(&self, found: &mut Vec<String>, arg_names: &BTreeSet<String>) -> Template {
        self.not_an_action(found);
        self.misplaced(
            &[
                ("url", self.url.is_some()),
                ("check", self.check.is_some()),
                ("interval", self.interval.is_some()),
                ("deadline", self.deadline.is_some()),
                ("timeout", self.timeout.is_some()),
            ],
            found,
        );
        match &self.text {
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
    fn not_an_action(&self, found: &mut Vec<String>) {
        self.misplaced(
            &[
                ("argv", self.argv.is_some()),
                ("workdir", self.workdir.is_some()),
                ("env", !self.env.is_empty()),
                ("secrets", !self.secrets.is_empty()),
                ("method", self.method.is_some()),
                ("body", self.body.is_some()),
                ("headers", !self.headers.is_empty()),
                ("expect_status", self.expect_status.is_some()),
            ],
            found,
        );
    }
}
