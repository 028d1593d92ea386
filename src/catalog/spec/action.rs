//! The raw shape of an action in a command file, shared by `[action]` and `[[steps]]` (one
//! struct, because serde's `flatten` does not combine with `deny_unknown_fields`), and the
//! checks that turn an exec or http action into an [`ActionSpec`].

use super::*;

/// The longest a single action, step or wait may be given.
pub(super) const MAX_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawKind {
    Exec,
    Http,
    WaitFor,
    Message,
    Approval,
}

impl RawKind {
    pub(super) fn key(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Http => "http",
            Self::WaitFor => "wait_for",
            Self::Message => "message",
            Self::Approval => "approval",
        }
    }
}

/// An `[action]` table or one `[[steps]]`/`[[on_failure]]` entry as written. Keys that only a
/// step (or only some kinds) may have are refused where they do not apply.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAction {
    pub(super) kind: RawKind,
    /// Steps only.
    pub(super) name: Option<String>,
    /// Steps only.
    pub(super) continue_on_error: Option<bool>,
    pub(super) timeout: Option<HumanDuration>,
    pub(super) argv: Option<Vec<String>>,
    pub(super) workdir: Option<PathBuf>,
    #[serde(default)]
    pub(super) env: Vec<String>,
    #[serde(default)]
    pub(super) secrets: Vec<String>,
    pub(super) method: Option<String>,
    pub(super) url: Option<String>,
    pub(super) body: Option<String>,
    #[serde(default)]
    pub(super) headers: BTreeMap<String, String>,
    pub(super) expect_status: Option<u16>,
    /// `wait_for` only.
    pub(super) check: Option<String>,
    pub(super) interval: Option<HumanDuration>,
    pub(super) deadline: Option<HumanDuration>,
    /// `message` only.
    pub(super) text: Option<String>,
    /// `approval` only.
    pub(super) approvals: Option<u32>,
    pub(super) approver_roles: Option<Vec<Role>>,
    pub(super) expires_after: Option<HumanDuration>,
    /// exec and http steps only: a value taken from the output for later steps.
    pub(super) publish: Option<RawPublish>,
}

/// `publish = { name = "...", regex = "..." | json = "/pointer", kind = ..., pattern = ... }`:
/// where a step's value comes from, and the argument rules it must pass.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPublish {
    pub(super) name: String,
    /// A regex whose first capture group is the value.
    pub(super) regex: Option<String>,
    /// A JSON pointer (RFC 6901) into the output parsed as JSON.
    pub(super) json: Option<String>,
    pub(super) kind: Option<RawArgKind>,
    pub(super) choices: Option<Vec<String>>,
    pub(super) pattern: Option<String>,
    pub(super) min: Option<i64>,
    pub(super) max: Option<i64>,
    pub(super) help: Option<String>,
}

impl RawAction {
    /// Each key given that does not apply here, as a problem.
    pub(super) fn misplaced(&self, keys: &[(&str, bool)], why: &str, found: &mut Vec<String>) {
        for (key, present) in keys {
            if *present {
                found.push(format!("{key} {why}"));
            }
        }
    }

    /// The keys only `wait_for`, `message` and `approval` steps have.
    pub(super) fn step_only_keys(&self) -> [(&'static str, bool); 7] {
        [
            ("check", self.check.is_some()),
            ("interval", self.interval.is_some()),
            ("deadline", self.deadline.is_some()),
            ("text", self.text.is_some()),
            ("approvals", self.approvals.is_some()),
            ("approver_roles", self.approver_roles.is_some()),
            ("expires_after", self.expires_after.is_some()),
        ]
    }

    /// An exec or http action, which must say how long it may take.
    pub(super) fn action(
        &self,
        arg_names: &BTreeSet<String>,
        found: &mut Vec<String>,
    ) -> ActionSpec {
        let timeout = self.timeout.map_or_else(
            || {
                found.push("timeout is required".into());
                Duration::from_secs(1)
            },
            |t| t.0,
        );
        let (spec, more) = validate_action(self, timeout, arg_names);
        found.extend(more);
        spec
    }

    /// This table as a command's single `[action]`.
    pub(super) fn single(&self, arg_names: &BTreeSet<String>) -> (ActionSpec, Vec<String>) {
        let mut found = Vec::new();
        let mut keys = vec![
            ("name", self.name.is_some()),
            ("continue_on_error", self.continue_on_error.is_some()),
            ("publish", self.publish.is_some()),
        ];
        keys.extend(self.step_only_keys());
        self.misplaced(&keys, "applies only to [[steps]]", &mut found);
        let spec = self.action(arg_names, &mut found);
        (spec, found)
    }
}

/// Checks an exec or http action (an `[action]` or such a step) and the timeout it runs under.
pub(super) fn validate_action(
    a: &RawAction,
    timeout: Duration,
    arg_names: &BTreeSet<String>,
) -> (ActionSpec, Vec<String>) {
    let mut check = ActionCheck {
        raw: a,
        timeout,
        arg_names,
        problems: Vec::new(),
    };
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        check
            .problems
            .push("timeout must be between 1s and 6h".into());
    }
    let env_name =
        |n: &String| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    for name in a.env.iter().chain(&a.secrets) {
        if !env_name(name) {
            check
                .problems
                .push(format!("{name:?} is not an environment variable name"));
        }
    }
    let spec = match a.kind {
        RawKind::Exec => ActionSpec::Exec(check.exec()),
        RawKind::Http => ActionSpec::Http(check.http()),
        RawKind::WaitFor | RawKind::Message | RawKind::Approval => {
            check.problems.push(format!(
                "kind {} is for [[steps]] only; an [action] is exec or http",
                a.kind.key()
            ));
            ActionSpec::Exec(ExecSpec {
                argv: Vec::new(),
                timeout,
                workdir: None,
                env: Vec::new(),
                secrets: Vec::new(),
            })
        }
    };
    (spec, check.problems)
}

/// Checks one `[action]` against its kind, collecting problems as it goes.
struct ActionCheck<'a> {
    raw: &'a RawAction,
    timeout: Duration,
    arg_names: &'a BTreeSet<String>,
    problems: Vec<String>,
}

impl ActionCheck<'_> {
    fn template(&mut self, field: &str, text: &str, secrets_allowed: bool) -> Template {
        parse_template(
            field,
            text,
            secrets_allowed,
            self.arg_names,
            &self.raw.secrets,
            &mut self.problems,
        )
    }

    fn exec(&mut self) -> ExecSpec {
        let a = self.raw;
        let raw = a.argv.clone().unwrap_or_default();
        let argv: Vec<Template> = raw
            .iter()
            .map(|item| self.template("argv", item, false))
            .collect();
        if raw.is_empty() || raw[0].trim().is_empty() {
            self.problems
                .push("kind exec needs argv with a program first".into());
        } else if argv[0].args().next().is_some() {
            self.problems
                .push("argv[0] (the program) must not come from an argument".into());
        }
        for (key, present) in [
            ("method", a.method.is_some()),
            ("url", a.url.is_some()),
            ("body", a.body.is_some()),
            ("expect_status", a.expect_status.is_some()),
            ("headers", !a.headers.is_empty()),
        ] {
            if present {
                self.problems
                    .push(format!("{key} does not apply to kind exec"));
            }
        }
        ExecSpec {
            argv,
            timeout: self.timeout,
            workdir: a.workdir.clone(),
            env: a.env.clone(),
            secrets: a.secrets.clone(),
        }
    }

    fn http(&mut self) -> HttpSpec {
        let a = self.raw;
        let raw_url = a.url.clone().unwrap_or_default();
        if !(raw_url.starts_with("http://") || raw_url.starts_with("https://")) {
            self.problems
                .push("kind http needs url starting with http:// or https://".into());
        }
        let url = self.template("url", &raw_url, true);
        let body = a.body.as_deref().map(|b| self.template("body", b, true));
        let headers = (a.headers.iter())
            .map(|(k, v)| (k.clone(), self.template("headers", v, true)))
            .collect();
        let method = (a.method.clone())
            .unwrap_or_else(|| "POST".into())
            .to_ascii_uppercase();
        if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
            self.problems.push(format!(
                "method {method:?} must be GET, POST, PUT, PATCH or DELETE"
            ));
        }
        if a.argv.is_some() || a.workdir.is_some() || !a.env.is_empty() {
            self.problems
                .push("argv, workdir and env do not apply to kind http".into());
        }
        HttpSpec {
            method,
            url,
            body,
            headers,
            timeout: self.timeout,
            expect_status: a.expect_status,
            secrets: a.secrets.clone(),
        }
    }
}

pub(super) fn parse_template(
    field: &str,
    text: &str,
    secrets_allowed: bool,
    arg_names: &BTreeSet<String>,
    declared_secrets: &[String],
    problems: &mut Vec<String>,
) -> Template {
    let t = Template::parse(text);
    for name in t.args() {
        if !arg_names.contains(name) {
            problems.push(format!(
                "{field} uses {{{name}}} but no argument (or value published by an earlier step) has that name"
            ));
        }
    }
    for name in t.secrets() {
        if !secrets_allowed {
            problems.push(format!(
                "{field} may not use {{secret:{name}}}; pass secrets to programs through `secrets` (environment)"
            ));
        } else if !declared_secrets.iter().any(|s| s == name) {
            problems.push(format!(
                "{field} uses {{secret:{name}}} but {name} is not listed in secrets"
            ));
        }
    }
    t
}
