//! Incident severities as a team configures them: an ordered [`SeverityScheme`] (most severe
//! first, P1-P4 by default, or P0-P3, SEV1-SEV4 ...) with each level's acknowledgement
//! target. Text from chat becomes a [`Severity`] only through [`SeverityScheme::parse`]; a
//! name read back from the store may no longer be configured, so every question asked of the
//! scheme about one answers `None` for it rather than failing.

use std::time::Duration;

use chrono::{DateTime, Datelike, Duration as ChronoDuration, TimeZone, Utc, Weekday};
use chrono_tz::Tz;

use super::human_duration;

/// Most levels a scheme may have: more than this is a list nobody picks from under stress.
pub const MAX_LEVELS: usize = 10;

/// Longest severity name; it is typed in chat and shown in every incident line.
const MAX_NAME: usize = 16;

/// An incident's severity name: one of the scheme's when parsed from chat, or whatever the
/// store holds for an older incident (shown as stored).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Severity(String);

impl Severity {
    /// A name read back from the store. It is not checked against the scheme: a renamed
    /// scheme must not make old incidents unreadable.
    pub fn stored(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// When an incident of a level must be acknowledged. Closed: a new kind of target makes the
/// compiler ask each place that computes or shows one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckTarget {
    /// This long after the incident is opened.
    Within(Duration),
    /// 09:00 on the next working day (Monday to Friday) in the team's time zone
    /// (`[incidents] time_zone`, UTC when unset).
    NextWorkingDay(Tz),
}

impl AckTarget {
    /// The words accepted for [`AckTarget::NextWorkingDay`] in the config.
    pub const NEXT_WORKING_DAY: &'static str = "next working day";

    /// A duration (`15m`, `1h30m`) or `next working day`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let words = text.trim().replace(['_', '-'], " ").to_ascii_lowercase();
        if words == Self::NEXT_WORKING_DAY {
            return Ok(Self::NextWorkingDay(Tz::UTC));
        }
        match super::parse_duration(text) {
            Ok(d) if d.is_zero() => Err("a response target of zero is always missed".into()),
            Ok(d) => Ok(Self::Within(d)),
            Err(e) => Err(format!("{e}; or \"{}\"", Self::NEXT_WORKING_DAY)),
        }
    }

    /// When an incident opened at `opened` must be acknowledged.
    pub fn due(self, opened: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Self::Within(d) => opened + ChronoDuration::from_std(d).unwrap_or_default(),
            Self::NextWorkingDay(zone) => next_working_day_9am(opened, zone),
        }
    }

    /// The same target with its working day read in `zone`.
    pub fn in_zone(self, zone: Tz) -> Self {
        match self {
            Self::Within(d) => Self::Within(d),
            Self::NextWorkingDay(_) => Self::NextWorkingDay(zone),
        }
    }
}

impl std::fmt::Display for AckTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Within(d) => write!(f, "within {}", human_duration(*d)),
            Self::NextWorkingDay(zone) => write!(f, "by 09:00 {zone} on the next working day"),
        }
    }
}

/// The day after `from` as the team's calendar reads it, skipping weekends, at 09:00 there.
fn next_working_day_9am(from: DateTime<Utc>, zone: Tz) -> DateTime<Utc> {
    let today = from.with_timezone(&zone).date_naive();
    let mut day = today.succ_opt().unwrap_or(today);
    while matches!(day.weekday(), Weekday::Sat | Weekday::Sun) {
        day = day.succ_opt().unwrap_or(day);
    }
    // 09:00 exists on every day in every zone in use (DST moves happen at night); earliest()
    // still answers for an ambiguous hour.
    day.and_hms_opt(9, 0, 0)
        .and_then(|t| zone.from_local_datetime(&t).earliest())
        .map_or(from, |t| t.to_utc())
}

/// One level of the scheme.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeverityLevel {
    pub name: Severity,
    pub ack: AckTarget,
}

/// The severities a team uses, most severe first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeverityScheme {
    levels: Vec<SeverityLevel>,
}

/// Text that names no configured severity; its message lists the ones that exist.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown severity {given:?}; the severities here are {known} (most severe first)")]
pub struct UnknownSeverity {
    pub given: String,
    pub known: String,
}

impl Default for SeverityScheme {
    /// P1 15 minutes, P2 1 hour, P3 4 hours, P4 the next working day.
    fn default() -> Self {
        let m = |n: u64| AckTarget::Within(Duration::from_secs(n * 60));
        Self::new(vec![
            ("P1".into(), m(15)),
            ("P2".into(), m(60)),
            ("P3".into(), m(240)),
            ("P4".into(), AckTarget::NextWorkingDay(Tz::UTC)),
        ])
        .expect("the default scheme is valid")
    }
}

impl SeverityScheme {
    /// Levels in order, most severe first: at least one, at most [`MAX_LEVELS`], names of
    /// letters, digits, `-` and `_` (typed as one word in chat), unique in any case.
    pub fn new(levels: Vec<(String, AckTarget)>) -> Result<Self, String> {
        if levels.is_empty() {
            return Err("at least one severity is needed".into());
        }
        if levels.len() > MAX_LEVELS {
            return Err(format!("at most {MAX_LEVELS} severities may be configured"));
        }
        let mut out: Vec<SeverityLevel> = Vec::with_capacity(levels.len());
        for (name, ack) in levels {
            check_name(&name)?;
            if out.iter().any(|l| l.name.0.eq_ignore_ascii_case(&name)) {
                return Err(format!("severity {name:?} is listed twice"));
            }
            out.push(SeverityLevel {
                name: Severity(name),
                ack,
            });
        }
        Ok(Self { levels: out })
    }

    /// The level a user typed, in any case, as the scheme spells it.
    pub fn parse(&self, text: &str) -> Result<Severity, UnknownSeverity> {
        let text = text.trim();
        (self.levels.iter())
            .find(|l| l.name.0.eq_ignore_ascii_case(text))
            .map(|l| l.name.clone())
            .ok_or_else(|| UnknownSeverity {
                given: super::clip(text, MAX_NAME * 2).into_owned(),
                known: self.names(),
            })
    }

    /// The levels, most severe first.
    pub fn levels(&self) -> &[SeverityLevel] {
        &self.levels
    }

    fn level(&self, severity: &Severity) -> Option<&SeverityLevel> {
        self.levels.iter().find(|l| &l.name == severity)
    }

    /// Whether `severity` is the most severe level: its messages take the urgent lane and
    /// its pages are critical. False for a name no longer configured.
    pub fn is_most_severe(&self, severity: &Severity) -> bool {
        self.levels.first().is_some_and(|l| &l.name == severity)
    }

    /// The level's acknowledgement target; `None` for a name no longer configured.
    pub fn target(&self, severity: &Severity) -> Option<AckTarget> {
        self.level(severity).map(|l| l.ack)
    }

    /// When an incident of `severity` opened at `opened` must be acknowledged; `None` for a
    /// name no longer configured (such an incident is never reminded).
    pub fn ack_due(&self, severity: &Severity, opened: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.target(severity).map(|t| t.due(opened))
    }

    /// `P1, P2, P3, P4`: the names, for messages.
    pub fn names(&self) -> String {
        (self.levels.iter())
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `P1..P4` (or the one name): the range, for usage lines.
    pub fn range(&self) -> String {
        match (self.levels.first(), self.levels.last()) {
            (Some(a), Some(b)) if a != b => format!("{}..{}", a.name, b.name),
            (Some(a), _) => a.name.to_string(),
            (None, _) => String::new(),
        }
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let plain =
        !name.is_empty() && (name.chars()).all(|c| c.is_ascii_alphanumeric() || "-_".contains(c));
    if !plain {
        return Err(format!(
            "severity name {name:?} must be letters, digits, - or _"
        ));
    }
    if name.len() > MAX_NAME {
        return Err(format!(
            "severity name {name:?} is longer than {MAX_NAME} characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn the_default_scheme_keeps_the_old_targets() {
        let s = SeverityScheme::default();
        // Friday 2026-11-27 16:00 UTC.
        let fri = at("2026-11-27T16:00:00Z");
        let due = |name: &str| s.ack_due(&s.parse(name).unwrap(), fri).unwrap();
        assert_eq!(due("P1"), fri + ChronoDuration::minutes(15));
        assert_eq!(due("p2"), fri + ChronoDuration::hours(1));
        assert_eq!(due("P3"), fri + ChronoDuration::hours(4));
        assert_eq!(
            due("P4").to_rfc3339(),
            "2026-11-30T09:00:00+00:00",
            "next working day is Monday"
        );
        assert!(s.is_most_severe(&s.parse("p1").unwrap()));
        assert!(!s.is_most_severe(&s.parse("P2").unwrap()));
        assert_eq!(s.range(), "P1..P4");
    }

    #[test]
    fn a_configured_scheme_parses_its_own_names_only() {
        let s = SeverityScheme::new(vec![
            ("SEV1".into(), AckTarget::parse("5m").unwrap()),
            ("SEV2".into(), AckTarget::parse("next_working_day").unwrap()),
        ])
        .unwrap();
        assert_eq!(s.parse("sev1").unwrap().as_str(), "SEV1");
        let e = s.parse("P1").unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown severity \"P1\"; the severities here are SEV1, SEV2 (most severe first)"
        );
        assert_eq!(
            s.target(&s.parse("SEV2").unwrap()),
            Some(AckTarget::NextWorkingDay(Tz::UTC))
        );
    }

    #[test]
    fn the_next_working_day_is_the_teams_in_its_time_zone() {
        let berlin = AckTarget::NextWorkingDay(Tz::UTC).in_zone(chrono_tz::Europe::Berlin);
        // Friday 23:30 UTC is already Saturday in Berlin: Monday 09:00 CET is 08:00 UTC.
        let due = berlin.due(at("2026-11-27T23:30:00Z"));
        assert_eq!(due.to_rfc3339(), "2026-11-30T08:00:00+00:00");
        // Sunday 23:30 UTC is Monday in Berlin: Tuesday 09:00 CET.
        let due = berlin.due(at("2026-11-29T23:30:00Z"));
        assert_eq!(due.to_rfc3339(), "2026-12-01T08:00:00+00:00");
        // In summer (CEST) 09:00 is 07:00 UTC.
        let due = berlin.due(at("2026-07-01T12:00:00Z"));
        assert_eq!(due.to_rfc3339(), "2026-07-02T07:00:00+00:00");
        assert_eq!(
            berlin.to_string(),
            "by 09:00 Europe/Berlin on the next working day"
        );
        // A duration has no working day to move.
        let m = AckTarget::Within(Duration::from_secs(60));
        assert_eq!(m.in_zone(chrono_tz::Europe::Berlin), m);
    }

    #[test]
    fn a_stored_name_no_longer_configured_has_no_target() {
        let s = SeverityScheme::default();
        let old = Severity::stored("SEV1");
        assert_eq!(s.ack_due(&old, at("2026-11-27T16:00:00Z")), None);
        assert!(!s.is_most_severe(&old));
        assert_eq!(old.to_string(), "SEV1");
    }

    #[test]
    fn bad_schemes_are_refused() {
        let t = AckTarget::Within(Duration::from_secs(60));
        let cases: [(Vec<(String, AckTarget)>, &str); 4] = [
            (vec![], "at least one"),
            (vec![("P1".into(), t), ("p1".into(), t)], "listed twice"),
            (vec![("SEV 1".into(), t)], "letters, digits"),
            (vec![("P".repeat(17), t)], "longer than 16"),
        ];
        for (levels, want) in cases {
            let e = SeverityScheme::new(levels).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
        assert!(AckTarget::parse("0m").is_err());
        assert!(
            AckTarget::parse("soon")
                .unwrap_err()
                .contains("next working day")
        );
    }
}
