//! Group commit for the audit log. Callers hand entries to one writer task, which commits
//! whatever has queued up in a single transaction and then answers each caller. Every
//! record is durable before its caller continues, yet the database sees few commits, and
//! a single writer per process keeps the hash chain simple (Postgres additionally takes
//! an advisory lock so several replicas extend one chain).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::SubsecRound;
use tokio::sync::{mpsc, oneshot};

use crate::domain::{AuditEntry, AuditRecord, GENESIS_HASH, chain_hash};
use crate::ports::StoreError;

/// Most records committed in one transaction.
pub const MAX_BATCH: usize = 512;

/// A backend's "append these entries to the chain in one transaction".
#[async_trait]
pub(crate) trait BatchWrite: Send + Sync + 'static {
    async fn write_batch(&self, entries: Vec<AuditEntry>) -> Result<Vec<AuditRecord>, StoreError>;
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
    pub fn spawn<W: BatchWrite>(writer: Arc<W>) -> Self {
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
