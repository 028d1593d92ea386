//! Rendering a runbook's action from its command file and bound arguments: the exact argv
//! or HTTP request that will run, a display form with secrets masked (what approvers see and
//! `--dry-run` prints), and a hash of that display form that binds an approval to it.

use std::fmt::Write as _;

use aho_corasick::{AhoCorasick, MatchKind};
use secrecy::SecretString;
use sha2::{Digest, Sha256};

use std::time::Duration;

use crate::catalog::{
    ActionSpec, ApprovalSpec, CommandSpec, ExecSpec, HttpSpec, Procedure, Publish, Segment,
    StepKind, StepSpec, Template, WaitTarget, Workflow,
};
use crate::domain::{ActionKind, BoundArgs, human_duration};

#[derive(Debug, Clone)]
pub struct RenderedAction {
    pub plan: Plan,
    /// Human-readable, secrets shown as `{secret:NAME}`.
    pub display: String,
    /// sha256 over the command name, approval policy and `display`.
    pub hash: String,
    /// Values to scrub from any output before it is stored or posted.
    pub secret_values: Vec<SecretString>,
}

/// What will run: one action, or steps with their rollback steps.
#[derive(Debug, Clone)]
pub enum Plan {
    Single(ActionKind),
    Steps {
        steps: Vec<RenderedStep>,
        on_failure: Vec<RenderedStep>,
    },
}

/// One step as it will run.
#[derive(Debug, Clone)]
pub struct RenderedStep {
    pub name: String,
    pub continue_on_error: bool,
    pub work: StepWork,
    /// Its line of the display (`2. wait-healthy: wait for ...`).
    pub line: String,
    /// Values published by earlier steps that it uses: it is rendered again with them just
    /// before it runs (until then they show as `{name}`).
    pub uses: Vec<String>,
    /// The value it publishes from its output, if any.
    pub publish: Option<Publish>,
}

#[derive(Debug, Clone)]
pub enum StepWork {
    Action(ActionKind),
    /// Probes `target` every `interval` until it is up, for at most `deadline`.
    WaitFor {
        target: WaitProbe,
        interval: Duration,
        deadline: Duration,
    },
    Message(String),
    /// An approval gate: the steps after it wait for these approvals.
    Approval(ApprovalSpec),
}

/// What a `wait_for` step probes.
#[derive(Debug, Clone)]
pub enum WaitProbe {
    /// A configured health check, by name.
    Check(String),
    /// A GET request (an `ActionKind::Http`), up when it answers 2xx.
    Url(ActionKind),
}

/// Renders `spec` with `args`; `lookup_env` reads opsbot's environment (for pass-through
/// variables and secrets). Fails, naming the variable, when a secret is not set.
pub fn render(
    spec: &CommandSpec,
    args: &BoundArgs,
    lookup_env: &dyn Fn(&str) -> Option<String>,
) -> Result<RenderedAction, String> {
    render_published(spec, args, &[], lookup_env)
}

/// [`render`] with the values steps have published so far; those not published yet are
/// shown as `{name}`.
pub fn render_published(
    spec: &CommandSpec,
    args: &BoundArgs,
    published: &[(String, String)],
    lookup_env: &dyn Fn(&str) -> Option<String>,
) -> Result<RenderedAction, String> {
    let mut secrets = Secrets {
        lookup_env,
        values: Vec::new(),
    };
    let (plan, display) = match &spec.procedure {
        Procedure::Single(action) => {
            let (kind, display) = render_action(action, args, &mut secrets)?;
            (Plan::Single(kind), display)
        }
        Procedure::Steps(w) => {
            let mut values = args.0.clone();
            for name in published_names(w) {
                let value = (published.iter())
                    .find(|(n, _)| *n == name)
                    .map_or_else(|| format!("{{{name}}}"), |(_, v)| v.clone());
                values.push((name, value));
            }
            render_workflow(w, &BoundArgs(values), &mut secrets)?
        }
    };
    Ok(RenderedAction {
        plan,
        hash: approval_hash(spec, &display),
        display,
        secret_values: secrets.values,
    })
}

fn render_action(
    action: &ActionSpec,
    args: &BoundArgs,
    secrets: &mut Secrets,
) -> Result<(ActionKind, String), String> {
    match action {
        ActionSpec::Exec(exec) => render_exec(exec, args, secrets),
        ActionSpec::Http(http) => render_http(http, args, secrets),
    }
}

/// Every step and rollback step, numbered, each as it will run: the display (and so the
/// approval hash) covers all of them.
fn render_workflow(
    w: &Workflow,
    args: &BoundArgs,
    secrets: &mut Secrets,
) -> Result<(Plan, String), String> {
    let mut display = String::new();
    let published = published_names(w);
    let mut list = |specs: &[StepSpec], display: &mut String| {
        let mut steps = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let (step, shown) = render_step(spec, args, secrets)?;
            let tail = if spec.continue_on_error {
                " (continues on error)"
            } else {
                ""
            };
            let shown = shown.replace('\n', "\n     ");
            let line = format!("{}. {}{tail}: {shown}", i + 1, spec.name);
            let _ = writeln!(display, "{line}");
            let uses = (step.uses.iter())
                .filter(|n| published.contains(n))
                .cloned()
                .collect();
            steps.push(RenderedStep { line, uses, ..step });
        }
        Ok::<_, String>(steps)
    };
    let steps = list(&w.steps, &mut display)?;
    let on_failure = if w.on_failure.is_empty() {
        Vec::new()
    } else {
        display.push_str("on failure:\n");
        list(&w.on_failure, &mut display)?
    };
    let display = display.trim_end().to_owned();
    Ok((Plan::Steps { steps, on_failure }, display))
}

fn render_step(
    spec: &StepSpec,
    args: &BoundArgs,
    secrets: &mut Secrets,
) -> Result<(RenderedStep, String), String> {
    let (work, shown) = match &spec.kind {
        StepKind::Action(action) => {
            let (kind, shown) = render_action(action, args, secrets)?;
            (StepWork::Action(kind), shown)
        }
        StepKind::WaitFor(wait) => {
            let (target, what) = match &wait.target {
                WaitTarget::Check(name) => (
                    WaitProbe::Check(name.clone()),
                    format!("health check {name}"),
                ),
                WaitTarget::Url(url) => {
                    let (filled, _) = fill(url, args, Escape::Url, &mut |_| Ok(String::new()))?;
                    let (real, shown) = requested_url(&filled, &[])?;
                    let get = ActionKind::Http {
                        method: "GET".into(),
                        url: SecretString::from(real),
                        headers: Vec::new(),
                        body: None,
                        timeout: wait.timeout,
                        expect_status: None,
                    };
                    (WaitProbe::Url(get), format!("GET {shown}"))
                }
            };
            let shown = format!(
                "wait for {what} to be up, every {}, for at most {}",
                human_duration(wait.interval),
                human_duration(wait.deadline)
            );
            let work = StepWork::WaitFor {
                target,
                interval: wait.interval,
                deadline: wait.deadline,
            };
            (work, shown)
        }
        StepKind::Message(text) => {
            let (text, _) = fill(text, args, Escape::Verbatim, &mut |_| Ok(String::new()))?;
            let shown = format!("post {text:?}");
            (StepWork::Message(text), shown)
        }
        StepKind::Approval(policy) => {
            let roles: Vec<&str> = policy.approver_roles.iter().map(|r| r.as_str()).collect();
            let shown = format!(
                "wait for {} approval(s) from {} (not the requester), expiring after {}",
                policy.approvals,
                roles.join(", "),
                human_duration(policy.expires_after)
            );
            (StepWork::Approval(policy.clone()), shown)
        }
    };
    let step = RenderedStep {
        name: spec.name.clone(),
        continue_on_error: spec.continue_on_error,
        work,
        line: String::new(),
        uses: step_uses(spec),
        publish: spec.publish.clone(),
    };
    Ok((step, shown))
}

/// The names of the values a workflow's steps publish.
fn published_names(w: &Workflow) -> Vec<String> {
    (w.steps.iter().chain(&w.on_failure))
        .filter_map(|s| s.publish.as_ref().map(|p| p.value.name.clone()))
        .collect()
}

/// Every `{name}` a step's templates use (arguments and published values alike).
fn templates_of(spec: &StepSpec) -> Vec<&Template> {
    match &spec.kind {
        StepKind::Action(ActionSpec::Exec(e)) => e.argv.iter().collect(),
        StepKind::Action(ActionSpec::Http(h)) => (std::iter::once(&h.url))
            .chain(h.body.as_ref())
            .chain(h.headers.iter().map(|(_, v)| v))
            .collect(),
        StepKind::WaitFor(w) => match &w.target {
            WaitTarget::Url(url) => vec![url],
            WaitTarget::Check(_) => Vec::new(),
        },
        StepKind::Message(text) => vec![text],
        StepKind::Approval(_) => Vec::new(),
    }
}

/// The names a step's templates use (`render_workflow` keeps the published ones).
fn step_uses(spec: &StepSpec) -> Vec<String> {
    let mut names: Vec<String> = (templates_of(spec).into_iter())
        .flat_map(|t| t.args().map(str::to_owned))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The display of the steps from `first` on (and of the rollback steps): what the approvals
/// of a gate (the steps after it) or of a retry (the steps it runs again) are bound to.
pub fn display_from(steps: &[RenderedStep], on_failure: &[RenderedStep], first: usize) -> String {
    let mut out = String::new();
    for s in steps.iter().skip(first) {
        let _ = writeln!(out, "{}", s.line);
    }
    if !on_failure.is_empty() {
        out.push_str("on failure:\n");
        for s in on_failure {
            let _ = writeln!(out, "{}", s.line);
        }
    }
    out.trim_end().to_owned()
}

/// sha256 over the command, what starts the steps (`gate 2`, `retry from 3`), the approval
/// policy and the steps as shown: an approval is for exactly those steps, under that policy.
pub fn steps_hash(
    command: &str,
    start: &str,
    policy: Option<&ApprovalSpec>,
    shown: &str,
) -> String {
    let mut h = Sha256::new();
    h.update(format!("{command}\n{start}\n").as_bytes());
    if let Some(p) = policy {
        let roles: Vec<&str> = p.approver_roles.iter().map(|r| r.as_str()).collect();
        let expires = human_duration(p.expires_after);
        h.update(format!("{}:{}:{expires}\n", p.approvals, roles.join(",")).as_bytes());
    }
    h.update(shown.as_bytes());
    hex::encode(h.finalize())
}

/// Secrets read from opsbot's environment while rendering, kept to scrub output later.
struct Secrets<'a> {
    lookup_env: &'a dyn Fn(&str) -> Option<String>,
    values: Vec<SecretString>,
}

impl Secrets<'_> {
    fn get(&mut self, name: &str) -> Result<String, String> {
        let value = (self.lookup_env)(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!(
                "secret {name} is not set in opsbot's environment; an operator must set it and restart opsbot"
            ))?;
        self.values.push(SecretString::from(value.clone()));
        Ok(value)
    }
}

fn render_exec(
    action: &ExecSpec,
    args: &BoundArgs,
    secrets: &mut Secrets,
) -> Result<(ActionKind, String), String> {
    let ExecSpec {
        argv,
        timeout,
        workdir,
        env,
        secrets: secret_names,
    } = action;
    // An item whose every argument placeholder is an absent optional argument is left
    // out entirely, so `--to={to}` disappears rather than becoming `--to=`.
    let items: Vec<String> = argv
        .iter()
        .filter(|t| t.args().next().is_none() || t.args().any(|a| args.get(a).is_some()))
        .map(|t| fill(t, args, Escape::Verbatim, &mut |_| Ok(String::new())).map(|(real, _)| real))
        .collect::<Result<_, _>>()?;
    let mut process_env = Vec::new();
    for name in env {
        if let Some(v) = (secrets.lookup_env)(name) {
            process_env.push((name.clone(), SecretString::from(v)));
        }
    }
    for name in secret_names {
        process_env.push((name.clone(), SecretString::from(secrets.get(name)?)));
    }
    let mut display = items
        .iter()
        .map(|i| shell_quote(i))
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(dir) = workdir {
        let _ = write!(display, "\n  in {}", dir.display());
    }
    if !env.is_empty() {
        let _ = write!(display, "\n  env: {}", env.join(", "));
    }
    if !secret_names.is_empty() {
        let _ = write!(display, "\n  secrets: {}", secret_names.join(", "));
    }
    let _ = write!(display, "\n  timeout: {}s", timeout.as_secs());
    let kind = ActionKind::Exec {
        argv: items,
        workdir: workdir.clone(),
        env: process_env,
        timeout: *timeout,
    };
    Ok((kind, display))
}

fn render_http(
    action: &HttpSpec,
    args: &BoundArgs,
    secrets: &mut Secrets,
) -> Result<(ActionKind, String), String> {
    let HttpSpec {
        method,
        url,
        body,
        headers,
        timeout,
        expect_status,
        ..
    } = action;
    let mut url_secrets = Vec::new();
    let (filled, _) = fill(url, args, Escape::Url, &mut |name| {
        let value = secrets.get(name)?;
        url_secrets.push((name.to_owned(), value.clone()));
        Ok(value)
    })?;
    let (url_real, url_shown) = requested_url(&filled, &url_secrets)?;
    let mut secret = |name: &str| secrets.get(name);
    let mut display = format!("{method} {url_shown}");
    let mut real_headers = Vec::new();
    for (name, value) in headers {
        // Header values: control characters are refused when arguments are bound.
        let (real, shown) = fill(value, args, Escape::Verbatim, &mut secret)?;
        let _ = write!(display, "\n  {name}: {shown}");
        real_headers.push((name.clone(), SecretString::from(real)));
    }
    let body = match body {
        Some(b) => {
            let (real, shown) = fill(b, args, Escape::Json, &mut secret)?;
            let _ = write!(display, "\n  body: {shown}");
            Some(SecretString::from(real))
        }
        None => None,
    };
    let _ = write!(display, "\n  timeout: {}s", timeout.as_secs());
    let kind = ActionKind::Http {
        method: method.clone(),
        url: SecretString::from(url_real),
        headers: real_headers,
        body,
        timeout: *timeout,
        expect_status: *expect_status,
    };
    Ok((kind, display))
}

/// The URL exactly as it will be requested, parsed by the `url` crate as reqwest parses it
/// (case, default ports and `.`/`..` segments resolved), and that same text with secrets
/// masked for display: approvers see the request, not the template. A value the parser
/// would change cannot be found to mask, so such a secret is refused rather than shown.
fn requested_url(filled: &str, secrets: &[(String, String)]) -> Result<(String, String), String> {
    if has_dot_segment(filled) {
        return Err("url has a '.' or '..' path segment once filled in; refusing a request to another path than the one shown".into());
    }
    // The parser's errors name the problem, never the text, so no secret can leak here.
    let real = url::Url::parse(filled)
        .map_err(|e| format!("url is not valid once filled in: {e}"))?
        .to_string();
    let mut shown = real.clone();
    for (name, value) in secrets {
        if !real.contains(value.as_str()) {
            return Err(format!(
                "secret {name} has characters a URL cannot carry as they are; store it percent-encoded"
            ));
        }
        shown = shown.replace(value.as_str(), &format!("{{secret:{name}}}"));
    }
    Ok((real, shown))
}

/// Whether the path has a `.` or `..` segment (also spelled `%2e`), which the URL parser
/// resolves away. Arguments that are exactly `.` or `..` are refused when bound; this also
/// catches one formed by adjacent placeholders (`{a}{b}`).
fn has_dot_segment(url: &str) -> bool {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_scheme
        .find(['/', '\\'])
        .map_or("", |i| &after_scheme[i..]);
    let path = path.split(['?', '#']).next().unwrap_or_default();
    path.split(['/', '\\']).any(|segment| {
        let dots = segment.to_ascii_lowercase().replace("%2e", ".");
        dots == "." || dots == ".."
    })
}

/// sha256 over the command name, its approval policy and the display form: an approval is
/// for exactly what was shown under exactly that policy.
fn approval_hash(spec: &CommandSpec, display: &str) -> String {
    let mut h = Sha256::new();
    h.update(spec.name.as_bytes());
    h.update(b"\n");
    if let Some(a) = &spec.approval {
        let roles: Vec<&str> = a.approver_roles.iter().map(|r| r.as_str()).collect();
        h.update(
            format!(
                "{}:{}:{}\n",
                a.approvals,
                roles.join(","),
                a.allow_self_approval
            )
            .as_bytes(),
        );
    }
    h.update(display.as_bytes());
    hex::encode(h.finalize())
}

/// How an argument value is made safe for where it lands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Escape {
    /// An argv item: passed as one argument, no shell, nothing to escape.
    Verbatim,
    /// Part of a URL: percent-encoded, so a value cannot add path segments or a query.
    Url,
    /// Part of a request body (JSON by convention): string-escaped, so a value cannot end the
    /// string it sits in.
    Json,
}

fn escape(value: &str, how: Escape) -> String {
    match how {
        Escape::Verbatim => value.to_owned(),
        Escape::Url => value
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect(),
        Escape::Json => {
            let quoted = serde_json::to_string(value).expect("strings always serialize");
            quoted[1..quoted.len() - 1].to_owned()
        }
    }
}

/// Fills a template: (real text, display text with secrets masked).
fn fill(
    t: &Template,
    args: &BoundArgs,
    how: Escape,
    secret: &mut dyn FnMut(&str) -> Result<String, String>,
) -> Result<(String, String), String> {
    let (mut real, mut shown) = (String::new(), String::new());
    for seg in &t.0 {
        match seg {
            Segment::Literal(l) => {
                real.push_str(l);
                shown.push_str(l);
            }
            Segment::Arg(a) => {
                let v = escape(args.get(a).unwrap_or(""), how);
                real.push_str(&v);
                shown.push_str(&v);
            }
            Segment::Secret(name) => {
                real.push_str(&secret(name)?);
                let _ = write!(shown, "{{secret:{name}}}");
            }
        }
    }
    Ok((real, shown))
}

/// Quotes an argv item for display only; nothing is ever run through a shell.
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Replaces every secret in `text` with `[REDACTED]`: as it is, in hex, in base64 (standard
/// and URL-safe, padded or not, whole or inside a longer base64 stream), ignoring ASCII case,
/// and across line breaks. Secrets shorter than `catalog::MIN_SECRET_LEN` are refused when
/// the catalogue loads, so these looser matches do not blank out ordinary text.
pub fn redact(text: &str, secrets: &[SecretString]) -> String {
    use secrecy::ExposeSecret;
    let needles: Vec<String> = secrets
        .iter()
        .flat_map(|s| secret_forms(s.expose_secret()))
        .collect();
    if needles.is_empty() {
        return text.to_owned();
    }
    let Ok(matcher) = AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::LeftmostLongest)
        .build(&needles)
    else {
        return "[output withheld: it could not be scrubbed of secrets]".into();
    };
    // Line breaks are left out of the bytes searched, so a secret wrapped over lines is found;
    // `at` maps each searched byte back to `text`. Only ASCII bytes are left out and matched
    // loosely, so every match starts and ends on a character boundary of `text`.
    let (searched, at): (Vec<u8>, Vec<usize>) = (text.bytes().enumerate())
        .filter(|(_, b)| !matches!(b, b'\r' | b'\n'))
        .map(|(i, b)| (b, i))
        .unzip();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for m in matcher.find_iter(&searched) {
        let (start, end) = (at[m.start()], at[m.end() - 1] + 1);
        out.push_str(&text[copied..start]);
        out.push_str("[REDACTED]");
        copied = end;
    }
    out.push_str(&text[copied..]);
    out
}

/// The forms of one secret that output may carry: itself and its hex (any case matches), and
/// its base64 in both alphabets. Base64 of a secret inside a longer stream depends on where
/// it starts in a 3-byte group, so for each of the 3 alignments only the characters that
/// encode the secret's bits alone are searched for (at most a few bits stay visible at
/// either end); the whole-value encoding is searched first, being longer.
fn secret_forms(secret: &str) -> Vec<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let bytes = secret.as_bytes();
    let mut forms = vec![secret.replace(['\r', '\n'], ""), hex::encode(bytes)];
    for engine in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
        forms.push(engine.encode(bytes));
        for lead in 0..3 {
            let mut shifted = vec![0; lead];
            shifted.extend_from_slice(bytes);
            let encoded = engine.encode(&shifted);
            let (start, end) = ((8 * lead).div_ceil(6), 8 * (lead + bytes.len()) / 6);
            forms.push(encoded[start..end].to_owned());
        }
    }
    forms.retain(|f| !f.is_empty());
    forms.sort_unstable();
    forms.dedup();
    forms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_cannot_break_out_of_urls_or_json_strings() {
        assert_eq!(
            escape("x/../../admin?all=1#", Escape::Url),
            "x%2F..%2F..%2Fadmin%3Fall%3D1%23"
        );
        assert_eq!(
            escape(r#"a","force":true,"x":""#, Escape::Json),
            r#"a\",\"force\":true,\"x\":\""#
        );
        assert_eq!(escape("api", Escape::Url), "api");
        assert_eq!(escape("--to=x", Escape::Verbatim), "--to=x");
    }

    #[test]
    fn the_url_shown_is_the_url_requested_with_secrets_masked() {
        let secrets = [("TOKEN".to_owned(), "tok-1234abcd".to_owned())];
        let (real, shown) =
            requested_url("http://EXAMPLE.com:80/a/x%20y?t=tok-1234abcd", &secrets).unwrap();
        assert_eq!(real, "http://example.com/a/x%20y?t=tok-1234abcd");
        assert_eq!(shown, "http://example.com/a/x%20y?t={secret:TOKEN}");
        // A secret the parser would re-encode could not be masked: refused, never shown.
        let spaced = [("TOKEN".to_owned(), "tok 1234abcd".to_owned())];
        let err = requested_url("http://h/?t=tok 1234abcd", &spaced).unwrap_err();
        assert!(!err.contains("1234abcd"), "{err}");
    }

    #[test]
    fn dot_segments_are_refused_however_spelled() {
        for url in [
            "http://h/items/../purge",
            "http://h/items/./purge",
            "http://h/items/%2E%2e/purge",
            "http://h/items/.%2E",
            "http://h/items/..?x=1",
        ] {
            assert!(requested_url(url, &[]).is_err(), "{url}");
        }
        for url in ["http://h/items/.../purge", "http://h/a.b/?q=..", "http://h"] {
            assert!(requested_url(url, &[]).is_ok(), "{url}");
        }
    }

    fn redacted(text: &str) -> String {
        redact(text, &[SecretString::from("s3cr3t-Token_42")])
    }

    #[test]
    fn secrets_are_redacted_in_every_common_form() {
        use base64::Engine as _;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
        let secret = b"s3cr3t-Token_42";
        let forms = [
            "s3cr3t-Token_42".to_owned(),
            "S3CR3T-TOKEN_42".to_owned(),
            "s3cr3t-token_42".to_owned(),
            hex::encode(secret),
            hex::encode_upper(secret),
            STANDARD.encode(secret),
            URL_SAFE.encode(secret),
            URL_SAFE_NO_PAD.encode(secret),
            "s3cr3t-To\nken_42".to_owned(),
            "s3cr3t-To\r\nken_42".to_owned(),
        ];
        for form in forms {
            let out = redacted(&format!("before {form} after"));
            assert!(
                out.starts_with("before [REDACTED]") && out.ends_with(" after"),
                "{form}: {out}"
            );
        }
    }

    #[test]
    fn base64_of_a_secret_inside_a_longer_stream_is_redacted_at_any_alignment() {
        use base64::Engine as _;
        use base64::engine::general_purpose::STANDARD;
        for lead in ["", "a", "ab", "abc"] {
            let stream = STANDARD.encode(format!("{lead}user:s3cr3t-Token_42;more bytes"));
            let out = redacted(&stream);
            assert!(out.contains("[REDACTED]"), "{lead:?}: {out}");
            // The 15 secret bytes are 20 base64 characters; at most one partial one is left at
            // either end.
            let removed = stream.len() + "[REDACTED]".len() - out.len();
            assert!(removed >= 18, "{lead:?}: {out}");
        }
    }

    #[test]
    fn redaction_keeps_other_text_intact() {
        let text = "héllo ✅ wörld\nno secret here\n";
        assert_eq!(redacted(text), text);
        assert_eq!(redacted("ü s3cr3t-Token_42 ü\n✅"), "ü [REDACTED] ü\n✅");
        assert_eq!(redact("anything", &[]), "anything");
    }
}
