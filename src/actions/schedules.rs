//! Scheduled runs: every schedule (a command file's `[schedule]`, and the daily report when
//! configured), which slot is due ([`Timetable::decide`]), the claim of each slot in the
//! store with what it announces (so it fires once across replicas and restarts), pauses,
//! and the `/schedules` list. Running a fired command is the caller's (`crate::scheduler`),
//! through the router; the report is built here and queued with its claim.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::actions::report::Report;
use crate::domain::{Role, SlotDecision, SlotOutcome, Timetable, Visibility, human_duration};
use crate::ports::{Clock, OutboundMessage, OutboundTarget, Pause, Queued, Store, StoreError};

/// One schedule.
#[derive(Clone, Debug)]
pub struct ScheduleEntry {
    /// The command's name, or the report's (`config::REPORT_SCHEDULE`).
    pub name: String,
    pub timetable: Timetable,
    /// Where its runs report.
    pub target: OutboundTarget,
    pub grace: Duration,
    pub work: Work,
}

/// What a schedule does when a slot fires.
#[derive(Clone, Debug)]
pub enum Work {
    /// Runs the command `name` as `schedule:NAME` holding `roles`, with `args`.
    Command {
        roles: Vec<Role>,
        args: Vec<(String, String)>,
        /// It has `[approval]`: a slot opens a request instead of running.
        needs_approval: bool,
    },
    /// Posts the daily report.
    Report,
}

/// What one pass found: the command slots to run, and whether anything was queued.
#[derive(Debug, Default)]
pub struct Due {
    pub fired: Vec<Fired>,
    /// Notices queued with their claims (starts, skips, reports), for the deliverer.
    pub queued: usize,
}

/// A command slot this replica claimed: run it now.
#[derive(Clone, Debug)]
pub struct Fired {
    pub entry: ScheduleEntry,
    pub slot: DateTime<Utc>,
}

/// Why `/schedule pause|resume` was refused: every variant is for the person who asked.
#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    #[error("there is no schedule named {0:?}; schedules: {1}")]
    Unknown(String, String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Schedules {
    entries: Vec<ScheduleEntry>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    report: Arc<Report>,
    /// This replica's name, recorded with each slot it claims.
    replica: String,
}

impl Schedules {
    pub fn new(
        entries: Vec<ScheduleEntry>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        report: Arc<Report>,
        replica: &str,
    ) -> Self {
        Self {
            entries,
            store,
            clock,
            report,
            replica: replica.to_owned(),
        }
    }

    pub fn entries(&self) -> &[ScheduleEntry] {
        &self.entries
    }

    /// Decides every schedule's due slot and claims it: a report is queued with its claim, a
    /// missed slot's notice too; the command slots this call claimed are returned to run.
    pub async fn take_due(&self) -> Result<Due, StoreError> {
        let now = self.clock.now();
        let paused = self.store.pauses().await?;
        let mut due = Due::default();
        for entry in &self.entries {
            let is_paused = paused.iter().any(|p| p.schedule == entry.name);
            // One schedule's trouble (a report the store could not build) holds up no other.
            match self.take_one(entry, is_paused, now).await {
                Ok(Taken::Nothing) => {}
                Ok(Taken::Queued) => due.queued += 1,
                Ok(Taken::Run(slot)) => {
                    due.queued += 1;
                    due.fired.push(Fired {
                        entry: entry.clone(),
                        slot,
                    });
                }
                Err(e) => {
                    tracing::warn!(schedule = %entry.name, error = %e, "could not take a scheduled slot; will retry")
                }
            }
        }
        Ok(due)
    }

    async fn take_one(
        &self,
        entry: &ScheduleEntry,
        paused: bool,
        now: DateTime<Utc>,
    ) -> Result<Taken, StoreError> {
        let last = self.store.last_slot(&entry.name).await?;
        let decision = entry.timetable.decide(last, now, entry.grace);
        self.claim(entry, decision, paused, now).await
    }

    /// Claims what `decision` says with its notices.
    async fn claim(
        &self,
        entry: &ScheduleEntry,
        decision: SlotDecision,
        paused: bool,
        now: DateTime<Utc>,
    ) -> Result<Taken, StoreError> {
        let (slot, outcome, notices) = match decision {
            SlotDecision::Wait => return Ok(Taken::Nothing),
            SlotDecision::Baseline(slot) => (slot, SlotOutcome::Baseline, Vec::new()),
            // A paused schedule's slots are claimed silently, so resuming runs none late.
            SlotDecision::Fire(slot) | SlotDecision::Skip { slot, .. } if paused => {
                (slot, SlotOutcome::Paused, Vec::new())
            }
            SlotDecision::Skip { slot, missed } => {
                let text = skipped_text(entry, slot, missed);
                (slot, SlotOutcome::Skipped, vec![notice(entry, text)])
            }
            SlotDecision::Fire(slot) => {
                let text = match entry.work {
                    Work::Report => self.report.build(&entry.timetable, now).await?,
                    Work::Command { needs_approval, .. } => {
                        started_text(entry, slot, needs_approval)
                    }
                };
                (slot, SlotOutcome::Fired, vec![notice(entry, text)])
            }
        };
        let claimed = (self.store)
            .claim_slot(&entry.name, slot, outcome, &self.replica, now, &notices)
            .await?;
        let runs = matches!(entry.work, Work::Command { .. }) && outcome == SlotOutcome::Fired;
        Ok(match (claimed, runs) {
            (false, _) => Taken::Nothing,
            (true, true) => Taken::Run(slot),
            (true, false) if notices.is_empty() => Taken::Nothing,
            (true, false) => Taken::Queued,
        })
    }

    /// `/schedules`: each schedule, its timetable, its next run in its zone, paused or not.
    pub async fn list(&self) -> Result<String, StoreError> {
        if self.entries.is_empty() {
            return Ok(
                "No schedules: add [schedule] to a command file, or [report] to the config.".into(),
            );
        }
        let now = self.clock.now();
        let paused = self.store.pauses().await?;
        let mut out = String::from("⏰ Schedules:\n");
        for e in &self.entries {
            let next = (e.timetable.next_after(now))
                .map_or_else(|| "never".to_owned(), |t| e.timetable.local(t));
            let _ = write!(
                out,
                "  {} `{}` ({}) → {}:{}, next {next}",
                e.name,
                e.timetable.expr(),
                e.timetable.zone(),
                e.target.platform,
                e.target.channel_id
            );
            if let Some(p) = paused.iter().find(|p| p.schedule == e.name) {
                let _ = write!(out, " ⏸ paused by {} {}", p.by, e.timetable.local(p.at));
            }
            out.push('\n');
        }
        Ok(out.trim_end().to_owned())
    }

    /// Pauses or resumes schedule `name` for everyone (stored); the answer for the channel.
    pub async fn set_paused(
        &self,
        name: &str,
        pause: bool,
        by: &str,
    ) -> Result<String, PauseError> {
        let Some(entry) = self.entries.iter().find(|e| e.name == name) else {
            let names: Vec<&str> = self.entries.iter().map(|e| e.name.as_str()).collect();
            let names = if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            };
            return Err(PauseError::Unknown(name.to_owned(), names));
        };
        let now = self.clock.now();
        let stored = Pause {
            schedule: name.to_owned(),
            by: by.to_owned(),
            at: now,
        };
        let changed = (self.store)
            .set_paused(name, pause.then_some(&stored))
            .await?;
        let next = (entry.timetable.next_after(now))
            .map_or_else(|| "never".to_owned(), |t| entry.timetable.local(t));
        Ok(match (pause, changed) {
            (true, true) => format!(
                "⏸ Schedule {name} paused by {by}: its runs are skipped until /schedule resume {name}."
            ),
            (true, false) => format!("Schedule {name} is already paused."),
            (false, true) => format!("▶️ Schedule {name} resumed by {by}; next run {next}."),
            (false, false) => format!("Schedule {name} is not paused; next run {next}."),
        })
    }
}

/// What claiming one schedule's slot came to.
enum Taken {
    Nothing,
    /// A notice was queued (a skip, a report).
    Queued,
    /// A command slot to run (its start notice queued).
    Run(DateTime<Utc>),
}

fn started_text(entry: &ScheduleEntry, slot: DateTime<Utc>, needs_approval: bool) -> String {
    let (name, at) = (&entry.name, entry.timetable.local(slot));
    if needs_approval {
        format!(
            "⏰ Scheduled run of /{name} ({at}) as schedule:{name} needs approval; its request follows."
        )
    } else {
        format!("⏰ Scheduled run of /{name} ({at}) starting as schedule:{name}.")
    }
}

/// A message for the schedule's channel.
fn notice(entry: &ScheduleEntry, text: String) -> Queued {
    let message = OutboundMessage::text(text).with_visibility(Visibility::Channel);
    Queued::post(entry.target.clone(), message)
}

fn skipped_text(entry: &ScheduleEntry, slot: DateTime<Utc>, missed: u32) -> String {
    let what = match entry.work {
        Work::Report => "The daily report".to_owned(),
        Work::Command { .. } => format!("Scheduled run of /{}", entry.name),
    };
    let grace = human_duration(entry.grace);
    let more = match missed {
        0 | 1 => String::new(),
        n => format!(" ({n} runs were missed in all)"),
    };
    format!(
        "⏭ {what} due {} was skipped: opsbot was not running then, and it is more than {grace} late{more}. The next run is on schedule.",
        entry.timetable.local(slot)
    )
}
