//! Outbox latency (issue 14): decided → posted on Postgres, pacing aside. The library's own
//! `Deliverer` runs in-process on a fresh Postgres database with a fake `ChatOutbound` that
//! notes when each post reaches it (no throttle: pacing is not what is measured). An open-loop
//! producer queues `OUTBOX_RATE` messages/s (default 100) spread round-robin over
//! `OUTBOX_CHANNELS` channels (default 100) for `OUTBOX_SECS` (default 30) after 1 s of
//! warm-up: message *i* is due at `start + i/rate`, whatever happened to earlier ones; at its
//! due time it is queued with `OutboxStore::enqueue` (its own committed insert, as a producer's
//! transaction would commit it) and the deliverer is woken with `OutboxSignal::wake`, as
//! producers do after their commit.
//!
//! Latency is measured from the due time (the decision, before its insert) to the fake's
//! receipt, and also from the insert's commit. Target: p99 < 50 ms. The store is wrapped to
//! count and time the deliverer's claims and id writes, which shows where time goes.
//!
//! `OUTBOX_WAKE=0` queues without waking the deliverer, as a producer in another replica
//! does (its in-process signal reaches only its own deliverer): what is left is the store's
//! `NOTIFY` at commit, heard through `watch_queued`, backed by the deliverer's poll.
//!
//! `cargo bench --bench outbox`. Knobs: `OUTBOX_RATE`, `OUTBOX_SECS`, `OUTBOX_CHANNELS`,
//! `OUTBOX_WORKERS` (tokio workers, default 1 as `serve` runs), `OPSBOT_BENCH_POSTGRES_URL`
//! (the server's URL without a database, default `postgres://postgres@127.0.0.1:5432`; a
//! database is created for the run and dropped after it). Without `--bench`
//! (`cargo test --benches`): 2 s at 50/s, a smoke test. Exits non-zero if a message was lost
//! or posted twice; a latency miss only prints MISSED.

#[path = "support/bench_db.rs"]
mod bench_db;
#[path = "support/timed_outbox.rs"]
mod timed;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use bench_db::{drop_database, fresh_database, knob};
use opsbot::domain::Platform;
use opsbot::liveness::Liveness;
use opsbot::metrics::Metrics;
use opsbot::outbox::{Deliverer, OutboxSignal};
use opsbot::ports::{
    ChatOutbound, OutboundMessage, OutboundTarget, OutboxStore, Queued, Sent, SystemClock,
};
use opsbot::store::PostgresStore;
use timed::{Timed, dist, ms, pct};

const TARGET_P99: Duration = Duration::from_millis(50);
const DRAIN_DEADLINE: Duration = Duration::from_secs(60);
const PREFIX: &str = "outbox-bench ";

/// One message's times, in ns since `Tracker::t0` plus 1 (0 = not yet).
#[derive(Default)]
struct Slot {
    due: AtomicU64,
    committed: AtomicU64,
    posted: AtomicU64,
}

struct Tracker {
    t0: Instant,
    slots: Vec<Slot>,
    posted: AtomicUsize,
    duplicates: AtomicUsize,
    strangers: AtomicUsize,
    enqueue_errors: AtomicUsize,
}

impl Tracker {
    fn stamp(&self, at: &AtomicU64, when: Instant) -> bool {
        let ns = when.saturating_duration_since(self.t0).as_nanos() as u64 + 1;
        at.compare_exchange(0, ns, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// Chat platform stand-in: takes every post at once and notes when it arrived.
struct FakeChat(Arc<Tracker>);

#[async_trait]
impl ChatOutbound for FakeChat {
    async fn send(&self, _to: &OutboundTarget, message: &OutboundMessage) -> Sent {
        let now = Instant::now();
        let t = &self.0;
        let n = (message.text.strip_prefix(PREFIX)).and_then(|n| n.parse::<usize>().ok());
        match n.and_then(|n| t.slots.get(n)) {
            Some(slot) if t.stamp(&slot.posted, now) => t.posted.fetch_add(1, Ordering::Relaxed),
            Some(_) => t.duplicates.fetch_add(1, Ordering::Relaxed),
            None => t.strangers.fetch_add(1, Ordering::Relaxed),
        };
        Ok(format!("posted-{}", message.text.len()))
    }

    async fn edit(&self, _: &OutboundTarget, _: &str, _: &OutboundMessage) -> Sent<()> {
        Ok(())
    }
}

struct Producer {
    store: Arc<dyn OutboxStore>,
    signal: OutboxSignal,
    tracker: Arc<Tracker>,
    channels: usize,
    /// False: a producer in another replica, whose signal cannot reach this deliverer.
    wake: bool,
}

impl Producer {
    /// Queues message `i` as a producer would: commit, then wake the deliverer.
    async fn decide(&self, i: usize) {
        let queued = Queued::post(
            OutboundTarget {
                platform: Platform::Slack,
                channel_id: format!("C0BENCH{:03}", i % self.channels),
                thread: None,
            },
            OutboundMessage::text(format!("{PREFIX}{i}")),
        );
        match self.store.enqueue(&queued, chrono::Utc::now()).await {
            Ok(_) => {
                self.tracker
                    .stamp(&self.tracker.slots[i].committed, Instant::now());
                if self.wake {
                    self.signal.wake();
                }
            }
            Err(e) => {
                self.tracker.enqueue_errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("outbox: enqueue {i} failed: {e}");
            }
        }
    }
}

/// Offers messages `range` at `rate`/s, open loop: a thread sleeps until each due time and
/// hands the message to the runtime. Returns once the last one was handed over.
async fn offer(producer: &Arc<Producer>, range: std::ops::Range<usize>, rate: f64) {
    let handle = tokio::runtime::Handle::current();
    let p = producer.clone();
    let thread = std::thread::spawn(move || {
        let start = Instant::now() + Duration::from_millis(10);
        for (k, i) in range.enumerate() {
            let due = start + Duration::from_secs_f64(k as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            p.tracker.stamp(&p.tracker.slots[i].due, due);
            let p = p.clone();
            handle.spawn(async move { p.decide(i).await });
        }
    });
    tokio::task::spawn_blocking(move || thread.join().expect("producer thread"))
        .await
        .expect("producer join");
}

/// Waits (polling, with a deadline) until every message in `range` reached the fake.
async fn drain(tracker: &Tracker, range: std::ops::Range<usize>) -> bool {
    let deadline = Instant::now() + DRAIN_DEADLINE;
    loop {
        let missing = (tracker.slots[range.clone()].iter())
            .filter(|s| s.posted.load(Ordering::Relaxed) == 0)
            .count();
        if missing == 0 {
            return true;
        }
        if Instant::now() > deadline {
            println!("outbox: {missing} messages not posted within {DRAIN_DEADLINE:?}");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sorted latencies `to - from` of the messages in `range` that have both stamps.
fn spans(
    tracker: &Tracker,
    range: std::ops::Range<usize>,
    from: fn(&Slot) -> &AtomicU64,
    to: fn(&Slot) -> &AtomicU64,
) -> Vec<Duration> {
    let mut v: Vec<Duration> = (tracker.slots[range].iter())
        .filter_map(|s| {
            let (a, b) = (
                from(s).load(Ordering::Relaxed),
                to(s).load(Ordering::Relaxed),
            );
            (a != 0 && b != 0).then(|| Duration::from_nanos(b.saturating_sub(a)))
        })
        .collect();
    v.sort();
    v
}

fn report(label: &str, tracker: &Tracker, range: std::ops::Range<usize>) -> Duration {
    let decided = spans(tracker, range.clone(), |s| &s.due, |s| &s.posted);
    let committed = spans(tracker, range.clone(), |s| &s.committed, |s| &s.posted);
    let insert = spans(tracker, range.clone(), |s| &s.due, |s| &s.committed);
    println!(
        "{label}: {} messages, {} posted",
        range.len(),
        decided.len()
    );
    println!("{label}: decided -> posted   {}", dist(&decided));
    println!("{label}: committed -> posted {}", dist(&committed));
    println!(
        "{label}: decided -> committed (the producer's insert) {}",
        dist(&insert)
    );
    pct(&decided, 0.99)
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let rate: f64 = knob("OUTBOX_RATE", if bench { 100.0 } else { 50.0 });
    let secs: f64 = knob("OUTBOX_SECS", if bench { 30.0 } else { 2.0 });
    let channels: usize = knob("OUTBOX_CHANNELS", 100usize).max(1);
    let workers: usize = knob("OUTBOX_WORKERS", 1usize).max(1);
    let server: String = knob(
        "OPSBOT_BENCH_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432".to_owned(),
    );
    let warmup = rate.round() as usize;
    let total = warmup + (rate * secs).round() as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let name = format!("outbox_bench_{}", uuid::Uuid::new_v4().simple());
    let ok = rt.block_on(async {
        let url = fresh_database(&server, &name).await;
        let ok = run(&url, rate, channels, warmup, total, workers).await;
        drop_database(&server, &name).await;
        ok
    });
    if !ok {
        std::process::exit(1);
    }
}

async fn run(
    url: &str,
    rate: f64,
    channels: usize,
    warmup: usize,
    total: usize,
    workers: usize,
) -> bool {
    let store = PostgresStore::connect(url, 8, None)
        .await
        .expect("connect the bench database");
    let store = Arc::new(Timed::new(Arc::new(store)));
    let tracker = Arc::new(Tracker {
        t0: Instant::now(),
        slots: (0..total).map(|_| Slot::default()).collect(),
        posted: AtomicUsize::new(0),
        duplicates: AtomicUsize::new(0),
        strangers: AtomicUsize::new(0),
        enqueue_errors: AtomicUsize::new(0),
    });
    let signal = OutboxSignal::default();
    let deliverer = Deliverer::new(
        store.clone(),
        Arc::new(FakeChat(tracker.clone())),
        Arc::new(SystemClock),
        signal.clone(),
        Arc::new(Metrics::new()),
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(deliverer.run(Arc::new(Liveness::default()), shutdown.clone()));
    let producer = Arc::new(Producer {
        store: store.clone(),
        signal,
        tracker: tracker.clone(),
        channels,
        wake: knob("OUTBOX_WAKE", 1u8) != 0,
    });
    println!(
        "outbox: Postgres, {} CPUs, {workers} tokio worker(s); {rate:.0} messages/s over {channels} channels, {} measured after {warmup} of warm-up; {}; load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        total - warmup,
        if producer.wake {
            "each queued message wakes the deliverer"
        } else {
            "no wake-ups (producers in another replica): the deliverer polls"
        },
        timed::loadavg()
    );
    offer(&producer, 0..warmup, rate).await;
    let warm = drain(&tracker, 0..warmup).await;
    report("warm-up", &tracker, 0..warmup);
    store.reset();
    offer(&producer, warmup..total, rate).await;
    let drained = drain(&tracker, warmup..total).await;
    let p99 = report("measured", &tracker, warmup..total);
    store.print("measured");
    shutdown.cancel();
    let _ = running.await;
    let dup = tracker.duplicates.load(Ordering::Relaxed);
    let strangers = tracker.strangers.load(Ordering::Relaxed);
    let errors = tracker.enqueue_errors.load(Ordering::Relaxed);
    println!("outbox: posted twice {dup}, unknown posts {strangers}, enqueue errors {errors}");
    let correct = warm && drained && dup == 0 && strangers == 0 && errors == 0;
    println!(
        "outbox: target decided -> posted p99 < {:.0} ms at {rate:.0}/s over {channels} channels: {} (p99 {:.2} ms); every message posted once: {}; load average at the end {}",
        ms(TARGET_P99),
        if p99 < TARGET_P99 { "MET" } else { "MISSED" },
        ms(p99),
        if correct { "yes" } else { "NO" },
        timed::loadavg()
    );
    correct
}
