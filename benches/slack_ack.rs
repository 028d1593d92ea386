//! Slack slash-command ack load tool: the real `opsbot serve` (the release binary, as a child
//! process with a temp config and a SQLite store in a temp dir) receives correctly signed
//! Slack slash commands over loopback from an open-loop load generator, and answers them
//! through `response_url` into a small in-process fake Slack (axum on 127.0.0.1:0, also
//! given to opsbot as `slack.api_url`) that counts every answer.
//!
//! Run with `cargo bench --bench slack_ack`. Target (issue 6): 1,000 requests/s for 30 s,
//! every one acked (HTTP 200), p99 ack latency under 10 ms; every command must also be
//! answered through its `response_url`.
//!
//! Method:
//!  - The command is `/status` with no `[[checks]]` configured ("No health checks are
//!    configured."): it is parsed, authorized (role `sre`), rate-limited (limits raised to
//!    1,000,000/s so none is hit), audited (committed to SQLite) and answered, so the ack
//!    path and the work behind it are the real ones without a probe's own latency.
//!    The load comes from `SLACK_ACK_USERS` Slack users (default 10) in one channel.
//!  - Open loop: request i is due at `start + i / rate`, whatever happened to earlier
//!    requests. A dedicated OS thread sleeps until each due time (`std::thread::sleep`,
//!    microsecond precision) and hands the request to the tokio runtime, which signs it
//!    (v0 HMAC-SHA256 of `v0:{ts}:{body}`, fresh timestamp) and sends it over a pooled
//!    keep-alive reqwest client. Ack latency runs from the *due* time to the end of the
//!    response, so a stalled server or generator cannot hide requests (no coordinated
//!    omission); "sender lag" shows how late requests actually left.
//!  - A warm-up (`SLACK_ACK_WARMUP_SECS`, default 1 s at the same rate) opens the
//!    connections and the database first; it is reported but not part of the verdict.
//!  - After the load, waits (with a deadline) for every `response_url` answer, then reads
//!    opsbot's RSS (`/proc/<pid>/status`) and the CPU time it used (`/proc/<pid>/stat`),
//!    and cross-checks `opsbot_commands_total` on `/metrics`.
//!
//! Knobs: `SLACK_ACK_RATE` (requests/s, default 1000), `SLACK_ACK_SECS` (default 30),
//! `SLACK_ACK_WARMUP_SECS` (default 1), `SLACK_ACK_USERS` (default 10),
//! `SLACK_ACK_LOG` (opsbot's `log.level`, default `info` as in production),
//! `SLACK_ACK_SERVER=floor` (the same load against `support/slack_floor.rs`, the least a server
//! can do per command with opsbot's guarantees, instead of opsbot: the floor to compare with).
//!
//! Replicas (issue 14): `SLACK_ACK_REPLICAS=2` starts two `opsbot serve` on one Postgres
//! database (made for the run on `SLACK_ACK_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432`, and dropped after it) with the rate limits in Redis
//! (`SLACK_ACK_REDIS_URL`, default `redis://127.0.0.1:6379`), and request *i* goes to replica
//! *i mod N* (round robin); the target is the same. `SLACK_ACK_STORE=postgres` puts a single
//! replica on Postgres and Redis too (the comparison that separates the backend from the
//! second process); replicas always are.
//!
//! Prints PASS/FAIL against the target. Exits non-zero if any command was not acked or not
//! answered (a correctness failure); a latency miss only prints FAIL.
//! Without `--bench` (e.g. `cargo test --benches`) it runs 2 s at 200/s as a smoke test.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

#[path = "support/bench_db.rs"]
mod bench_db;
#[path = "support/slack_floor.rs"]
mod floor;
#[path = "support/slack_serve.rs"]
mod serve;

use bench_db::knob as env_or;
use serve::{Opsbot, SECRET, Shared, cpu_time, rss_kib, user_id};
const CHANNEL: &str = "C0LOADOPS";
const COMMAND: &str = "/status";
const EXPECTED_ANSWER: &str = "No health checks are configured.";
const TARGET_P99: Duration = Duration::from_millis(10);
const ACK_DEADLINE: Duration = Duration::from_secs(30);
const ANSWER_DEADLINE: Duration = Duration::from_secs(60);
/// Per-request client timeout: far above Slack's 3 s, so a slow ack is measured, not lost.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Per-request bookkeeping (indexed by request number; the number is in the response_url)
// ---------------------------------------------------------------------------------------

/// Not yet finished.
const PENDING: u16 = 0;
/// Transport error (connect, reset, timeout).
const ERROR: u16 = 1;

#[derive(Default)]
struct Slot {
    /// HTTP status, or `PENDING` / `ERROR`.
    status: AtomicU16,
    /// Due time -> response read, ns.
    ack_ns: AtomicU64,
    /// Actual send -> response read, ns.
    service_ns: AtomicU64,
    /// Due time -> the task started sending, ns.
    lag_ns: AtomicU64,
    /// Time of the response_url answer, ns since `Tracker::t0`, plus 1 (0 = none yet).
    answered_at: AtomicU64,
    /// Due time, ns since `Tracker::t0`.
    due_at: AtomicU64,
}

struct Tracker {
    t0: Instant,
    slots: Vec<Slot>,
    acks_done: AtomicUsize,
    answers: AtomicUsize,
    duplicate_answers: AtomicUsize,
    wrong_answers: AtomicUsize,
    unknown_answers: AtomicUsize,
    /// Web API calls (chat.postMessage etc.): a /status answer should need none.
    api_calls: AtomicUsize,
    /// Distinct client addresses opsbot answered from (= connections it opened to "Slack").
    answer_peers: Mutex<HashSet<SocketAddr>>,
    samples: Mutex<Vec<String>>,
}

impl Tracker {
    fn new(n: usize) -> Self {
        Self {
            t0: Instant::now(),
            slots: (0..n).map(|_| Slot::default()).collect(),
            acks_done: AtomicUsize::new(0),
            answers: AtomicUsize::new(0),
            duplicate_answers: AtomicUsize::new(0),
            wrong_answers: AtomicUsize::new(0),
            unknown_answers: AtomicUsize::new(0),
            api_calls: AtomicUsize::new(0),
            answer_peers: Mutex::default(),
            samples: Mutex::default(),
        }
    }

    fn since_t0(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.t0).as_nanos() as u64
    }

    /// Keeps the first few problems for the report.
    fn sample(&self, what: String) {
        let mut s = self.samples.lock().unwrap();
        if s.len() < 5 {
            s.push(what);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Fake Slack: Web API (`/api/{method}`) and response_url target (`/respond/{n}`)
// ---------------------------------------------------------------------------------------

async fn fake_slack(tracker: Arc<Tracker>) -> String {
    use axum::extract::{ConnectInfo, Path, State};
    use axum::routing::post;

    async fn api(
        State(t): State<Arc<Tracker>>,
        Path(method): Path<String>,
    ) -> axum::Json<serde_json::Value> {
        let n = t.api_calls.fetch_add(1, Ordering::Relaxed);
        t.sample(format!("unexpected Slack Web API call: {method}"));
        let ts = format!("1700000000.{:06}", n + 1);
        axum::Json(serde_json::json!({ "ok": true, "channel": CHANNEL, "ts": ts }))
    }

    async fn respond(
        State(t): State<Arc<Tracker>>,
        ConnectInfo(peer): ConnectInfo<SocketAddr>,
        Path(n): Path<usize>,
        body: String,
    ) -> axum::Json<serde_json::Value> {
        let now = t.since_t0(Instant::now()) + 1;
        t.answer_peers.lock().unwrap().insert(peer);
        let Some(slot) = t.slots.get(n) else {
            t.unknown_answers.fetch_add(1, Ordering::Relaxed);
            t.sample(format!("answer for unknown request {n}"));
            return axum::Json(serde_json::json!({ "ok": true }));
        };
        let text = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["text"].as_str().map(str::to_owned))
            .unwrap_or_default();
        if !text.contains(EXPECTED_ANSWER) {
            t.wrong_answers.fetch_add(1, Ordering::Relaxed);
            t.sample(format!("request {n}: unexpected answer {body:?}"));
        }
        if slot
            .answered_at
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            t.answers.fetch_add(1, Ordering::Relaxed);
        } else {
            t.duplicate_answers.fetch_add(1, Ordering::Relaxed);
        }
        axum::Json(serde_json::json!({ "ok": true }))
    }

    let app = axum::Router::new()
        .route("/api/{method}", post(api))
        .route("/respond/{n}", post(respond))
        .with_state(tracker);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind fake Slack");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    base
}

// ---------------------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------------------

/// Busy and total jiffies of the whole machine (`/proc/stat`'s first line).
fn machine_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    // idle + iowait
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// `/proc/loadavg`'s 1/5/15-minute averages: other work on the machine skews the numbers.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

// ---------------------------------------------------------------------------------------
// Load generation
// ---------------------------------------------------------------------------------------

fn sign(ts: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

fn slash_body(fake_slack: &str, user: &str, n: usize) -> String {
    serde_urlencoded::to_string([
        ("token", "bench"),
        ("team_id", "T0LOAD"),
        ("team_domain", "acme"),
        ("channel_id", CHANNEL),
        ("channel_name", "ops"),
        ("user_id", user),
        ("user_name", user),
        ("command", COMMAND),
        ("text", ""),
        ("response_url", &format!("{fake_slack}/respond/{n}")),
        ("trigger_id", &format!("{n}.1.bench")),
    ])
    .expect("form encodes")
}

struct Load {
    /// `/slack/commands` of each replica: request i goes to `urls[i % len]`.
    urls: Vec<String>,
    fake_slack: String,
    users: usize,
    client: reqwest::Client,
    tracker: Arc<Tracker>,
}

/// Sends requests `range` at `rate`/s, open loop, and waits for their acks (not answers).
/// Returns how long the sending took (first due time to last send).
async fn run_load(load: &Arc<Load>, range: std::ops::Range<usize>, rate: f64) -> Duration {
    let handle = tokio::runtime::Handle::current();
    let l = load.clone();
    let first = range.start;
    let count = range.len();
    let dispatcher = std::thread::Builder::new()
        .name("slack-ack-dispatch".into())
        .spawn(move || {
            let start = Instant::now() + Duration::from_millis(20);
            let mut last_send = start;
            for k in 0..count {
                let i = first + k;
                let due = start + Duration::from_secs_f64(k as f64 / rate);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                l.tracker.slots[i]
                    .due_at
                    .store(l.tracker.since_t0(due), Ordering::Relaxed);
                let l = l.clone();
                handle.spawn(async move { send_one(&l, i, due).await });
                last_send = Instant::now();
            }
            last_send - start
        })
        .expect("dispatcher thread");
    let sending = tokio::task::spawn_blocking(move || dispatcher.join().expect("dispatcher"))
        .await
        .expect("dispatcher join");
    let target = range.end;
    let deadline = Instant::now() + ACK_DEADLINE;
    while load.tracker.acks_done.load(Ordering::Relaxed) < target && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sending
}

async fn send_one(l: &Load, i: usize, due: Instant) {
    let slot = &l.tracker.slots[i];
    let started = Instant::now();
    slot.lag_ns.store(
        started.saturating_duration_since(due).as_nanos() as u64,
        Ordering::Relaxed,
    );
    let body = slash_body(&l.fake_slack, &user_id(i % l.users), i);
    let ts = chrono::Utc::now().timestamp();
    let signature = sign(ts, &body);
    let res = l
        .client
        .post(&l.urls[i % l.urls.len()])
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts.to_string())
        .header("x-slack-signature", signature)
        .body(body)
        .send()
        .await;
    let status = match res {
        Ok(resp) => {
            let status = resp.status();
            // Read the (empty) body so the connection goes back to the pool.
            let text = resp.text().await;
            match text {
                Ok(text) if !status.is_success() => {
                    l.tracker.sample(format!("request {i}: {status}: {text}"));
                    status.as_u16()
                }
                Ok(_) => status.as_u16(),
                Err(e) => {
                    l.tracker.sample(format!("request {i}: reading body: {e}"));
                    ERROR
                }
            }
        }
        Err(e) => {
            let mut why = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                why = format!("{why}: {c}");
                cause = c.source();
            }
            l.tracker.sample(format!("request {i}: {why}"));
            ERROR
        }
    };
    slot.ack_ns
        .store(due.elapsed().as_nanos() as u64, Ordering::Relaxed);
    slot.service_ns
        .store(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    slot.status.store(status, Ordering::Relaxed);
    l.tracker.acks_done.fetch_add(1, Ordering::Relaxed);
}

/// Waits until every request in `range` has its response_url answer, or the deadline.
async fn wait_answers(tracker: &Tracker, range: std::ops::Range<usize>) -> Duration {
    let start = Instant::now();
    loop {
        let missing = range
            .clone()
            .filter(|&i| tracker.slots[i].answered_at.load(Ordering::Relaxed) == 0)
            .count();
        if missing == 0 || start.elapsed() > ANSWER_DEADLINE {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn dist(values: impl Iterator<Item = Duration>) -> String {
    let mut v: Vec<Duration> = values.collect();
    v.sort();
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        ms(pct(&v, 0.50)),
        ms(pct(&v, 0.90)),
        ms(pct(&v, 0.99)),
        ms(pct(&v, 0.999)),
        ms(v.last().copied().unwrap_or_default()),
    )
}

struct Summary {
    sent: usize,
    acked: usize,
    non_200: usize,
    errors: usize,
    unfinished: usize,
    answered: usize,
    p99: Duration,
}

fn summarize(label: &str, tracker: &Tracker, range: std::ops::Range<usize>) -> Summary {
    let slots = &tracker.slots[range.clone()];
    let status = |s: &Slot| s.status.load(Ordering::Relaxed);
    let done: Vec<&Slot> = slots.iter().filter(|s| status(s) != PENDING).collect();
    let ns = |a: &AtomicU64| Duration::from_nanos(a.load(Ordering::Relaxed));
    let mut acks: Vec<Duration> = done.iter().map(|s| ns(&s.ack_ns)).collect();
    acks.sort();
    let answered: Vec<Duration> = slots
        .iter()
        .filter_map(|s| {
            let at = s.answered_at.load(Ordering::Relaxed);
            (at != 0).then(|| {
                Duration::from_nanos((at - 1).saturating_sub(s.due_at.load(Ordering::Relaxed)))
            })
        })
        .collect();
    let s = Summary {
        sent: slots.len(),
        acked: slots.iter().filter(|s| status(s) == 200).count(),
        non_200: slots
            .iter()
            .filter(|s| !matches!(status(s), PENDING | ERROR | 200))
            .count(),
        errors: slots.iter().filter(|s| status(s) == ERROR).count(),
        unfinished: slots.len() - done.len(),
        answered: answered.len(),
        p99: pct(&acks, 0.99),
    };
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for s in &done {
        *by_status.entry(status(s)).or_default() += 1;
    }
    println!(
        "{label}: sent {}, acked (200) {}, non-200 {}, errors {}, unfinished {}; statuses {by_status:?}",
        s.sent, s.acked, s.non_200, s.errors, s.unfinished
    );
    println!(
        "{label}: ack latency (from due time)   {}",
        dist(acks.iter().copied())
    );
    println!(
        "{label}: ack latency (from actual send) {}",
        dist(done.iter().map(|s| ns(&s.service_ns)))
    );
    println!(
        "{label}: sender lag (due -> sent)       {}",
        dist(done.iter().map(|s| ns(&s.lag_ns)))
    );
    println!(
        "{label}: response_url answers {} of {}; due -> answer {}",
        s.answered,
        s.sent,
        dist(answered.into_iter())
    );
    s
}

/// Ack latency (from due time) of the requests each of `n` replicas got (round robin).
fn by_replica(tracker: &Tracker, range: std::ops::Range<usize>, n: usize) {
    for r in 0..n {
        let acks = range
            .clone()
            .filter(|i| i % n == r)
            .map(|i| &tracker.slots[i])
            .filter(|s| s.status.load(Ordering::Relaxed) != PENDING)
            .map(|s| Duration::from_nanos(s.ack_ns.load(Ordering::Relaxed)));
        println!(
            "measured: replica {r}: ack latency (from due time) {}",
            dist(acks)
        );
    }
}

/// What one run offers and against what.
struct Run {
    bench: bool,
    rate: f64,
    secs: f64,
    users: usize,
    log_level: String,
    warmup: usize,
    measured: usize,
    replicas: usize,
    floor: bool,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).is_some_and(|a| a == "--floor-server") {
        return floor::main(&args[2..]);
    }
    let bench = args.iter().any(|a| a == "--bench");
    let rate: f64 = env_or("SLACK_ACK_RATE", if bench { 1000.0 } else { 200.0 });
    let secs: f64 = env_or("SLACK_ACK_SECS", if bench { 30.0 } else { 2.0 });
    let warmup_secs: f64 = env_or("SLACK_ACK_WARMUP_SECS", if bench { 1.0 } else { 0.5 });
    let replicas: usize = env_or("SLACK_ACK_REPLICAS", 1usize).max(1);
    let floor = std::env::var("SLACK_ACK_SERVER").is_ok_and(|s| s == "floor");
    assert!(!(floor && replicas > 1), "the floor server runs alone");
    let postgres = replicas > 1 || std::env::var("SLACK_ACK_STORE").is_ok_and(|s| s == "postgres");
    let run = Run {
        bench,
        rate,
        secs,
        users: env_or("SLACK_ACK_USERS", 10usize).max(1),
        log_level: env_or("SLACK_ACK_LOG", "info".to_owned()),
        warmup: (rate * warmup_secs).round() as usize,
        measured: (rate * secs).round() as usize,
        replicas,
        floor,
    };
    let server: String = env_or(
        "SLACK_ACK_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432".to_owned(),
    );
    let redis_url: String = env_or("SLACK_ACK_REDIS_URL", "redis://127.0.0.1:6379".to_owned());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let failed = rt.block_on(async {
        if !postgres {
            return measure(&run, None).await;
        }
        let name = format!("slack_ack_{}", uuid::Uuid::new_v4().simple());
        let shared = Shared {
            database_url: bench_db::fresh_database(&server, &name).await,
            redis_url,
        };
        let failed = measure(&run, Some(&shared)).await;
        bench_db::drop_database(&server, &name).await;
        failed
    });
    if failed {
        std::process::exit(1);
    }
}

/// Starts the servers (replicas one after the other, so one applies the migrations first)
/// and waits until each is ready.
async fn start_servers(
    run: &Run,
    fake: &str,
    shared: Option<&Shared>,
    client: &reqwest::Client,
) -> Vec<Opsbot> {
    let mut bots = Vec::new();
    for _ in 0..run.replicas {
        let mut bot = if run.floor {
            serve::start_floor()
        } else {
            serve::start_opsbot(fake, run.users, &run.log_level, shared)
        };
        let ready = serve::wait_ready(&mut bot, client).await;
        if run.floor {
            println!(
                "slack_ack: THE FLOOR SERVER (pid {}, benches/support/slack_floor.rs), not opsbot, ready after {:.0} ms; the lines below that say opsbot mean it",
                bot.pid(),
                ms(ready)
            );
        } else {
            println!(
                "slack_ack: opsbot serve (pid {}, {}) on {} ready after {:.0} ms; {COMMAND} from {} Slack users, no checks configured, log level {}",
                bot.pid(),
                env!("CARGO_BIN_EXE_opsbot"),
                if shared.is_some() {
                    "Postgres + Redis"
                } else {
                    "SQLite"
                },
                ms(ready),
                run.users,
                run.log_level
            );
        }
        bots.push(bot);
    }
    bots
}

/// CPU time used by all of `pids` so far.
fn cpu_of(pids: &[String]) -> Duration {
    pids.iter().map(|p| cpu_time(p).0).sum()
}

/// Runs the warm-up and the measured load; true if a command was not acked or not answered.
async fn measure(run: &Run, shared: Option<&Shared>) -> bool {
    let (rate, warmup, measured) = (run.rate, run.warmup, run.measured);
    let total = warmup + measured;
    let started = Instant::now();
    println!(
        "slack_ack: {} CPUs shared by {} opsbot serve, the database and this load generator; load average before: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        run.replicas,
        loadavg()
    );
    if !run.bench {
        println!("slack_ack: quick run without --bench (2 s at 200/s): not a measurement");
    }
    let tracker = Arc::new(Tracker::new(total));
    let fake = fake_slack(tracker.clone()).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        // Under opsbot's keep-alive limit (`server.header_read_timeout`, 10 s), as a client or
        // load balancer in front of it must be: a connection the server is closing as it is
        // reused fails the request that went out on it.
        .pool_idle_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("http client");
    let mut bots = start_servers(run, &fake, shared, &client).await;
    let pids: Vec<String> = bots.iter().map(|b| b.pid().to_string()).collect();
    let load = Arc::new(Load {
        urls: (bots.iter())
            .map(|b| format!("{}/slack/commands", b.base))
            .collect(),
        fake_slack: fake.clone(),
        users: run.users,
        client,
        tracker: tracker.clone(),
    });

    if warmup > 0 {
        run_load(&load, 0..warmup, rate).await;
        wait_answers(&tracker, 0..warmup).await;
        summarize("warm-up", &tracker, 0..warmup);
    }

    let rss_before: Vec<u64> = pids.iter().map(|p| rss_kib(p).0).collect();
    let cpu_before = cpu_of(&pids);
    let pg = match shared {
        Some(s) => serve::backends(&s.database_url).await,
        None => Vec::new(),
    };
    let pg_before = cpu_of(&pg);
    let (self_cpu_before, _) = cpu_time("self");
    let machine_before = machine_jiffies();
    let wall = Instant::now();
    println!(
        "slack_ack: offering {measured} requests at {rate:.0}/s for {:.0} s{} (open loop, latency from each request's due time)",
        run.secs,
        if bots.len() > 1 {
            format!(", round robin over {} replicas", bots.len())
        } else {
            String::new()
        }
    );
    let sending = run_load(&load, warmup..total, rate).await;
    let load_wall = wall.elapsed();
    let cpu_load = cpu_of(&pids);
    let answer_wait = wait_answers(&tracker, warmup..total).await;
    let cpu_after = cpu_of(&pids);
    let pg_cpu = cpu_of(&pg).saturating_sub(pg_before);
    let (self_cpu_after, _) = cpu_time("self");
    let machine_after = machine_jiffies();

    println!(
        "slack_ack: sending took {:.3} s ({:.0} req/s offered); all acks in after {:.3} s; all answers in {:.0} ms after that (20 ms polling)",
        sending.as_secs_f64(),
        measured as f64 / sending.as_secs_f64().max(1e-9),
        load_wall.as_secs_f64(),
        ms(answer_wait)
    );
    let s = summarize("measured", &tracker, warmup..total);
    if bots.len() > 1 {
        by_replica(&tracker, warmup..total, bots.len());
    }
    let dup = tracker.duplicate_answers.load(Ordering::Relaxed);
    let wrong = tracker.wrong_answers.load(Ordering::Relaxed);
    let unknown = tracker.unknown_answers.load(Ordering::Relaxed);
    let api = tracker.api_calls.load(Ordering::Relaxed);
    println!(
        "slack_ack: answers overall: duplicates {dup}, wrong text {wrong}, unknown request {unknown}; Web API calls {api}; opsbot answered over {} connections",
        tracker.answer_peers.lock().unwrap().len()
    );
    let cpu = cpu_after.saturating_sub(cpu_before);
    let busy = machine_after.0.saturating_sub(machine_before.0) as f64;
    let all = machine_after.1.saturating_sub(machine_before.1).max(1) as f64;
    let self_cpu = self_cpu_after.saturating_sub(self_cpu_before);
    let span = wall.elapsed().as_secs_f64();
    for (r, pid) in pids.iter().enumerate() {
        let ((rss, hwm), (_, threads)) = (rss_kib(pid), cpu_time(pid));
        println!(
            "slack_ack: opsbot {r} RSS {:.1} MiB (before the load {:.1} MiB, peak {:.1} MiB), {threads} threads",
            rss as f64 / 1024.0,
            rss_before[r] as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
    }
    println!(
        "slack_ack: opsbot CPU {:.2} s over {span:.1} s ({:.0} % of one core; {:.0} µs per command; {:.2} s by the end of the acks); load generator + fake Slack {:.2} s; machine busy {:.0} % of {} cores",
        cpu.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / span,
        cpu.as_secs_f64() * 1e6 / measured.max(1) as f64,
        cpu_load.saturating_sub(cpu_before).as_secs_f64(),
        self_cpu.as_secs_f64(),
        100.0 * busy / all,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    if !pg.is_empty() {
        println!(
            "slack_ack: Postgres: {} server processes on the run's database, CPU {:.2} s ({:.0} µs per command; the server's WAL writer and checkpointer not counted)",
            pg.len(),
            pg_cpu.as_secs_f64(),
            pg_cpu.as_secs_f64() * 1e6 / measured.max(1) as f64
        );
    }
    for sample in tracker.samples.lock().unwrap().iter() {
        println!("slack_ack: sample problem: {sample}");
    }
    for (r, bot) in bots.iter_mut().enumerate() {
        report_process(r, bot).await;
    }
    verdict(run, &s, wrong, dup, started)
}

/// What one server counted and logged, and how it stopped.
async fn report_process(r: usize, bot: &mut Opsbot) {
    match client_metrics(&bot.base).await {
        Ok(m) => println!("slack_ack: opsbot {r} /metrics opsbot_commands_total: {m}"),
        Err(e) => println!("slack_ack: opsbot {r} /metrics unavailable: {e}"),
    }
    let log = std::fs::read_to_string(&bot.log).unwrap_or_default();
    let problems: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    println!(
        "slack_ack: opsbot {r} log: {} lines, {} WARN/ERROR{}",
        log.lines().count(),
        problems.len(),
        problems
            .first()
            .map(|l| format!("; first: {l}"))
            .unwrap_or_default()
    );
    println!(
        "slack_ack: opsbot {r} {}",
        bot.stop(Duration::from_secs(10))
    );
}

/// Prints the verdict; true if a command was not acked or not answered.
fn verdict(run: &Run, s: &Summary, wrong: usize, dup: usize, started: Instant) -> bool {
    let rate = run.rate;
    let all_acked = s.acked == s.sent;
    let all_answered = s.answered == s.sent && wrong == 0 && dup == 0;
    let fast = s.p99 < TARGET_P99;
    let verdict = |ok: bool| if ok { "MET" } else { "MISSED" };
    println!(
        "slack_ack: target every command acked (200): {} ({} of {})",
        verdict(all_acked),
        s.acked,
        s.sent
    );
    println!(
        "slack_ack: target p99 ack latency < {:.0} ms at {rate:.0}/s: {} (p99 {:.2} ms)",
        ms(TARGET_P99),
        verdict(fast),
        ms(s.p99)
    );
    println!(
        "slack_ack: every command answered through response_url: {} ({} of {})",
        verdict(all_answered),
        s.answered,
        s.sent
    );
    println!(
        "slack_ack: {} ({} signed {COMMAND} at {rate:.0}/s for {:.0} s over {} server(s); total runtime {:.1} s; load average at the end: {})",
        if all_acked && fast && all_answered {
            "PASS"
        } else {
            "FAIL"
        },
        run.measured,
        run.secs,
        run.replicas,
        started.elapsed().as_secs_f64(),
        loadavg()
    );
    !(all_acked && all_answered)
}

/// Sums `opsbot_commands_total` by (command, outcome).
async fn client_metrics(base: &str) -> Result<String, reqwest::Error> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await?
        .text()
        .await?;
    let parts: Vec<String> = text
        .lines()
        // Every known label combination is exported from zero: show the ones counted.
        .filter(|l| l.starts_with("opsbot_commands_total{") && !l.ends_with(" 0"))
        .map(|l| l.replace("opsbot_commands_total", ""))
        .collect();
    Ok(if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    })
}
