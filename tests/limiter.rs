//! The Redis rate limiter against a real Redis (skipped with a reason when Redis is
//! unreachable, a failure with `CI=true`). Every test writes under its own random prefix.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opsbot::domain::RateQuota;
use opsbot::limiter::RedisLimiter;
use opsbot::limiter::memory::quota;
use opsbot::ports::{LimitDecision, RateLimiter};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;

fn unique_prefix() -> String {
    format!("opsbot:test:{}:", uuid::Uuid::new_v4().simple())
}

/// A limiter on the test Redis, or `None` (after saying why) when it is unreachable.
async fn limiter(url: &str, prefix: &str) -> Option<RedisLimiter> {
    match RedisLimiter::connect(url, prefix).await {
        Ok(l) => Some(l),
        Err(e) => support::unavailable("Redis", url, &e.to_string()),
    }
}

fn retry_after(d: LimitDecision) -> Duration {
    match d {
        LimitDecision::Limited { retry_after } => retry_after,
        LimitDecision::Allowed => panic!("expected Limited, got Allowed"),
    }
}

#[tokio::test]
async fn bursts_then_limits_with_a_sensible_retry_after() {
    let Some(l) = limiter(&support::redis_url(), &unique_prefix()).await else {
        return;
    };
    let q = quota(3, 60);
    for i in 0..3 {
        assert_eq!(
            l.check("alice", q).await.unwrap(),
            LimitDecision::Allowed,
            "request {i} is within the burst"
        );
    }
    // 3/min refills one every 20s; the fourth request came right after the third.
    let wait = retry_after(l.check("alice", q).await.unwrap());
    assert!(
        wait > Duration::from_secs(15) && wait <= Duration::from_secs(20),
        "{wait:?}"
    );
    // Limited requests are not counted: asking again does not push the wait further out.
    let again = retry_after(l.check("alice", q).await.unwrap());
    assert!(again <= wait, "{again:?} > {wait:?}");
}

#[tokio::test]
async fn keys_and_quotas_are_independent() {
    let Some(l) = limiter(&support::redis_url(), &unique_prefix()).await else {
        return;
    };
    let q = quota(1, 60);
    assert_eq!(l.check("alice", q).await.unwrap(), LimitDecision::Allowed);
    retry_after(l.check("alice", q).await.unwrap());
    assert_eq!(l.check("bob", q).await.unwrap(), LimitDecision::Allowed);
    retry_after(l.check("bob", q).await.unwrap());
    // The same key under another quota (e.g. per-command vs per-user) has its own bucket.
    assert_eq!(
        l.check("alice", quota(5, 60)).await.unwrap(),
        LimitDecision::Allowed
    );
    // Keys that look alike after formatting stay apart.
    assert_eq!(l.check("alice:", q).await.unwrap(), LimitDecision::Allowed);
}

#[tokio::test]
async fn replicas_share_limits() {
    let url = support::redis_url();
    let prefix = unique_prefix();
    let Some(a) = limiter(&url, &prefix).await else {
        return;
    };
    let Some(b) = limiter(&url, &prefix).await else {
        return;
    };
    let q = quota(4, 60);
    for i in 0..4 {
        let replica = if i % 2 == 0 { &a } else { &b };
        assert_eq!(
            replica.check("carol", q).await.unwrap(),
            LimitDecision::Allowed
        );
    }
    // The burst is spent across both replicas, so neither allows a fifth.
    retry_after(a.check("carol", q).await.unwrap());
    retry_after(b.check("carol", q).await.unwrap());

    // A different prefix (another deployment) does not share the bucket.
    let Some(other) = limiter(&url, &unique_prefix()).await else {
        return;
    };
    assert_eq!(
        other.check("carol", q).await.unwrap(),
        LimitDecision::Allowed
    );
}

#[tokio::test]
async fn concurrent_checks_never_exceed_the_burst() {
    let url = support::redis_url();
    let prefix = unique_prefix();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let Some(l) = limiter(&url, &prefix).await else {
            return;
        };
        replicas.push(Arc::new(l));
    }
    let q = quota(10, 3600);
    let mut checks = JoinSet::new();
    for i in 0..60 {
        let l = replicas[i % replicas.len()].clone();
        checks.spawn(async move { l.check("dave", q).await.unwrap() });
    }
    let mut allowed = 0;
    while let Some(d) = checks.join_next().await {
        if d.unwrap() == LimitDecision::Allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 10, "the Lua script makes each check atomic");
}

#[tokio::test]
async fn a_limited_key_is_allowed_again_once_retry_after_has_passed() {
    let Some(l) = limiter(&support::redis_url(), &unique_prefix()).await else {
        return;
    };
    // 5 per second: one more every 200ms.
    let q = quota(5, 1);
    for _ in 0..5 {
        assert_eq!(l.check("erin", q).await.unwrap(), LimitDecision::Allowed);
    }
    let limited_at = Instant::now();
    let wait = retry_after(l.check("erin", q).await.unwrap());
    assert!(wait <= Duration::from_millis(200), "{wait:?}");
    // Poll (limited checks are not counted) until allowed again, waiting out at most 20ms
    // of each retry_after before asking again.
    support::eventually(
        "erin to be allowed again",
        Duration::from_secs(5),
        async || {
            let decision = l.check("erin", q).await.unwrap();
            if let LimitDecision::Limited { retry_after } = decision {
                tokio::time::sleep(retry_after.min(Duration::from_millis(20))).await;
            }
            support::satisfies(decision, |d| *d == LimitDecision::Allowed)
        },
    )
    .await;
    // Not allowed early (allowing a little for the two clocks).
    let waited = limited_at.elapsed();
    assert!(
        waited + Duration::from_millis(20) >= wait,
        "{waited:?} < {wait:?}"
    );
}

/// A TCP relay to the real Redis that can be cut and restored, standing in for an outage.
struct Relay {
    addr: SocketAddr,
    state: Arc<Mutex<RelayState>>,
    accept: tokio::task::JoinHandle<()>,
}

struct RelayState {
    up: bool,
    conns: JoinSet<()>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay addr");
        let state = Arc::new(Mutex::new(RelayState {
            up: true,
            conns: JoinSet::new(),
        }));
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut state = shared.lock().unwrap();
                if !state.up {
                    continue; // dropping `inbound` closes it: Redis is "down"
                }
                state.conns.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Relay {
            addr,
            state,
            accept,
        }
    }

    /// Closes every relayed connection and turns new ones away.
    async fn cut(&self) {
        let mut conns = {
            let mut state = self.state.lock().unwrap();
            state.up = false;
            std::mem::take(&mut state.conns)
        };
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }

    fn restore(&self) {
        self.state.lock().unwrap().up = true;
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Checks once, failing if the answer takes longer than a command could wait.
async fn prompt_check(l: &RedisLimiter, key: &str, q: RateQuota) -> LimitDecision {
    let started = Instant::now();
    let decision = tokio::time::timeout(Duration::from_secs(10), l.check(key, q))
        .await
        .expect("the limiter must answer")
        .expect("the limiter answers instead of failing");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a check took {:?}",
        started.elapsed()
    );
    decision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_back_to_memory_while_redis_is_away_and_returns_to_it() {
    let url = support::redis_url();
    let mut relayed = reqwest::Url::parse(&url).expect("redis url parses");
    let host = relayed.host_str().expect("redis url has a host").to_owned();
    let port = relayed.port().unwrap_or(6379);
    let Some(target) = tokio::net::lookup_host((host.as_str(), port))
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
    else {
        support::unavailable::<()>("Redis", &url, "host does not resolve");
        return;
    };
    let relay = Relay::start(target).await;
    relayed.set_host(Some("127.0.0.1")).unwrap();
    relayed.set_port(Some(relay.addr.port())).unwrap();
    let Some(l) = limiter(relayed.as_str(), &unique_prefix()).await else {
        return;
    };
    let q = quota(1, 3600);
    assert_eq!(prompt_check(&l, "frank", q).await, LimitDecision::Allowed);
    retry_after(prompt_check(&l, "frank", q).await);

    relay.cut().await;
    // Redis is away: answers still come, promptly, from this replica's memory limiter,
    // which has not seen frank yet, and then limits him there.
    assert_eq!(prompt_check(&l, "frank", q).await, LimitDecision::Allowed);
    retry_after(prompt_check(&l, "frank", q).await);
    // Grace's only request so far is counted in memory, not in Redis.
    assert_eq!(prompt_check(&l, "grace", q).await, LimitDecision::Allowed);
    for _ in 0..3 {
        retry_after(prompt_check(&l, "grace", q).await);
    }

    relay.restore();
    // Back on Redis (after at most a reconnect or two): grace's bucket there is still
    // fresh, which the memory limiter would have refused.
    support::eventually(
        "the limiter to go back to Redis",
        support::WAIT,
        async || {
            let decision = prompt_check(&l, "grace", q).await;
            support::satisfies(decision, |d| *d == LimitDecision::Allowed)
        },
    )
    .await;
    // And Redis remembered frank from before the outage.
    retry_after(prompt_check(&l, "frank", q).await);
}
