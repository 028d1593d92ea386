//! A command file's `[schedule]`: when the command runs by itself (a 5-field cron in an IANA
//! zone), where it reports (a platform and channel, written as alert routes write them), the
//! roles its identity `schedule:NAME` holds, the arguments it runs with and how late a missed
//! slot may still run. Everything a file can get wrong is refused here at its line; whether
//! the arguments pass the command's own validation is checked once the router's binder is
//! at hand (`Catalog::check_schedule_args`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{ChannelPattern, Problems};
use crate::domain::{DEFAULT_GRACE, Platform, Role, Timetable, parse_duration, time_zone};

/// A command's timetable, validated.
#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    /// Line of `[schedule]` in the command file.
    pub line: usize,
    pub timetable: Timetable,
    pub platform: Platform,
    /// The platform's channel id (`C0123` on Slack), as `[[alerts.routes]]` name it.
    pub channel: String,
    /// Roles the identity `schedule:NAME` holds when it runs the command.
    pub roles: Vec<Role>,
    /// Arguments the run is given, by name, as typed.
    pub args: Vec<(String, String)>,
    pub grace: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedule {
    cron: Spanned<String>,
    timezone: Spanned<String>,
    platform: Spanned<String>,
    channel: Spanned<String>,
    #[serde(default)]
    roles: Vec<Role>,
    #[serde(default)]
    args: BTreeMap<String, Spanned<toml::Value>>,
    grace: Option<Spanned<String>>,
}

/// What the rest of the file says that a schedule must agree with.
pub(super) struct Command<'a> {
    pub roles: &'a [Role],
    pub channels: &'a [ChannelPattern],
    pub arg_names: &'a std::collections::BTreeSet<String>,
}

/// Validates `[schedule]`; `None` after recording the problems when it is not usable.
pub(super) fn parse(
    raw: &Spanned<RawSchedule>,
    command: Command,
    problems: &mut Problems,
) -> Option<ScheduleSpec> {
    let at = raw.span().start;
    let line = crate::domain::line_col(problems.src, at).0;
    let r = raw.get_ref();
    let before = problems.errors.len();
    let zone = time_zone(r.timezone.get_ref())
        .map_err(|e| problems.at(r.timezone.span().start, format!("schedule: {e}")))
        .ok();
    let timetable = zone.and_then(|zone| {
        Timetable::parse(r.cron.get_ref(), zone)
            .map_err(|e| problems.at(r.cron.span().start, format!("schedule: {e}")))
            .ok()
    });
    let platform = r
        .platform
        .get_ref()
        .parse::<Platform>()
        .map_err(|e| problems.at(r.platform.span().start, format!("schedule: {e}")))
        .ok();
    let channel = r.channel.get_ref().trim_start_matches('#');
    check_channel(r, channel, command.channels, problems);
    check_roles(at, &r.roles, command.roles, problems);
    let args = args(&r.args, command.arg_names, problems);
    let grace = r.grace.as_ref().map_or(Ok(DEFAULT_GRACE), |g| {
        parse_duration(g.get_ref())
            .map_err(|e| problems.at(g.span().start, format!("schedule: grace: {e}")))
    });
    if problems.errors.len() > before {
        return None;
    }
    Some(ScheduleSpec {
        line,
        timetable: timetable?,
        platform: platform?,
        channel: channel.to_owned(),
        roles: r.roles.clone(),
        args,
        grace: grace.ok()?,
    })
}

/// A channel id with no spaces, that the command's `channels` allow-list (if any) admits.
fn check_channel(
    r: &RawSchedule,
    channel: &str,
    allowed: &[ChannelPattern],
    problems: &mut Problems,
) {
    let at = r.channel.span().start;
    if channel.is_empty() || channel.contains(char::is_whitespace) || channel.contains(':') {
        problems.at(
            at,
            format!(
                "schedule: channel {:?} must be the platform's channel id (C0123ABC), with the platform in `platform`",
                r.channel.get_ref()
            ),
        );
    } else if !allowed.is_empty() && !allowed.iter().any(|p| p.matches(channel)) {
        problems.at(
            at,
            format!("schedule: channel {channel:?} is not in the command's `channels`, so its runs would be refused"),
        );
    }
}

/// The schedule's roles must grant the command: an empty list (or one the command does not
/// name) would have every run refused.
fn check_roles(at: usize, roles: &[Role], command: &[Role], problems: &mut Problems) {
    if !roles.iter().any(|r| command.contains(r)) {
        let wanted: Vec<&str> = command.iter().map(Role::as_str).collect();
        problems.at(
            at,
            format!(
                "schedule: roles must include one of the command's roles ({}), or every scheduled run is refused",
                if wanted.is_empty() { "none: set `roles`".to_owned() } else { wanted.join(", ") }
            ),
        );
    }
}

/// The run's arguments as text; each must be declared, and a string, integer or boolean.
fn args(
    raw: &BTreeMap<String, Spanned<toml::Value>>,
    declared: &std::collections::BTreeSet<String>,
    problems: &mut Problems,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, value) in raw {
        let at = value.span().start;
        if !declared.contains(name) {
            problems.at(
                at,
                format!("schedule: args: {name:?} is not an argument of this command"),
            );
            continue;
        }
        let text = match value.get_ref() {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => {
                problems.at(
                    at,
                    format!("schedule: args: {name:?} must be a string or a number"),
                );
                continue;
            }
        };
        out.push((name.clone(), text));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::catalog::Catalog;

    const HEAD: &str = "name = \"backup\"\nsummary = \"b\"\nroles = [\"sre\"]\nchannels = [\"COPS\"]\n\
        [[args]]\nname = \"target\"\nkind = \"choice\"\nchoices = [\"db\"]\n\
        [action]\nkind = \"exec\"\nargv = [\"/bin/true\", \"{target}\"]\ntimeout = \"10s\"\n";

    fn load(schedule: &str) -> Result<Catalog, String> {
        let src = format!("{HEAD}[schedule]\n{schedule}");
        Catalog::from_sources(&[(PathBuf::from("backup.toml"), src)], &[])
            .map_err(|e| e.to_string())
    }

    const GOOD: &str = "cron = \"0 3 * * *\"\ntimezone = \"Europe/Berlin\"\nplatform = \"slack\"\n\
        channel = \"COPS\"\nroles = [\"sre\"]\nargs = { target = \"db\" }\n";

    #[test]
    fn a_schedule_loads_with_its_timetable_channel_roles_and_args() {
        let catalog = load(GOOD).unwrap();
        let s = catalog.get("backup").unwrap().schedule.clone().unwrap();
        assert_eq!(
            (s.line, s.timetable.expr(), s.channel.as_str()),
            (13, "0 3 * * *", "COPS")
        );
        assert_eq!(s.args, [("target".to_owned(), "db".to_owned())]);
        assert_eq!(s.grace, crate::domain::DEFAULT_GRACE);
    }

    #[test]
    fn each_mistake_is_refused_at_its_line() {
        let cases = [
            (
                "cron = \"0 3 * * *\"",
                "cron = \"0 3 * *\"",
                "backup.toml:14: schedule: cron \"0 3 * *\" has 4 fields",
            ),
            (
                "Europe/Berlin",
                "Europe/Berlni",
                "backup.toml:15: schedule: unknown time zone \"Europe/Berlni\"",
            ),
            (
                "\"slack\"",
                "\"irc\"",
                "backup.toml:16: schedule: unknown platform \"irc\"",
            ),
            (
                "channel = \"COPS\"",
                "channel = \"CRANDOM\"",
                "backup.toml:17: schedule: channel \"CRANDOM\" is not in the command's `channels`",
            ),
            (
                "channel = \"COPS\"",
                "channel = \"slack:COPS\"",
                "backup.toml:17: schedule: channel \"slack:COPS\" must be the platform's channel id",
            ),
            (
                "roles = [\"sre\"]",
                "roles = [\"viewer\"]",
                "backup.toml:13: schedule: roles must include one of the command's roles (sre)",
            ),
            (
                "target = \"db\"",
                "tagret = \"db\"",
                "backup.toml:19: schedule: args: \"tagret\" is not an argument",
            ),
            (
                "args =",
                "grace = \"soon\"\nargs =",
                "backup.toml:19: schedule: grace:",
            ),
        ];
        for (from, to, want) in cases {
            let why = load(&GOOD.replace(from, to)).unwrap_err();
            assert!(why.starts_with(want), "{to}: {why}");
        }
    }
}
