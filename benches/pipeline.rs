//! End-to-end command pipeline benchmark: parse -> authorize -> rate-limit -> audit committed
//! to SQLite, through the real `Router` built by `App::build` from a TOML config, exactly as
//! `opsbot serve` wires it (SQLite store with group commit, in-memory limiter, metrics).
//!
//! The command is `/whoami`: authorized, rate-limited (four generous limits, so every limiter
//! key is checked but nothing is ever refused) and audited, with no other I/O. Every
//! `Router::handle` call returns only after its audit record is committed.
//!
//! Run with `cargo bench --bench pipeline`. It runs
//!  1. criterion group `pipeline`: `single_command` (one command at a time, latency) and
//!     `concurrent/N_cmds_C_tasks` (N commands from C concurrent tasks, throughput);
//!  2. plain measurements that record every command's latency, each on a fresh database:
//!     - closed loop: `OPSBOT_BENCH_COMMANDS` commands from `OPSBOT_BENCH_CONCURRENCY` tasks
//!       that each send their next command as soon as the previous reply arrives (capacity);
//!     - open loop: commands sent at a fixed 10,000/s regardless of replies, the load the
//!       targets describe (>= 10,000 commands/s with p99 < 5 ms);
//!     - a closed-loop concurrency sweep (1..256 tasks).
//!
//! Knobs (environment): `OPSBOT_BENCH_COMMANDS` (default 50000),
//! `OPSBOT_BENCH_CONCURRENCY` (default 64), `OPSBOT_BENCH_RATE` (default 10000),
//! `OPSBOT_BENCH_SWEEP=0` to skip the sweep, and the diagnostic
//! `OPSBOT_BENCH_DIAG=no-request-id-index`, which drops the `audit_log_request_id` index
//! right after the app is built (see docs/benchmarks.md).
//! Without `--bench` (e.g. `cargo test --benches`) everything runs once, briefly.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use opsbot::app::App;
use opsbot::config::Config;
use opsbot::domain::{ChannelRef, EventPayload, InboundEvent, Outcome, Platform, UserRef};
use opsbot::ports::Store;
use opsbot::router::Router;
use sqlx::Connection;
use tempfile::TempDir;
use tokio::runtime::Runtime;

/// Commands per iteration of the criterion throughput benchmark.
const BATCH_COMMANDS: usize = 2000;
/// Concurrent tasks in the criterion throughput benchmark.
const BATCH_TASKS: usize = 64;

/// Targets from the issue.
const TARGET_COMMANDS_PER_SEC: f64 = 10_000.0;
const TARGET_P99: Duration = Duration::from_millis(5);

const PEOPLE: [&str; 3] = ["alice", "bob", "carol"];

const CONFIG: &str = r#"
[limits]
global = "1000000/s"
per_user = "1000000/s"
per_channel = "1000000/s"
per_command = "1000000/s"

[builtins]
status_roles = ["viewer", "sre", "sre-lead", "deployer"]
audit_roles = ["sre", "sre-lead"]

[[people]]
name = "alice"
roles = ["sre", "deployer"]
identities = ["console:alice", "slack:UALICE"]

[[people]]
name = "bob"
roles = ["sre-lead"]
identities = ["console:bob"]

[[people]]
name = "carol"
roles = ["viewer"]
identities = ["console:carol"]
"#;

/// `OPSBOT_BENCH_DIAG=no-request-id-index`: measure without the random-key index (diagnostic).
fn drop_request_id_index() -> bool {
    std::env::var("OPSBOT_BENCH_DIAG").is_ok_and(|v| v == "no-request-id-index")
}

/// A real app on a fresh SQLite file in a temp dir (kept alive as long as the app).
struct BenchApp {
    router: Arc<Router>,
    store: Arc<dyn Store>,
    _dir: TempDir,
}

/// Builds the app; must run inside the runtime that will drive it (the audit writer task is
/// spawned onto the current runtime).
async fn build_app() -> BenchApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("opsbot.db");
    std::fs::create_dir_all(dir.path().join("commands")).expect("commands dir");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[store]\ndatabase_url = \"sqlite://{}\"\n[catalog]\ndir = \"commands\"\n{CONFIG}",
        db.display()
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &text).expect("write config");
    let config = Config::from_toml(&path, &text, &[]).expect("bench config is valid");
    let app = App::build(config).await.expect("app builds");
    if drop_request_id_index() {
        let url = format!("sqlite://{}", db.display());
        let mut conn = sqlx::SqliteConnection::connect(&url)
            .await
            .expect("open the bench database");
        sqlx::query("DROP INDEX IF EXISTS audit_log_request_id")
            .execute(&mut conn)
            .await
            .expect("drop the request id index");
    }
    let bench = BenchApp {
        router: app.router.clone(),
        store: app.store.clone(),
        _dir: dir,
    };
    // Sanity check: the command really goes the whole way and is audited.
    let before = bench.audited().await;
    let resp = bench.router.handle(&whoami("alice")).await;
    assert_eq!(resp.outcome, Some(Outcome::Ok), "/whoami must succeed");
    assert_eq!(bench.audited().await, before + 1, "/whoami must be audited");
    bench
}

impl BenchApp {
    /// Number of committed audit records (the chain is gapless, so the last seq).
    async fn audited(&self) -> i64 {
        self.store
            .recent_audit(1)
            .await
            .expect("read audit log")
            .first()
            .map_or(0, |r| r.seq)
    }
}

fn event(who: &str, channel: &str, payload: EventPayload) -> InboundEvent {
    InboundEvent::new(
        UserRef::new(Platform::Console, who),
        ChannelRef::id_only(channel),
        payload,
    )
}

fn whoami(who: &str) -> InboundEvent {
    event(who, "ops", EventPayload::Command("/whoami".to_owned()))
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs `commands` `/whoami`s from `tasks` concurrent tasks; returns every command's latency
/// when `record` is set (empty otherwise).
async fn run_concurrent(
    router: &Arc<Router>,
    commands: usize,
    tasks: usize,
    record: bool,
) -> Vec<Duration> {
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            // Spread the commands evenly; the first `commands % tasks` tasks take one more.
            let n = commands / tasks + usize::from(t < commands % tasks);
            let router = router.clone();
            let ev = whoami(PEOPLE[t % PEOPLE.len()]);
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(if record { n } else { 0 });
                for _ in 0..n {
                    let start = Instant::now();
                    let resp = router.handle(&ev).await;
                    if record {
                        latencies.push(start.elapsed());
                    }
                    debug_assert_eq!(resp.outcome, Some(Outcome::Ok));
                    black_box(resp);
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::with_capacity(if record { commands } else { 0 });
    for h in handles {
        all.extend(h.await.expect("bench task panicked"));
    }
    all
}

fn bench_pipeline(c: &mut Criterion, rt: &Runtime) {
    let app = rt.block_on(build_app());
    let mut group = c.benchmark_group("pipeline");

    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(5));
    group.sample_size(50);
    group.throughput(Throughput::Elements(1));
    let ev = whoami("alice");
    group.bench_function("single_command", |b| {
        b.to_async(rt).iter(|| app.router.handle(&ev));
    });

    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(10));
    group.sample_size(20);
    group.throughput(Throughput::Elements(BATCH_COMMANDS as u64));
    group.bench_function(
        format!("concurrent/{BATCH_COMMANDS}_cmds_{BATCH_TASKS}_tasks"),
        |b| {
            b.to_async(rt)
                .iter(|| run_concurrent(&app.router, BATCH_COMMANDS, BATCH_TASKS, false));
        },
    );
    group.finish();
}

/// The latency at quantile `q` of sorted `v`.
fn quantile(v: &[Duration], q: f64) -> Duration {
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2}ms", d.as_secs_f64() * 1e3)
}

struct Measured {
    commands: usize,
    elapsed: Duration,
    per_sec: f64,
    p50: Duration,
    p99: Duration,
    p999: Duration,
    max: Duration,
}

/// One plain measurement on a fresh app: `commands` commands from `tasks` concurrent tasks.
fn measure(rt: &Runtime, commands: usize, tasks: usize) -> Measured {
    rt.block_on(async {
        let app = build_app().await;
        // Warm-up: let the pool, the limiter keys and the page cache settle.
        run_concurrent(&app.router, (commands / 10).max(tasks), tasks, false).await;
        let audited_before = app.audited().await;
        let start = Instant::now();
        let mut lat = run_concurrent(&app.router, commands, tasks, true).await;
        let elapsed = start.elapsed();
        let audited = app.audited().await - audited_before;
        assert_eq!(
            audited, commands as i64,
            "every command must have a committed audit record"
        );
        lat.sort_unstable();
        Measured {
            commands,
            elapsed,
            per_sec: commands as f64 / elapsed.as_secs_f64(),
            p50: quantile(&lat, 0.50),
            p99: quantile(&lat, 0.99),
            p999: quantile(&lat, 0.999),
            max: *lat.last().expect("at least one command"),
        }
    })
}

/// Open loop: sends `commands` commands at `rate` per second, each on its own task, whether
/// or not earlier ones have been answered. Latency runs from the moment a command is handed
/// to the router; `lag` is how late the sender was against its schedule (if it grows, the
/// machine could not even keep up with sending, and the latencies understate the delay).
struct OpenLoop {
    achieved: f64,
    p50: Duration,
    p99: Duration,
    p999: Duration,
    max: Duration,
    lag_p99: Duration,
    lag_max: Duration,
}

fn measure_open_loop(rt: &Runtime, rate: f64, commands: usize) -> OpenLoop {
    rt.block_on(async {
        let app = build_app().await;
        run_concurrent(&app.router, (commands / 10).max(64), 64, false).await;
        let audited_before = app.audited().await;
        let period = Duration::from_secs_f64(1.0 / rate);
        let start = Instant::now();
        let mut handles = Vec::with_capacity(commands);
        let mut lags = Vec::with_capacity(commands);
        for i in 0..commands {
            let due = start + period.mul_f64(i as f64);
            let now = Instant::now();
            if now < due {
                // tokio timers have 1 ms resolution: commands go out in bursts of rate/1000.
                tokio::time::sleep_until(due.into()).await;
            }
            lags.push(Instant::now().saturating_duration_since(due));
            let router = app.router.clone();
            let ev = whoami(PEOPLE[i % PEOPLE.len()]);
            let sent = Instant::now();
            handles.push(tokio::spawn(async move {
                let resp = router.handle(&ev).await;
                let latency = sent.elapsed();
                debug_assert_eq!(resp.outcome, Some(Outcome::Ok));
                latency
            }));
        }
        let mut lat = Vec::with_capacity(commands);
        for h in handles {
            lat.push(h.await.expect("bench task panicked"));
        }
        let elapsed = start.elapsed();
        assert_eq!(
            app.audited().await - audited_before,
            commands as i64,
            "every command must have a committed audit record"
        );
        lat.sort_unstable();
        lags.sort_unstable();
        OpenLoop {
            achieved: commands as f64 / elapsed.as_secs_f64(),
            p50: quantile(&lat, 0.50),
            p99: quantile(&lat, 0.99),
            p999: quantile(&lat, 0.999),
            max: *lat.last().expect("at least one command"),
            lag_p99: quantile(&lags, 0.99),
            lag_max: *lags.last().expect("at least one command"),
        }
    })
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

fn plain_measurement(rt: &Runtime, full: bool) {
    let commands = if full {
        env_usize("OPSBOT_BENCH_COMMANDS", 50_000)
    } else {
        1_000
    };
    let tasks = env_usize("OPSBOT_BENCH_CONCURRENCY", 64);
    println!();
    if !full {
        println!("pipeline/sqlite: smoke run without --bench; the numbers below mean nothing");
    }
    if drop_request_id_index() {
        println!("pipeline/sqlite: DIAGNOSTIC RUN: audit_log_request_id index dropped");
    }
    let m = measure(rt, commands, tasks);
    println!(
        "pipeline/sqlite: {} commands from {tasks} tasks in {:.2}s = {:.0} commands/s; latency p50 {} p99 {} p99.9 {} max {}",
        m.commands,
        m.elapsed.as_secs_f64(),
        m.per_sec,
        ms(m.p50),
        ms(m.p99),
        ms(m.p999),
        ms(m.max)
    );

    let rate = env_usize("OPSBOT_BENCH_RATE", TARGET_COMMANDS_PER_SEC as usize) as f64;
    let open_commands = if full { (rate * 3.0) as usize } else { 1_000 };
    let o = measure_open_loop(rt, rate, open_commands);
    println!(
        "pipeline/sqlite/open-loop: {open_commands} commands offered at {rate:.0}/s, achieved {:.0} commands/s; latency p50 {} p99 {} p99.9 {} max {}; sender lag p99 {} max {}",
        o.achieved,
        ms(o.p50),
        ms(o.p99),
        ms(o.p999),
        ms(o.max),
        ms(o.lag_p99),
        ms(o.lag_max)
    );

    let verdict = |ok: bool| if ok { "MET" } else { "MISSED" };
    println!(
        "pipeline/sqlite: target >= {:.0} commands/s (closed loop, {tasks} tasks): {} ({:.0}/s)",
        TARGET_COMMANDS_PER_SEC,
        verdict(m.per_sec >= TARGET_COMMANDS_PER_SEC),
        m.per_sec
    );
    println!(
        "pipeline/sqlite: target p99 < {} at {rate:.0} commands/s (open loop): {} (p99 {}); closed loop with {tasks} tasks: {} (p99 {})",
        ms(TARGET_P99),
        verdict(o.p99 < TARGET_P99 && o.achieved >= rate * 0.95),
        ms(o.p99),
        verdict(m.p99 < TARGET_P99),
        ms(m.p99)
    );

    if !full || std::env::var("OPSBOT_BENCH_SWEEP").is_ok_and(|v| v == "0") {
        return;
    }
    println!();
    println!("pipeline/sqlite sweep (20000 commands each, fresh database):");
    for tasks in [1, 8, 32, 64, 256] {
        let m = measure(rt, 20_000, tasks);
        println!(
            "pipeline/sqlite/sweep: tasks {tasks:>3}: {:>7.0} commands/s; latency p50 {} p99 {} p99.9 {} max {}",
            m.per_sec,
            ms(m.p50),
            ms(m.p99),
            ms(m.p999),
            ms(m.max)
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not (criterion's test mode).
    let full = std::env::args().any(|a| a == "--bench");
    let rt = runtime();
    let mut c = Criterion::default().configure_from_args();
    bench_pipeline(&mut c, &rt);
    c.final_summary();
    plain_measurement(&rt, full);
}
