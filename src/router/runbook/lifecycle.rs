//! What happens to requests around their decision: binding to the chat message, retiring a
//! decided request's buttons, and the sweep's part (expiry, interrupted runs).

use super::*;

impl RunbookService {
    /// Queues, in the outbox, an edit replacing the message of a request that is no longer
    /// pending (its buttons included) with what became of it, so nobody presses Approve on a
    /// request that was decided; the deliverer (on the leader) makes it, retrying as it does
    /// posts, and a newer edit of the message supersedes one still waiting. Queued in the
    /// background, after the decision is stored and answered: a store that refuses it is
    /// only logged. The console shows no buttons and is left alone.
    pub(super) fn retire_request(&self, run: &Run, outcome: &str) {
        if run.new.platform == Platform::Console {
            return;
        }
        let (to, message) = retired(run, outcome);
        let (store, outbox, id) = (self.store.clone(), self.outbox.clone(), run.id);
        let now = self.now();
        let bound = run.message_id.clone();
        self.in_flight.spawn(async move {
            // A request is bound to its message once, after it is posted. If it was not yet
            // when the command started, read it now: it may have been bound since (a typed
            // /approve can beat the request's own post). If it is bound later still,
            // `bind_message` retires it.
            let message_id = match bound {
                Some(bound) => Some(bound),
                None => match store.run(id).await {
                    Ok(run) => run.and_then(|r| r.message_id),
                    Err(e) => {
                        warn!(run = %id, error = %e, "could not load a decided request to update its message");
                        None
                    }
                },
            };
            let Some(message_id) = message_id else {
                return;
            };
            match store.enqueue(&Queued::edit(to, message_id, message), now).await {
                Ok(_) => outbox.wake(),
                Err(e) => {
                    warn!(run = %id, error = %e, "could not queue the update of a decided request's message")
                }
            }
        });
    }

    /// Records the chat message approvers react to, once the adapter has posted it.
    pub async fn bind_message(&self, run: RunId, message_id: &str) -> Result<(), StoreError> {
        self.store.set_run_message(run, message_id).await?;
        // Decided before its message was bound: nothing has retired the buttons yet.
        if let Some(run) = self.store.run(run).await?
            && run.state != RunState::Pending
        {
            self.retire_request(&run, &format!("{}.", run.state));
        }
        Ok(())
    }

    /// Expires pending requests past their deadline and marks requests whose process died
    /// `interrupted`; the store queues each notice in the outbox with the move it tells of,
    /// and they are returned too. Never re-runs anything.
    pub async fn sweep_runs(&self, now: DateTime<Utc>) -> Result<Vec<Notice>, StoreError> {
        let mut notices = Vec::new();
        let queued = |run: &Run, was: RunState| vec![interruption_notice(run, was).queued()];
        for (run, was) in self.store.interrupt_stale(now, &queued).await? {
            self.audit_interruption(&run, was, now).await;
            notices.push(interruption_notice(&run, was));
        }
        // An expired request's buttons are retired with its expiry, when its message is
        // bound; one bound later is retired by `bind_message`.
        let queued = |run: &Run, _: RunState| {
            let retire = (run.message_id.clone())
                .filter(|_| run.new.platform != Platform::Console)
                .map(|id| {
                    let (to, message) = retired(run, EXPIRED);
                    Queued::edit(to, id, message)
                });
            [expiry_notice(run).queued()]
                .into_iter()
                .chain(retire)
                .collect()
        };
        for run in self.store.expire_due(now, &queued).await? {
            notices.push(expiry_notice(&run));
        }
        Ok(notices)
    }
}

/// Where a decided request's message is and what it says once its buttons are gone.
fn retired(run: &Run, outcome: &str) -> (OutboundTarget, OutboundMessage) {
    let to = OutboundTarget {
        platform: run.new.platform,
        channel_id: run.new.channel_id.clone(),
        thread: run.new.thread.clone(),
    };
    let message = OutboundMessage::text(format!(
        "Request #{}: {} requested by {} — {outcome}\nWould run:\n```\n{}\n```",
        run.id,
        command_line(&run.new.command, &run.new.args),
        run.new.requester_name,
        run.new.rendered
    ));
    (to, message.with_visibility(Visibility::Channel))
}

/// What the channel is told about a run interrupted while in state `was`.
fn interruption_notice(run: &Run, was: RunState) -> Notice {
    let what = command_line(&run.new.command, &run.new.args);
    let text = if was == RunState::Running {
        format!(
            "⚠️ Request #{} ({what}) was interrupted: opsbot stopped while it was running, \
             and its process was stopped with it, so it may have done only part of its work. \
             It will not be re-run automatically; check the system and request it again if needed.",
            run.id
        )
    } else {
        format!(
            "⚠️ Request #{} ({what}) was interrupted: opsbot stopped after it was approved \
             and before it started, so nothing ran. Request it again if it is still needed.",
            run.id
        )
    };
    notice(run, text)
}

fn expiry_notice(run: &Run) -> Notice {
    let text = format!(
        "Request #{} ({}) expired without enough approvals; nothing ran.",
        run.id,
        command_line(&run.new.command, &run.new.args)
    );
    notice(run, text)
}

impl RunbookService {
    /// Cancels pending request `id` whose message could not be posted (`why`: the bot may not
    /// post in its channel), so it does not wait for approvals nobody can see; audited under
    /// the request id that created it. False when it was no longer pending.
    pub async fn withdraw_unposted(
        &self,
        id: RunId,
        request_id: RequestId,
        why: &str,
    ) -> Result<bool, StoreError> {
        let Some(run) = self.store.run(id).await? else {
            return Ok(false);
        };
        let now = self.now();
        let cancelled = self
            .store
            .transition(id, RunState::Pending, RunState::Cancelled, now, None)
            .await?;
        if cancelled {
            let detail = format!(
                "cancelled #{id}: the approval request could not be posted in the channel ({why}); nothing ran"
            );
            let entry = run_audit_entry(
                &run,
                request_id,
                "opsbot".into(),
                now,
                Outcome::Failed,
                detail,
            );
            self.store.append_audit(entry).await?;
        }
        Ok(cancelled)
    }

    /// The interruption goes in the audit log like the start it cuts short. Best effort: the
    /// state change is already stored, and a sweep must not stop at one audit failure.
    async fn audit_interruption(&self, run: &Run, was: RunState, now: DateTime<Utc>) {
        let detail = format!("run #{} interrupted while {was}: its lease lapsed", run.id);
        let actor = "opsbot:sweep".to_owned();
        let entry = run_audit_entry(run, RequestId::new(), actor, now, Outcome::Failed, detail);
        if let Err(e) = self.store.append_audit(entry).await {
            warn!(run = %run.id, error = %e, "could not audit an interrupted run");
        }
    }
}

fn notice(run: &Run, text: String) -> Notice {
    Notice {
        platform: run.new.platform,
        channel_id: run.new.channel_id.clone(),
        thread: run.new.thread.clone(),
        text,
        urgent: false,
    }
}
