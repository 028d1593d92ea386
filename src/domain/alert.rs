//! Alerts: what arrives from Alertmanager or a signed webhook (normalized to
//! [`IncomingAlert`]), what is stored ([`Alert`]), and silences. Identity of an alert is its
//! fingerprint; a redelivered payload updates the same record, so ingest is idempotent.

use super::AlertId;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

string_enum! {
    #[derive(serde::Deserialize)]
    #[serde(try_from = "String")]
    pub enum AlertStatus("alert status") { Firing = "firing", Resolved = "resolved" }
}

string_enum! {
    /// Where an alert came from; decides who may resolve it (Alertmanager resolves its own).
    /// `HealthCheck` is opsbot's own scheduled health checks.
    pub enum AlertSource("alert source") {
        Alertmanager = "alertmanager", Webhook = "webhook", HealthCheck = "healthcheck",
    }
}

/// One alert as delivered, after parsing at the edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingAlert {
    pub source: AlertSource,
    /// Unique per alert identity (Alertmanager's fingerprint, prefixed by source).
    pub fingerprint: String,
    pub group_key: String,
    pub status: AlertStatus,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: Option<DateTime<Utc>>,
    pub generator_url: Option<String>,
}

impl IncomingAlert {
    pub fn alertname(&self) -> &str {
        self.labels
            .get("alertname")
            .map_or("unnamed", String::as_str)
    }
}

/// The labels in an Alertmanager group key, for people to read: `{}/{alertname="X"}:{service="y"}`
/// (route matchers, then the group's labels) reads `alertname=X service=y`; a matcher other
/// than `=` keeps its operator (`severity=~critical|page`) and a value with spaces its quotes.
/// `None` when the key holds no `name="value"` (the generic webhook's own group names).
pub fn group_key_labels(key: &str) -> Option<String> {
    let mut pairs: Vec<String> = Vec::new();
    let mut rest = key;
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_') {
        rest = &rest[start..];
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let (name, after) = rest.split_at(name_len);
        let op = ["=~", "!=", "!~", "="]
            .into_iter()
            .find(|op| after.starts_with(*op) && after[op.len()..].starts_with('"'));
        let Some(op) = op else {
            rest = after;
            continue;
        };
        let (value, after) = quoted(&after[op.len()..]);
        rest = after;
        let value = if value.is_empty() || value.contains(char::is_whitespace) {
            format!("{value:?}")
        } else {
            value
        };
        let pair = format!("{name}{op}{value}");
        if !pairs.contains(&pair) {
            pairs.push(pair);
        }
    }
    (!pairs.is_empty()).then(|| pairs.join(" "))
}

/// The Go-quoted string at the start of `s` (which starts with `"`), unescaped, and what
/// follows it; an unterminated string runs to the end.
fn quoted(s: &str) -> (String, &str) {
    let mut value = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (value, &s[i + 1..]),
            '\\' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, 't')) => value.push('\t'),
                Some((_, escaped)) => value.push(escaped),
                None => break,
            },
            c => value.push(c),
        }
    }
    (value, "")
}

/// A stored alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    pub id: AlertId,
    pub incoming: IncomingAlert,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub acked_by: Option<String>,
    pub acked_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
}

impl Alert {
    pub fn severity(&self) -> &str {
        self.incoming
            .labels
            .get("severity")
            .map_or("none", String::as_str)
    }

    /// Whether the alert takes the urgent lane (reminders, first in the outbound queue).
    /// Teams spell their top severity many ways, and a case or a dash must not demote a
    /// critical alert to routine.
    pub fn is_critical(&self) -> bool {
        let s = self
            .severity()
            .to_ascii_lowercase()
            .replace(['-', '_', ' '], "");
        URGENT_SEVERITIES.contains(&s.as_str())
    }

    pub fn summary(&self) -> &str {
        let a = &self.incoming.annotations;
        a.get("summary")
            .or_else(|| a.get("description"))
            .map_or("", String::as_str)
    }
}

/// Severity label values (lower case, without `-`, `_` or spaces) that make an alert critical.
pub const URGENT_SEVERITIES: &[&str] = &[
    "critical",
    "crit",
    "page",
    "emergency",
    "p0",
    "p1",
    "sev0",
    "sev1",
];

/// Longest matcher accepted (they come from chat).
pub const MAX_MATCHER_LEN: usize = 256;

/// `label=value` (exact) or `label=~regex` (anchored), as in Alertmanager.
#[derive(Clone, Debug)]
pub enum Matcher {
    Equal(String, String),
    Regex(String, regex::Regex),
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for Matcher {}

impl Matcher {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Matcher::Equal(k, v) => labels.get(k).map_or(v.is_empty(), |l| l == v),
            Matcher::Regex(k, r) => r.is_match(labels.get(k).map_or("", String::as_str)),
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Matcher::Equal(k, v) => write!(f, "{k}={v}"),
            Matcher::Regex(k, r) => {
                let src = r.as_str();
                let inner = src
                    .strip_prefix("^(?:")
                    .and_then(|s| s.strip_suffix(")$"))
                    .unwrap_or(src);
                write!(f, "{k}=~{inner}")
            }
        }
    }
}

impl FromStr for Matcher {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("matcher {s:?} must look like label=value or label=~regex");
        let (k, v) = s.split_once('=').ok_or_else(bad)?;
        let valid_key = !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_key {
            return Err(bad());
        }
        if s.len() > MAX_MATCHER_LEN {
            return Err(format!(
                "a matcher may be at most {MAX_MATCHER_LEN} characters"
            ));
        }
        match v.strip_prefix('~') {
            // Matchers come from chat: bound what a regex may cost to compile and run.
            Some(re) => regex::RegexBuilder::new(&format!("^(?:{re})$"))
                .size_limit(64 * 1024)
                .dfa_size_limit(256 * 1024)
                .build()
                .map(|r| Matcher::Regex(k.to_owned(), r))
                .map_err(|e| format!("matcher {k}=~…: {e}")),
            None => Ok(Matcher::Equal(k.to_owned(), v.trim_matches('"').to_owned())),
        }
    }
}

/// A silence: alerts matching every matcher notify nobody until `ends_at`.
#[derive(Clone, Debug, PartialEq)]
pub struct Silence {
    pub id: i64,
    pub matchers: Vec<Matcher>,
    pub created_by: String,
    pub reason: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// The same silence in Alertmanager, when written back there.
    pub upstream_id: Option<String>,
}

impl Silence {
    pub fn covers(&self, labels: &BTreeMap<String, String>, at: DateTime<Utc>) -> bool {
        at >= self.starts_at && at < self.ends_at && self.matchers.iter().all(|m| m.matches(labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_key_reads_as_its_labels() {
        let read = |k: &str| group_key_labels(k);
        assert_eq!(
            read(r#"{}/{alertname="X"}:{service="y"}"#).as_deref(),
            Some("alertname=X service=y")
        );
        assert_eq!(
            read(
                r#"{}/{severity=~"critical|page"}:{alertname="Disk\"full\"", team="data platform"}"#
            )
            .as_deref(),
            Some(r#"severity=~critical|page alertname=Disk"full" team="data platform""#)
        );
        assert_eq!(read("hook:DiskFull"), None);
        assert_eq!(read(r#"{}:{a="x"#).as_deref(), Some("a=x"));
    }

    #[test]
    fn top_severities_are_critical_however_a_team_spells_them() {
        let with = |severity: &str| Alert {
            id: AlertId(1),
            incoming: IncomingAlert {
                source: AlertSource::Alertmanager,
                fingerprint: "am:fp".into(),
                group_key: "g".into(),
                status: AlertStatus::Firing,
                labels: labels(&[("severity", severity)]),
                annotations: BTreeMap::new(),
                starts_at: Utc::now(),
                ends_at: None,
                generator_url: None,
            },
            first_seen: Utc::now(),
            last_seen: Utc::now(),
            acked_by: None,
            acked_at: None,
            resolved_at: None,
        };
        for urgent in [
            "critical", "CRITICAL", "page", "P1", "p0", "SEV1", "sev-1", "Sev 0",
        ] {
            assert!(with(urgent).is_critical(), "{urgent}");
        }
        for routine in ["warning", "info", "p2", "sev2", "none", "criticality"] {
            assert!(!with(routine).is_critical(), "{routine}");
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn matchers_parse_and_match() {
        let m: Matcher = "alertname=HighLatency".parse().unwrap();
        assert!(m.matches(&labels(&[("alertname", "HighLatency")])));
        assert!(!m.matches(&labels(&[("alertname", "HighLatencyX")])));
        let r: Matcher = "instance=~web-.*".parse().unwrap();
        assert!(r.matches(&labels(&[("instance", "web-1:9100")])));
        assert!(!r.matches(&labels(&[("instance", "db-1")])));
        assert_eq!(r.to_string(), "instance=~web-.*");
        assert!("=x".parse::<Matcher>().is_err());
        assert!("a=~(".parse::<Matcher>().is_err());
        assert!("novalue".parse::<Matcher>().is_err());
    }
}
