//! Rendering a runbook's action from its command file and bound arguments: the exact argv
//! or HTTP request that will run, a display form with secrets masked (what approvers see and
//! `--dry-run` prints), and a hash of that display form that binds an approval to it.

use std::fmt::Write as _;

use secrecy::SecretString;
use sha2::{Digest, Sha256};

use crate::catalog::{ActionSpec, CommandSpec, ExecSpec, HttpSpec, Segment, Template};
use crate::domain::{ActionKind, BoundArgs};

#[derive(Debug, Clone)]
pub struct RenderedAction {
    pub kind: ActionKind,
    /// Human-readable, secrets shown as `{secret:NAME}`.
    pub display: String,
    /// sha256 over the command name, approval policy and `display`.
    pub hash: String,
    /// Values to scrub from any output before it is stored or posted.
    pub secret_values: Vec<SecretString>,
}

/// Renders `spec` with `args`; `lookup_env` reads opsbot's environment (for pass-through
/// variables and secrets). Fails, naming the variable, when a secret is not set.
pub fn render(
    spec: &CommandSpec,
    args: &BoundArgs,
    lookup_env: &dyn Fn(&str) -> Option<String>,
) -> Result<RenderedAction, String> {
    let mut secrets = Secrets {
        lookup_env,
        values: Vec::new(),
    };
    let (kind, display) = match &spec.action {
        ActionSpec::Exec(exec) => render_exec(exec, args, &mut secrets)?,
        ActionSpec::Http(http) => render_http(http, args, &mut secrets)?,
    };
    Ok(RenderedAction {
        kind,
        hash: approval_hash(spec, &display),
        display,
        secret_values: secrets.values,
    })
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
            .ok_or_else(|| format!("secret {name} is not set in opsbot's environment"))?;
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
    let mut secret = |name: &str| secrets.get(name);
    let (url_real, url_shown) = fill(url, args, Escape::Url, &mut secret)?;
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

/// Replaces every secret value in `text` with `[REDACTED]`.
pub fn redact(text: &str, secrets: &[SecretString]) -> String {
    use secrecy::ExposeSecret;
    let mut out = text.to_owned();
    for s in secrets {
        let v = s.expose_secret();
        // Very short values would redact ordinary text; such secrets are refused nowhere else,
        // so at least never leak one of four characters or more.
        if v.len() >= 4 {
            out = out.replace(v, "[REDACTED]");
        }
    }
    out
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
}
