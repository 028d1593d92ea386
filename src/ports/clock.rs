//! Wall-clock time and the environment, injected so tests control both.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Reads a variable from opsbot's environment (runbook pass-through variables and secrets).
/// Tests inject their own.
pub type EnvLookup = std::sync::Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Wall-clock time for stored timestamps. Tests use [`FakeClock`].
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct FakeClock(Mutex<DateTime<Utc>>);

impl FakeClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self(Mutex::new(start))
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().expect("fake clock poisoned");
        *now += chrono::Duration::from_std(by).expect("duration fits");
    }
}

impl Clock for FakeClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("fake clock poisoned")
    }
}
