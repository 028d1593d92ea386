//! On-call schedules: who is on call at an instant, and when the next handoffs are.
//!
//! A schedule has layers (primary, secondary, …), each a rotation over a list of people
//! with shifts of whole days that hand off at a wall-clock time in the schedule's IANA time
//! zone, so a Monday 09:00 handoff stays at 09:00 across DST changes. A layer may be
//! restricted to windows of the week (working hours); outside them nobody is on call on it.
//! Overrides (from `/oncall override`) win over the rotation for their duration. Nothing
//! here reads a clock or performs I/O: every answer is for an instant the caller gives.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono::{LocalResult, Weekday};
use chrono_tz::Tz;

/// An IANA time zone by name (`Europe/Berlin`), with the sentence a config error shows.
/// On-call schedules and scheduled runs read their wall-clock times in one.
pub fn time_zone(name: &str) -> Result<Tz, String> {
    name.parse()
        .map_err(|_| format!("unknown time zone {name:?}; use an IANA name such as Europe/Berlin"))
}

/// One schedule, as configured.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub name: String,
    pub time_zone: Tz,
    /// In escalation order: the first is the primary.
    pub layers: Vec<Layer>,
}

/// One layer of a schedule: a rotation, optionally restricted to windows of the week.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    pub name: String,
    /// Directory names, in rotation order; never empty.
    pub people: Vec<String>,
    /// Shift length in days (1 daily, 7 weekly); at least 1.
    pub shift_days: u32,
    /// Wall-clock handoff time in the schedule's zone.
    pub handoff: NaiveTime,
    /// The local date the first shift (of `people[0]`) starts on; a weekly rotation hands
    /// off on this date's weekday.
    pub start: NaiveDate,
    /// When non-empty, the layer has somebody on call only inside one of these.
    pub restrictions: Vec<Window>,
}

/// A window of the week in local time, e.g. Mon-Fri 09:00-17:00. `to` at or before `from`
/// crosses midnight (22:00-06:00 on Friday runs into Saturday morning).
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    pub days: Vec<Weekday>,
    pub from: NaiveTime,
    pub to: NaiveTime,
}

/// Somebody standing in for a layer's rotation for a while.
#[derive(Clone, Debug, PartialEq)]
pub struct Override {
    pub schedule: String,
    pub layer: String,
    pub person: String,
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

/// Who is on call on one layer at an instant.
#[derive(Clone, Debug, PartialEq)]
pub struct OnCall {
    pub layer: String,
    /// `None` outside the layer's restrictions or before its first shift.
    pub person: Option<String>,
    /// Set when an override, not the rotation, put them there.
    pub overridden: bool,
}

/// A rotation handoff: `to` takes over `layer` at `at`.
#[derive(Clone, Debug, PartialEq)]
pub struct Handoff {
    pub layer: String,
    pub at: DateTime<Utc>,
    pub from: String,
    pub to: String,
}

impl Schedule {
    /// Who is on call on each layer at `at`, in layer order. Of several overrides covering
    /// `at` on one layer, the last listed (the newest) wins.
    pub fn on_call(&self, at: DateTime<Utc>, overrides: &[Override]) -> Vec<OnCall> {
        let local = at.with_timezone(&self.time_zone).naive_local();
        self.layers
            .iter()
            .map(|layer| {
                let stand_in = overrides.iter().rev().find(|o| {
                    o.schedule == self.name && o.layer == layer.name && o.from <= at && at < o.until
                });
                match stand_in {
                    Some(o) => OnCall {
                        layer: layer.name.clone(),
                        person: Some(o.person.clone()),
                        overridden: true,
                    },
                    None => OnCall {
                        layer: layer.name.clone(),
                        person: (layer.on_duty(local))
                            .then(|| layer.person(self.shift_index(layer, at)?))
                            .flatten()
                            .map(str::to_owned),
                        overridden: false,
                    },
                }
            })
            .collect()
    }

    /// The primary layer's on-call at `at` (overrides included).
    pub fn primary(&self, at: DateTime<Utc>, overrides: &[Override]) -> Option<String> {
        self.on_call(at, overrides).into_iter().next()?.person
    }

    /// The next `n` rotation handoffs after `after`, over all layers, soonest first. A
    /// handoff between two shifts of the same person (a one-person rotation) is none.
    pub fn handoffs(&self, after: DateTime<Utc>, n: usize) -> Vec<Handoff> {
        let mut out: Vec<Handoff> = Vec::new();
        for layer in &self.layers {
            let first = self.shift_index(layer, after).unwrap_or(-1) + 1;
            let mut found = 0;
            // People who repeat (one-person rotations) hand off to themselves: bounded scan.
            let span = (n * layer.people.len().max(1) + 1) as i64;
            for k in first..first + span {
                if found == n {
                    break;
                }
                let (from, to) = (layer.person(k - 1), layer.person(k));
                if let (Some(to), true) = (to, from != to) {
                    out.push(Handoff {
                        layer: layer.name.clone(),
                        at: self.instant(layer.shift_start(k)),
                        from: from.unwrap_or_default().to_owned(),
                        to: to.to_owned(),
                    });
                    found += 1;
                }
            }
        }
        out.retain(|h| h.at > after);
        out.sort_by_key(|h| h.at);
        out.truncate(n);
        out
    }

    /// The instant a local wall-clock time names: the earlier of two in the autumn's
    /// repeated hour, the first valid one after the spring's skipped hour.
    fn instant(&self, local: NaiveDateTime) -> DateTime<Utc> {
        let mut probe = local;
        loop {
            match self.time_zone.from_local_datetime(&probe) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => {
                    return t.with_timezone(&Utc);
                }
                // No zone skips more than a day; a minute at a time finds the gap's end.
                LocalResult::None => probe += Duration::minutes(1),
            }
        }
    }

    /// The number of `layer`'s shift under way at `at`; `None` before the first. Instants
    /// are compared, not wall clocks: in the autumn's repeated hour the clock reads an
    /// earlier time again after the handoff has happened, and the outgoing person must not
    /// come back for it.
    fn shift_index(&self, layer: &Layer, at: DateTime<Utc>) -> Option<i64> {
        let local = at.with_timezone(&self.time_zone).naive_local();
        let days = (local.date() - layer.start).num_days();
        let mut k = days.div_euclid(i64::from(layer.shift_days.max(1)));
        if at < self.instant(layer.shift_start(k)) {
            k -= 1;
        }
        (k >= 0).then_some(k)
    }
}

impl Layer {
    fn shift_start(&self, k: i64) -> NaiveDateTime {
        let days = k * i64::from(self.shift_days.max(1));
        (self.start + Duration::days(days)).and_time(self.handoff)
    }

    fn person(&self, k: i64) -> Option<&str> {
        if k < 0 || self.people.is_empty() {
            return None;
        }
        let i = k.rem_euclid(self.people.len() as i64) as usize;
        Some(&self.people[i])
    }

    /// Inside the layer's restrictions (always, without any).
    fn on_duty(&self, local: NaiveDateTime) -> bool {
        self.restrictions.is_empty() || self.restrictions.iter().any(|w| w.contains(local))
    }
}

impl Window {
    fn contains(&self, local: NaiveDateTime) -> bool {
        let (day, t) = (local.weekday(), local.time());
        if self.from < self.to {
            return self.days.contains(&day) && self.from <= t && t < self.to;
        }
        (self.days.contains(&day) && t >= self.from)
            || (self.days.contains(&day.pred()) && t < self.to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn weekly_berlin() -> Schedule {
        Schedule {
            name: "sre".into(),
            time_zone: chrono_tz::Europe::Berlin,
            layers: vec![
                Layer {
                    name: "primary".into(),
                    people: vec!["alice".into(), "bob".into(), "carol".into()],
                    shift_days: 7,
                    handoff: t(9, 0),
                    // A Monday.
                    start: NaiveDate::from_ymd_opt(2026, 3, 16).unwrap(),
                    restrictions: vec![],
                },
                Layer {
                    name: "secondary".into(),
                    people: vec!["dave".into(), "erin".into()],
                    shift_days: 1,
                    handoff: t(9, 0),
                    start: NaiveDate::from_ymd_opt(2026, 3, 16).unwrap(),
                    restrictions: vec![],
                },
            ],
        }
    }

    fn primary(s: &Schedule, at: &str) -> Option<String> {
        s.primary(utc(at), &[])
    }

    #[test]
    fn a_weekly_monday_handoff_stays_at_nine_local_across_the_spring_dst_change() {
        let s = weekly_berlin();
        // Before DST (CET, UTC+1): Monday 23 March 09:00 local is 08:00 UTC.
        assert_eq!(
            primary(&s, "2026-03-23T07:59:00Z").as_deref(),
            Some("alice")
        );
        assert_eq!(primary(&s, "2026-03-23T08:00:00Z").as_deref(), Some("bob"));
        // DST starts on Sunday 29 March: Monday 30 March 09:00 local is 07:00 UTC.
        assert_eq!(primary(&s, "2026-03-30T06:59:00Z").as_deref(), Some("bob"));
        assert_eq!(
            primary(&s, "2026-03-30T07:00:00Z").as_deref(),
            Some("carol")
        );
        let next = s.handoffs(utc("2026-03-24T12:00:00Z"), 10);
        let primary_next: Vec<_> = next.iter().filter(|h| h.layer == "primary").collect();
        assert_eq!(primary_next[0].at, utc("2026-03-30T07:00:00Z"));
        assert_eq!(
            (primary_next[0].from.as_str(), primary_next[0].to.as_str()),
            ("bob", "carol")
        );
    }

    #[test]
    fn the_autumn_change_moves_the_handoff_to_eight_utc() {
        let s = weekly_berlin();
        // DST ends Sunday 25 October 2026; Monday 26 October 09:00 CET is 08:00 UTC.
        let h = s.handoffs(utc("2026-10-22T00:00:00Z"), 10);
        let monday = h.iter().find(|h| h.layer == "primary").unwrap();
        assert_eq!(monday.at, utc("2026-10-26T08:00:00Z"));
    }

    #[test]
    fn a_handoff_in_the_repeated_autumn_hour_is_not_undone_when_the_clock_goes_back() {
        let mut s = weekly_berlin();
        s.layers[1].handoff = t(2, 30);
        // 25 October 2026: 02:30 CEST (00:30 UTC) is the handoff; at 01:00 UTC the clock
        // has gone back to 02:00 CET and reads 02:00-02:30 a second time.
        let secondary = |at| s.on_call(utc(at), &[])[1].person.clone();
        let before = secondary("2026-10-25T00:29:00Z");
        let after = secondary("2026-10-25T00:30:00Z");
        assert_ne!(before, after, "a daily handoff at 00:30 UTC");
        assert_eq!(
            secondary("2026-10-25T01:15:00Z"),
            after,
            "02:15 CET, the second time"
        );
        assert_eq!(secondary("2026-10-25T01:31:00Z"), after);
        let h = s.handoffs(utc("2026-10-25T00:31:00Z"), 10);
        let next = h.iter().find(|h| h.layer == "secondary").unwrap();
        assert_eq!(
            next.at,
            utc("2026-10-26T01:30:00Z"),
            "02:30 CET the next day"
        );
    }

    #[test]
    fn a_handoff_in_the_skipped_hour_happens_when_the_clock_resumes() {
        let mut s = weekly_berlin();
        s.layers[1].handoff = t(2, 30);
        // 29 March 2026 02:30 does not exist in Berlin; 03:00 CEST is 01:00 UTC.
        let h = s.handoffs(utc("2026-03-28T12:00:00Z"), 10);
        let daily = h.iter().find(|h| h.layer == "secondary").unwrap();
        assert_eq!(daily.at, utc("2026-03-29T01:00:00Z"));
    }

    #[test]
    fn an_override_wins_for_its_duration_then_the_rotation_returns() {
        let s = weekly_berlin();
        let o = Override {
            schedule: "sre".into(),
            layer: "primary".into(),
            person: "zoe".into(),
            from: utc("2026-03-24T10:00:00Z"),
            until: utc("2026-03-24T14:00:00Z"),
        };
        let at = |x| s.on_call(utc(x), std::slice::from_ref(&o));
        assert_eq!(at("2026-03-24T09:59:00Z")[0].person.as_deref(), Some("bob"));
        let during = at("2026-03-24T12:00:00Z");
        assert_eq!(during[0].person.as_deref(), Some("zoe"));
        assert!(during[0].overridden);
        assert_eq!(
            during[1].person.as_deref(),
            Some("dave"),
            "other layers keep their rotation"
        );
        assert_eq!(at("2026-03-24T14:00:00Z")[0].person.as_deref(), Some("bob"));
    }

    #[test]
    fn restrictions_leave_the_layer_empty_outside_their_windows() {
        let mut s = weekly_berlin();
        s.layers[0].restrictions = vec![Window {
            days: vec![
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri,
            ],
            from: t(9, 0),
            to: t(17, 0),
        }];
        // Tuesday 24 March 10:00 local (09:00 UTC) is inside; 18:00 local is not.
        assert_eq!(primary(&s, "2026-03-24T09:00:00Z").as_deref(), Some("bob"));
        assert_eq!(primary(&s, "2026-03-24T17:00:00Z"), None);
        // Saturday is outside.
        assert_eq!(primary(&s, "2026-03-28T10:00:00Z"), None);
    }

    #[test]
    fn a_window_crossing_midnight_covers_the_next_morning() {
        let w = Window {
            days: vec![Weekday::Fri],
            from: t(22, 0),
            to: t(6, 0),
        };
        let at = |d, h| {
            NaiveDate::from_ymd_opt(2026, 3, d)
                .unwrap()
                .and_time(t(h, 0))
        };
        assert!(w.contains(at(27, 23)), "Friday night");
        assert!(w.contains(at(28, 5)), "Saturday early morning");
        assert!(!w.contains(at(28, 7)));
        assert!(!w.contains(at(27, 21)));
    }

    #[test]
    fn nobody_is_on_call_before_the_rotation_starts_and_n_day_shifts_rotate() {
        let mut s = weekly_berlin();
        s.layers[0].shift_days = 3;
        assert_eq!(primary(&s, "2026-03-16T07:59:00Z"), None);
        assert_eq!(
            primary(&s, "2026-03-18T12:00:00Z").as_deref(),
            Some("alice")
        );
        assert_eq!(primary(&s, "2026-03-19T08:00:00Z").as_deref(), Some("bob"));
        assert_eq!(
            primary(&s, "2026-03-25T08:00:00Z").as_deref(),
            Some("alice")
        );
    }

    #[test]
    fn a_one_person_rotation_never_hands_off() {
        let mut s = weekly_berlin();
        s.layers[0].people = vec!["alice".into()];
        let h = s.handoffs(utc("2026-03-20T00:00:00Z"), 3);
        assert!(h.iter().all(|h| h.layer == "secondary"), "{h:?}");
    }
}
