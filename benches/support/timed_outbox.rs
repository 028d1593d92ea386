//! For `benches/outbox.rs`: an `OutboxStore` that passes every call to the real one and
//! times the calls the deliverer and the producers make (claims with how many rows each
//! took, id writes, inserts), so a latency tail can be traced to a statement or to waiting
//! between passes; and the percentile helpers the report uses.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use futures_util::future::BoxFuture;
use opsbot::ports::{
    Claimed, OutboxDepth, OutboxId, OutboxSignal, OutboxStore, Queued, StoreError,
};

#[derive(Default)]
struct Calls {
    claims: Vec<(Duration, usize)>,
    /// Gaps between the end of one claim and the start of the next.
    idle: Vec<Duration>,
    last_claim_end: Option<Instant>,
    marks: Vec<Duration>,
    inserts: Vec<Duration>,
}

pub struct Timed {
    inner: Arc<dyn OutboxStore>,
    calls: Mutex<Calls>,
}

impl Timed {
    pub fn new(inner: Arc<dyn OutboxStore>) -> Self {
        Self {
            inner,
            calls: Mutex::default(),
        }
    }

    /// Forgets what was timed so far (the warm-up).
    pub fn reset(&self) {
        *self.calls.lock().unwrap() = Calls::default();
    }

    pub fn print(&self, label: &str) {
        let c = self.calls.lock().unwrap();
        let mut took: Vec<Duration> = c.claims.iter().map(|(d, _)| *d).collect();
        took.sort();
        let rows: usize = c.claims.iter().map(|(_, n)| n).sum();
        let empty = c.claims.iter().filter(|(_, n)| *n == 0).count();
        let most = c.claims.iter().map(|(_, n)| *n).max().unwrap_or(0);
        println!(
            "{label}: deliverer claims {} ({empty} empty), {rows} rows, at most {most} in one; claim statement {}",
            c.claims.len(),
            dist(&took)
        );
        let mut idle = c.idle.clone();
        idle.sort();
        println!("{label}: deliverer between claims {}", dist(&idle));
        let mut marks = c.marks.clone();
        marks.sort();
        println!(
            "{label}: mark_delivered calls {} (one per message would be {rows}): {}",
            marks.len(),
            dist(&marks)
        );
        let mut inserts = c.inserts.clone();
        inserts.sort();
        println!("{label}: producer inserts {}", dist(&inserts));
    }
}

#[async_trait]
impl OutboxStore for Timed {
    async fn enqueue(&self, queued: &Queued, now: DateTime<Utc>) -> Result<OutboxId, StoreError> {
        let start = Instant::now();
        let r = self.inner.enqueue(queued, now).await;
        self.calls.lock().unwrap().inserts.push(start.elapsed());
        r
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        hold: Duration,
        limit: u32,
    ) -> Result<Vec<Claimed>, StoreError> {
        let start = Instant::now();
        let r = self.inner.claim_due(now, hold, limit).await;
        let end = Instant::now();
        let mut c = self.calls.lock().unwrap();
        if let Some(last) = c.last_claim_end {
            c.idle.push(start.saturating_duration_since(last));
        }
        c.last_claim_end = Some(end);
        let rows = r.as_ref().map_or(0, Vec::len);
        c.claims.push((end - start, rows));
        r
    }

    async fn mark_delivered(&self, id: OutboxId, message_id: &str) -> Result<bool, StoreError> {
        let start = Instant::now();
        let r = self.inner.mark_delivered(id, message_id).await;
        self.calls.lock().unwrap().marks.push(start.elapsed());
        r
    }

    async fn retry_at(
        &self,
        id: OutboxId,
        at: DateTime<Utc>,
        error: &str,
    ) -> Result<bool, StoreError> {
        self.inner.retry_at(id, at, error).await
    }

    async fn give_up(&self, id: OutboxId, error: &str) -> Result<bool, StoreError> {
        self.inner.give_up(id, error).await
    }

    async fn outbox_depth(&self) -> Result<OutboxDepth, StoreError> {
        self.inner.outbox_depth().await
    }

    async fn forget_outbox_before(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.forget_outbox_before(before).await
    }

    fn watch_queued(&self, signal: OutboxSignal) -> Option<BoxFuture<'static, ()>> {
        self.inner.watch_queued(signal)
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile of sorted values.
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

pub fn dist(sorted: &[Duration]) -> String {
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n {})",
        ms(pct(sorted, 0.50)),
        ms(pct(sorted, 0.90)),
        ms(pct(sorted, 0.99)),
        ms(sorted.last().copied().unwrap_or_default()),
        sorted.len()
    )
}

/// `/proc/loadavg`'s 1/5/15-minute averages: other work on the machine skews the numbers.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}
