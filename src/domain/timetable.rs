//! Timetables for scheduled runs: a 5-field cron expression read in an IANA time zone, and
//! the one decision the scheduler makes for a schedule at an instant ([`Timetable::decide`]):
//! fire the slot that is due, announce one missed while opsbot was down, or wait.
//!
//! DST follows the on-call handoffs' rule (`oncall.rs`): a wall-clock time in the spring's
//! skipped hour happens when the clock resumes (02:30 runs at 03:00), one in the autumn's
//! repeated hour happens once, at its first occurrence. Nothing here reads a clock.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// How long after its time a slot missed (opsbot down, a leader handover) still runs,
/// unless the schedule says otherwise.
pub const DEFAULT_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

/// Most missed slots counted in a "skipped" notice; beyond it the notice says "at least".
const MISSED_COUNTED: u32 = 1000;

string_enum! {
    /// What became of a claimed slot.
    pub enum SlotOutcome("slot outcome") {
        /// It ran (or opened its approval request).
        Fired = "fired",
        /// It was missed by more than the grace and announced as skipped.
        Skipped = "skipped",
        /// The schedule was paused at its time.
        Paused = "paused",
        /// The schedule's first slot seen, long past: only remembered.
        Baseline = "baseline",
    }
}

/// When a schedule runs: a cron expression in a time zone.
#[derive(Clone, Debug)]
pub struct Timetable {
    expr: String,
    zone: Tz,
    cron: Cron,
}

/// What a schedule should do now, given the newest slot it has claimed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotDecision {
    /// Nothing is due: the newest slot is claimed already (or there is none yet).
    Wait,
    /// Run `slot` now: it is due and within the grace.
    Fire(DateTime<Utc>),
    /// `slot` passed more than the grace ago while nobody ran it: announce it skipped.
    /// `missed` counts it and the unclaimed slots before it since the last claimed one.
    Skip { slot: DateTime<Utc>, missed: u32 },
    /// A schedule seen for the first time, its newest slot long past: remember it silently
    /// (it was never due while opsbot knew the schedule), so later misses can be told.
    Baseline(DateTime<Utc>),
}

impl Timetable {
    /// Parses `expr` (exactly five fields: minute hour day-of-month month day-of-week, or a
    /// nickname such as `@daily`) to be read in `zone`.
    pub fn parse(expr: &str, zone: Tz) -> Result<Self, String> {
        let fields = expr.split_whitespace().count();
        if fields != 5 && !expr.trim_start().starts_with('@') {
            return Err(format!(
                "cron {expr:?} has {fields} fields; write five: minute hour day-of-month month day-of-week (\"0 3 * * *\")"
            ));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let cron = parser
            .parse(expr)
            .map_err(|e| format!("cron {expr:?} is not valid: {e}"))?;
        let table = Timetable {
            expr: expr.trim().to_owned(),
            zone,
            cron,
        };
        // `0 0 30 2 *` parses but never comes: refuse it rather than never run.
        if table.next_after(DateTime::<Utc>::UNIX_EPOCH).is_none() {
            return Err(format!("cron {expr:?} never matches a date"));
        }
        Ok(table)
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The first slot strictly after `at`.
    pub fn next_after(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = at.with_timezone(&self.zone);
        let next = self.cron.find_next_occurrence(&local, false).ok()?;
        Some(next.with_timezone(&Utc))
    }

    /// The newest slot at or before `at`, as the forward search ([`Timetable::next_after`])
    /// places slots.
    pub fn latest_until(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = at.with_timezone(&self.zone);
        let prev = self.cron.find_previous_occurrence(&local, true).ok()?;
        let mut latest = prev.with_timezone(&Utc);
        // Searching backwards finds no slot in the spring's skipped hour, where the forward
        // search runs it when the clock resumes: step forward to the last one not after `at`.
        while let Some(next) = self.next_after(latest).filter(|n| *n <= at) {
            latest = next;
        }
        Some(latest)
    }

    /// `at` as people in the schedule's zone read it: `Tue 01 Dec 03:00 CET`.
    pub fn local(&self, at: DateTime<Utc>) -> String {
        at.with_timezone(&self.zone)
            .format("%a %d %b %H:%M %Z")
            .to_string()
    }

    /// What to do at `now`, when the newest slot claimed so far is `last` (`None`: never
    /// claimed one) and a slot may still run up to `grace` after its time.
    pub fn decide(
        &self,
        last: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        grace: std::time::Duration,
    ) -> SlotDecision {
        let Some(slot) = self.latest_until(now) else {
            return SlotDecision::Wait;
        };
        if last.is_some_and(|last| last >= slot) {
            return SlotDecision::Wait;
        }
        let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        if now - slot <= grace {
            return SlotDecision::Fire(slot);
        }
        match last {
            None => SlotDecision::Baseline(slot),
            Some(last) => SlotDecision::Skip {
                slot,
                missed: self.slots_between(last, slot),
            },
        }
    }

    /// Slots after `after` up to and including `upto`, counted up to [`MISSED_COUNTED`].
    fn slots_between(&self, after: DateTime<Utc>, upto: DateTime<Utc>) -> u32 {
        let mut n = 0;
        let mut at = after;
        while n < MISSED_COUNTED {
            match self.next_after(at) {
                Some(next) if next <= upto => {
                    n += 1;
                    at = next;
                }
                _ => break,
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn berlin(expr: &str) -> Timetable {
        Timetable::parse(expr, chrono_tz::Europe::Berlin).unwrap()
    }

    #[test]
    fn only_five_field_expressions_that_can_match_are_accepted() {
        let zone = chrono_tz::UTC;
        assert!(Timetable::parse("0 3 * * *", zone).is_ok());
        assert!(Timetable::parse("@daily", zone).is_ok());
        for bad in [
            "0 0 3 * * *",
            "0 3 * *",
            "61 3 * * *",
            "0 3 * * FUNDAY",
            "0 0 30 2 *",
        ] {
            assert!(Timetable::parse(bad, zone).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_nightly_slot_follows_the_zone_across_the_dst_changes() {
        let t = berlin("0 3 * * *");
        // CET (UTC+1) before 29 March 2026, CEST (UTC+2) after.
        assert_eq!(
            t.next_after(utc("2026-03-28T12:00:00Z")),
            Some(utc("2026-03-29T01:00:00Z")),
        );
        assert_eq!(
            t.next_after(utc("2026-03-29T01:00:00Z")),
            Some(utc("2026-03-30T01:00:00Z")),
        );
        assert_eq!(
            t.local(utc("2026-03-30T01:00:00Z")),
            "Mon 30 Mar 03:00 CEST"
        );
    }

    #[test]
    fn a_slot_in_the_skipped_hour_runs_when_the_clock_resumes_and_one_in_the_repeated_hour_once() {
        let t = berlin("30 2 * * *");
        // 29 March 2026: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
        assert_eq!(
            t.next_after(utc("2026-03-28T12:00:00Z")),
            Some(utc("2026-03-29T01:00:00Z")),
        );
        // 25 October 2026: 03:00 CEST goes back to 02:00 CET; 02:30 comes twice, runs once.
        let first = utc("2026-10-25T00:30:00Z");
        assert_eq!(t.next_after(utc("2026-10-24T12:00:00Z")), Some(first));
        assert_eq!(t.next_after(first), Some(utc("2026-10-26T01:30:00Z")));
    }

    #[test]
    fn the_slot_due_in_the_skipped_hour_is_the_one_run_when_the_clock_resumes() {
        let t = berlin("30 2 * * *");
        let resumed = utc("2026-03-29T01:00:00Z");
        assert_eq!(t.latest_until(resumed), Some(resumed));
        assert_eq!(
            t.latest_until(resumed - chrono::Duration::seconds(1)),
            Some(utc("2026-03-28T01:30:00Z"))
        );
    }

    #[test]
    fn a_due_slot_fires_once_then_waits() {
        let t = berlin("0 3 * * *");
        let slot = utc("2026-12-01T02:00:00Z");
        let grace = Duration::from_secs(600);
        assert_eq!(t.decide(None, slot, grace), SlotDecision::Fire(slot));
        assert_eq!(
            t.decide(Some(slot), slot + chrono::Duration::seconds(5), grace),
            SlotDecision::Wait
        );
    }

    #[test]
    fn a_missed_slot_fires_within_the_grace_and_is_skipped_after_it() {
        let t = berlin("0 3 * * *");
        let last = utc("2026-11-29T02:00:00Z");
        let slot = utc("2026-12-01T02:00:00Z");
        let grace = Duration::from_secs(600);
        let within = slot + chrono::Duration::minutes(9);
        assert_eq!(
            t.decide(Some(last), within, grace),
            SlotDecision::Fire(slot)
        );
        let after = slot + chrono::Duration::minutes(11);
        assert_eq!(
            t.decide(Some(last), after, grace),
            SlotDecision::Skip { slot, missed: 2 }
        );
        // Never claimed before: nothing to announce, only remembered.
        assert_eq!(t.decide(None, after, grace), SlotDecision::Baseline(slot));
    }
}
