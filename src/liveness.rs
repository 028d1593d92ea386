//! Liveness of the background loops (health-check scheduler, sweeper, heartbeat): each
//! loop reports every tick, and `/readyz` calls a loop stalled when it has not ticked for
//! three of its intervals (plus a second of slack); a loop stopped because this replica no
//! longer leads is forgotten, not stalled. Also the connection state of each chat
//! adapter, which `/readyz` shows without failing on it: one platform being down must not
//! take opsbot (and with it the other platforms' endpoints) out of service. Likewise how
//! each paging service answered last.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::domain::Platform;

/// Where a chat adapter stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdapterState {
    Connecting,
    /// Receiving events (connected out, or serving its HTTP endpoints).
    Up,
    /// Lost or never reached the platform; retrying.
    Retrying(String),
    /// Gave up (for example a rejected token); needs a config fix and a restart.
    Off(String),
    /// Receives only on the leader, and another replica leads (see `leader.rs`).
    Standby,
}

impl std::fmt::Display for AdapterState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdapterState::Connecting => f.write_str("connecting"),
            AdapterState::Up => f.write_str("up"),
            AdapterState::Retrying(why) => write!(f, "retrying ({why})"),
            AdapterState::Off(why) => write!(f, "off ({why})"),
            AdapterState::Standby => f.write_str("standby (another replica leads and receives)"),
        }
    }
}

/// How a paging service has answered lately: shown by `/readyz`, never a reason to be
/// unready (a refused routing key must not take the replica's webhooks out of service).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PagerState {
    /// When it last took a page.
    pub last_ok: Option<DateTime<Utc>>,
    /// When it last failed one for good (after retries), and why (no secret in it).
    pub last_failure: Option<(DateTime<Utc>, String)>,
}

impl std::fmt::Display for PagerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = |t: &DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        match (&self.last_ok, &self.last_failure) {
            (None, None) => f.write_str("no page sent yet"),
            (Some(ok), None) => write!(f, "ok (last page {})", at(ok)),
            (ok, Some((failed, why))) if ok.is_none_or(|ok| ok < *failed) => {
                write!(f, "failing (last failure {}: {why})", at(failed))
            }
            (_, Some((failed, why))) => {
                write!(f, "ok (last failure {}: {why})", at(failed))
            }
        }
    }
}

#[derive(Default)]
pub struct Liveness {
    loops: Mutex<BTreeMap<&'static str, (Instant, Duration)>>,
    adapters: Mutex<BTreeMap<&'static str, AdapterState>>,
    pagers: Mutex<BTreeMap<String, PagerState>>,
}

impl Liveness {
    pub fn set_adapter(&self, adapter: &'static str, state: AdapterState) {
        self.adapters
            .lock()
            .expect("liveness poisoned")
            .insert(adapter, state);
    }

    /// Every adapter's state, by name.
    pub fn adapters(&self) -> Vec<(&'static str, AdapterState)> {
        self.adapters
            .lock()
            .expect("liveness poisoned")
            .iter()
            .map(|(name, state)| (*name, state.clone()))
            .collect()
    }

    /// Per platform with an adapter, whether all of its adapters are up (or on standby: on a
    /// follower that is as it should be). Adapter names start with their platform's name
    /// (`slack`, `slack socket`, `discord interactions`).
    pub fn platforms_up(&self) -> BTreeMap<Platform, bool> {
        let mut up = BTreeMap::new();
        for (name, state) in self.adapters() {
            let first = name.split(' ').next().unwrap_or_default();
            if let Ok(platform) = first.parse::<Platform>() {
                let fine = matches!(state, AdapterState::Up | AdapterState::Standby);
                *up.entry(platform).or_insert(true) &= fine;
            }
        }
        up
    }

    /// Shows `service` in `/readyz` before its first page.
    pub fn known_pager(&self, service: &str) {
        let mut pagers = self.pagers.lock().expect("liveness poisoned");
        pagers.entry(service.to_owned()).or_default();
    }

    /// A page to `service` went through (`Ok`) or failed for good, at `at`.
    pub fn pager_result(&self, service: &str, at: DateTime<Utc>, result: Result<(), String>) {
        let mut pagers = self.pagers.lock().expect("liveness poisoned");
        let state = pagers.entry(service.to_owned()).or_default();
        match result {
            Ok(()) => state.last_ok = Some(at),
            Err(why) => state.last_failure = Some((at, why)),
        }
    }

    /// Every paging service's state, by name.
    pub fn pagers(&self) -> Vec<(String, PagerState)> {
        let pagers = self.pagers.lock().expect("liveness poisoned");
        pagers.iter().map(|(n, s)| (n.clone(), s.clone())).collect()
    }

    /// Records that `name`, which should tick every `every`, just did.
    pub fn tick(&self, name: &'static str, every: Duration) {
        self.tick_at(name, every, Instant::now());
    }

    pub fn tick_at(&self, name: &'static str, every: Duration, at: Instant) {
        self.loops
            .lock()
            .expect("liveness poisoned")
            .insert(name, (at, every));
    }

    /// Forgets `name`'s ticks: it stopped on purpose (a leader-only loop on a replica that no
    /// longer leads), so it is not stalled.
    pub fn forget(&self, name: &'static str) {
        self.loops.lock().expect("liveness poisoned").remove(name);
    }

    /// `(loop, seconds since its last tick)` for every loop that has stalled.
    pub fn stalled(&self) -> Vec<(&'static str, u64)> {
        self.stalled_at(Instant::now())
    }

    pub fn stalled_at(&self, now: Instant) -> Vec<(&'static str, u64)> {
        self.loops
            .lock()
            .expect("liveness poisoned")
            .iter()
            .filter(|(_, (last, every))| {
                now.saturating_duration_since(*last) > *every * 3 + Duration::from_secs(1)
            })
            .map(|(name, (last, _))| (*name, now.saturating_duration_since(*last).as_secs()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_platform_is_up_only_while_each_of_its_adapters_is() {
        let l = Liveness::default();
        l.set_adapter("slack", AdapterState::Up);
        l.set_adapter("slack socket", AdapterState::Retrying("no route".into()));
        l.set_adapter("console", AdapterState::Up);
        let up = l.platforms_up();
        assert_eq!(up.get(&Platform::Slack), Some(&false));
        assert_eq!(up.get(&Platform::Console), Some(&true));
        assert_eq!(up.get(&Platform::Telegram), None);
    }

    #[test]
    fn a_follower_is_not_stalled_or_down_for_what_only_the_leader_runs() {
        let l = Liveness::default();
        let start = Instant::now();
        l.tick_at("sweeper", Duration::from_secs(15), start);
        l.forget("sweeper");
        assert!(l.stalled_at(start + Duration::from_secs(600)).is_empty());
        l.set_adapter("telegram", AdapterState::Standby);
        assert_eq!(l.platforms_up().get(&Platform::Telegram), Some(&true));
    }

    #[test]
    fn a_pager_is_failing_until_a_page_goes_through_after_its_failure() {
        let l = Liveness::default();
        l.known_pager("pd");
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(l.pagers()[0].1.to_string(), "no page sent yet");
        l.pager_result(
            "pd",
            t("2026-12-01T10:00:00Z"),
            Err("answered HTTP 400".into()),
        );
        assert_eq!(
            l.pagers()[0].1.to_string(),
            "failing (last failure 2026-12-01T10:00:00Z: answered HTTP 400)"
        );
        l.pager_result("pd", t("2026-12-01T10:05:00Z"), Ok(()));
        assert_eq!(
            l.pagers()[0].1.to_string(),
            "ok (last failure 2026-12-01T10:00:00Z: answered HTTP 400)"
        );
    }

    #[test]
    fn a_loop_that_stops_ticking_is_reported() {
        let l = Liveness::default();
        let start = Instant::now();
        l.tick_at("health scheduler", Duration::from_secs(30), start);
        l.tick_at("sweeper", Duration::from_secs(15), start);
        assert!(l.stalled_at(start + Duration::from_secs(40)).is_empty());
        assert_eq!(
            l.stalled_at(start + Duration::from_secs(50)),
            vec![("sweeper", 50)]
        );
        l.tick_at(
            "sweeper",
            Duration::from_secs(15),
            start + Duration::from_secs(60),
        );
        assert_eq!(
            l.stalled_at(start + Duration::from_secs(100)),
            vec![("health scheduler", 100)]
        );
    }
}
