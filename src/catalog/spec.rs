//! One command file: its raw TOML shape (with source spans for error lines) and the
//! validated [`CommandSpec`] it becomes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;
use toml::Spanned;

use super::CatalogError;
pub use schedule::ScheduleSpec;
pub use steps::{
    OnCancel, Publish, PublishFrom, StepKind, StepSpec, WaitFor, WaitTarget, Workflow,
};

mod action;
mod schedule;
mod steps;

use crate::domain::{HumanDuration, RateQuota, Role, line_col};
use action::{MAX_TIMEOUT, RawAction};

/// A validated data-defined command.
#[derive(Debug, Clone)]
pub struct CommandSpec {
    pub name: String,
    pub summary: String,
    /// Who may request it; empty means nobody.
    pub roles: Vec<Role>,
    /// Channel names it may run in; empty means any channel.
    pub channels: Vec<ChannelPattern>,
    pub args: Vec<ArgSpec>,
    pub limits: CommandLimits,
    pub approval: Option<ApprovalSpec>,
    /// What it runs: one `[action]`, or `[[steps]]` with their `[[on_failure]]` steps.
    pub procedure: Procedure,
    pub source: PathBuf,
    /// Line of `[action]` (or the first `[[steps]]`) in `source`, to name it in problems found
    /// after loading (a secret's value, read from the environment).
    pub action_line: usize,
    /// `[schedule]`: when it runs by itself, as `schedule:NAME`.
    pub schedule: Option<ScheduleSpec>,
}

/// What a command runs.
#[derive(Debug, Clone)]
pub enum Procedure {
    /// One `[action]`, as every command file before steps.
    Single(ActionSpec),
    Steps(Workflow),
}

impl Procedure {
    /// Every exec/http action it may run (steps and rollback steps included), with the line
    /// of the step that declares it (`None` for a single `[action]`).
    fn actions(&self) -> Vec<(&ActionSpec, Option<usize>)> {
        match self {
            Procedure::Single(a) => vec![(a, None)],
            Procedure::Steps(w) => (w.steps.iter().chain(&w.on_failure))
                .filter_map(|s| match &s.kind {
                    StepKind::Action(a) => Some((a, Some(s.line))),
                    StepKind::WaitFor(_) | StepKind::Message(_) | StepKind::Approval(_) => None,
                })
                .collect(),
        }
    }
}

impl CommandSpec {
    /// Every exec/http action the command may run, with the line that declares it.
    pub fn actions(&self) -> Vec<(&ActionSpec, usize)> {
        (self.procedure.actions().into_iter())
            .map(|(a, line)| (a, line.unwrap_or(self.action_line)))
            .collect()
    }
}

impl CommandSpec {
    /// `/rollback <service> [--to <to>]`-style usage line.
    pub fn usage(&self) -> String {
        let mut s = format!("/{}", self.name);
        for a in &self.args {
            let v = match &a.kind {
                ArgKind::Choice(c) => c.join("|"),
                ArgKind::String { .. } | ArgKind::Int { .. } | ArgKind::Duration => a.name.clone(),
            };
            if a.required {
                s.push_str(&format!(" <{v}>"));
            } else {
                s.push_str(&format!(" [--{} <{v}>]", a.name));
            }
        }
        s
    }
}

#[derive(Debug, Clone)]
pub struct ArgSpec {
    pub name: String,
    pub kind: ArgKind,
    pub required: bool,
    pub help: Option<String>,
}

#[derive(Debug, Clone)]
pub enum ArgKind {
    Choice(Vec<String>),
    String { pattern: Option<Regex> },
    Int { min: i64, max: i64 },
    Duration,
}

#[derive(Debug, Clone, Default)]
pub struct CommandLimits {
    pub per_user: Option<RateQuota>,
    pub per_channel: Option<RateQuota>,
}

#[derive(Debug, Clone)]
pub struct ApprovalSpec {
    /// Line of `[approval]` in the command file, to name it in `check-config`'s warnings.
    pub line: usize,
    pub approvals: u32,
    pub approver_roles: Vec<Role>,
    pub allow_self_approval: bool,
    pub expires_after: Duration,
}

#[derive(Debug, Clone)]
pub enum ActionSpec {
    Exec(ExecSpec),
    Http(HttpSpec),
}

/// A process to run, without a shell.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    pub argv: Vec<Template>,
    pub timeout: Duration,
    pub workdir: Option<PathBuf>,
    /// Variables passed through from opsbot's environment; everything else is cleared.
    pub env: Vec<String>,
    /// Variables passed through as secrets: never shown, and redacted from output.
    pub secrets: Vec<String>,
}

/// An HTTP request to send.
#[derive(Debug, Clone)]
pub struct HttpSpec {
    pub method: String,
    pub url: Template,
    pub body: Option<Template>,
    pub headers: Vec<(String, Template)>,
    pub timeout: Duration,
    pub expect_status: Option<u16>,
    /// Variables usable as `{secret:NAME}` in url, headers and body.
    pub secrets: Vec<String>,
}

/// A text with `{arg}` and `{secret:NAME}` placeholders; other braces are literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(pub Vec<Segment>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Arg(String),
    Secret(String),
}

impl Template {
    pub fn parse(text: &str) -> Template {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            literal.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let close = after.find('}');
            let inner = close.map(|c| &after[..c]);
            let is_arg = |s: &str| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            };
            let is_secret_name = |s: &str| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            };
            let segment = match inner {
                Some(i) if is_arg(i) => Some(Segment::Arg(i.to_owned())),
                Some(i) => i
                    .strip_prefix("secret:")
                    .filter(|n| is_secret_name(n))
                    .map(|n| Segment::Secret(n.to_owned())),
                None => None,
            };
            match (segment, close) {
                (Some(seg), Some(c)) => {
                    if !literal.is_empty() {
                        segments.push(Segment::Literal(std::mem::take(&mut literal)));
                    }
                    segments.push(seg);
                    rest = &after[c + 1..];
                }
                _ => {
                    literal.push('{');
                    rest = after;
                }
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Template(segments)
    }

    pub fn args(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|s| match s {
            Segment::Arg(a) => Some(a.as_str()),
            Segment::Literal(_) | Segment::Secret(_) => None,
        })
    }

    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|s| match s {
            Segment::Secret(n) => Some(n.as_str()),
            Segment::Literal(_) | Segment::Arg(_) => None,
        })
    }
}

/// A channel-name pattern from `channels = [...]`; `*` matches any run of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelPattern(String);

impl ChannelPattern {
    pub fn new(p: &str) -> Self {
        ChannelPattern(p.trim_start_matches('#').to_owned())
    }

    /// The pattern as written, without a leading `#`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, channel: &str) -> bool {
        glob_match(
            self.0.as_bytes(),
            channel.trim_start_matches('#').as_bytes(),
        )
    }
}

fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    match pat.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob_match(rest, &s[i..])),
        Some((c, rest)) => s.first() == Some(c) && glob_match(rest, &s[1..]),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommand {
    name: Spanned<String>,
    summary: Spanned<String>,
    #[serde(default)]
    roles: Vec<Role>,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    args: Vec<Spanned<RawArg>>,
    #[serde(default)]
    rate_limit: RawLimits,
    approval: Option<Spanned<RawApproval>>,
    action: Option<Spanned<RawAction>>,
    steps: Option<Spanned<Vec<Spanned<RawAction>>>>,
    #[serde(default)]
    on_failure: Vec<Spanned<RawAction>>,
    schedule: Option<Spanned<schedule::RawSchedule>>,
    on_cancel: Option<Spanned<OnCancel>>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawArgKind {
    Choice,
    String,
    Int,
    Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArg {
    name: String,
    kind: RawArgKind,
    choices: Option<Vec<String>>,
    pattern: Option<String>,
    min: Option<i64>,
    max: Option<i64>,
    #[serde(default = "yes")]
    required: bool,
    help: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    per_user: Option<RateQuota>,
    per_channel: Option<RateQuota>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApproval {
    #[serde(default = "one")]
    approvals: u32,
    approver_roles: Vec<Role>,
    #[serde(default)]
    allow_self_approval: bool,
    expires_after: HumanDuration,
}

fn one() -> u32 {
    1
}

/// The problems found in one file, each at the line of the TOML it concerns.
struct Problems<'a> {
    file: &'a Path,
    src: &'a str,
    errors: Vec<CatalogError>,
}

impl Problems<'_> {
    fn at(&mut self, offset: usize, message: String) {
        self.errors.push(CatalogError {
            file: self.file.to_owned(),
            line: Some(line_col(self.src, offset).0),
            message,
        });
    }
}

/// Parses and validates one file, returning every problem found.
pub(super) fn parse_command_file(
    file: &Path,
    src: &str,
    reserved: &[&str],
) -> Result<CommandSpec, Vec<CatalogError>> {
    let mut problems = Problems {
        file,
        src,
        errors: Vec::new(),
    };
    let raw: RawCommand = match toml::from_str(src) {
        Ok(raw) => raw,
        Err(e) => {
            let offset = e.span().map_or(0, |s| s.start);
            problems.at(offset, e.message().trim().to_owned());
            return Err(problems.errors);
        }
    };
    check_name(&raw.name, reserved, &mut problems);
    if raw.summary.get_ref().trim().is_empty() {
        problems.at(raw.summary.span().start, "summary must not be empty".into());
    }
    let (mut args, arg_names) = parse_args(&raw.args, &mut problems);
    let approval = raw
        .approval
        .as_ref()
        .map(|a| parse_approval(a, &mut problems));
    let (procedure, action_at) = steps::procedure(&raw, &arg_names, &mut problems);
    for (action, _) in procedure.actions() {
        keep_ints_from_flags(&raw.args, &mut args, action, &mut problems);
    }
    let channels: Vec<ChannelPattern> = raw
        .channels
        .iter()
        .map(|c| ChannelPattern::new(c))
        .collect();
    let schedule = raw.schedule.as_ref().and_then(|s| {
        let command = schedule::Command {
            roles: &raw.roles,
            channels: &channels,
            arg_names: &arg_names,
        };
        schedule::parse(s, command, &mut problems)
    });
    if !problems.errors.is_empty() {
        return Err(problems.errors);
    }
    Ok(CommandSpec {
        name: raw.name.into_inner(),
        summary: raw.summary.into_inner(),
        roles: raw.roles,
        channels,
        args,
        limits: CommandLimits {
            per_user: raw.rate_limit.per_user,
            per_channel: raw.rate_limit.per_channel,
        },
        approval,
        procedure,
        source: file.to_owned(),
        action_line: line_col(src, action_at).0,
        schedule,
    })
}

fn check_name(name: &Spanned<String>, reserved: &[&str], problems: &mut Problems) {
    let at = name.span().start;
    let name = name.get_ref();
    let name_ok = name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !name_ok {
        problems.at(
            at,
            format!("name {name:?} must be 1-32 characters of a-z, 0-9, '-' or '_', starting with a letter"),
        );
    } else if reserved.contains(&name.as_str()) {
        problems.at(at, format!("name {name:?} is a built-in command"));
    }
}

/// The declared arguments, and their names (which the action's templates may use).
fn parse_args(
    raw: &[Spanned<RawArg>],
    problems: &mut Problems,
) -> (Vec<ArgSpec>, BTreeSet<String>) {
    let mut args = Vec::new();
    let mut seen = BTreeSet::new();
    let mut optional_seen = false;
    for raw_arg in raw {
        let at = raw_arg.span().start;
        let a = raw_arg.get_ref();
        let label = format!("arg {:?}", a.name);
        if !template_name(&a.name) {
            problems.at(
                at,
                format!("{label}: name must be a-z, 0-9 or '_', starting with a letter"),
            );
        }
        if !seen.insert(a.name.clone()) {
            problems.at(at, format!("{label} is declared twice"));
        }
        if a.required && optional_seen {
            problems.at(
                at,
                format!("{label}: required arguments must come before optional ones"),
            );
        }
        optional_seen |= !a.required;
        args.push(ArgSpec {
            name: a.name.clone(),
            kind: arg_kind(a, &label, at, problems),
            required: a.required,
            help: a.help.clone(),
        });
    }
    (args, seen)
}

/// One argument's kind with its constraints; keys of another kind are problems.
fn arg_kind(a: &RawArg, label: &str, at: usize, problems: &mut Problems) -> ArgKind {
    let mut misplaced = |key: &str, present: bool| {
        if present {
            problems.at(at, format!("{label}: {key} does not apply to this kind"));
        }
    };
    let min_max = a.min.is_some() || a.max.is_some();
    match a.kind {
        RawArgKind::Choice => {
            misplaced("pattern", a.pattern.is_some());
            misplaced("min/max", min_max);
            match &a.choices {
                Some(c)
                    if !c.is_empty() && c.iter().all(|v| !v.is_empty() && !v.starts_with('-')) =>
                {
                    ArgKind::Choice(c.clone())
                }
                _ => {
                    problems.at(at, format!("{label}: kind choice needs non-empty choices that do not start with '-'"));
                    ArgKind::Choice(Vec::new())
                }
            }
        }
        RawArgKind::String => {
            misplaced("choices", a.choices.is_some());
            misplaced("min/max", min_max);
            // Anchor the pattern so it must match the whole value, not a substring.
            let pattern = a.pattern.as_deref().and_then(|p| {
                Regex::new(&format!("^(?:{})$", ascii_classes(p)))
                    .map_err(|e| problems.at(at, format!("{label}: pattern does not compile: {e}")))
                    .ok()
            });
            ArgKind::String { pattern }
        }
        RawArgKind::Int => {
            misplaced("choices", a.choices.is_some());
            misplaced("pattern", a.pattern.is_some());
            let (min, max) = (a.min.unwrap_or(i64::MIN), a.max.unwrap_or(i64::MAX));
            if min > max {
                problems.at(at, format!("{label}: min is greater than max"));
            }
            ArgKind::Int { min, max }
        }
        RawArgKind::Duration => {
            misplaced("choices", a.choices.is_some());
            misplaced("pattern", a.pattern.is_some());
            misplaced("min/max", min_max);
            ArgKind::Duration
        }
    }
}

/// `\d`, `\w` and `\s` rewritten to their ASCII classes. The regex crate gives them Unicode
/// meaning, so `v\d+` would accept `v١` (an Arabic-Indic digit) that looks like a number to
/// an approver and means nothing to the script. Written as classes (`[0-9]`), they also work
/// nested inside a bracket class (`[\w.]` becomes `[[0-9A-Za-z_].]`). `\p{..}` stays Unicode.
fn ascii_classes(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(escaped) = chars.next() else {
            out.push(c);
            break;
        };
        match escaped {
            'd' => out.push_str("[0-9]"),
            'D' => out.push_str("[^0-9]"),
            'w' => out.push_str("[0-9A-Za-z_]"),
            'W' => out.push_str("[^0-9A-Za-z_]"),
            's' => out.push_str(r"[\t\n\x0B\x0C\r ]"),
            'S' => out.push_str(r"[^\t\n\x0B\x0C\r ]"),
            other => {
                out.push(c);
                out.push(other);
            }
        }
    }
    out
}

/// An int argument that starts an argv item would read as an option when negative (`-5`,
/// `-9223372036854775808`), and no value may start with `-`: its range starts at 0 unless
/// `min` says otherwise, and `min` may not be negative. Elsewhere (`--offset={n}`, an HTTP
/// action) a negative number is only a number.
fn keep_ints_from_flags(
    raw: &[Spanned<RawArg>],
    args: &mut [ArgSpec],
    action: &ActionSpec,
    problems: &mut Problems,
) {
    let ActionSpec::Exec(exec) = action else {
        return;
    };
    for (raw_arg, arg) in raw.iter().zip(args) {
        let ArgKind::Int { min, .. } = &mut arg.kind else {
            continue;
        };
        let starts_item =
            |t: &Template| matches!(t.0.first(), Some(Segment::Arg(a)) if *a == arg.name);
        if !exec.argv.iter().skip(1).any(starts_item) {
            continue;
        }
        match raw_arg.get_ref().min {
            Some(m) if m < 0 => {
                let n = &arg.name;
                problems.at(
                    raw_arg.span().start,
                    format!("arg {n:?}: min is negative, but {{{n}}} starts an argv item, where a negative number reads as an option; write --{n}={{{n}}} or make min 0 or more"),
                );
            }
            Some(_) => {}
            None => *min = 0,
        }
    }
}

fn parse_approval(sp: &Spanned<RawApproval>, problems: &mut Problems) -> ApprovalSpec {
    let line = line_col(problems.src, sp.span().start).0;
    let a = sp.get_ref();
    let at = sp.span().start;
    if a.approvals == 0 {
        problems.at(at, "approval: approvals must be at least 1".into());
    }
    if a.approver_roles.is_empty() {
        problems.at(
            at,
            "approval: approver_roles must name at least one role".into(),
        );
    }
    if a.expires_after.0.is_zero() {
        problems.at(at, "approval: expires_after must be more than 0".into());
    }
    ApprovalSpec {
        line,
        approvals: a.approvals,
        approver_roles: a.approver_roles.clone(),
        allow_self_approval: a.allow_self_approval,
        expires_after: a.expires_after.0,
    }
}

/// Whether `name` may be used in templates as `{name}` (an argument's or a published
/// value's): a-z, 0-9 or '_', starting with a letter.
fn template_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_patterns_glob() {
        let p = ChannelPattern::new("incident-*");
        assert!(p.matches("incident-42"));
        assert!(p.matches("#incident-"));
        assert!(!p.matches("ops"));
        assert!(ChannelPattern::new("ops").matches("#ops"));
    }

    #[test]
    fn templates_parse() {
        let t = Template::parse("--to={to}/{service}");
        assert_eq!(t.args().collect::<Vec<_>>(), vec!["to", "service"]);
        assert_eq!(
            Template::parse("plain").0,
            vec![Segment::Literal("plain".into())]
        );
        let json = Template::parse(r#"{"reason": "{reason}", "t": "{secret:TOKEN}"}"#);
        assert_eq!(json.args().collect::<Vec<_>>(), vec!["reason"]);
        assert_eq!(json.secrets().collect::<Vec<_>>(), vec!["TOKEN"]);
        assert_eq!(
            Template::parse("{Bad}{").0,
            vec![Segment::Literal("{Bad}{".into())]
        );
    }
}
