//! Human-friendly durations (`90s`, `10m`, `2h`) and rate quotas (`3/min`, `10/5m`),
//! parsed once at the edge so the rest of the code works with checked values.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

/// Parses `500ms`, `30s`, `10m`, `2h`, `1d` (also combined: `1h30m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration; use e.g. 30s, 10m, 2h".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "duration {s:?} must look like 30s, 10m, 2h or 1h30m"
            ));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("duration {s:?} is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" | "sec" | "secs" => Duration::from_secs(n),
            "m" | "min" | "mins" => Duration::from_secs(n.saturating_mul(60)),
            "h" | "hour" | "hours" => Duration::from_secs(n.saturating_mul(3600)),
            "d" | "day" | "days" => Duration::from_secs(n.saturating_mul(86_400)),
            "" => return Err(format!("duration {s:?} needs a unit: ms, s, m, h or d")),
            other => {
                return Err(format!(
                    "duration {s:?} has unknown unit {other:?}; use ms, s, m, h or d"
                ));
            }
        };
        total = total.saturating_add(part);
    }
    if total > Duration::from_secs(366 * 86_400) {
        return Err(format!("duration {s:?} is longer than a year"));
    }
    Ok(total)
}

/// Short human form of a duration: `250ms`, `2.5s`, `45s`, `10m`, `15h 54m`, `3d 2h`.
/// From a minute on, the two largest units (rounded down): an age, not a measurement.
pub fn human_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        return format!("{}ms", d.as_millis());
    }
    if d < Duration::from_secs(60) {
        return match d.subsec_millis() {
            0 => format!("{}s", d.as_secs()),
            _ => format!("{:.1}s", d.as_secs_f64()),
        };
    }
    let s = d.as_secs();
    let units = [
        (s / 86_400, "d"),
        (s / 3600 % 24, "h"),
        (s / 60 % 60, "m"),
        (s % 60, "s"),
    ];
    let first = units.iter().position(|(n, _)| *n > 0).unwrap_or(0);
    units[first..]
        .iter()
        .take(2)
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A rate: at most `count` events per `per`, written `3/min`, `10/s`, `100/hour` or `5/10m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RateQuota {
    pub count: NonZeroU32,
    pub per: Duration,
}

impl RateQuota {
    /// Time between two events at a steady rate (the GCRA emission interval).
    pub fn interval(&self) -> Duration {
        self.per / self.count.get()
    }
}

impl FromStr for RateQuota {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (count, per) = s
            .split_once('/')
            .ok_or_else(|| format!("rate {s:?} must look like 3/min, 10/s or 5/10m"))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("rate {s:?}: {count:?} is not a whole number"))?;
        let count =
            NonZeroU32::new(count).ok_or_else(|| format!("rate {s:?} must allow at least 1"))?;
        let per = match per.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86_400),
            other => parse_duration(other)?,
        };
        if per.is_zero() || per / count.get() < Duration::from_micros(1) {
            return Err(format!("rate {s:?} is too fast to enforce"));
        }
        Ok(RateQuota { count, per })
    }
}

impl fmt::Display for RateQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}s", self.count, self.per.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in [
            "",
            "10",
            "m",
            "5 parsecs",
            "10x",
            "-1s",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn durations_print_as_people_say_them() {
        let secs = |s| human_duration(Duration::from_secs(s));
        assert_eq!(secs(57_259), "15h 54m");
        assert_eq!(secs(3 * 86_400 + 2 * 3600 + 59), "3d 2h");
        assert_eq!(secs(45), "45s");
        assert_eq!(secs(90), "1m 30s");
        assert_eq!(secs(600), "10m");
        assert_eq!(secs(7200), "2h");
        assert_eq!(secs(86_400 + 60), "1d");
        assert_eq!(human_duration(Duration::from_millis(2500)), "2.5s");
        assert_eq!(human_duration(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn quotas_parse() {
        let q: RateQuota = "3/min".parse().unwrap();
        assert_eq!(q.count.get(), 3);
        assert_eq!(q.per, Duration::from_secs(60));
        assert_eq!(q.interval(), Duration::from_secs(20));
        assert_eq!(
            "5/10m".parse::<RateQuota>().unwrap().per,
            Duration::from_secs(600)
        );
        for bad in ["3", "0/min", "x/min", "3/fortnight"] {
            assert!(
                bad.parse::<RateQuota>().is_err(),
                "{bad} should be rejected"
            );
        }
    }
}

/// A [`Duration`] read from config or command files as `30s`, `10m`, `2h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct HumanDuration(pub Duration);

impl TryFrom<String> for HumanDuration {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        parse_duration(&s).map(HumanDuration)
    }
}

impl TryFrom<String> for RateQuota {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl<'de> serde::Deserialize<'de> for RateQuota {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
