//! Escalation policies: ordered steps, each due a fixed time after the escalation started,
//! notifying a schedule's on-call, a person, a role or a paging service; the whole list may
//! repeat. What is stored of one escalation under way ([`EscalationRecord`]) and why one
//! stops. Pure: which step is due when is arithmetic on the start time, so a restarted
//! replica continues from the stored step index.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Alert, AlertStatus, IncidentId, Role, Silence};

/// Who one step notifies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notify {
    /// Whoever is on call on a schedule's layer now (its first layer when `None`).
    Schedule {
        schedule: String,
        layer: Option<String>,
    },
    Person(String),
    /// Everyone holding the role (or its Slack user group, where one is configured).
    Role(Role),
    /// A `[[paging.services]]` entry, by name.
    Page(String),
}

impl std::str::FromStr for Notify {
    type Err = String;

    /// `schedule:NAME`, `schedule:NAME/LAYER`, `person:NAME`, `role:NAME`, `page:SERVICE`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "notify {s:?} must be schedule:NAME, schedule:NAME/LAYER, person:NAME, role:NAME or page:SERVICE"
            )
        };
        let (kind, what) = s.split_once(':').ok_or_else(bad)?;
        if what.is_empty() {
            return Err(bad());
        }
        Ok(match kind {
            "schedule" => match what.split_once('/') {
                Some((schedule, layer)) if !schedule.is_empty() && !layer.is_empty() => {
                    Notify::Schedule {
                        schedule: schedule.to_owned(),
                        layer: Some(layer.to_owned()),
                    }
                }
                Some(_) => return Err(bad()),
                None => Notify::Schedule {
                    schedule: what.to_owned(),
                    layer: None,
                },
            },
            "person" => Notify::Person(what.to_owned()),
            "role" => Notify::Role(what.parse()?),
            "page" => Notify::Page(what.to_owned()),
            _ => return Err(bad()),
        })
    }
}

impl fmt::Display for Notify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notify::Schedule {
                schedule,
                layer: Some(layer),
            } => write!(f, "schedule:{schedule}/{layer}"),
            Notify::Schedule {
                schedule,
                layer: None,
            } => write!(f, "schedule:{schedule}"),
            Notify::Person(p) => write!(f, "person:{p}"),
            Notify::Role(r) => write!(f, "role:{r}"),
            Notify::Page(s) => write!(f, "page:{s}"),
        }
    }
}

/// One step: due `after` the escalation started (within its round), notifying each of `notify`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EscalationStep {
    pub after: Duration,
    pub notify: Vec<Notify>,
}

/// A named, validated policy: steps in order of `after` (never decreasing), then `repeat`
/// more rounds, each starting `repeat_after` after the previous round's last step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EscalationPolicy {
    pub name: String,
    pub steps: Vec<EscalationStep>,
    pub repeat: u32,
    pub repeat_after: Duration,
}

/// One step of a policy as it falls in an escalation: its flat index over every round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DueStep<'p> {
    /// Flat index over all rounds (what the store counts).
    pub index: u32,
    /// 0 for the first pass, 1 for the first repeat, …
    pub round: u32,
    /// The step within its round, from 0.
    pub position: usize,
    pub step: &'p EscalationStep,
    /// How long after the escalation's start it is due.
    pub offset: Duration,
}

impl EscalationPolicy {
    /// How many steps the escalation takes in all, every round counted.
    pub fn total_steps(&self) -> u32 {
        (self.steps.len() as u32).saturating_mul(self.repeat.saturating_add(1))
    }

    /// How long one round lasts, up to the start of the next.
    fn period(&self) -> Duration {
        self.steps.last().map_or(Duration::ZERO, |s| s.after) + self.repeat_after
    }

    /// Step `index` (flat over rounds); `None` past the last.
    pub fn step(&self, index: u32) -> Option<DueStep<'_>> {
        if index >= self.total_steps() {
            return None;
        }
        let per_round = self.steps.len() as u32;
        let (round, position) = (index / per_round, (index % per_round) as usize);
        let step = &self.steps[position];
        Some(DueStep {
            index,
            round,
            position,
            step,
            offset: self.period() * round + step.after,
        })
    }

    /// When step `index` is due for an escalation started at `started`; `None` past the last.
    pub fn due_at(&self, index: u32, started: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let step = self.step(index)?;
        Some(started + chrono::Duration::from_std(step.offset).unwrap_or(chrono::Duration::MAX))
    }

    /// The latest step due at `now` for an escalation started at `started`: the step a sweep
    /// at `now` has to have taken (with every one before it). `None` before the first.
    pub fn due(&self, started: DateTime<Utc>, now: DateTime<Utc>) -> Option<DueStep<'_>> {
        let mut latest = None;
        for index in 0..self.total_steps() {
            match self.due_at(index, started) {
                Some(at) if at <= now => latest = self.step(index),
                _ => break,
            }
        }
        latest
    }
}

/// What an escalation is about: one alert group, or one incident.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EscalationSubject {
    AlertGroup(String),
    Incident(IncidentId),
}

impl EscalationSubject {
    /// The stored kind word and key.
    pub fn parts(&self) -> (&'static str, String) {
        match self {
            EscalationSubject::AlertGroup(key) => ("alert_group", key.clone()),
            EscalationSubject::Incident(id) => ("incident", id.0.to_string()),
        }
    }

    pub fn from_parts(kind: &str, key: String) -> Result<Self, String> {
        match kind {
            "alert_group" => Ok(EscalationSubject::AlertGroup(key)),
            "incident" => key
                .parse()
                .map(|id| EscalationSubject::Incident(IncidentId(id)))
                .map_err(|_| format!("incident escalation with key {key:?}")),
            other => Err(format!("unknown escalation subject {other:?}")),
        }
    }
}

string_enum! {
    /// Why an escalation stopped.
    pub enum StopReason("escalation stop reason") {
        Acknowledged = "acknowledged", Silenced = "silenced", Resolved = "resolved",
        /// The policy is no longer in the config.
        PolicyRemoved = "policy_removed",
    }
}

/// A page an escalation sent: closed upstream (acknowledged or resolved) when it stops.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SentPage {
    pub service: String,
    pub dedup_key: String,
}

/// One escalation as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EscalationRecord {
    pub id: i64,
    pub subject: EscalationSubject,
    pub policy: String,
    pub started_at: DateTime<Utc>,
    /// The flat index of the next step to take.
    pub next_step: u32,
    /// When it is due; `None` once every step is taken (it still stops, closing its pages).
    pub next_due_at: Option<DateTime<Utc>>,
    pub pages: Vec<SentPage>,
    pub stopped: Option<(DateTime<Utc>, StopReason)>,
}

/// Whether an alert group still escalates at `now`: `None` while an alert in it is firing,
/// unacknowledged and not silenced; otherwise why it stops (an ack wins over a silence,
/// which wins over resolution, for the alerts still firing).
pub fn group_stop_reason(
    alerts: &[Alert],
    silences: &[Silence],
    now: DateTime<Utc>,
) -> Option<StopReason> {
    let silenced =
        |labels: &BTreeMap<String, String>| silences.iter().any(|s| s.covers(labels, now));
    let firing: Vec<&Alert> = (alerts.iter())
        .filter(|a| a.incoming.status == AlertStatus::Firing)
        .collect();
    if firing.is_empty() {
        return Some(StopReason::Resolved);
    }
    let live = |a: &&&Alert| a.acked_by.is_none() && !silenced(&a.incoming.labels);
    if firing.iter().any(|a| live(&a)) {
        return None;
    }
    if firing.iter().any(|a| a.acked_by.is_some()) {
        Some(StopReason::Acknowledged)
    } else {
        Some(StopReason::Silenced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn min(n: u64) -> Duration {
        Duration::from_secs(60 * n)
    }

    fn policy(repeat: u32) -> EscalationPolicy {
        let step = |after, notify: &str| EscalationStep {
            after,
            notify: vec![notify.parse().unwrap()],
        };
        EscalationPolicy {
            name: "critical".into(),
            steps: vec![
                step(min(0), "schedule:sre"),
                step(min(5), "schedule:sre/secondary"),
                step(min(15), "page:pagerduty-sre"),
            ],
            repeat,
            repeat_after: min(10),
        }
    }

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-24T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn at(m: i64, s: i64) -> DateTime<Utc> {
        t0() + chrono::Duration::minutes(m) + chrono::Duration::seconds(s)
    }

    #[test]
    fn the_step_due_is_the_last_one_whose_delay_has_passed() {
        let p = policy(0);
        assert_eq!(p.due(t0(), at(0, 0)).unwrap().index, 0);
        assert_eq!(p.due(t0(), at(4, 59)).unwrap().index, 0);
        assert_eq!(p.due(t0(), at(5, 0)).unwrap().index, 1);
        let page = p.due(t0(), at(15, 0)).unwrap();
        assert_eq!((page.index, page.position), (2, 2));
        assert_eq!(page.step.notify, [Notify::Page("pagerduty-sre".into())]);
        // Long after: still the last step; nothing beyond it.
        assert_eq!(p.due(t0(), at(600, 0)).unwrap().index, 2);
        assert!(p.step(3).is_none());
        assert!(p.due_at(3, t0()).is_none());
        // Before the start nothing is due.
        assert!(p.due(t0(), at(0, -1)).is_none());
    }

    #[test]
    fn a_repeat_starts_the_steps_again_after_the_pause() {
        let p = policy(2);
        assert_eq!(p.total_steps(), 9);
        // The second round starts 15m + 10m after the start.
        assert_eq!(p.due_at(3, t0()), Some(at(25, 0)));
        let second = p.due(t0(), at(30, 0)).unwrap();
        assert_eq!((second.index, second.round, second.position), (4, 1, 1));
        assert_eq!(p.due_at(8, t0()), Some(at(65, 0)));
        assert!(p.step(9).is_none());
    }

    #[test]
    fn notify_targets_parse_and_print_alike() {
        for s in [
            "schedule:primary-sre",
            "schedule:primary-sre/secondary",
            "person:alice",
            "role:sre",
            "page:pagerduty-sre",
        ] {
            assert_eq!(s.parse::<Notify>().unwrap().to_string(), s);
        }
        for bad in [
            "alice",
            "team:sre",
            "schedule:",
            "schedule:sre/",
            "role:Bad Role",
        ] {
            assert!(bad.parse::<Notify>().is_err(), "{bad}");
        }
    }

    fn alert(id: i64, status: AlertStatus, acked: bool) -> Alert {
        let labels = [
            ("alertname", "DiskFull"),
            ("instance", &*format!("db-{id}")),
        ];
        Alert {
            id: crate::domain::AlertId(id),
            incoming: crate::domain::IncomingAlert {
                source: crate::domain::AlertSource::Webhook,
                fingerprint: format!("fp-{id}"),
                group_key: "g".into(),
                status,
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                annotations: BTreeMap::new(),
                starts_at: t0(),
                ends_at: None,
                generator_url: None,
            },
            first_seen: t0(),
            last_seen: t0(),
            acked_by: acked.then(|| "alice".into()),
            acked_at: acked.then(t0),
            resolved_at: None,
        }
    }

    #[test]
    fn a_group_escalates_while_one_alert_needs_someone() {
        use AlertStatus::{Firing, Resolved};
        let silence = |instance: &str| Silence {
            id: 1,
            matchers: vec![format!("instance={instance}").parse().unwrap()],
            created_by: "bob".into(),
            reason: String::new(),
            starts_at: t0(),
            ends_at: at(60, 0),
            upstream_id: None,
        };
        let now = at(1, 0);
        let live = [alert(1, Firing, false), alert(2, Firing, true)];
        assert_eq!(group_stop_reason(&live, &[], now), None);
        assert_eq!(
            group_stop_reason(&live[1..], &[], now),
            Some(StopReason::Acknowledged)
        );
        assert_eq!(
            group_stop_reason(&live[..1], &[silence("db-1")], now),
            Some(StopReason::Silenced)
        );
        // One acked, the other silenced: someone has it.
        assert_eq!(
            group_stop_reason(&live, &[silence("db-1")], now),
            Some(StopReason::Acknowledged)
        );
        // A silence that ended covers nothing.
        assert_eq!(
            group_stop_reason(&live[..1], &[silence("db-1")], at(61, 0)),
            None
        );
        assert_eq!(
            group_stop_reason(&[alert(3, Resolved, false)], &[], now),
            Some(StopReason::Resolved)
        );
    }

    #[test]
    fn subjects_round_trip_through_their_stored_parts() {
        for s in [
            EscalationSubject::AlertGroup("{}:{alertname=\"X\"}".into()),
            EscalationSubject::Incident(IncidentId(7)),
        ] {
            let (kind, key) = s.parts();
            assert_eq!(EscalationSubject::from_parts(kind, key).unwrap(), s);
        }
        assert!(EscalationSubject::from_parts("incident", "x".into()).is_err());
    }
}
