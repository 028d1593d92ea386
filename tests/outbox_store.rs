//! The outbox in the store, one suite run against both backends (SQLite on a temp file,
//! Postgres on a fresh schema per test, skipped with a reason when it is unreachable, a
//! failure with `CI=true`): claims, racing claimers, and the producers that queue a message
//! in the transaction that decides it (alert reminders, a request's decision and a run's
//! result).

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::Utc;
use opsbot::domain::{
    AlertSource, AlertStatus, IncomingAlert, NewRun, Platform, Run, RunId, RunResult, RunState,
    UserRef,
};
use opsbot::ports::{
    ChatAction, Claimed, Clock, FakeClock, OutboundMessage, OutboundTarget, OutboxDepth, OutboxId,
    OutboxSignal, OutboxStore, Priority, Queued, Store, untold,
};
use opsbot::store::PostgresStore;

use support::{Backend, on_both_backends};

on_both_backends! {
    the_outbox_hands_each_message_to_one_claim => sqlite_the_outbox_hands_each_message_to_one_claim, postgres_the_outbox_hands_each_message_to_one_claim;
    claims_racing_for_the_outbox_share_no_row => sqlite_claims_racing_for_the_outbox_share_no_row, postgres_claims_racing_for_the_outbox_share_no_row;
    an_alert_reminder_is_queued_with_its_claim => sqlite_an_alert_reminder_is_queued_with_its_claim, postgres_an_alert_reminder_is_queued_with_its_claim;
    a_queued_edit_supersedes_the_pending_edits_of_its_message => sqlite_a_queued_edit_supersedes_the_pending_edits_of_its_message, postgres_a_queued_edit_supersedes_the_pending_edits_of_its_message;
    a_message_queued_by_another_replica_wakes_the_deliverer => sqlite_a_message_queued_by_another_replica_wakes_the_deliverer, postgres_a_message_queued_by_another_replica_wakes_the_deliverer;
    a_runs_result_commits_with_its_final_transition => sqlite_a_runs_result_commits_with_its_final_transition, postgres_a_runs_result_commits_with_its_final_transition;
    a_requests_decision_queues_its_edit_once => sqlite_a_requests_decision_queues_its_edit_once, postgres_a_requests_decision_queues_its_edit_once;
    a_request_decided_before_its_message_is_bound_is_told_by_the_binding => sqlite_a_request_decided_before_its_message_is_bound_is_told_by_the_binding, postgres_a_request_decided_before_its_message_is_bound_is_told_by_the_binding;
}

const HOLD: std::time::Duration = std::time::Duration::from_secs(60);

fn queued(channel: &str, text: &str) -> Queued {
    Queued {
        to: OutboundTarget {
            platform: Platform::Slack,
            channel_id: channel.into(),
            thread: Some("1.2".into()),
        },
        message: OutboundMessage::text(text),
        edit_of: None,
        binds_run: None,
    }
}

async fn claim(store: &dyn Store, clock: &FakeClock) -> Vec<Claimed> {
    store.claim_due(clock.now(), HOLD, 10).await.expect("claim")
}

async fn the_outbox_hands_each_message_to_one_claim(b: &Backend) {
    let store = b.store();
    let store = &*store;
    let clock = FakeClock::new(Utc::now());
    let routine = store
        .enqueue(&queued("C1", "first"), clock.now())
        .await
        .unwrap();
    let action = ChatAction {
        label: "Ack #3".into(),
        command: "/ack 3".into(),
        danger: false,
    };
    let mut urgent = queued("C2", "urgent");
    urgent.message = urgent.message.urgent().with_actions(vec![action.clone()]);
    let urgent = store.enqueue(&urgent, clock.now()).await.unwrap();
    let depth = store.outbox_depth().await.unwrap();
    assert_eq!(depth.pending, 2);
    assert_eq!(
        depth.oldest.map(|t| t.timestamp_micros()),
        Some(clock.now().timestamp_micros())
    );

    let claimed = claim(store, &clock).await;
    let ids: Vec<OutboxId> = claimed.iter().map(|c| c.id).collect();
    assert_eq!(ids, [urgent, routine], "urgent first, then oldest");
    let first = &claimed[0];
    assert_eq!(first.attempts, 1);
    assert_eq!(first.queued.to.channel_id, "C2");
    assert_eq!(first.queued.to.thread.as_deref(), Some("1.2"));
    assert_eq!(first.queued.message.text, "urgent");
    assert_eq!(first.queued.message.priority, Priority::Urgent);
    assert_eq!(first.queued.message.actions, [action]);
    assert!(
        claim(store, &clock).await.is_empty(),
        "held by the first claim"
    );

    assert!(store.mark_delivered(urgent, "ts-1").await.unwrap());
    assert!(
        !store.mark_delivered(urgent, "ts-2").await.unwrap(),
        "already done"
    );
    let later = clock.now() + chrono::Duration::seconds(5);
    assert!(store.retry_at(routine, later, "503").await.unwrap());
    clock.advance(std::time::Duration::from_secs(4));
    assert!(claim(store, &clock).await.is_empty(), "not due yet");
    clock.advance(std::time::Duration::from_secs(1));
    let again = claim(store, &clock).await;
    assert_eq!(
        again.iter().map(|c| (c.id, c.attempts)).collect::<Vec<_>>(),
        [(routine, 2)]
    );
    assert!(store.give_up(routine, "channel_not_found").await.unwrap());
    assert!(
        !store.retry_at(routine, later, "x").await.unwrap(),
        "given up stays given up"
    );
    clock.advance(HOLD * 2);
    assert!(claim(store, &clock).await.is_empty(), "nothing pending");
    assert_eq!(store.outbox_depth().await.unwrap(), OutboxDepth::default());
    assert_eq!(store.forget_outbox_before(clock.now()).await.unwrap(), 2);
}

async fn claims_racing_for_the_outbox_share_no_row(b: &Backend) {
    let store = b.store();
    let clock = Arc::new(FakeClock::new(Utc::now()));
    for i in 0..40 {
        store
            .enqueue(&queued("C1", &format!("n{i}")), clock.now())
            .await
            .unwrap();
    }
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (store, clock) = (store.clone(), clock.clone());
        tasks.spawn(async move { claim(&*store, &clock).await });
    }
    let mut seen = Vec::new();
    while let Some(claimed) = tasks.join_next().await {
        seen.extend(claimed.expect("claim task").into_iter().map(|c| c.id));
    }
    // Eight claimers of ten rows each can take all forty in the race: on Postgres a claimer
    // skips rows another one has locked and goes on to the next (`SKIP LOCKED`), on SQLite
    // they take turns. None is left for a later pass.
    assert!(
        claim(&*store, &clock).await.is_empty(),
        "rows left over by the race: {seen:?}"
    );
    let distinct: BTreeSet<OutboxId> = seen.iter().copied().collect();
    assert_eq!(distinct.len(), seen.len(), "a row claimed twice: {seen:?}");
    assert_eq!(seen.len(), 40, "every row claimed once");
}

fn critical(fingerprint: &str) -> IncomingAlert {
    IncomingAlert {
        source: AlertSource::Webhook,
        fingerprint: fingerprint.into(),
        group_key: "g".into(),
        status: AlertStatus::Firing,
        labels: [("severity".to_owned(), "critical".to_owned())].into(),
        annotations: Default::default(),
        starts_at: Utc::now(),
        ends_at: None,
        generator_url: None,
    }
}

/// The claim and its messages commit together: the winner's messages are queued, a claim
/// that lost (another replica reminded first) queues nothing.
async fn an_alert_reminder_is_queued_with_its_claim(b: &Backend) {
    let store = b.store();
    let clock = FakeClock::new(Utc::now());
    store
        .ingest_alerts(&[critical("f1")], clock.now())
        .await
        .unwrap();
    clock.advance(std::time::Duration::from_secs(600));
    let due = store.alerts_due_reminder(clock.now()).await.unwrap();
    assert_eq!(due.len(), 1);
    let (alert, reminders) = (&due[0].0, due[0].1);
    assert_eq!(reminders, 0);
    let notices = [queued("C1", "⏰ Reminder 1"), queued("C2", "⏰ Reminder 1")];
    let remind = async |notices: &[Queued]| {
        (store.mark_alert_reminded(alert.id, reminders, clock.now(), notices))
            .await
            .unwrap()
    };
    assert!(remind(&notices).await, "the first claim wins");
    assert!(
        !remind(&notices[..1]).await,
        "a second claim of that reminder loses"
    );
    let claimed = claim(&*store, &clock).await;
    let to: Vec<&str> = (claimed.iter())
        .map(|c| c.queued.to.channel_id.as_str())
        .collect();
    assert_eq!(
        to,
        ["C1", "C2"],
        "queued once per channel, by the winner only"
    );
    assert!(
        (store.alerts_due_reminder(clock.now()).await.unwrap()).is_empty(),
        "reminded"
    );
}

/// Only the newest pending edit of a message is sent: queuing one retires the older pending
/// edits of that message (not those of another message, nor posts), and a claimed edit says
/// which message it replaces.
async fn a_queued_edit_supersedes_the_pending_edits_of_its_message(b: &Backend) {
    let store = b.store();
    let clock = FakeClock::new(Utc::now());
    let edit = |channel: &str, of: &str, text: &str| {
        let q = queued(channel, text);
        Queued::edit(q.to, of, q.message)
    };
    let enqueue = async |q: Queued| store.enqueue(&q, clock.now()).await.unwrap();
    enqueue(queued("C1", "a post")).await;
    enqueue(edit("C1", "m1", "approved")).await;
    enqueue(edit("C1", "m2", "other message")).await;
    enqueue(edit("C2", "m1", "same id, other channel")).await;
    let newest = enqueue(edit("C1", "m1", "ran")).await;
    assert_eq!(store.outbox_depth().await.unwrap().pending, 4);
    let claimed = claim(&*store, &clock).await;
    let texts: Vec<(&str, Option<&str>)> = (claimed.iter())
        .map(|c| (c.queued.message.text.as_str(), c.queued.edit_of.as_deref()))
        .collect();
    assert_eq!(
        texts,
        [
            ("a post", None),
            ("other message", Some("m2")),
            ("same id, other channel", Some("m1")),
            ("ran", Some("m1")),
        ]
    );
    assert_eq!(claimed[3].id, newest);
    // An edit queued while an older one is claimed (being sent) supersedes it too: the
    // older one's delivery is then not recorded, and the newer one is sent after it.
    let newer = enqueue(edit("C1", "m1", "finished")).await;
    assert!(!store.mark_delivered(newest, "m1").await.unwrap());
    let again = claim(&*store, &clock).await;
    assert_eq!(again.iter().map(|c| c.id).collect::<Vec<_>>(), [newer]);
}

/// Waits for `signal`; the deadline only keeps a broken watcher from hanging the suite.
async fn woken(signal: &OutboxSignal, what: &str) {
    tokio::time::timeout(std::time::Duration::from_secs(30), signal.woken())
        .await
        .unwrap_or_else(|_| panic!("never woken: {what}"));
}

async fn a_message_queued_by_another_replica_wakes_the_deliverer(b: &Backend) {
    let signal = OutboxSignal::default();
    let Some(schema) = b.schema() else {
        // One process has the file: what it queues, it signals itself.
        assert!(b.store().watch_queued(signal).is_none());
        return;
    };
    let watch = b
        .store()
        .watch_queued(signal.clone())
        .expect("Postgres watches");
    let watch = tokio::spawn(watch);
    woken(&signal, "listening").await;
    assert!(signal.take_heard().unnamed, "listening names no rows");
    let other = PostgresStore::connect(&support::postgres_url(), 2, Some(schema))
        .await
        .expect("connect the other replica's store");
    let id = other
        .enqueue(&queued("C1", "queued on a follower"), Utc::now())
        .await
        .unwrap();
    woken(&signal, "a row queued by the other store").await;
    // The notice names the row, so a deliverer that has claimed it already lets it pass.
    let heard = signal.take_heard();
    assert_eq!((heard.unnamed, heard.ids), (false, vec![id]));
    watch.abort();
    other.pool().close().await;
}

/// A Slack request for `/rollback service=api` in `COPS`, in `state`.
fn new_run(state: RunState, now: chrono::DateTime<Utc>) -> NewRun {
    NewRun {
        command: "rollback".into(),
        args: vec![("service".into(), "api".into())],
        rendered: "./act.sh api".into(),
        action_hash: "h".into(),
        requester: UserRef::new(Platform::Slack, "UALICE"),
        requester_name: "alice".into(),
        platform: Platform::Slack,
        channel_id: "COPS".into(),
        channel_name: "ops".into(),
        thread: None,
        approvals_needed: 1,
        state,
        break_glass: None,
        created_at: now,
        expires_at: now + chrono::Duration::minutes(10),
    }
}

/// What the router queues with a move (a result, or a retired request's edit), made from the
/// run as the store moved it: its state, the state it left and its message id at that moment.
fn told(run: &Run, was: RunState) -> Vec<Queued> {
    let to = OutboundTarget {
        platform: run.new.platform,
        channel_id: run.new.channel_id.clone(),
        thread: run.message_id.clone(),
    };
    let text = format!("#{} {was} -> {}", run.id, run.state);
    vec![Queued::post(to, OutboundMessage::text(text))]
}

/// The result of a run is queued only by the final transition that records it, in its
/// transaction: when the outbox cannot take it, the result is not recorded either (the run
/// stays running), and a second recording neither moves the run nor queues anything.
async fn a_runs_result_commits_with_its_final_transition(b: &Backend) {
    let store = b.store();
    let clock = FakeClock::new(Utc::now());
    let now = clock.now();
    let lease = now + chrono::Duration::minutes(1);
    let run = store
        .create_run(new_run(RunState::Approved, now), lease)
        .await
        .unwrap();
    store
        .set_run_message(run.id, "1700.1", now, &untold)
        .await
        .unwrap();
    let started = store.transition(
        run.id,
        RunState::Approved,
        RunState::Running,
        now,
        Some(lease),
    );
    assert!(started.await.unwrap());
    let result = RunResult {
        code: Some(0),
        duration: std::time::Duration::from_millis(1200),
        output: "rolled back api".into(),
        truncated: false,
    };
    let finish =
        async || (store.finish_run(run.id, RunState::Succeeded, &result, clock.now(), &told)).await;

    b.exec("ALTER TABLE outbox RENAME TO outbox_away")
        .await
        .expect("rename the outbox away");
    assert!(
        finish().await.is_err(),
        "the result's post could not be queued"
    );
    b.exec("ALTER TABLE outbox_away RENAME TO outbox")
        .await
        .expect("rename the outbox back");
    let stored = store.run(run.id).await.unwrap().unwrap();
    assert_eq!(stored.state, RunState::Running, "rolled back with its post");
    assert_eq!(stored.result, None);
    assert_eq!(store.outbox_depth().await.unwrap().pending, 0);

    assert!(finish().await.unwrap(), "recorded");
    assert!(!finish().await.unwrap(), "recorded once");
    let claimed = claim(&*store, &clock).await;
    let posts: Vec<_> = (claimed.iter())
        .map(|c| {
            (
                c.queued.message.text.as_str(),
                c.queued.to.thread.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        posts,
        [(
            format!("#{} running -> succeeded", run.id).as_str(),
            Some("1700.1")
        )],
        "one post, in reply to the request's message"
    );
    let stored = store.run(run.id).await.unwrap().unwrap();
    assert_eq!(stored.state, RunState::Succeeded);
    assert_eq!(stored.result, Some(result));
}

/// A decision on a pending request queues its message with it, from the run as the decision
/// found it (the message id bound by then), and only the decision that wins queues anything.
async fn a_requests_decision_queues_its_edit_once(b: &Backend) {
    let store = b.store();
    let clock = FakeClock::new(Utc::now());
    let now = clock.now();
    let run = store
        .create_run(new_run(RunState::Pending, now), now)
        .await
        .unwrap();
    store
        .set_run_message(run.id, "1700.2", now, &untold)
        .await
        .unwrap();
    let decide = async |to: RunState| {
        (store.transition_queuing(run.id, (RunState::Pending, to), now, None, &told))
            .await
            .unwrap()
    };
    assert!(decide(RunState::Denied).await, "the first decision wins");
    assert!(!decide(RunState::Approved).await, "a later one loses");
    let claimed = claim(&*store, &clock).await;
    let texts: Vec<_> = (claimed.iter())
        .map(|c| {
            (
                c.queued.message.text.as_str(),
                c.queued.to.thread.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        texts,
        [(
            format!("#{} pending -> denied", run.id).as_str(),
            Some("1700.2")
        )]
    );
    let stored = store.run(run.id).await.unwrap().unwrap();
    assert_eq!(stored.state, RunState::Denied);
}

/// A request decided before its message was bound: the decision had no message to edit, so
/// the binding queues the edit, in its own transaction, and a pending request's binding
/// queues nothing.
async fn a_request_decided_before_its_message_is_bound_is_told_by_the_binding(b: &Backend) {
    let store = b.store();
    let clock = FakeClock::new(Utc::now());
    let now = clock.now();
    // As `bind_message` does: a decided request's message is retired, a pending one's kept.
    let retire = |r: &Run, _: RunState| match r.state {
        RunState::Pending => Vec::new(),
        decided => {
            let Some(id) = r.message_id.clone() else {
                return Vec::new();
            };
            let to = OutboundTarget {
                platform: r.new.platform,
                channel_id: r.new.channel_id.clone(),
                thread: None,
            };
            vec![Queued::edit(
                to,
                &id,
                OutboundMessage::text(decided.to_string()),
            )]
        }
    };
    let new = || store.create_run(new_run(RunState::Pending, now), now);
    let (pending, run) = (new().await.unwrap(), new().await.unwrap());
    assert!(
        store
            .set_run_message(pending.id, "1700.5", now, &retire)
            .await
            .unwrap()
    );
    let denied = (RunState::Pending, RunState::Denied);
    let moved = store.transition_queuing(run.id, denied, now, None, &retire);
    assert!(moved.await.unwrap());
    assert!(
        claim(&*store, &clock).await.is_empty(),
        "nothing to edit yet"
    );
    assert!(
        store
            .set_run_message(run.id, "1700.6", now, &retire)
            .await
            .unwrap()
    );
    let claimed = claim(&*store, &clock).await;
    let edits: Vec<_> = (claimed.iter())
        .map(|c| (c.queued.edit_of.as_deref(), c.queued.message.text.as_str()))
        .collect();
    assert_eq!(edits, [(Some("1700.6"), "denied")]);
    let unknown = store.set_run_message(RunId(9999), "1700.7", now, &retire);
    assert!(!unknown.await.unwrap(), "no such run");
}
