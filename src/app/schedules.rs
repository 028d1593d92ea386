//! The schedules as the app wires them: each command file's `[schedule]` and the daily
//! report (`[report]`) as `actions::schedules` entries, and the one name they may not share.

use super::*;

/// Every schedule: each command file's `[schedule]`, then the daily report if configured.
pub(super) fn schedules(
    config: &Config,
    catalog: &Catalog,
    core: &Core,
    health: &Arc<HealthChecks>,
    replica: &str,
) -> Schedules {
    use crate::actions::schedules::{ScheduleEntry as Entry, Work};
    let target = |platform, channel: &str| OutboundTarget {
        platform,
        channel_id: channel.to_owned(),
        thread: None,
    };
    let commands = catalog.iter().filter_map(|spec| {
        let s = spec.schedule.as_ref()?;
        Some(Entry {
            name: spec.name.clone(),
            timetable: s.timetable.clone(),
            target: target(s.platform, &s.channel),
            grace: s.grace,
            work: Work::Command {
                roles: s.roles.clone(),
                args: s.args.clone(),
                needs_approval: spec.approval.is_some(),
            },
        })
    });
    let report = config.report.as_ref().map(|r| Entry {
        name: crate::config::REPORT_SCHEDULE.to_owned(),
        timetable: r.timetable.clone(),
        target: target(r.platform, &r.channel),
        grace: r.grace,
        work: Work::Report,
    });
    let builder = crate::actions::report::Report::new(health.clone(), core.store.clone());
    Schedules::new(
        commands.chain(report).collect(),
        core.store.clone(),
        core.clock.clone(),
        Arc::new(builder),
        replica,
    )
}

/// The daily report is a schedule named [`crate::config::REPORT_SCHEDULE`]: with `[report]`
/// set, a scheduled command of that name would make `/schedule pause` ambiguous.
pub(super) fn report_name_free(config: &Config, catalog: &Catalog) -> Result<(), CatalogErrors> {
    let name = crate::config::REPORT_SCHEDULE;
    match catalog
        .get(name)
        .and_then(|spec| Some((spec, spec.schedule.as_ref()?)))
    {
        Some((spec, schedule)) if config.report.is_some() => {
            Err(CatalogErrors(vec![crate::catalog::CatalogError {
                file: spec.source.clone(),
                line: Some(schedule.line),
                message: format!(
                    "schedule: {name:?} is the daily report's schedule ([report] in the config); rename the command"
                ),
            }]))
        }
        _ => Ok(()),
    }
}
