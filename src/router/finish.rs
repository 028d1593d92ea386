//! The single sink every attempt ends in: it settles the outcome, appends the audit record
//! (and withholds the answer if that fails), notes changes on the channel's incident
//! timeline, counts metrics, and chooses what the user sees. Internal error text never
//! reaches chat: it is logged with the request id, and the reply names only the id.

use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::domain::{AuditEntry, InboundEvent, Outcome, Reply, RequestId, RunId, Visibility};

use super::{Attempt, Done, Refusal, Response, Router, builtins, internal_error_text, on_timeline};

/// An attempt's outcome, the detail for the audit record, and the text to answer (none when
/// a repeated rate-limit hit is answered with silence).
struct Settled {
    outcome: Outcome,
    detail: String,
    text: Option<String>,
}

fn settle(request_id: &RequestId, result: Result<Done, Refusal>) -> Settled {
    let (outcome, detail, text) = match result {
        Ok(done) => (Outcome::Ok, done.detail, Some(done.text)),
        Err(Refusal::Invalid(m)) => (Outcome::Invalid, m.clone(), Some(m)),
        Err(Refusal::Denied(m)) => (Outcome::Denied, m.clone(), Some(m)),
        Err(Refusal::Limited { message, notify }) => {
            (Outcome::Limited, message.clone(), notify.then_some(message))
        }
        Err(Refusal::Unavailable(m)) => {
            let text = format!("{m} Nothing was run (request id {request_id}).");
            (Outcome::Failed, m, Some(text))
        }
        Err(Refusal::Failed(err)) => {
            error!(request_id = %request_id, error = format!("{err:#}"), "command failed");
            (
                Outcome::Failed,
                "internal error (see log)".to_owned(),
                Some(internal_error_text(request_id)),
            )
        }
    };
    Settled {
        outcome,
        detail,
        text,
    }
}

impl Router {
    /// The single sink: audits the attempt, logs failures with their cause chain, counts
    /// metrics, and chooses what the user sees.
    pub(super) async fn finish(
        &self,
        ev: &InboundEvent,
        request_id: RequestId,
        started: Instant,
        attempt: Attempt,
        result: Result<Done, Refusal>,
    ) -> Response {
        let pending_run = result.as_ref().ok().and_then(|d| d.pending_run);
        let ran = result.as_ref().ok().and_then(|d| d.ran);
        let progress = result.as_ref().is_ok_and(|d| d.progress);
        let settled = settle(&request_id, result);
        let entry = AuditEntry {
            request_id: request_id.clone(),
            at: self.deps.clock.now(),
            actor: ev.user.to_string(),
            channel: format!("{}:{}", ev.platform, ev.channel.id),
            command: attempt.command.clone(),
            args: attempt.args.clone(),
            outcome: settled.outcome,
            detail: settled.detail.clone(),
        };
        let (outcome, text) = self.audit(entry, settled.text, ran).await;
        if outcome == Outcome::Ok {
            self.note_on_timeline(ev, &attempt, &settled.detail).await;
        }
        self.observe(&attempt.command, outcome, started.elapsed());
        Response {
            outcome: Some(outcome),
            reply: text.map(|text| Reply {
                text,
                request_id: request_id.clone(),
                // Refusals and failures are the requester's business only.
                visibility: match outcome {
                    Outcome::Ok => attempt.visibility,
                    _ => Visibility::Requester,
                },
            }),
            request_id,
            pending_run: pending_run.filter(|_| outcome == Outcome::Ok),
            progress_run: ran.filter(|_| outcome == Outcome::Ok && progress),
        }
    }

    /// Appends the record. No unaudited answers: if that fails the outcome becomes `failed`
    /// and the answer says so (an action that already ran is still reported).
    async fn audit(
        &self,
        entry: AuditEntry,
        text: Option<String>,
        ran: Option<RunId>,
    ) -> (Outcome, Option<String>) {
        let (outcome, request_id) = (entry.outcome, entry.request_id.clone());
        let Err(e) = self.deps.store.append_audit(entry).await else {
            return (outcome, text);
        };
        error!(request_id = %request_id, error = format!("{:#}", anyhow::Error::new(e)), "audit append failed");
        self.deps.metrics.audit_append_failed();
        let text = match (ran, text) {
            // The action already started (its start is audited): report it, flag the gap.
            (Some(run), Some(result)) => format!(
                "{result}\n(#{run} started and its start is audited, but this answer could not be written to the audit log; request id {request_id}.)"
            ),
            _ => format!(
                "I could not record this request in the audit log, so I did not act on it (request id {request_id})."
            ),
        };
        (Outcome::Failed, Some(text))
    }

    /// A successful command that changes something goes on the channel's incident timeline.
    async fn note_on_timeline(&self, ev: &InboundEvent, attempt: &Attempt, detail: &str) {
        let is_runbook = self.deps.catalog.get(&attempt.command).is_some();
        if !on_timeline(&attempt.command, is_runbook) {
            return;
        }
        let args = if attempt.args.is_empty() {
            String::new()
        } else {
            format!(" {}", attempt.args)
        };
        let note = if detail.is_empty() {
            String::new()
        } else {
            format!(" ({detail})")
        };
        self.incidents
            .record_on_incident(ev, format!("/{}{args}{note}", attempt.command))
            .await;
    }

    /// Metrics and the log line, labelled by command (unknown names share one label).
    fn observe(&self, command: &str, outcome: Outcome, elapsed: Duration) {
        let known = builtins::find(command).is_some() || self.deps.catalog.get(command).is_some();
        let label = if known { command } else { "unknown" };
        self.deps.metrics.observe_command(label, outcome, elapsed);
        let elapsed_ms = elapsed.as_millis() as u64;
        match outcome {
            Outcome::Ok => {
                info!(command = label, outcome = %outcome, elapsed_ms, "command handled")
            }
            Outcome::Failed => {
                warn!(command = label, outcome = %outcome, elapsed_ms, "command failed")
            }
            Outcome::Denied | Outcome::Limited | Outcome::Invalid => {
                info!(command = label, outcome = %outcome, elapsed_ms, "command refused")
            }
        }
    }
}
