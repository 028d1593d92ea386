//! The audit record and its hash chain. Each record carries the hash of the one before it,
//! so altering or removing any stored record breaks the chain at a point `verify` can name.
//! Both store backends use these functions, so their chains are interchangeable.

use std::fmt;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::event::RequestId;

/// The hash the first record points back to.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

string_enum! {
    /// How a command attempt ended. Every attempt ends in exactly one of these.
    pub enum Outcome("outcome") {
        Ok = "ok", Denied = "denied", Limited = "limited", Invalid = "invalid", Failed = "failed",
    }
}

/// What happened, before the store has given it a place in the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    pub request_id: RequestId,
    /// Stored with microsecond precision; the hash covers exactly that.
    pub at: DateTime<Utc>,
    /// `platform:user_id`, never a display name.
    pub actor: String,
    /// `platform:channel_id`.
    pub channel: String,
    pub command: String,
    pub args: String,
    pub outcome: Outcome,
    pub detail: String,
}

/// A committed audit record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: i64,
    pub entry: AuditEntry,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash of record `seq` holding `entry`, chained to `prev_hash`.
/// Fields are length-prefixed so no two different records serialize alike.
pub fn chain_hash(prev_hash: &str, seq: i64, entry: &AuditEntry) -> String {
    let mut h = Sha256::new();
    let at = entry.at.timestamp_micros().to_string();
    let seq = seq.to_string();
    for field in [
        prev_hash,
        seq.as_str(),
        entry.request_id.as_str(),
        at.as_str(),
        entry.actor.as_str(),
        entry.channel.as_str(),
        entry.command.as_str(),
        entry.args.as_str(),
        entry.outcome.as_str(),
        entry.detail.as_str(),
    ] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Why the chain is broken at a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainBreakKind {
    /// The record's content no longer matches its hash.
    Altered,
    /// The record does not point at the one stored before it: records were removed or reordered.
    Missing { expected_seq: i64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainBreak {
    pub seq: i64,
    pub kind: ChainBreakKind,
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ChainBreakKind::Altered => write!(
                f,
                "record #{} was altered (its content does not match its hash)",
                self.seq
            ),
            ChainBreakKind::Missing { expected_seq } => write!(
                f,
                "record #{} does not follow the record before it: record(s) from #{} were removed",
                self.seq, expected_seq
            ),
        }
    }
}

/// Walks records in `seq` order and reports the first break.
#[derive(Debug)]
pub struct ChainVerifier {
    prev_hash: String,
    next_seq: i64,
    checked: u64,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            prev_hash: GENESIS_HASH.to_owned(),
            next_seq: 1,
            checked: 0,
        }
    }
}

impl ChainVerifier {
    pub fn check(&mut self, rec: &AuditRecord) -> Result<(), ChainBreak> {
        if rec.seq != self.next_seq || rec.prev_hash != self.prev_hash {
            // A record whose own hash is wrong was edited; otherwise something before it is gone.
            let kind = if chain_hash(&rec.prev_hash, rec.seq, &rec.entry) != rec.hash {
                ChainBreakKind::Altered
            } else {
                ChainBreakKind::Missing {
                    expected_seq: self.next_seq,
                }
            };
            return Err(ChainBreak { seq: rec.seq, kind });
        }
        if chain_hash(&rec.prev_hash, rec.seq, &rec.entry) != rec.hash {
            return Err(ChainBreak {
                seq: rec.seq,
                kind: ChainBreakKind::Altered,
            });
        }
        self.prev_hash = rec.hash.clone();
        self.next_seq = rec.seq + 1;
        self.checked += 1;
        Ok(())
    }

    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// Where the next check should start reading.
    pub fn last_seq(&self) -> i64 {
        self.next_seq - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u32) -> AuditEntry {
        AuditEntry {
            request_id: RequestId::new(),
            at: DateTime::from_timestamp_micros(1_700_000_000_000_000 + n as i64).unwrap(),
            actor: "console:alice".into(),
            channel: "console:ops".into(),
            command: "status".into(),
            args: String::new(),
            outcome: Outcome::Ok,
            detail: String::new(),
        }
    }

    fn chain(n: u32) -> Vec<AuditRecord> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|i| {
                let e = entry(i);
                let hash = chain_hash(&prev, i as i64, &e);
                let rec = AuditRecord {
                    seq: i as i64,
                    entry: e,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                rec
            })
            .collect()
    }

    fn first_break(recs: &[AuditRecord]) -> Option<ChainBreak> {
        let mut v = ChainVerifier::default();
        recs.iter().find_map(|r| v.check(r).err())
    }

    #[test]
    fn intact_chain_verifies() {
        assert_eq!(first_break(&chain(5)), None);
    }

    #[test]
    fn edited_record_is_named() {
        let mut recs = chain(5);
        recs[2].entry.outcome = Outcome::Denied;
        assert_eq!(
            first_break(&recs),
            Some(ChainBreak {
                seq: 3,
                kind: ChainBreakKind::Altered
            })
        );
    }

    #[test]
    fn removed_record_is_named() {
        let mut recs = chain(5);
        recs.remove(1);
        assert_eq!(
            first_break(&recs),
            Some(ChainBreak {
                seq: 3,
                kind: ChainBreakKind::Missing { expected_seq: 2 }
            })
        );
    }
}
