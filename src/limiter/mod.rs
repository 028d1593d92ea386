//! Rate limiter backends behind `ports::RateLimiter`: in-memory (governor, the default,
//! one process) and Redis (an atomic GCRA in Lua, shared by replicas).

pub mod memory;
pub mod redis;

pub use self::redis::RedisLimiter;
pub use memory::MemoryLimiter;
