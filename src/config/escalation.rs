//! `[escalation]`: escalation policies as data (`[[escalation.policies]]`), parsed straight
//! into domain [`EscalationPolicy`]s so a bad delay, target or step order stops startup with
//! its line, and the Slack user group pinged for a role. Whether the schedules, layers,
//! people and roles named exist is checked against the rest of the config by
//! `Config::validate_escalation`, which reports the line naming them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::domain::{EscalationPolicy, EscalationStep, Notify, Role, parse_duration};

/// Pause before a policy's next round when `repeat_after` is not given.
pub const DEFAULT_REPEAT_AFTER: Duration = Duration::from_secs(10 * 60);

/// Most rounds a policy may repeat: beyond that it is noise nobody acts on.
const MAX_REPEAT: u32 = 20;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EscalationConfig {
    pub policies: Vec<PolicyConfig>,
    /// A Slack user group (`S…`) pinged instead of every holder of a role, on Slack.
    pub slack_groups: BTreeMap<Role, String>,
}

/// One policy.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawPolicy")]
pub struct PolicyConfig {
    pub policy: EscalationPolicy,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: String,
    steps: Vec<RawStep>,
    #[serde(default)]
    repeat: u32,
    repeat_after: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    after: String,
    notify: OneOrMany,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl TryFrom<RawPolicy> for PolicyConfig {
    type Error = String;

    fn try_from(raw: RawPolicy) -> Result<Self, String> {
        let name = raw.name;
        super::plain_name(&name, "escalation policy")?;
        if raw.steps.is_empty() {
            return Err(format!("escalation policy {name}: needs at least one step"));
        }
        if raw.repeat > MAX_REPEAT {
            return Err(format!(
                "escalation policy {name}: repeat is at most {MAX_REPEAT}"
            ));
        }
        let mut steps: Vec<EscalationStep> = Vec::new();
        for (i, s) in raw.steps.into_iter().enumerate() {
            let step =
                step(s).map_err(|e| format!("escalation policy {name} step {}: {e}", i + 1))?;
            if let Some(before) = steps.last()
                && step.after < before.after
            {
                return Err(format!(
                    "escalation policy {name} step {}: steps are listed in order of `after`, each at or after the one before",
                    i + 1
                ));
            }
            steps.push(step);
        }
        let repeat_after = match raw.repeat_after {
            Some(d) => parse_duration(&d)
                .map_err(|e| format!("escalation policy {name}: repeat_after {e}"))?,
            None => DEFAULT_REPEAT_AFTER,
        };
        if raw.repeat > 0 && repeat_after < Duration::from_secs(60) {
            return Err(format!(
                "escalation policy {name}: repeat_after is at least 1m"
            ));
        }
        Ok(PolicyConfig {
            policy: EscalationPolicy {
                name,
                steps,
                repeat: raw.repeat,
                repeat_after,
            },
        })
    }
}

fn step(raw: RawStep) -> Result<EscalationStep, String> {
    let after = parse_duration(&raw.after).or_else(|e| match raw.after.trim() {
        // "0m" reads naturally; a bare 0 is accepted too.
        "0" | "0s" | "0m" => Ok(Duration::ZERO),
        _ => Err(format!("after {e}")),
    })?;
    let notify = match raw.notify {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    };
    if notify.is_empty() {
        return Err("notify names nobody".into());
    }
    Ok(EscalationStep {
        after,
        notify: notify.iter().map(|n| n.parse()).collect::<Result<_, _>>()?,
    })
}

impl super::Config {
    /// Policies named once; every schedule, layer, person and role a step names known; every
    /// policy a route or severity names defined. An error carries the quoted text to find its
    /// line by (empty: no line).
    pub(super) fn validate_escalation(&self) -> Result<(), (String, String)> {
        let policies = &self.escalation.policies;
        for (i, p) in policies.iter().enumerate() {
            let p = &p.policy;
            if policies[..i].iter().any(|q| q.policy.name == p.name) {
                let msg = format!("escalation policy {} is defined twice", p.name);
                return Err((msg, String::new()));
            }
            for n in p.steps.iter().flat_map(|s| &s.notify) {
                self.check_target(n).map_err(|e| {
                    (
                        format!("escalation policy {}: {e}", p.name),
                        format!("\"{n}\""),
                    )
                })?;
            }
        }
        let known = |name: &str| policies.iter().any(|p| p.policy.name == name);
        let attached = (self
            .alerts
            .routes
            .iter()
            .map(|r| ("alerts.routes", &r.escalation)))
        .chain((self.alerts.default_route.iter()).map(|r| ("alerts.default_route", &r.escalation)))
        .filter_map(|(at, name)| Some((at.to_owned(), name.as_ref()?)))
        .chain(
            (self.incidents.escalation.iter())
                .map(|(sev, name)| (format!("incidents.escalation.{sev}"), name)),
        );
        for (at, name) in attached {
            if !known(name) {
                let msg = format!(
                    "{at} names no escalation policy {name:?}; define it in [[escalation.policies]]"
                );
                return Err((msg, format!("\"{name}\"")));
            }
        }
        Ok(())
    }

    fn check_target(&self, n: &Notify) -> Result<(), String> {
        match n {
            Notify::Schedule { schedule, layer } => {
                let s = (self.oncall.schedules.iter())
                    .map(|s| &s.schedule)
                    .find(|s| &s.name == schedule)
                    .ok_or_else(|| format!("no schedule {schedule:?} in [[oncall.schedules]]"))?;
                match layer {
                    Some(l) if !s.layers.iter().any(|x| &x.name == l) => {
                        Err(format!("schedule {schedule} has no layer {l:?}"))
                    }
                    _ => Ok(()),
                }
            }
            Notify::Person(p) if self.directory.person(p).is_none() => {
                Err(format!("{p:?}, who is not in [[people]], is named"))
            }
            Notify::Role(r)
                if !self.directory.people().any(|p| p.roles.contains(r))
                    && !self.escalation.slack_groups.contains_key(r) =>
            {
                Err(format!("nobody holds role {:?}", r.as_str()))
            }
            Notify::Page(service) if !self.paging.services.iter().any(|s| &s.name == service) => {
                Err(format!(
                    "no paging service {service:?} in [[paging.services]]"
                ))
            }
            Notify::Person(_) | Notify::Role(_) | Notify::Page(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::{Config, ConfigError};
    use crate::domain::Notify;

    const BASE: &str = r#"
[[people]]
name = "alice"
roles = ["sre"]
identities = ["slack:UALICE"]

[[oncall.schedules]]
name = "sre"
time_zone = "Europe/Berlin"
[[oncall.schedules.layers]]
name = "primary"
people = ["alice"]
shift = "weekly"
handoff = "09:00"
start = "2026-03-16"
[[oncall.schedules.layers]]
name = "secondary"
people = ["alice"]
shift = "weekly"
handoff = "09:00"
start = "2026-03-16"

[alerts]
default_route = { platform = "slack", channel = "COPS", escalation = "critical" }

[incidents]
escalation = { P1 = "critical" }

[[escalation.policies]]
name = "critical"
repeat = 1
steps = [
  { after = "0m", notify = "schedule:sre" },
  { after = "5m", notify = "schedule:sre/secondary" },
  { after = "15m", notify = ["page:pagerduty-sre", "role:sre", "person:alice"] },
]
[[paging.services]]
name = "pagerduty-sre"
kind = "pagerduty"
routing_key = "R0123456789ABCDEF0123456789ABCDE"
"#;

    fn load(src: &str) -> Result<Config, ConfigError> {
        Config::from_toml(Path::new("opsbot.toml"), src, &[])
    }

    #[test]
    fn a_policy_parses_into_its_domain_form_and_is_attached() {
        let c = load(BASE).unwrap();
        let p = &c.escalation.policies[0].policy;
        assert_eq!(p.name, "critical");
        assert_eq!(p.repeat, 1);
        assert_eq!(p.steps[1].after, Duration::from_secs(300));
        assert_eq!(p.steps[2].notify.len(), 3);
        assert_eq!(p.steps[2].notify[0], Notify::Page("pagerduty-sre".into()));
        assert_eq!(
            c.alerts.default_route.unwrap().escalation.as_deref(),
            Some("critical")
        );
        let p1 = c.incidents.scheme.parse("P1").unwrap();
        assert_eq!(c.incidents.escalation[&p1], "critical");
    }

    #[test]
    fn unknown_names_are_refused_at_the_line_naming_them() {
        let cases = [
            (
                "\"schedule:sre\"",
                "\"schedule:ops\"",
                "no schedule \"ops\"",
            ),
            (
                "\"schedule:sre/secondary\"",
                "\"schedule:sre/tertiary\"",
                "schedule sre has no layer \"tertiary\"",
            ),
            (
                "\"person:alice\"",
                "\"person:mallory\"",
                "\"mallory\", who is not in [[people]]",
            ),
            ("\"role:sre\"", "\"role:dba\"", "nobody holds role \"dba\""),
            (
                "\"page:pagerduty-sre\"",
                "\"page:pagerduty-ops\"",
                "no paging service \"pagerduty-ops\"",
            ),
            (
                "escalation = \"critical\" }",
                "escalation = \"critcal\" }",
                "no escalation policy \"critcal\"",
            ),
            (
                "P1 = \"critical\"",
                "P1 = \"sev1\"",
                "no escalation policy \"sev1\"",
            ),
        ];
        for (from, to, want) in cases {
            let src = BASE.replacen(from, to, 1);
            let line = src.lines().position(|l| l.contains(to)).unwrap() + 1;
            let msg = load(&src).unwrap_err().to_string();
            assert!(msg.contains(want), "{from} -> {to}: {msg}");
            assert!(
                msg.starts_with(&format!("opsbot.toml:{line}:")),
                "{from} -> {to}: {msg}"
            );
        }
    }

    #[test]
    fn malformed_policies_are_refused() {
        let cases = [
            (
                "after = \"5m\"",
                "after = \"5 fortnights\"",
                "step 2: after",
            ),
            (
                "after = \"15m\"",
                "after = \"1m\"",
                "step 3: steps are listed in order",
            ),
            (
                "\"role:sre\"",
                "\"team:sre\"",
                "notify \"team:sre\" must be",
            ),
            ("repeat = 1", "repeat = 100", "repeat is at most 20"),
            ("P1 = ", "P9 = ", "unknown severity \"P9\""),
        ];
        for (from, to, want) in cases {
            let msg = load(&BASE.replacen(from, to, 1)).unwrap_err().to_string();
            assert!(msg.contains(want), "{from} -> {to}: {msg}");
            assert!(msg.starts_with("opsbot.toml:"), "{msg}");
        }
        let twice = format!(
            "{BASE}\n[[escalation.policies]]\nname = \"critical\"\nsteps = [{{ after = \"0m\", notify = \"role:sre\" }}]\n"
        );
        assert!(
            load(&twice)
                .unwrap_err()
                .to_string()
                .contains("escalation policy critical is defined twice")
        );
    }
}
