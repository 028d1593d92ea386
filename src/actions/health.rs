//! Health checks: runs every configured probe in parallel, each under its own timeout,
//! and renders the `/status` table (overall state first). The probes themselves
//! (HTTP, TCP, Postgres, Redis, exec) live at the edge in `crate::probes`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::domain::{AlertSource, AlertStatus, IncomingAlert, human_duration};
use crate::ports::Probe;

/// One configured check.
#[derive(Clone)]
pub struct HealthCheck {
    pub name: String,
    pub kind: &'static str,
    pub timeout: Duration,
    pub probe: Arc<dyn Probe>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckState {
    Up,
    Down,
    TimedOut,
}

impl CheckState {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckState::Up => "up",
            CheckState::Down => "down",
            CheckState::TimedOut => "timeout",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    pub name: String,
    pub kind: &'static str,
    pub state: CheckState,
    pub latency: Duration,
    pub detail: String,
}

/// Longest detail shown per check, so one chatty failure cannot swamp the table.
const MAX_DETAIL_CHARS: usize = 80;

#[derive(Clone, Default)]
pub struct HealthChecks {
    checks: Vec<HealthCheck>,
}

impl HealthChecks {
    pub fn new(checks: Vec<HealthCheck>) -> Self {
        Self { checks }
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.checks.iter().map(|c| c.name.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }

    /// Runs all checks (or only `only`) concurrently; results keep configuration order.
    pub async fn run(&self, only: Option<&str>) -> Vec<CheckResult> {
        let mut set = JoinSet::new();
        for (i, check) in self.checks.iter().enumerate() {
            if only.is_some_and(|n| n != check.name) {
                continue;
            }
            let check = check.clone();
            set.spawn(async move { (i, run_one(&check).await) });
        }
        let mut results = Vec::with_capacity(set.len());
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(r) => results.push(r),
                // A panicking probe is reported as down rather than taking /status with it.
                Err(e) => tracing::error!(error = %e, "health probe task failed"),
            }
        }
        results.sort_by_key(|(i, _)| *i);
        results.into_iter().map(|(_, r)| r).collect()
    }
}

async fn run_one(check: &HealthCheck) -> CheckResult {
    let started = Instant::now();
    let (state, detail) = match tokio::time::timeout(check.timeout, check.probe.probe()).await {
        Ok(report) if report.up => (CheckState::Up, report.detail),
        Ok(report) => (CheckState::Down, report.detail),
        Err(_) => (
            CheckState::TimedOut,
            format!("no answer within {}", human_duration(check.timeout)),
        ),
    };
    CheckResult {
        name: check.name.clone(),
        kind: check.kind,
        state,
        latency: started.elapsed(),
        detail: detail.chars().take(MAX_DETAIL_CHARS).collect(),
    }
}

/// Turns scheduled check results into alerts, with flap damping: a check fires only after
/// `fail_after` consecutive failures, and resolves on its first success after that.
#[derive(Debug)]
pub struct HealthMonitor {
    fail_after: u32,
    severity: String,
    tracks: std::collections::HashMap<String, Track>,
}

#[derive(Debug, Default)]
struct Track {
    failures: u32,
    firing: bool,
}

/// Alert group all health-check alerts share.
pub const HEALTH_GROUP: &str = "opsbot:healthchecks";

impl HealthMonitor {
    pub fn new(fail_after: u32, severity: &str) -> Self {
        Self {
            fail_after: fail_after.max(1),
            severity: severity.to_owned(),
            tracks: std::collections::HashMap::new(),
        }
    }

    /// Marks checks whose alert is stored as firing (after a restart), so their recovery
    /// resolves it.
    pub fn seed_firing<'a>(&mut self, checks: impl IntoIterator<Item = &'a str>) {
        for name in checks {
            self.tracks.entry(name.to_owned()).or_default().firing = true;
        }
    }

    /// Undoes `observe` for changes that could not be stored, so they are raised again on the
    /// next run instead of being lost.
    pub fn revert(&mut self, changes: &[IncomingAlert]) {
        for c in changes {
            if let Some(track) = c.labels.get("check").and_then(|n| self.tracks.get_mut(n)) {
                track.firing = c.status != AlertStatus::Firing;
            }
        }
    }

    /// The alerts (firing or resolved) these results cause; empty when nothing changed.
    pub fn observe(
        &mut self,
        results: &[CheckResult],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Vec<IncomingAlert> {
        let mut changes = Vec::new();
        for r in results {
            let track = self.tracks.entry(r.name.clone()).or_default();
            let status = match r.state {
                CheckState::Up => {
                    track.failures = 0;
                    if !track.firing {
                        continue;
                    }
                    track.firing = false;
                    AlertStatus::Resolved
                }
                CheckState::Down | CheckState::TimedOut => {
                    track.failures = track.failures.saturating_add(1);
                    if track.firing || track.failures < self.fail_after {
                        continue;
                    }
                    track.firing = true;
                    AlertStatus::Firing
                }
            };
            let labels = [
                ("alertname", "HealthCheckFailed"),
                ("check", r.name.as_str()),
                ("kind", r.kind),
                ("severity", self.severity.as_str()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
            let summary = match status {
                AlertStatus::Firing => format!(
                    "{} is {} ({}): {}",
                    r.name,
                    r.state.as_str(),
                    r.kind,
                    r.detail
                ),
                AlertStatus::Resolved => format!("{} is up again", r.name),
            };
            changes.push(IncomingAlert {
                source: AlertSource::HealthCheck,
                fingerprint: format!("check:{}", r.name),
                group_key: HEALTH_GROUP.into(),
                status,
                labels,
                annotations: [("summary".to_owned(), summary)].into_iter().collect(),
                starts_at: now,
                ends_at: (status == AlertStatus::Resolved).then_some(now),
                generator_url: None,
            });
        }
        changes
    }
}

/// `UP`, `DEGRADED` or `DOWN` headline, then an aligned table.
pub fn render(results: &[CheckResult]) -> String {
    if results.is_empty() {
        return "No health checks are configured.".into();
    }
    let up = results.iter().filter(|r| r.state == CheckState::Up).count();
    let overall = if up == results.len() {
        "UP"
    } else if up == 0 {
        "DOWN"
    } else {
        "DEGRADED"
    };
    let mut out = format!("Overall: {overall} ({up}/{} checks up)\n", results.len());
    let rows: Vec<[String; 5]> = results
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.kind.to_owned(),
                r.state.as_str().to_owned(),
                human_duration(r.latency),
                r.detail.clone(),
            ]
        })
        .collect();
    let header = ["CHECK", "KIND", "STATE", "LATENCY", "DETAIL"].map(str::to_owned);
    let widths: Vec<usize> = (0..4)
        .map(|col| {
            rows.iter()
                .chain(std::iter::once(&header))
                .map(|r| r[col].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    out.push_str("```\n");
    for row in std::iter::once(&header).chain(rows.iter()) {
        for (col, w) in widths.iter().enumerate() {
            let _ = write!(out, "{:<w$}  ", row[col], w = w);
        }
        out.push_str(&row[4]);
        out.push('\n');
    }
    out.push_str("```");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::ProbeReport;
    use async_trait::async_trait;

    struct Fixed(Option<ProbeReport>, Duration);

    #[async_trait]
    impl Probe for Fixed {
        async fn probe(&self) -> ProbeReport {
            tokio::time::sleep(self.1).await;
            match &self.0 {
                Some(r) => r.clone(),
                None => std::future::pending().await,
            }
        }
    }

    fn check(name: &str, timeout_s: u64, probe: Fixed) -> HealthCheck {
        HealthCheck {
            name: name.into(),
            kind: "test",
            timeout: Duration::from_secs(timeout_s),
            probe: Arc::new(probe),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn checks_run_in_parallel_each_under_its_own_timeout() {
        let checks = HealthChecks::new(vec![
            check(
                "fast",
                5,
                Fixed(Some(ProbeReport::up("ok")), Duration::from_millis(10)),
            ),
            check("hung", 2, Fixed(None, Duration::ZERO)),
            check(
                "slow-down",
                5,
                Fixed(Some(ProbeReport::down("refused")), Duration::from_secs(1)),
            ),
            check("hung-longer", 3, Fixed(None, Duration::ZERO)),
        ]);
        let started = Instant::now();
        let results = checks.run(None).await;
        // Parallel: the whole run takes the slowest timeout (3s), not the sum (6s+).
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        let states: Vec<_> = results.iter().map(|r| (r.name.as_str(), r.state)).collect();
        assert_eq!(
            states,
            vec![
                ("fast", CheckState::Up),
                ("hung", CheckState::TimedOut),
                ("slow-down", CheckState::Down),
                ("hung-longer", CheckState::TimedOut),
            ]
        );
        let table = render(&results);
        assert!(
            table.starts_with("Overall: DEGRADED (1/4 checks up)"),
            "{table}"
        );
        assert!(table.contains("no answer within 2s"), "{table}");
    }

    fn result(name: &str, state: CheckState) -> CheckResult {
        CheckResult {
            name: name.into(),
            kind: "tcp",
            state,
            latency: Duration::ZERO,
            detail: "refused".into(),
        }
    }

    #[test]
    fn monitor_fires_after_n_failures_and_resolves_once() {
        let mut m = HealthMonitor::new(3, "critical");
        let now = chrono::Utc::now();
        let down = [result("db", CheckState::Down)];
        let up = [result("db", CheckState::Up)];
        assert!(m.observe(&down, now).is_empty());
        assert!(m.observe(&down, now).is_empty());
        // A success in between resets the count: a flapping check does not fire.
        assert!(m.observe(&up, now).is_empty());
        assert!(m.observe(&down, now).is_empty());
        assert!(m.observe(&down, now).is_empty());
        let fired = m.observe(&[result("db", CheckState::TimedOut)], now);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].status, AlertStatus::Firing);
        assert_eq!(fired[0].labels["check"], "db");
        assert!(m.observe(&down, now).is_empty(), "fires once");
        // A change that could not be stored is raised again next time.
        m.revert(&fired);
        assert_eq!(m.observe(&down, now).len(), 1);
        let resolved = m.observe(&up, now);
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].status, AlertStatus::Resolved);
        assert_eq!(resolved[0].fingerprint, fired[0].fingerprint);
        assert!(m.observe(&up, now).is_empty());
        // After a restart, a check whose alert is still firing resolves on recovery.
        let mut fresh = HealthMonitor::new(3, "critical");
        fresh.seed_firing(["db"]);
        assert_eq!(fresh.observe(&up, now)[0].status, AlertStatus::Resolved);
    }

    #[tokio::test(start_paused = true)]
    async fn one_check_can_be_selected() {
        let checks = HealthChecks::new(vec![
            check("a", 1, Fixed(Some(ProbeReport::up("ok")), Duration::ZERO)),
            check("b", 1, Fixed(Some(ProbeReport::up("ok")), Duration::ZERO)),
        ]);
        let results = checks.run(Some("b")).await;
        assert_eq!(results.len(), 1);
        assert!(render(&results).starts_with("Overall: UP (1/1 checks up)"));
    }
}
