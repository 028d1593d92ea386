//! Incidents: severity with its response target, the lifecycle (open -> resolved), and the
//! timeline of everything that happened, from which the postmortem draft is rendered.

use super::IncidentId;
use std::time::Duration;

use chrono::{DateTime, Datelike, Duration as ChronoDuration, Utc, Weekday};

use super::identity::Platform;

string_enum! {
    /// Parsed in any case (`p2`), printed upper-case.
    #[derive(PartialOrd, Ord)]
    pub enum Severity("severity", ignore_case) { P1 = "P1", P2 = "P2", P3 = "P3", P4 = "P4" }
}

impl Severity {
    /// When acknowledgement is due for an incident opened at `opened`, given the configured
    /// targets for P1-P3. P4 is due at 09:00 UTC on the next working day.
    pub fn ack_due(self, opened: DateTime<Utc>, targets: &ResponseTargets) -> DateTime<Utc> {
        let after = |d: Duration| opened + ChronoDuration::from_std(d).unwrap_or_default();
        match self {
            Severity::P1 => after(targets.p1),
            Severity::P2 => after(targets.p2),
            Severity::P3 => after(targets.p3),
            Severity::P4 => next_working_day_9am(opened),
        }
    }
}

fn next_working_day_9am(from: DateTime<Utc>) -> DateTime<Utc> {
    let mut day = from.date_naive().succ_opt().unwrap_or(from.date_naive());
    while matches!(day.weekday(), Weekday::Sat | Weekday::Sun) {
        day = day.succ_opt().unwrap_or(day);
    }
    day.and_hms_opt(9, 0, 0).map_or(from, |t| t.and_utc())
}

/// How soon an incident must be acknowledged, per severity (P4: next working day).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseTargets {
    pub p1: Duration,
    pub p2: Duration,
    pub p3: Duration,
}

impl Default for ResponseTargets {
    fn default() -> Self {
        Self {
            p1: Duration::from_secs(15 * 60),
            p2: Duration::from_secs(3600),
            p3: Duration::from_secs(4 * 3600),
        }
    }
}

string_enum! {
    pub enum IncidentStatus("incident status") { Open = "open", Resolved = "resolved" }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incident {
    pub id: IncidentId,
    pub title: String,
    pub severity: Severity,
    pub status: IncidentStatus,
    /// The incident commander (a person's name).
    pub commander: String,
    pub platform: Platform,
    pub channel_id: String,
    pub opened_by: String,
    pub opened_at: DateTime<Utc>,
    pub acked_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
}

string_enum! {
    /// What a timeline entry records.
    pub enum TimelineKind("timeline kind") {
        Opened = "opened", Update = "update", Lead = "lead",
        Alert = "alert", Command = "command", Resolved = "resolved",
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    pub kind: TimelineKind,
    pub actor: String,
    pub text: String,
}

/// The entry without its time, as chat and the postmortem both show it: `kind · actor: text`.
impl std::fmt::Display for TimelineEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} · {}: {}", self.kind.as_str(), self.actor, self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_targets() {
        let t = ResponseTargets::default();
        // Friday 2026-11-27 16:00 UTC.
        let fri = DateTime::parse_from_rfc3339("2026-11-27T16:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            Severity::P1.ack_due(fri, &t),
            fri + ChronoDuration::minutes(15)
        );
        assert_eq!(
            Severity::P2.ack_due(fri, &t),
            fri + ChronoDuration::hours(1)
        );
        assert_eq!(
            Severity::P3.ack_due(fri, &t),
            fri + ChronoDuration::hours(4)
        );
        assert_eq!(
            Severity::P4.ack_due(fri, &t).to_rfc3339(),
            "2026-11-30T09:00:00+00:00",
            "next working day is Monday"
        );
        assert!("p5".parse::<Severity>().is_err());
        assert_eq!("p2".parse::<Severity>(), Ok(Severity::P2));
    }
}
