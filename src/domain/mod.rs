//! Pure domain types shared by every layer: who is asking (identities, roles, people),
//! what they sent (inbound events), human-friendly durations and rate quotas, and the
//! hash-chained audit record. Nothing here performs I/O.

#[macro_use]
mod string_enum;

mod action;
mod alert;
mod audit;
mod emoji;
mod escalation;
mod event;
mod identity;
mod ids;
mod incident;
mod links;
mod mention;
mod oncall;
mod run;
mod severity;
mod text;
mod time;
mod timetable;

pub use action::{ActionKind, BoundArgs, exec_location};
pub use alert::{
    Alert, AlertSource, AlertStatus, IncomingAlert, Matcher, Silence, group_key_labels,
};
pub use audit::{
    AuditEntry, AuditRecord, ChainBreak, ChainBreakKind, ChainVerifier, GENESIS_HASH, Outcome,
    chain_hash,
};
pub use emoji::normalize_emoji;
pub use escalation::{
    DueStep, EscalationPolicy, EscalationRecord, EscalationStep, EscalationSubject, Notify,
    SentPage, StopReason, group_stop_reason,
};
pub use event::{ChannelRef, EventPayload, InboundEvent, Reply, RequestId, Visibility};
pub use identity::{Directory, Person, Platform, Requester, Role, UserRef};
pub use ids::{AlertId, IncidentId, RunId};
pub use incident::{Incident, IncidentStatus, TimelineEntry, TimelineKind};
pub use links::link_spans;
pub use mention::{Mention, MentionOf, Segment, segments};
pub use oncall::{Handoff, Layer, OnCall, Override, Schedule, Window, time_zone};
pub use run::{
    Gate, NewRun, Retry, Run, RunResult, RunState, StepRecord, StepState, Vote, VoteTally,
};
pub use severity::{AckTarget, Severity, SeverityLevel, SeverityScheme, UnknownSeverity};
pub use text::{clip, line_col};
pub use time::{HumanDuration, RateQuota, human_duration, parse_duration};
pub use timetable::{DEFAULT_GRACE, SlotDecision, SlotOutcome, Timetable};
