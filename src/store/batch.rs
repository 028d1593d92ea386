//! Group commit for the store's hot writes. Callers hand audit entries (and, separately,
//! alert deliveries) to one writer task each, which commits whatever has queued up at once
//! and then answers each caller. Every record is durable before its caller continues, yet
//! the database sees few commits; a single audit writer per process keeps the hash chain
//! simple (Postgres additionally takes an advisory lock so several replicas extend one
//! chain), and on SQLite every hot write goes through one connection, so they never wait
//! on each other's file lock (SQLite's busy handler sleeps for milliseconds at a time).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use tokio::sync::{mpsc, oneshot};

use crate::domain::{AuditEntry, AuditRecord, GENESIS_HASH, IncomingAlert, Platform, chain_hash};
use crate::ports::StoreError;

/// Most records committed in one transaction.
pub const MAX_BATCH: usize = 512;

/// Deliveries of alerts merged into one write.
const MAX_DELIVERIES: usize = 64;

/// A backend's writer: where the hot writes run, in the backend's own way.
#[async_trait]
pub(crate) trait BatchWrite: Send + Sync + 'static {
    /// Appends these entries to the chain in one transaction.
    async fn write_batch(&self, entries: Vec<AuditEntry>) -> Result<Vec<AuditRecord>, StoreError>;
    /// Stores `alerts` (distinct fingerprints, sorted) atomically.
    async fn ingest(&self, alerts: &[&IncomingAlert], now: DateTime<Utc>)
    -> Result<(), StoreError>;
    /// Whether concurrent alert deliveries are merged into one write. Not on Postgres:
    /// there they run side by side on several connections, and one writer halved intake
    /// (docs/benchmarks.md).
    fn merges_deliveries(&self) -> bool {
        true
    }
    /// Records a platform event id; false if it was recorded before.
    async fn first_delivery(
        &self,
        platform: Platform,
        event_id: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
}

/// Places `entries` after the chain head `(seq, hash)` (none: an empty log), assigning each
/// its seq and hash. Backends read the head and insert the result in one transaction.
pub(crate) fn extend_chain(
    head: Option<(i64, String)>,
    entries: Vec<AuditEntry>,
) -> Vec<AuditRecord> {
    let (mut seq, mut prev) = head.unwrap_or_else(|| (0, GENESIS_HASH.to_owned()));
    entries
        .into_iter()
        .map(|entry| {
            seq += 1;
            let hash = chain_hash(&prev, seq, &entry);
            let prev_hash = std::mem::replace(&mut prev, hash.clone());
            AuditRecord {
                seq,
                entry,
                prev_hash,
                hash,
            }
        })
        .collect()
}

type Waiter = oneshot::Sender<Result<AuditRecord, StoreError>>;

#[derive(Clone)]
pub(crate) struct AuditBatcher {
    tx: mpsc::Sender<(AuditEntry, Waiter)>,
}

impl AuditBatcher {
    pub fn spawn(writer: Arc<dyn BatchWrite>) -> Self {
        let (tx, mut rx) = mpsc::channel::<(AuditEntry, Waiter)>(MAX_BATCH * 8);
        tokio::spawn(async move {
            let mut queued = Vec::with_capacity(MAX_BATCH);
            while rx.recv_many(&mut queued, MAX_BATCH).await > 0 {
                let (entries, waiters): (Vec<AuditEntry>, Vec<Waiter>) = queued.drain(..).unzip();
                match writer.write_batch(entries).await {
                    Ok(records) => {
                        for (waiter, record) in waiters.into_iter().zip(records) {
                            let _ = waiter.send(Ok(record));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "audit batch commit failed");
                        let msg = e.to_string();
                        for waiter in waiters {
                            let _ = waiter.send(Err(StoreError::Unavailable(msg.clone())));
                        }
                    }
                }
            }
        });
        Self { tx }
    }

    pub async fn append(&self, mut entry: AuditEntry) -> Result<AuditRecord, StoreError> {
        sanitize(&mut entry);
        let (done, wait) = oneshot::channel();
        self.tx
            .send((entry, done))
            .await
            .map_err(|_| StoreError::Unavailable("audit writer stopped".into()))?;
        wait.await
            .map_err(|_| StoreError::Unavailable("audit writer stopped".into()))?
    }
}

type Delivery = (
    Vec<IncomingAlert>,
    DateTime<Utc>,
    oneshot::Sender<Result<(), StoreError>>,
);

/// Alert deliveries that arrive while one is being stored are stored together, in one
/// statement (per thousand alerts) and one commit.
#[derive(Clone)]
pub(crate) enum IngestBatcher {
    /// Deliveries queue for one writer task, which merges what has queued up.
    Merging(mpsc::Sender<Delivery>),
    /// Each delivery is written as it comes (see [`BatchWrite::merges_deliveries`]).
    Alone(Arc<dyn BatchWrite>),
}

impl IngestBatcher {
    pub fn spawn(writer: Arc<dyn BatchWrite>) -> Self {
        if !writer.merges_deliveries() {
            return Self::Alone(writer);
        }
        let (tx, mut rx) = mpsc::channel::<Delivery>(MAX_DELIVERIES * 4);
        tokio::spawn(async move {
            let mut queued = Vec::with_capacity(MAX_DELIVERIES);
            while rx.recv_many(&mut queued, MAX_DELIVERIES).await > 0 {
                store_deliveries(writer.as_ref(), std::mem::take(&mut queued)).await;
            }
        });
        Self::Merging(tx)
    }

    /// Stores `alerts`; returns once they are committed.
    pub async fn ingest(
        &self,
        alerts: Vec<IncomingAlert>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let tx = match self {
            Self::Alone(writer) => return writer.ingest(&sorted(alerts.iter()), now).await,
            Self::Merging(tx) => tx,
        };
        let stopped = || StoreError::Unavailable("alert writer stopped".into());
        let (done, wait) = oneshot::channel();
        tx.send((alerts, now, done)).await.map_err(|_| stopped())?;
        wait.await.map_err(|_| stopped())?
    }
}

/// Stores several deliveries in one write. If that fails, each is stored on its own, so a
/// delivery the database refuses fails only its own sender (who retries it), not the others.
async fn store_deliveries(writer: &dyn BatchWrite, deliveries: Vec<Delivery>) {
    if deliveries.len() > 1 {
        let now = deliveries.iter().map(|d| d.1).max().expect("not empty");
        let merged = sorted(deliveries.iter().flat_map(|d| d.0.iter()));
        match writer.ingest(&merged, now).await {
            Ok(()) => {
                for (_, _, done) in deliveries {
                    let _ = done.send(Ok(()));
                }
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "a merged alert write failed; storing each delivery alone")
            }
        }
    }
    for (alerts, now, done) in deliveries {
        let _ = done.send(writer.ingest(&sorted(alerts.iter()), now).await);
    }
}

/// One alert per fingerprint, the last delivered winning, in fingerprint order: a statement
/// may not update a row twice (Postgres), and a stable order keeps concurrent writers from
/// locking rows in opposite orders.
fn sorted<'a>(alerts: impl Iterator<Item = &'a IncomingAlert>) -> Vec<&'a IncomingAlert> {
    let mut last: HashMap<&str, &IncomingAlert> = HashMap::new();
    for a in alerts {
        last.insert(a.fingerprint.as_str(), a);
    }
    let mut alerts: Vec<&IncomingAlert> = last.into_values().collect();
    alerts.sort_unstable_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
    alerts
}

/// Control characters (NUL in particular, which Postgres rejects) would fail a whole batch;
/// they are replaced before hashing, so the stored text is exactly what the hash covers.
/// The timestamp is cut to the microseconds that are stored, so the record handed back
/// equals the one read back later.
fn sanitize(e: &mut AuditEntry) {
    e.at = e.at.trunc_subsecs(6);
    for field in [
        &mut e.actor,
        &mut e.channel,
        &mut e.command,
        &mut e.args,
        &mut e.detail,
    ] {
        if field.chars().any(|c| c.is_control()) {
            *field = field
                .chars()
                .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
                .collect();
        }
    }
}
