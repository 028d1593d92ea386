//! The daily report: the health table, firing alerts by severity, open incidents with their
//! age, and the runbook runs of the last 24 hours, as one message for a channel. Built when
//! its slot is due and queued with the slot's claim (`actions::schedules`).

use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::actions::health::{self, HealthChecks};
use crate::domain::{RunState, Timetable, clip, human_duration};
use crate::ports::{FiringCount, RunCount, Store, StoreError};

/// Severities listed by name in the report; the rest are summed up as "other".
const SEVERITIES_SHOWN: u32 = 6;
/// Longest incident title shown.
const TITLE_CHARS: usize = 80;

/// What the report reads: the checks, and the store's alerts, incidents and runs.
pub struct Report {
    health: Arc<HealthChecks>,
    store: Arc<dyn Store>,
}

impl Report {
    pub fn new(health: Arc<HealthChecks>, store: Arc<dyn Store>) -> Self {
        Self { health, store }
    }

    /// The report at `now`, headed with the time in the schedule's zone.
    pub async fn build(
        &self,
        timetable: &Timetable,
        now: DateTime<Utc>,
    ) -> Result<String, StoreError> {
        let checks = self.health.run(None).await;
        let firing = self.store.firing_count(SEVERITIES_SHOWN).await?;
        let incidents = self.store.open_incidents().await?;
        let runs = self
            .store
            .runs_since(now - chrono::Duration::hours(24))
            .await?;
        let mut out = format!("📋 Daily report, {}\n", timetable.local(now));
        let _ = writeln!(out, "Health:\n```\n{}\n```", health::render(&checks));
        out.push_str(&alerts_line(&firing));
        out.push_str("Open incidents:");
        if incidents.is_empty() {
            out.push_str(" none\n");
        } else {
            out.push('\n');
        }
        for i in &incidents {
            let age = (now - i.opened_at).to_std().unwrap_or_default();
            let _ = writeln!(
                out,
                "  #{} {} {:?}, open {}, led by {}",
                i.id,
                i.severity,
                clip(&i.title, TITLE_CHARS),
                human_duration(round_to_minutes(age)),
                i.commander
            );
        }
        out.push_str(&runs_lines(&runs));
        Ok(out.trim_end().to_owned())
    }
}

fn round_to_minutes(d: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_secs(d.as_secs() / 60 * 60)
}

/// `Firing alerts: 3 (critical 2, warning 1)` or `Firing alerts: none`.
fn alerts_line(firing: &FiringCount) -> String {
    if firing.total == 0 {
        return "Firing alerts: none\n".into();
    }
    let mut parts: Vec<String> = (firing.by_severity.iter())
        .map(|(severity, n)| format!("{} {n}", clip(severity, FiringCount::SEVERITY_CHARS)))
        .collect();
    let listed: u64 = firing.by_severity.iter().map(|(_, n)| n).sum();
    if listed < firing.total {
        parts.push(format!("other {}", firing.total - listed));
    }
    format!("Firing alerts: {} ({})\n", firing.total, parts.join(", "))
}

/// `Runs in the last 24 h: 4` and a line per command with its states.
fn runs_lines(runs: &[RunCount]) -> String {
    let total: u64 = runs.iter().map(|r| r.count).sum();
    if total == 0 {
        return "Runs in the last 24 h: none\n".into();
    }
    let mut out = format!("Runs in the last 24 h: {total}\n");
    let mut commands: Vec<&str> = runs.iter().map(|r| r.command.as_str()).collect();
    commands.dedup();
    for command in commands {
        let states: Vec<String> = (runs.iter())
            .filter(|r| r.command == command)
            .map(|r| format!("{} {}", r.count, state_word(r.state)))
            .collect();
        let _ = writeln!(out, "  /{command}: {}", states.join(", "));
    }
    out
}

fn state_word(state: RunState) -> &'static str {
    match state {
        RunState::TimedOut => "timed out",
        other => other.as_str(),
    }
}
