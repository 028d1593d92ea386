//! Liveness of the background loops (health-check scheduler, sweeper, heartbeat): each
//! loop reports every tick, and `/readyz` calls a loop stalled when it has not ticked for
//! three of its intervals (plus a second of slack); a loop stopped because this replica no
//! longer leads is forgotten, not stalled. Also the connection state of each chat
//! adapter, which `/readyz` shows without failing on it: one platform being down must not
//! take opsbot (and with it the other platforms' endpoints) out of service.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

#[derive(Default)]
pub struct Liveness {
    loops: Mutex<BTreeMap<&'static str, (Instant, Duration)>>,
    adapters: Mutex<BTreeMap<&'static str, AdapterState>>,
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
