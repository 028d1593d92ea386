//! `[oncall]`: on-call schedules as data, parsed straight into domain [`Schedule`]s so a bad
//! time zone, time, weekday or shift stops startup with its line. Whether the people named
//! exist is checked against `[[people]]` by `Config::validate`.

use chrono::{NaiveDate, NaiveTime, Weekday};
use serde::{Deserialize, Deserializer};

use super::alerts::RouteTarget;
use crate::domain::{Layer, Schedule, Window};

/// On-call schedules.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OncallConfig {
    pub schedules: Vec<ScheduleConfig>,
}

/// One schedule and where its handoffs are announced.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawSchedule")]
pub struct ScheduleConfig {
    pub schedule: Schedule,
    /// Handoffs are announced here, mentioning the incoming person; unset: not announced.
    pub announce: Option<RouteTarget>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    name: String,
    time_zone: String,
    announce: Option<RouteTarget>,
    layers: Vec<RawLayer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLayer {
    name: String,
    people: Vec<String>,
    /// `daily`, `weekly` or `Nd` (N days).
    shift: String,
    /// `HH:MM`, wall-clock time in the schedule's zone.
    handoff: String,
    /// `YYYY-MM-DD`: the first shift's local date (a weekly rotation hands off on its weekday).
    start: String,
    #[serde(default, deserialize_with = "windows")]
    restrictions: Vec<Window>,
}

impl TryFrom<RawSchedule> for ScheduleConfig {
    type Error = String;

    fn try_from(raw: RawSchedule) -> Result<Self, String> {
        let name = raw.name;
        super::plain_name(&name, "schedule")?;
        let time_zone = crate::domain::time_zone(&raw.time_zone)
            .map_err(|e| format!("schedule {name}: {e}"))?;
        if raw.layers.is_empty() {
            return Err(format!("schedule {name}: needs at least one layer"));
        }
        let mut layers: Vec<Layer> = Vec::new();
        for l in raw.layers {
            let layer = layer(l).map_err(|e| format!("schedule {name}: {e}"))?;
            if layers.iter().any(|x| x.name == layer.name) {
                return Err(format!(
                    "schedule {name}: layer {} is listed twice",
                    layer.name
                ));
            }
            layers.push(layer);
        }
        Ok(ScheduleConfig {
            schedule: Schedule {
                name,
                time_zone,
                layers,
            },
            announce: raw.announce,
        })
    }
}

fn layer(l: RawLayer) -> Result<Layer, String> {
    let name = l.name;
    if l.people.is_empty() {
        return Err(format!("layer {name}: needs at least one person"));
    }
    let shift_days = match l.shift.as_str() {
        "daily" => 1,
        "weekly" => 7,
        other => other
            .strip_suffix('d')
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|n| (1..=365).contains(n))
            .ok_or_else(|| {
                format!("layer {name}: shift {other:?} must be daily, weekly or a number of days such as 3d")
            })?,
    };
    Ok(Layer {
        people: l.people,
        shift_days,
        handoff: time(&l.handoff).map_err(|e| format!("layer {name}: handoff {e}"))?,
        start: NaiveDate::parse_from_str(&l.start, "%Y-%m-%d").map_err(|_| {
            format!(
                "layer {name}: start {:?} must be a date such as 2026-03-16",
                l.start
            )
        })?,
        restrictions: l.restrictions,
        name,
    })
}

fn time(s: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(s, "%H:%M").map_err(|_| format!("{s:?} must be a time such as 09:00"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    /// `mon`..`sun`, or ranges such as `mon-fri`.
    days: Vec<String>,
    from: String,
    to: String,
}

fn windows<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Window>, D::Error> {
    Vec::<RawWindow>::deserialize(d)?
        .into_iter()
        .map(|w| window(w).map_err(serde::de::Error::custom))
        .collect()
}

fn window(w: RawWindow) -> Result<Window, String> {
    let mut days = Vec::new();
    for d in &w.days {
        let (first, last) = d.split_once('-').unwrap_or((d, d));
        let (first, last) = (weekday(first)?, weekday(last)?);
        let mut day = first;
        loop {
            if !days.contains(&day) {
                days.push(day);
            }
            if day == last {
                break;
            }
            day = day.succ();
        }
    }
    if days.is_empty() {
        return Err("restriction: days must name at least one weekday".into());
    }
    let (from, to) = (time(&w.from)?, time(&w.to)?);
    Ok(Window { days, from, to })
}

fn weekday(s: &str) -> Result<Weekday, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("restriction: {s:?} is not a weekday (mon, tue, …, sun)"))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    const PEOPLE: &str = r#"
[[people]]
name = "alice"
identities = ["slack:UALICE"]
[[people]]
name = "bob"
identities = ["slack:UBOB"]
"#;

    fn load(schedules: &str) -> Result<Config, String> {
        let src = format!("{PEOPLE}\n{schedules}");
        Config::from_toml(Path::new("opsbot.toml"), &src, &[]).map_err(|e| e.to_string())
    }

    const SRE: &str = r#"
[[oncall.schedules]]
name = "sre"
time_zone = "Europe/Berlin"
announce = { platform = "slack", channel = "C0OPS" }
[[oncall.schedules.layers]]
name = "primary"
people = ["alice", "bob"]
shift = "weekly"
handoff = "09:00"
start = "2026-03-16"
restrictions = [{ days = ["mon-fri"], from = "08:00", to = "20:00" }]
"#;

    #[test]
    fn a_schedule_parses_into_its_domain_form() {
        let c = load(SRE).unwrap();
        let s = &c.oncall.schedules[0];
        assert_eq!(s.schedule.name, "sre");
        assert_eq!(s.schedule.time_zone, chrono_tz::Europe::Berlin);
        let layer = &s.schedule.layers[0];
        assert_eq!(layer.shift_days, 7);
        assert_eq!(layer.restrictions[0].days.len(), 5);
        assert_eq!(s.announce.as_ref().unwrap().channel, "C0OPS");
    }

    #[test]
    fn mistakes_are_refused_with_their_line_or_name() {
        let cases = [
            (
                "Europe/Berlin",
                "Mars/Olympus",
                "unknown time zone \"Mars/Olympus\"",
            ),
            (
                "\"weekly\"",
                "\"fortnightly\"",
                "shift \"fortnightly\" must be",
            ),
            ("\"09:00\"", "\"9 am\"", "handoff \"9 am\" must be a time"),
            ("mon-fri", "mon-fry", "\"fry\" is not a weekday"),
            (
                "\"bob\"]",
                "\"mallory\"]",
                "names \"mallory\", who is not in [[people]]",
            ),
        ];
        for (from, to, want) in cases {
            let msg = load(&SRE.replace(from, to)).unwrap_err();
            assert!(msg.contains(want), "{from} -> {to}: {msg}");
        }
        // Parse errors carry the file and line of the schedule.
        let msg = load(&SRE.replace("Europe/Berlin", "Mars/Olympus")).unwrap_err();
        assert!(msg.starts_with("opsbot.toml:"), "{msg}");
        let twice = format!(
            "{SRE}\n{}",
            SRE.replace(
                "announce = { platform = \"slack\", channel = \"C0OPS\" }\n",
                ""
            )
        );
        assert!(
            load(&twice)
                .unwrap_err()
                .contains("schedule sre is defined twice")
        );
    }
}
