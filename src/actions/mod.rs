//! Work commands do once authorized: for now, health checks. Alerts, incidents and the
//! remediation executor will live here too. Talks to the outside only through `ports`.

pub mod alerts;
pub mod escalation;
pub mod health;
pub mod oncall;
pub mod postmortem;
pub mod render;
pub mod report;
pub mod schedules;
