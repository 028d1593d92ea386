//! `[report]`: the daily report, a built-in schedule a team enables by giving it a time
//! (5-field cron in an IANA zone) and a channel (`platform` and `channel`, as alert routes
//! name one). Parsed straight into a [`Timetable`], so a bad cron or zone stops startup.

use std::time::Duration;

use serde::Deserialize;

use crate::domain::{Platform, Timetable, parse_duration, time_zone};

/// The daily report's schedule name (in `/schedules`, `/schedule pause`).
pub const REPORT_SCHEDULE: &str = "daily-report";

/// When and where the daily report is posted.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawReport")]
pub struct ReportConfig {
    pub timetable: Timetable,
    pub platform: Platform,
    pub channel: String,
    /// How late a report missed while opsbot was down is still posted.
    pub grace: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReport {
    cron: String,
    timezone: String,
    platform: Platform,
    channel: String,
    grace: Option<String>,
}

impl TryFrom<RawReport> for ReportConfig {
    type Error = String;

    fn try_from(raw: RawReport) -> Result<Self, String> {
        let zone = time_zone(&raw.timezone).map_err(|e| format!("report: {e}"))?;
        let timetable = Timetable::parse(&raw.cron, zone).map_err(|e| format!("report: {e}"))?;
        let channel = raw.channel.trim_start_matches('#').to_owned();
        if channel.is_empty() || channel.contains(char::is_whitespace) {
            return Err(format!(
                "report: channel {:?} must be the platform's channel id",
                raw.channel
            ));
        }
        let grace = match raw.grace {
            Some(g) => parse_duration(&g).map_err(|e| format!("report: grace: {e}"))?,
            None => crate::domain::DEFAULT_GRACE,
        };
        Ok(ReportConfig {
            timetable,
            platform: raw.platform,
            channel,
            grace,
        })
    }
}
