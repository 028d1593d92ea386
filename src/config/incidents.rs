//! `[incidents]`: the severity scheme (names and acknowledgement targets, most severe first;
//! P1-P4 when none is given, whose P1-P3 targets the older `pN_ack_within` keys still set)
//! and the escalation policy of each severity, its keys read against that scheme. Both are
//! resolved once after parsing (`IncidentsConfig::resolve`), so an error can name its line.

use std::collections::BTreeMap;

use serde::Deserialize;

use chrono_tz::Tz;

use crate::domain::{AckTarget, HumanDuration, Severity, SeverityScheme, time_zone};

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IncidentsConfig {
    /// `severities = [{ name = "SEV1", ack_within = "5m" }, …]`, most severe first.
    severities: Option<Vec<LevelConfig>>,
    /// Targets of the default scheme's P1-P3 (configs from before the scheme was configurable).
    p1_ack_within: Option<HumanDuration>,
    p2_ack_within: Option<HumanDuration>,
    p3_ack_within: Option<HumanDuration>,
    /// IANA zone of the team's working days (`next working day` targets); UTC when unset.
    time_zone: Option<String>,
    /// `{ SEV1 = "policy" }` as written; typed into [`Self::escalation`] by `resolve`.
    #[serde(rename = "escalation")]
    escalation_as_written: BTreeMap<String, String>,
    /// The severities in use (resolved after parsing).
    #[serde(skip)]
    pub scheme: SeverityScheme,
    /// The `[[escalation.policies]]` an unacknowledged incident escalates through once past
    /// its target, per severity; unlisted: reminded once.
    #[serde(skip)]
    pub escalation: BTreeMap<Severity, String>,
}

/// One level as written; its target is parsed here, so a bad one is refused at its line.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawLevel")]
struct LevelConfig {
    name: String,
    ack: AckTarget,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLevel {
    name: String,
    ack_within: String,
}

impl TryFrom<RawLevel> for LevelConfig {
    type Error = String;

    fn try_from(raw: RawLevel) -> Result<Self, String> {
        let ack = AckTarget::parse(&raw.ack_within)
            .map_err(|e| format!("severity {}: ack_within {e}", raw.name))?;
        Ok(Self {
            name: raw.name,
            ack,
        })
    }
}

impl IncidentsConfig {
    /// Builds the scheme and reads the escalation keys as its severities. An error carries
    /// the text to find its line by (empty: no line).
    pub(super) fn resolve(&mut self) -> Result<(), (String, String)> {
        self.scheme = self.scheme()?;
        let mut escalation = BTreeMap::new();
        for (key, policy) in &self.escalation_as_written {
            let severity = self.scheme.parse(key).map_err(|e| {
                // `SEV9 = "…"` is the usual spelling; a needle not found gives no line.
                (format!("incidents.escalation: {e}"), format!("{key} ="))
            })?;
            if escalation.insert(severity, policy.clone()).is_some() {
                let msg = format!("incidents.escalation names severity {key} twice");
                return Err((msg, format!("{key} =")));
            }
        }
        self.escalation = escalation;
        Ok(())
    }

    fn zone(&self) -> Result<Tz, (String, String)> {
        match &self.time_zone {
            None => Ok(Tz::UTC),
            Some(name) => time_zone(name)
                .map_err(|e| (format!("incidents.time_zone: {e}"), "time_zone".to_owned())),
        }
    }

    fn scheme(&self) -> Result<SeverityScheme, (String, String)> {
        let zone = self.zone()?;
        let legacy = [
            ("p1_ack_within", self.p1_ack_within),
            ("p2_ack_within", self.p2_ack_within),
            ("p3_ack_within", self.p3_ack_within),
        ];
        let Some(levels) = &self.severities else {
            let mut levels: Vec<(String, AckTarget)> = (SeverityScheme::default().levels())
                .iter()
                .map(|l| (l.name.to_string(), l.ack.in_zone(zone)))
                .collect();
            for (level, (_, set)) in levels.iter_mut().zip(legacy) {
                if let Some(d) = set {
                    level.1 = AckTarget::Within(d.0);
                }
            }
            return SeverityScheme::new(levels).map_err(|e| (e, String::new()));
        };
        if let Some((key, _)) = legacy.iter().find(|(_, set)| set.is_some()) {
            let msg = format!(
                "incidents.{key} sets a target of the default P1-P4 scheme; with \
                 incidents.severities give each severity its own ack_within"
            );
            return Err((msg, (*key).to_owned()));
        }
        let levels = (levels.iter())
            .map(|l| (l.name.clone(), l.ack.in_zone(zone)))
            .collect();
        SeverityScheme::new(levels).map_err(|e| {
            // Point at the name at fault when the message quotes one.
            let needle = e
                .split('"')
                .nth(1)
                .map_or_else(|| "severities".to_owned(), |name| format!("\"{name}\""));
            (format!("incidents.severities: {e}"), needle)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, ConfigError};
    use chrono_tz::Tz;

    use crate::domain::AckTarget;

    fn load(src: &str) -> Result<Config, ConfigError> {
        Config::from_toml(Path::new("opsbot.toml"), src, &[])
    }

    const SEV: &str = r#"
[incidents]
severities = [
  { name = "SEV1", ack_within = "5m" },
  { name = "SEV2", ack_within = "30m" },
  { name = "SEV3", ack_within = "4h" },
  { name = "SEV4", ack_within = "next working day" },
]
"#;

    #[test]
    fn no_severities_is_p1_to_p4_with_the_old_keys_still_setting_targets() {
        let c = load("[incidents]\np2_ack_within = \"2h\"\n").unwrap();
        let s = &c.incidents.scheme;
        assert_eq!(s.names(), "P1, P2, P3, P4");
        let target = |n: &str| s.target(&s.parse(n).unwrap()).unwrap().to_string();
        assert_eq!(target("P1"), "within 15m");
        assert_eq!(target("P2"), "within 2h");
        assert_eq!(target("P4"), "by 09:00 UTC on the next working day");
    }

    #[test]
    fn a_configured_scheme_is_used_in_its_order() {
        let c = load(SEV).unwrap();
        let s = &c.incidents.scheme;
        assert_eq!(s.names(), "SEV1, SEV2, SEV3, SEV4");
        assert!(s.is_most_severe(&s.parse("sev1").unwrap()));
        assert_eq!(
            s.target(&s.parse("SEV4").unwrap()),
            Some(AckTarget::NextWorkingDay(Tz::UTC))
        );
        let zoned = load(&format!("{SEV}time_zone = \"America/New_York\"\n")).unwrap();
        let s = &zoned.incidents.scheme;
        assert_eq!(
            s.target(&s.parse("SEV4").unwrap()).unwrap().to_string(),
            "by 09:00 America/New_York on the next working day"
        );
        let bad = load(&format!("{SEV}time_zone = \"Mars/Olympus\"\n")).unwrap_err();
        let bad = bad.to_string();
        assert!(
            bad.starts_with("opsbot.toml:9:") && bad.contains("unknown time zone"),
            "{bad}"
        );
        // The same as tables.
        let tables = "[[incidents.severities]]\nname = \"P0\"\nack_within = \"10m\"\n";
        assert_eq!(load(tables).unwrap().incidents.scheme.names(), "P0");
    }

    #[test]
    fn scheme_errors_name_their_line() {
        let cases = [
            ("\"30m\"", "\"30 moons\"", "severity SEV2: ack_within"),
            ("\"SEV3\"", "\"SEV 3\"", "must be letters, digits"),
            ("\"SEV3\"", "\"sev1\"", "severity \"sev1\" is listed twice"),
            ("  { name", "  { nom", "unknown field `nom`"),
        ];
        for (from, to, want) in cases {
            let src = SEV.replacen(from, to, 1);
            let msg = load(&src).unwrap_err().to_string();
            assert!(msg.contains(want), "{from} -> {to}: {msg}");
            assert!(msg.starts_with("opsbot.toml:"), "{from} -> {to}: {msg}");
        }
        let empty = load("[incidents]\nseverities = []\n")
            .unwrap_err()
            .to_string();
        assert!(
            empty.starts_with("opsbot.toml:2:") && empty.contains("at least one"),
            "{empty}"
        );
        let mixed = format!("{SEV}p1_ack_within = \"10m\"\n");
        let msg = load(&mixed).unwrap_err().to_string();
        assert!(msg.starts_with("opsbot.toml:9:"), "{msg}");
        assert!(msg.contains("with incidents.severities"), "{msg}");
    }

    #[test]
    fn escalation_keys_are_read_against_the_scheme() {
        let policy = "[[escalation.policies]]\nname = \"sev1\"\nsteps = [{ after = \"0m\", notify = \"person:alice\" }]\n\
                      [[people]]\nname = \"alice\"\nroles = [\"sre\"]\nidentities = [\"slack:UA\"]\n";
        let good = format!("{SEV}escalation = {{ sev1 = \"sev1\" }}\n{policy}");
        let c = load(&good).unwrap();
        let s = &c.incidents.scheme;
        assert_eq!(c.incidents.escalation[&s.parse("SEV1").unwrap()], "sev1");
        let bad = format!("{SEV}escalation = {{ P1 = \"sev1\" }}\n{policy}");
        let msg = load(&bad).unwrap_err().to_string();
        assert!(msg.starts_with("opsbot.toml:9:"), "{msg}");
        assert!(
            msg.contains("unknown severity \"P1\"; the severities here are SEV1, SEV2, SEV3, SEV4"),
            "{msg}"
        );
    }
}
