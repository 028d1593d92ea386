//! Redis limiter: GCRA in one Lua script, so the read-modify-write is atomic and every
//! replica shares the same buckets and Redis's clock. If Redis cannot be reached, the
//! limiter falls back to this process's memory limiter (limits still hold per replica)
//! rather than refusing every command during an outage.

use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::MemoryLimiter;
use crate::domain::RateQuota;
use crate::ports::{LimitDecision, LimiterError, RateLimiter};

// KEYS[1] bucket; ARGV[1] emission interval (µs); ARGV[2] burst.
// Returns {0, 0} when allowed, {1, retry_after_µs} when limited.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - interval * burst
if now < allow_at then
  return {1, allow_at - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {0, 0}
"#;

/// Longest a check waits for Redis before answering from the memory limiter instead. The
/// connection manager's default reconnect retries take seconds, and every command would
/// stall behind them for as long as Redis is down.
const CHECK_TIMEOUT: Duration = Duration::from_millis(500);

pub struct RedisLimiter {
    conn: ConnectionManager,
    script: Script,
    prefix: String,
    fallback: MemoryLimiter,
}

impl RedisLimiter {
    /// Connects to `url`; keys are written under `prefix` (e.g. `opsbot:rl:`).
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, LimiterError> {
        let client = redis::Client::open(url).map_err(|e| LimiterError(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_connection_timeout(Some(CHECK_TIMEOUT))
            .set_response_timeout(Some(CHECK_TIMEOUT));
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| LimiterError(e.to_string()))?;
        Ok(Self {
            conn,
            script: Script::new(GCRA),
            prefix: prefix.to_owned(),
            fallback: MemoryLimiter::new(),
        })
    }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn check(&self, key: &str, quota: RateQuota) -> Result<LimitDecision, LimiterError> {
        let bucket = format!(
            "{}{}:{}:{}",
            self.prefix,
            quota.count,
            quota.per.as_micros(),
            key
        );
        let mut conn = self.conn.clone();
        let mut invocation = self.script.key(bucket);
        invocation
            .arg(quota.interval().as_micros() as u64)
            .arg(quota.count.get());
        let call = invocation.invoke_async::<(i64, i64)>(&mut conn);
        let result = match tokio::time::timeout(CHECK_TIMEOUT, call).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
        };
        match result {
            Ok((0, _)) => Ok(LimitDecision::Allowed),
            Ok((_, retry_us)) => Ok(LimitDecision::Limited {
                retry_after: Duration::from_micros(retry_us.max(0) as u64),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "redis rate limiter unreachable; using this replica's memory limiter");
                Ok(self.fallback.check_now(key, quota))
            }
        }
    }
}
