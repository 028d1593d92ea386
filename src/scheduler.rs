//! The scheduler's loop, on the leader only (`app::leading`): every second it asks
//! `actions::schedules::Schedules` for the slots due now (each claimed in the store, so it
//! fires once across replicas and restarts; due times come from the `Clock` port, not
//! timers), and runs each claimed command slot through the router's normal pipeline as the
//! identity `schedule:NAME` (authorization, rate limits, approval, audit), in the router's
//! in-flight work. Its answer goes to the schedule's channel: an approval request is posted
//! at once and bound to its message (reactions must find it), as is a run of steps' answer
//! (its progress message, edited as the steps move); anything else is queued in the outbox.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::actions::schedules::{Fired, Work};
use crate::domain::{
    ChannelRef, EventPayload, InboundEvent, Person, Requester, RunId, UserRef, Visibility,
};
use crate::liveness::Liveness;
use crate::outbox::OutboxSignal;
use crate::ports::{
    ChatOutbound, Clock, OutboundError, OutboundMessage, OutboundTarget, Queued, Store,
};
use crate::router::{Response, Router};

/// How often due slots are looked for: a slot fires within this of its time.
pub const TICK: Duration = Duration::from_secs(1);

/// The period `/readyz` holds the scheduler to: a pass that builds the daily report waits
/// for every health check, which may take their timeouts, so a pass may take longer than
/// a [`TICK`] without anything being wrong.
const LIVENESS_PERIOD: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Scheduler {
    router: Arc<Router>,
    store: Arc<dyn Store>,
    outbound: Arc<dyn ChatOutbound>,
    clock: Arc<dyn Clock>,
    outbox: OutboxSignal,
}

impl Scheduler {
    pub fn new(
        router: Arc<Router>,
        store: Arc<dyn Store>,
        outbound: Arc<dyn ChatOutbound>,
        clock: Arc<dyn Clock>,
        outbox: OutboxSignal,
    ) -> Self {
        Self {
            router,
            store,
            outbound,
            clock,
            outbox,
        }
    }

    /// Claims the slots due now and starts each claimed command in the router's in-flight
    /// work (shutdown waits for it); returns how many started.
    pub async fn tick(&self) -> usize {
        let due = match self.router.schedules().take_due().await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the schedules' slots; will retry");
                return 0;
            }
        };
        if due.queued > 0 {
            self.outbox.wake();
        }
        let started = due.fired.len();
        for f in due.fired {
            let this = self.clone();
            self.router
                .in_flight()
                .spawn(async move { this.run(f).await });
        }
        started
    }

    /// Ticks every [`TICK`] until shutdown.
    pub async fn run_forever(self, liveness: Arc<Liveness>, shutdown: CancellationToken) {
        crate::periodic::every(TICK, &shutdown, || async {
            self.tick().await;
            liveness.tick("scheduler", LIVENESS_PERIOD);
        })
        .await;
    }

    /// Runs one claimed slot's command as `schedule:NAME` and delivers the answer.
    async fn run(&self, fired: Fired) {
        let Work::Command { roles, args, .. } = &fired.entry.work else {
            return;
        };
        let (name, to) = (&fired.entry.name, &fired.entry.target);
        let identity = format!("schedule:{name}");
        let user = UserRef::new(to.platform, identity.clone());
        let requester = Requester::Known {
            user: user.clone(),
            person: Arc::new(Person {
                name: identity,
                roles: roles.iter().cloned().collect(),
                page: None,
            }),
        };
        let text = EventPayload::Command(command_text(name, args));
        let mut ev = InboundEvent::new(user, ChannelRef::id_only(&to.channel_id), text);
        ev.received_at = self.clock.now();
        let response = self.router.handle_as(&ev, requester).await;
        tracing::info!(schedule = %name, slot = %fired.slot, request_id = %response.request_id, outcome = ?response.outcome, "scheduled run handled");
        self.deliver(to, response).await;
    }

    /// Posts an approval request, or the answer that becomes a run of steps' progress
    /// message, at once and binds it; queues any other answer.
    async fn deliver(&self, to: &OutboundTarget, response: Response) {
        let Some(message) = response.message() else {
            return;
        };
        let message = message.with_visibility(Visibility::Channel);
        match (response.pending_run, response.progress_run) {
            (Some(run), _) => self.post_request(to, run, &response, &message).await,
            (None, Some(run)) => self.post_progress(to, run, &response, message).await,
            (None, None) => self.queue(to, &response, message).await,
        }
    }

    async fn queue(&self, to: &OutboundTarget, response: &Response, message: OutboundMessage) {
        let queued = Queued::post(to.clone(), message);
        match self.store.enqueue(&queued, self.clock.now()).await {
            Ok(_) => self.outbox.wake(),
            Err(e) => {
                tracing::error!(request_id = %response.request_id, error = %e, "could not queue a scheduled run's answer")
            }
        }
    }

    /// A run of steps started by the schedule, as one started in chat: its answer (its steps)
    /// is posted and becomes its progress message, which each step's claim and end edit
    /// through the outbox; the result follows in reply. An answer that could not be posted
    /// is queued instead, so the channel still hears of the run (without progress edits).
    async fn post_progress(
        &self,
        to: &OutboundTarget,
        run: RunId,
        response: &Response,
        message: OutboundMessage,
    ) {
        let request_id = &response.request_id;
        match self.outbound.send(to, &message).await {
            Ok(id) => {
                if let Err(e) = self.router.bind_progress(run, &id).await {
                    tracing::warn!(%run, %request_id, error = %e, "could not make a scheduled run's answer its progress message");
                }
            }
            Err(e) => {
                tracing::warn!(%run, %request_id, error = %e, "could not post a scheduled run's progress message; queueing its answer");
                self.queue(to, response, message).await;
            }
        }
    }

    async fn post_request(
        &self,
        to: &OutboundTarget,
        run: RunId,
        response: &Response,
        message: &OutboundMessage,
    ) {
        let request_id = &response.request_id;
        match self.outbound.send(to, message).await {
            Ok(id) => {
                if let Err(e) = self.router.bind_message(run, &id).await {
                    tracing::error!(%run, error = %e, "could not bind a scheduled approval request; /approve still works");
                }
            }
            // Approvers could never see it: cancel it rather than let it wait for nobody.
            Err(OutboundError::NotInChannel(why)) => {
                let withdrawn = (self.router)
                    .withdraw_unposted(run, request_id.clone(), &why)
                    .await;
                tracing::warn!(%run, %request_id, reason = %why, withdrawn = ?withdrawn.ok(), "opsbot may not post a scheduled approval request in its channel");
            }
            Err(e) => {
                tracing::error!(%run, %request_id, error = %e, "could not post a scheduled approval request; /approve still works")
            }
        }
    }
}

/// `/name --arg "value" …`, each value quoted as the parser reads it back.
fn command_text(name: &str, args: &[(String, String)]) -> String {
    let mut text = format!("/{name}");
    for (arg, value) in args {
        let quoted = value.replace('\\', "\\\\").replace('"', "\\\"");
        text.push_str(&format!(" --{arg} \"{quoted}\""));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::parse::{Word, parse};

    #[test]
    fn arguments_survive_the_parser_whatever_they_hold() {
        let args = [
            ("a".to_owned(), r#"say "hi" \o/"#.to_owned()),
            ("b".to_owned(), "--not-a-flag".to_owned()),
        ];
        let parsed = parse(&command_text("backup", &args), "opsbot").unwrap();
        assert_eq!(parsed.name, "backup");
        assert_eq!(
            parsed.words,
            [
                Word::Flag {
                    name: "a".into(),
                    value: Some(r#"say "hi" \o/"#.into())
                },
                Word::Flag {
                    name: "b".into(),
                    value: Some("--not-a-flag".into())
                },
            ]
        );
    }
}
