//! One command file: its raw TOML shape (with source spans for error lines) and the
//! validated [`CommandSpec`] it becomes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;
use toml::Spanned;

use super::{CatalogError, RESERVED_NAMES};
use crate::config::line_col;
use crate::domain::{HumanDuration, RateQuota, Role};

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
    pub action: ActionSpec,
    pub source: PathBuf,
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
    pub approvals: u32,
    pub approver_roles: Vec<Role>,
    pub allow_self_approval: bool,
    pub expires_after: Duration,
}

#[derive(Debug, Clone)]
pub enum ActionSpec {
    Exec {
        argv: Vec<String>,
        timeout: Duration,
        workdir: Option<PathBuf>,
        env: Vec<String>,
    },
    Http {
        method: String,
        url: String,
        body: Option<String>,
        headers: BTreeMap<String, String>,
        timeout: Duration,
        expect_status: Option<u16>,
    },
}

/// A channel-name pattern from `channels = [...]`; `*` matches any run of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelPattern(String);

impl ChannelPattern {
    pub fn new(p: &str) -> Self {
        ChannelPattern(p.trim_start_matches('#').to_owned())
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
    action: Spanned<RawAction>,
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

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawActionKind {
    Exec,
    Http,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    kind: RawActionKind,
    timeout: HumanDuration,
    argv: Option<Vec<String>>,
    workdir: Option<PathBuf>,
    #[serde(default)]
    env: Vec<String>,
    method: Option<String>,
    url: Option<String>,
    body: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    expect_status: Option<u16>,
}

const MAX_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// Parses and validates one file, returning every problem found.
pub(super) fn parse_command_file(file: &Path, src: &str) -> Result<CommandSpec, Vec<CatalogError>> {
    let err_at = |offset: usize, message: String| CatalogError {
        file: file.to_owned(),
        line: Some(line_col(src, offset).0),
        message,
    };
    let raw: RawCommand = toml::from_str(src).map_err(|e| {
        vec![err_at(
            e.span().map_or(0, |s| s.start),
            e.message().trim().to_owned(),
        )]
    })?;
    let mut errors = Vec::new();

    let name = raw.name.get_ref().clone();
    let name_ok = name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !name_ok {
        errors.push(err_at(
            raw.name.span().start,
            format!("name {name:?} must be 1-32 characters of a-z, 0-9, '-' or '_', starting with a letter"),
        ));
    } else if RESERVED_NAMES.contains(&name.as_str()) {
        errors.push(err_at(
            raw.name.span().start,
            format!("name {name:?} is a built-in command"),
        ));
    }
    if raw.summary.get_ref().trim().is_empty() {
        errors.push(err_at(
            raw.summary.span().start,
            "summary must not be empty".into(),
        ));
    }

    let mut args = Vec::new();
    let mut seen = BTreeSet::new();
    let mut optional_seen = false;
    for raw_arg in &raw.args {
        let at = raw_arg.span().start;
        let a = raw_arg.get_ref();
        let label = format!("arg {:?}", a.name);
        let valid_name = !a.name.is_empty()
            && a.name.starts_with(|c: char| c.is_ascii_lowercase())
            && a.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid_name {
            errors.push(err_at(
                at,
                format!("{label}: name must be a-z, 0-9 or '_', starting with a letter"),
            ));
        }
        if !seen.insert(a.name.clone()) {
            errors.push(err_at(at, format!("{label} is declared twice")));
        }
        if a.required && optional_seen {
            errors.push(err_at(
                at,
                format!("{label}: required arguments must come before optional ones"),
            ));
        }
        optional_seen |= !a.required;
        let misplaced = |key: &str, present: bool, errors: &mut Vec<CatalogError>| {
            if present {
                errors.push(err_at(
                    at,
                    format!("{label}: {key} does not apply to this kind"),
                ));
            }
        };
        let kind = match a.kind {
            RawArgKind::Choice => {
                misplaced("pattern", a.pattern.is_some(), &mut errors);
                misplaced("min/max", a.min.is_some() || a.max.is_some(), &mut errors);
                match &a.choices {
                    Some(c)
                        if !c.is_empty()
                            && c.iter().all(|v| !v.is_empty() && !v.starts_with('-')) =>
                    {
                        ArgKind::Choice(c.clone())
                    }
                    _ => {
                        errors.push(err_at(at, format!("{label}: kind choice needs non-empty choices that do not start with '-'")));
                        ArgKind::Choice(Vec::new())
                    }
                }
            }
            RawArgKind::String => {
                misplaced("choices", a.choices.is_some(), &mut errors);
                misplaced("min/max", a.min.is_some() || a.max.is_some(), &mut errors);
                let pattern = a.pattern.as_deref().and_then(|p| {
                    // Anchor the pattern so it must match the whole value, not a substring.
                    match Regex::new(&format!("^(?:{p})$")) {
                        Ok(r) => Some(r),
                        Err(e) => {
                            errors.push(err_at(
                                at,
                                format!("{label}: pattern does not compile: {e}"),
                            ));
                            None
                        }
                    }
                });
                ArgKind::String { pattern }
            }
            RawArgKind::Int => {
                misplaced("choices", a.choices.is_some(), &mut errors);
                misplaced("pattern", a.pattern.is_some(), &mut errors);
                let (min, max) = (a.min.unwrap_or(i64::MIN), a.max.unwrap_or(i64::MAX));
                if min > max {
                    errors.push(err_at(at, format!("{label}: min is greater than max")));
                }
                ArgKind::Int { min, max }
            }
            RawArgKind::Duration => {
                misplaced("choices", a.choices.is_some(), &mut errors);
                misplaced("pattern", a.pattern.is_some(), &mut errors);
                misplaced("min/max", a.min.is_some() || a.max.is_some(), &mut errors);
                ArgKind::Duration
            }
        };
        args.push(ArgSpec {
            name: a.name.clone(),
            kind,
            required: a.required,
            help: a.help.clone(),
        });
    }

    let approval = raw.approval.as_ref().map(|sp| {
        let a = sp.get_ref();
        let at = sp.span().start;
        if a.approvals == 0 {
            errors.push(err_at(at, "approval: approvals must be at least 1".into()));
        }
        if a.approver_roles.is_empty() {
            errors.push(err_at(
                at,
                "approval: approver_roles must name at least one role".into(),
            ));
        }
        if a.expires_after.0.is_zero() {
            errors.push(err_at(
                at,
                "approval: expires_after must be more than 0".into(),
            ));
        }
        ApprovalSpec {
            approvals: a.approvals,
            approver_roles: a.approver_roles.clone(),
            allow_self_approval: a.allow_self_approval,
            expires_after: a.expires_after.0,
        }
    });

    let (action, action_problems) = validate_action(raw.action.get_ref(), &seen);
    for m in action_problems {
        errors.push(err_at(raw.action.span().start, format!("action: {m}")));
    }

    if errors.is_empty() {
        Ok(CommandSpec {
            name,
            summary: raw.summary.into_inner(),
            roles: raw.roles,
            channels: raw
                .channels
                .iter()
                .map(|c| ChannelPattern::new(c))
                .collect(),
            args,
            limits: CommandLimits {
                per_user: raw.rate_limit.per_user,
                per_channel: raw.rate_limit.per_channel,
            },
            approval,
            action,
            source: file.to_owned(),
        })
    } else {
        Err(errors)
    }
}

fn validate_action(a: &RawAction, arg_names: &BTreeSet<String>) -> (ActionSpec, Vec<String>) {
    let mut problems = Vec::new();
    let mut report = |m: String| problems.push(m);
    let timeout = a.timeout.0;
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        report("timeout must be between 1s and 6h".into());
    }
    let unknown_placeholders = |field: &str, text: &str| -> Vec<String> {
        placeholders(text)
            .into_iter()
            .filter(|name| !arg_names.contains(*name))
            .map(|name| format!("{field} uses {{{name}}} but no argument has that name"))
            .collect()
    };
    let spec = match a.kind {
        RawActionKind::Exec => {
            let argv = a.argv.clone().unwrap_or_default();
            if argv.is_empty() || argv[0].trim().is_empty() {
                report("kind exec needs argv with a program first".into());
            } else if !placeholders(&argv[0]).is_empty() {
                report("argv[0] (the program) must not come from an argument".into());
            }
            for item in &argv {
                unknown_placeholders("argv", item)
                    .into_iter()
                    .for_each(&mut report);
            }
            for key in ["method", "url", "body", "expect_status"] {
                let present = match key {
                    "method" => a.method.is_some(),
                    "url" => a.url.is_some(),
                    "body" => a.body.is_some(),
                    _ => a.expect_status.is_some(),
                };
                if present {
                    report(format!("{key} does not apply to kind exec"));
                }
            }
            if !a.headers.is_empty() {
                report("headers do not apply to kind exec".into());
            }
            ActionSpec::Exec {
                argv,
                timeout,
                workdir: a.workdir.clone(),
                env: a.env.clone(),
            }
        }
        RawActionKind::Http => {
            let url = a.url.clone().unwrap_or_default();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                report("kind http needs url starting with http:// or https://".into());
            }
            unknown_placeholders("url", &url)
                .into_iter()
                .for_each(&mut report);
            if let Some(body) = &a.body {
                unknown_placeholders("body", body)
                    .into_iter()
                    .for_each(&mut report);
            }
            let method = a
                .method
                .clone()
                .unwrap_or_else(|| "POST".into())
                .to_ascii_uppercase();
            if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
                report(format!(
                    "method {method:?} must be GET, POST, PUT, PATCH or DELETE"
                ));
            }
            if a.argv.is_some() || a.workdir.is_some() || !a.env.is_empty() {
                report("argv, workdir and env do not apply to kind http".into());
            }
            ActionSpec::Http {
                method,
                url,
                body: a.body.clone(),
                headers: a.headers.clone(),
                timeout,
                expect_status: a.expect_status,
            }
        }
    };
    (spec, problems)
}

/// The `{name}` placeholders in a template: braces around an identifier. Other braces
/// (JSON bodies, for instance) are literal text.
pub fn placeholders(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let ident_len = after
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(after.len());
        if ident_len > 0 && after[ident_len..].starts_with('}') {
            out.push(&after[..ident_len]);
            rest = &after[ident_len + 1..];
        } else {
            rest = after;
        }
    }
    out
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
    fn placeholders_are_found() {
        assert_eq!(placeholders("--to={to}/{service}"), vec!["to", "service"]);
        assert!(placeholders("plain").is_empty());
        assert_eq!(placeholders(r#"{"reason": "{reason}"}"#), vec!["reason"]);
    }
}
