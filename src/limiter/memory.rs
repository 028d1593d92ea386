//! In-memory limiter on governor's keyed GCRA. Governor never forgets a key by itself, so
//! idle keys (whose buckets have fully refilled) are evicted every few thousand checks.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter as Governor};

use crate::domain::RateQuota;
use crate::ports::{LimitDecision, LimiterError, RateLimiter};

/// Checks between two sweeps of idle keys.
const EVICT_EVERY: u64 = 4096;

#[derive(Default)]
pub struct MemoryLimiter {
    by_quota: Mutex<HashMap<RateQuota, Arc<DefaultKeyedRateLimiter<String>>>>,
    checks: AtomicU64,
}

impl MemoryLimiter {
    pub fn new() -> Self {
        Self::default()
    }

    fn limiter_for(&self, quota: RateQuota) -> Arc<DefaultKeyedRateLimiter<String>> {
        let mut map = self.by_quota.lock().expect("limiter map poisoned");
        map.entry(quota)
            .or_insert_with(|| {
                let q = Quota::with_period(quota.interval())
                    .expect("RateQuota guarantees a non-zero interval")
                    .allow_burst(quota.count);
                Arc::new(Governor::keyed(q))
            })
            .clone()
    }

    /// Forgets keys whose buckets are full again; they behave exactly like unseen keys.
    pub fn evict_idle(&self) {
        let limiters: Vec<_> = self
            .by_quota
            .lock()
            .expect("limiter map poisoned")
            .values()
            .cloned()
            .collect();
        for l in limiters {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Keys currently tracked, across quotas.
    pub fn tracked_keys(&self) -> usize {
        self.by_quota
            .lock()
            .expect("limiter map poisoned")
            .values()
            .map(|l| l.len())
            .sum()
    }

    /// The synchronous check; the Redis limiter falls back to it when Redis is unreachable.
    pub fn check_now(&self, key: &str, quota: RateQuota) -> LimitDecision {
        if self.checks.fetch_add(1, Ordering::Relaxed) % EVICT_EVERY == EVICT_EVERY - 1 {
            self.evict_idle();
        }
        let limiter = self.limiter_for(quota);
        match limiter.check_key(&key.to_owned()) {
            Ok(()) => LimitDecision::Allowed,
            Err(not_until) => LimitDecision::Limited {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            },
        }
    }
}

#[async_trait]
impl RateLimiter for MemoryLimiter {
    async fn check(&self, key: &str, quota: RateQuota) -> Result<LimitDecision, LimiterError> {
        Ok(self.check_now(key, quota))
    }
}

/// `n` per `secs` seconds, for tests and defaults.
pub fn quota(n: u32, secs: u64) -> RateQuota {
    RateQuota {
        count: NonZeroU32::new(n).expect("quota count must be non-zero"),
        per: std::time::Duration::from_secs(secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn bursts_then_limits_per_key() {
        let l = MemoryLimiter::new();
        let q = quota(3, 60);
        for _ in 0..3 {
            assert_eq!(l.check_now("alice", q), LimitDecision::Allowed);
        }
        match l.check_now("alice", q) {
            LimitDecision::Limited { retry_after } => {
                assert!(
                    retry_after > Duration::from_secs(15) && retry_after <= Duration::from_secs(20)
                );
            }
            LimitDecision::Allowed => panic!("fourth request within a minute must be limited"),
        }
        assert_eq!(l.check_now("bob", q), LimitDecision::Allowed);
    }

    #[test]
    fn idle_keys_are_evicted() {
        let l = MemoryLimiter::new();
        let q = RateQuota {
            count: NonZeroU32::new(1).unwrap(),
            per: Duration::from_millis(5),
        };
        for i in 0..100 {
            l.check_now(&format!("user-{i}"), q);
        }
        assert_eq!(l.tracked_keys(), 100);
        let deadline = Instant::now() + Duration::from_secs(5);
        while l.tracked_keys() > 0 {
            assert!(Instant::now() < deadline, "idle keys were never evicted");
            std::thread::yield_now();
            l.evict_idle();
        }
    }
}
