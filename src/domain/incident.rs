//! Incidents: the lifecycle (open -> resolved), a severity of the configured scheme
//! (`severity.rs`), and the timeline of everything that happened, from which the postmortem
//! draft is rendered.

use chrono::{DateTime, Utc};

use super::IncidentId;
use super::Severity;
use super::identity::Platform;

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
