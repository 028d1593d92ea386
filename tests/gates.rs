//! Approval gates in the middle of a runbook's steps, and values steps publish: the run
//! waits at the gate (its progress shows ⏸), an approver's ✅ continues it after the gate
//! exactly once (never from the top, never by the requester), a denied or expired gate
//! rolls back, a gate outlives the process that opened it, and a runbook changed while it
//! waited cancels it.

mod support;

use std::sync::Arc;
use std::time::Duration;

use opsbot::domain::{EventPayload, Platform, RunId, RunState, StepState};
use opsbot::ports::{FakeClock, Store};
use support::{Outbound, RecordingOutbound, TestApp, person};

/// `/restore api`: prepare (publishes the backup id), a 1-of-M gate, restore with that id;
/// on failure, roll back. `restore_argv` lets a test change the file under a waiting gate.
fn restore_file(approval: &str, restore_argv: &str) -> String {
    format!(
        r#"
name = "restore"
summary = "Restore a service from its latest backup"
roles = ["deployer"]
[[args]]
name = "service"
kind = "choice"
choices = ["api"]
{approval}
[[steps]]
name = "prepare"
kind = "exec"
argv = ["./prepare.sh", "{{service}}"]
timeout = "10s"
publish = {{ name = "backup", regex = 'backup (\S+)', pattern = '^b-[0-9]+$' }}

[[steps]]
name = "approve"
kind = "approval"
approvals = 1
approver_roles = ["sre-lead"]
expires_after = "10m"

[[steps]]
name = "restore"
kind = "exec"
argv = {restore_argv}
timeout = "10s"

[[on_failure]]
name = "rollback"
kind = "exec"
argv = ["./rollback.sh", "{{backup}}"]
timeout = "10s"
"#
    )
}

const RESTORE: &str = r#"["./restore.sh", "{service}", "{backup}"]"#;
const PREPARE: &str = "#!/bin/sh\necho prepared >> prepare.log\necho backup b-42\n";
const RESTORE_SH: &str = "#!/bin/sh\necho \"$1 $2\" >> restore.log\necho restored\n";
const ROLLBACK: &str = "#!/bin/sh\necho \"rolled back $1\" >> rollback.log\n";

fn people() -> String {
    // alice could approve others' gates: she may not approve her own.
    person("alice", &["deployer", "sre-lead"], &["console:alice"])
        + &person("bob", &["sre-lead"], &["console:bob", "slack:UBOB"])
}

async fn app_on(
    store: Option<Arc<dyn Store>>,
    file: &str,
    clock: Option<Arc<FakeClock>>,
) -> TestApp {
    let mut builder = TestApp::builder()
        .clock(clock)
        .config(&people())
        .command("restore.toml", file)
        .script("prepare.sh", PREPARE)
        .script("restore.sh", RESTORE_SH)
        .script("rollback.sh", ROLLBACK);
    if let Some(store) = store {
        builder = builder.store(store);
    }
    builder.spawn().await
}

fn read(app: &TestApp, file: &str) -> String {
    std::fs::read_to_string(app.dir.path().join(file)).unwrap_or_default()
}

/// Alice's run stops at the gate, announcing the gate's request with the steps after it
/// as they will run (the published value filled in).
async fn opened(app: &TestApp) {
    let reply = app.reply("alice", "/restore api").await;
    assert!(
        reply.starts_with(
            "⏸ #1 /restore service=api is waiting at step approve for approval request #2:"
        ),
        "{reply}"
    );
    for line in [
        "✅ prepare (",
        "⏸ approve",
        "▫️ restore",
        "3. restore: ./restore.sh api b-42",
    ] {
        assert!(reply.contains(line), "{line:?} in {reply}");
    }
    let run = app.store.run(RunId(1)).await.unwrap().unwrap();
    assert_eq!(run.state, RunState::Waiting);
    let gate = app.store.run(RunId(2)).await.unwrap().unwrap();
    assert_eq!(
        (gate.state, gate.gate.map(|g| (g.run, g.step))),
        (RunState::Pending, Some((RunId(1), 1)))
    );
    // The console binds the answer to the gate's request, as an approval request's.
    app.router.bind_message(RunId(2), "2").await.unwrap();
}

/// `who` (a Slack user id) in channel COPS.
fn slack(who: &str, payload: EventPayload) -> opsbot::domain::InboundEvent {
    opsbot::domain::InboundEvent::new(
        opsbot::domain::UserRef::new(Platform::Slack, who),
        opsbot::domain::ChannelRef::id_only("COPS"),
        payload,
    )
}

async fn react(app: &TestApp, who: &str, emoji: &str, message: &str) -> String {
    let ev = support::event(
        who,
        "ops",
        EventPayload::Reaction {
            emoji: emoji.into(),
            message_id: message.into(),
            added: true,
        },
    );
    (app.router.handle(&ev).await.reply)
        .map(|r| r.text)
        .unwrap_or_default()
}

async fn gate_continues_after_approval(app: &TestApp) {
    opened(app).await;
    // Approving the waiting run by its own number approves its open gate.
    let own = app.reply("alice", "/approve 1").await;
    assert!(
        own.contains("you requested #2, so you cannot approve it"),
        "{own}"
    );
    let approved = react(app, "bob", "✅", "2").await;
    assert!(
        approved.starts_with("Approved by bob (1/1); run #1 continues after step 2"),
        "{approved}"
    );
    assert!(
        approved.contains("✅ #1 /restore service=api succeeded in"),
        "{approved}"
    );
    for line in ["✅ prepare (", "✅ approve (", "✅ restore ("] {
        assert!(approved.contains(line), "{line:?} in {approved}");
    }
    assert_eq!(
        read(app, "prepare.log"),
        "prepared\n",
        "the steps before the gate ran once"
    );
    assert_eq!(read(app, "restore.log"), "api b-42\n");
    let again = app.reply("bob", "/approve 2").await;
    assert!(again.contains("#2 already ran"), "{again}");
    let steps = app.store.run_steps(RunId(1)).await.unwrap();
    let seen: Vec<(&str, StepState, Option<&str>)> = (steps.iter())
        .map(|s| (s.name.as_str(), s.state, s.published.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            ("prepare", StepState::Succeeded, Some("b-42")),
            ("approve", StepState::Succeeded, None),
            ("restore", StepState::Succeeded, None),
        ]
    );
    assert_eq!(
        app.store.run(RunId(1)).await.unwrap().unwrap().state,
        RunState::Succeeded
    );
    assert_eq!(
        app.store.run(RunId(2)).await.unwrap().unwrap().state,
        RunState::Succeeded
    );
}

#[tokio::test]
async fn an_approval_continues_a_gated_run_after_the_gate_once() {
    let app = app_on(None, &restore_file("", RESTORE), None).await;
    gate_continues_after_approval(&app).await;
}

#[tokio::test]
async fn postgres_an_approval_continues_a_gated_run_after_the_gate_once() {
    let Some(schema) = support::fresh_postgres_schema().await else {
        return;
    };
    let url = support::postgres_schema_url(&schema);
    let app = TestApp::builder()
        .database(&url)
        .config(&people())
        .command("restore.toml", &restore_file("", RESTORE))
        .script("prepare.sh", PREPARE)
        .script("restore.sh", RESTORE_SH)
        .script("rollback.sh", ROLLBACK)
        .spawn()
        .await;
    gate_continues_after_approval(&app).await;
}

#[tokio::test]
async fn a_denied_gate_rolls_back_with_the_published_value() {
    let app = app_on(None, &restore_file("", RESTORE), None).await;
    opened(&app).await;
    let denied = react(&app, "bob", "❌", "2").await;
    assert!(
        denied.starts_with("Request #2 denied by bob; run #1 stops there."),
        "{denied}"
    );
    assert!(
        denied.contains("❌ #1 /restore service=api failed at step approve"),
        "{denied}"
    );
    for line in ["❌ approve (", "⏭️ restore", "↩ rollback ("] {
        assert!(denied.contains(line), "{line:?} in {denied}");
    }
    assert_eq!(read(&app, "rollback.log"), "rolled back b-42\n");
    assert_eq!(read(&app, "restore.log"), "");
    assert_eq!(
        app.store.run(RunId(1)).await.unwrap().unwrap().state,
        RunState::Failed
    );
    assert_eq!(
        app.store.run(RunId(2)).await.unwrap().unwrap().state,
        RunState::Denied
    );
}

#[tokio::test]
async fn an_expired_gate_rolls_back_and_a_waiting_run_is_never_interrupted() {
    let clock = Arc::new(FakeClock::new(chrono::Utc::now()));
    let app = app_on(None, &restore_file("", RESTORE), Some(clock.clone())).await;
    opened(&app).await;
    // Waiting holds no lease: past it, the sweep leaves the run alone.
    clock.advance(opsbot::router::runbook::LEASE * 2);
    assert!(app.router.sweep().await.unwrap().is_empty());
    assert_eq!(
        app.store.run(RunId(1)).await.unwrap().unwrap().state,
        RunState::Waiting
    );
    clock.advance(Duration::from_secs(600));
    let notices = app.router.sweep().await.unwrap();
    assert_eq!(notices.len(), 1, "{notices:?}");
    app.wait_idle().await;
    assert_eq!(read(&app, "rollback.log"), "rolled back b-42\n");
    assert_eq!(
        app.store.run(RunId(1)).await.unwrap().unwrap().state,
        RunState::Failed
    );
    assert_eq!(
        app.store.run(RunId(2)).await.unwrap().unwrap().state,
        RunState::Expired
    );
}

/// Nothing of a waiting run runs in the process that opened its gate: another process on the
/// same store continues it on the approval; one whose runbook changed cancels it instead.
#[tokio::test]
async fn another_process_continues_a_gate_and_a_changed_runbook_cancels_it() {
    let first = app_on(None, &restore_file("", RESTORE), None).await;
    opened(&first).await;
    let store = first.store.clone();
    let next = app_on(Some(store.clone()), &restore_file("", RESTORE), None).await;
    let approved = react(&next, "bob", "✅", "2").await;
    assert!(
        approved.contains("✅ #1 /restore service=api succeeded"),
        "{approved}"
    );
    assert_eq!(read(&next, "restore.log"), "api b-42\n");
    assert_eq!(read(&first, "restore.log"), "");

    let first = app_on(None, &restore_file("", RESTORE), None).await;
    opened(&first).await;
    let changed = r#"["./restore.sh", "--force", "{service}", "{backup}"]"#;
    let other = app_on(Some(first.store.clone()), &restore_file("", changed), None).await;
    let refused = react(&other, "bob", "✅", "2").await;
    assert!(
        refused.contains("/restore changed since request #2 was made, so run #1 stops here"),
        "{refused}"
    );
    let state = async |id| first.store.run(RunId(id)).await.unwrap().unwrap().state;
    assert_eq!(state(1).await, RunState::Cancelled);
    assert_eq!(state(2).await, RunState::Cancelled);
    assert_eq!(read(&other, "restore.log"), "");
}

/// On Slack, an approved run reaches the gate in the background: the gate's request is
/// posted (with buttons) and bound to its message when delivered, the progress shows ⏸,
/// and bob's ✅ on it continues the run, whose result is posted.
#[tokio::test]
async fn on_slack_a_gate_is_posted_and_a_reaction_on_it_continues_the_run() {
    let chat = Arc::new(RecordingOutbound::default());
    let approval =
        "[approval]\napprovals = 1\napprover_roles = [\"sre-lead\"]\nexpires_after = \"10m\"\n";
    let app = TestApp::builder()
        .config(&support::deployer_and_lead("slack:UALICE", "slack:UBOB"))
        .command("restore.toml", &restore_file(approval, RESTORE))
        .script("prepare.sh", PREPARE)
        .script("restore.sh", RESTORE_SH)
        .script("rollback.sh", ROLLBACK)
        .outbound(chat.clone())
        .spawn()
        .await;
    let say = async |who: &str, payload: EventPayload| {
        (app.router.handle(&slack(who, payload)).await.reply)
            .map(|r| r.text)
            .unwrap_or_default()
    };
    say("UALICE", EventPayload::Command("/restore api".into())).await;
    app.router.bind_message(RunId(1), "1700.1").await.unwrap();
    say("UBOB", EventPayload::Command("/approve 1".into())).await;
    let gate_post =
        |m: &Outbound| matches!(m, Outbound::Post { text, .. } if text.starts_with("⏸ Request #2"));
    let log = chat
        .wait_until("the gate's request", |log| log.iter().any(gate_post))
        .await;
    let Some(Outbound::Post { id, text, .. }) = log.iter().find(|m| gate_post(m)).cloned() else {
        unreachable!()
    };
    assert!(
        text.contains("needs 1 approval(s) from sre-lead, not alice"),
        "{text}"
    );
    assert_eq!(chat.buttons_on(&id), ["/approve 2", "/deny 2"]);
    support::eventually("the gate bound to its message", support::WAIT, async || {
        let gate = app.store.run(RunId(2)).await.unwrap().unwrap();
        gate.message_id.as_deref() == Some(id.as_str())
    })
    .await;
    let paused = |m: &Outbound| matches!(m, Outbound::Edit { id, text, .. } if id == "1700.1" && text.contains("⏸ approve"));
    chat.wait_until("the progress at the gate", |log| log.iter().any(paused))
        .await;

    let reacted = say(
        "UBOB",
        EventPayload::Reaction {
            emoji: "✅".into(),
            message_id: id.clone(),
            added: true,
        },
    )
    .await;
    assert!(
        reacted.starts_with("Approved by bob (1/1); run #1 continues"),
        "{reacted}"
    );
    let result =
        |m: &Outbound| matches!(m, Outbound::Post { text, .. } if text.contains("succeeded in"));
    chat.wait_until("the result", |log| log.iter().any(result))
        .await;
    app.wait_idle().await;
    assert_eq!(read(&app, "restore.log"), "api b-42\n");
    assert_eq!(read(&app, "prepare.log"), "prepared\n");
    support::eventually("the gate's buttons retired", support::WAIT, async || {
        chat.buttons_on(&id).is_empty()
    })
    .await;
}

fn catalog_errors(src: &str) -> String {
    let sources = vec![(std::path::PathBuf::from("g.toml"), src.to_owned())];
    match opsbot::catalog::Catalog::from_sources(&sources, &[]) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn templates_may_use_only_values_published_earlier() {
    let file = restore_file("", RESTORE);
    assert_eq!(catalog_errors(&file), "");
    // The restore step moved before the step publishing its value.
    let early = file.replace(
        "argv = [\"./prepare.sh\", \"{service}\"]",
        "argv = [\"./prepare.sh\", \"{backup}\"]",
    );
    assert_eq!(
        catalog_errors(&early),
        "g.toml:10: step \"prepare\": argv uses {backup} but no argument (or value published by an earlier step) has that name"
    );
    let no_group = file.replace(r"'backup (\S+)'", r"'backup \S+'");
    assert_eq!(
        catalog_errors(&no_group),
        "g.toml:10: step \"prepare\": publish \"backup\": regex needs a capture group (the value)"
    );
    let gate_in_rollback = format!(
        "{file}\n[[on_failure]]\nname = \"ask\"\nkind = \"approval\"\napprover_roles = [\"x\"]\nexpires_after = \"1m\"\n"
    );
    assert!(
        catalog_errors(&gate_in_rollback).contains(
            "step \"ask\": an on_failure step neither publishes values nor waits for approval"
        ),
        "{}",
        catalog_errors(&gate_in_rollback)
    );
    let no_roles = file.replace("approver_roles = [\"sre-lead\"]\n", "");
    assert_eq!(
        catalog_errors(&no_roles),
        "g.toml:17: step \"approve\": kind approval needs approver_roles naming at least one role"
    );
}

/// `/cancel` of a run waiting at its gate stops it there; with no `on_cancel`, nothing more
/// runs (not even the rollback steps).
#[tokio::test]
async fn cancel_of_a_waiting_run_stops_it_at_its_gate() {
    let app = app_on(None, &restore_file("", RESTORE), None).await;
    opened(&app).await;
    let not_hers = app.reply("bob", "/cancel 1").await;
    assert!(
        not_hers.contains("only alice (who requested #1) can cancel it"),
        "{not_hers}"
    );
    let cancelled = app.reply("alice", "/cancel 1").await;
    assert_eq!(
        cancelled,
        "Run #1 cancelled by alice at its gate (request #2)."
    );
    let state = async |id| app.store.run(RunId(id)).await.unwrap().unwrap().state;
    assert_eq!(state(1).await, RunState::Cancelled);
    assert_eq!(state(2).await, RunState::Cancelled);
    assert_eq!(read(&app, "rollback.log"), "");
    let late = react(&app, "bob", "✅", "2").await;
    assert!(late.contains("#2 was cancelled"), "{late}");
}

/// `/cancel` of a running run of steps stops it within its step, killing the processes the
/// step started, runs no later step, and rolls back because the file says `on_cancel`.
#[tokio::test]
async fn cancel_stops_a_running_step_kills_its_processes_and_rolls_back() {
    let file = r#"
name = "drain"
summary = "Drain a queue"
roles = ["deployer"]
on_cancel = "rollback"
[[steps]]
name = "drain"
kind = "exec"
argv = ["./drain.sh"]
timeout = "60s"
[[steps]]
name = "after"
kind = "exec"
argv = ["./after.sh"]
timeout = "5s"
[[on_failure]]
name = "scale-back"
kind = "exec"
argv = ["./rollback.sh", "x"]
timeout = "5s"
"#;
    let app = Arc::new(
        TestApp::builder()
            .config(&people())
            .command("drain.toml", file)
            .script(
                "drain.sh",
                "#!/bin/sh\nsleep 60 &\necho $! > child.pid\nsleep 60\n",
            )
            .script("after.sh", "#!/bin/sh\necho after >> after.log\n")
            .script("rollback.sh", ROLLBACK)
            .spawn()
            .await,
    );
    let running = support::running_with_child(&app, "alice", "/drain").await;
    let asked = app.reply("alice", "/cancel 1").await;
    assert!(
        asked.starts_with("Cancelling run #1: its current step is stopped"),
        "{asked}"
    );
    assert!(asked.contains("its on_failure steps run"), "{asked}");
    let reply = running.await.unwrap();
    assert!(
        reply.starts_with("⏹ #1 /drain cancelled by alice after"),
        "{reply}"
    );
    for line in [
        "❌ drain (",
        "cancelled by alice; everything it started was killed",
        "⏭️ after",
        "↩ scale-back (",
    ] {
        assert!(reply.contains(line), "{line:?} in {reply}");
    }
    assert_eq!(read(&app, "after.log"), "");
    assert_eq!(read(&app, "rollback.log"), "rolled back x\n");
    assert_eq!(
        app.store.run(RunId(1)).await.unwrap().unwrap().state,
        RunState::Cancelled
    );
    support::wait_child_gone(app.dir.path()).await;
}

/// A 2-of-M gate whose two approvals arrive at once on two replicas: the run continues once.
#[tokio::test]
async fn racing_last_approvals_on_two_replicas_continue_the_run_once() {
    let file = restore_file("", RESTORE).replace("approvals = 1", "approvals = 2");
    let carol = person("carol", &["sre-lead"], &["console:carol"]);
    // Both replicas' scripts write here: one file counts the restores of either.
    let shared = tempfile::tempdir().unwrap();
    let restore = format!(
        "#!/bin/sh\necho restored >> {}/restores.log\n",
        shared.path().display()
    );
    let spawn = async |store: Option<Arc<dyn Store>>| {
        let mut builder = TestApp::builder()
            .config(&(people() + &carol))
            .command("restore.toml", &file)
            .script("prepare.sh", PREPARE)
            .script("restore.sh", &restore)
            .script("rollback.sh", ROLLBACK);
        if let Some(store) = store {
            builder = builder.store(store);
        }
        builder.spawn().await
    };
    let one = spawn(None).await;
    let reply = one.reply("alice", "/restore api").await;
    assert!(reply.contains("needs 2 approval(s)"), "{reply}");
    let two = spawn(Some(one.store.clone())).await;
    let (a, b) = tokio::join!(
        one.reply("bob", "/approve 2"),
        two.reply("carol", "/approve 2")
    );
    let continued = [&a, &b]
        .iter()
        .filter(|r| r.contains("continues after step 2"))
        .count();
    assert_eq!(continued, 1, "{a}\n---\n{b}");
    let restores = std::fs::read_to_string(shared.path().join("restores.log")).unwrap_or_default();
    assert_eq!(restores.lines().count(), 1, "{restores}");
    assert_eq!(
        one.store.run(RunId(1)).await.unwrap().unwrap().state,
        RunState::Succeeded
    );
}

/// `/retry` runs an ended run's steps again from the step that failed, with the values the
/// steps before it published, as a new request that needs approval again.
#[tokio::test]
async fn retry_runs_the_steps_again_from_the_failed_one_after_approval() {
    let approval =
        "[approval]\napprovals = 1\napprover_roles = [\"sre-lead\"]\nexpires_after = \"10m\"\n";
    let file = restore_file(approval, RESTORE)
        .replace("[[steps]]\nname = \"approve\"\nkind = \"approval\"\napprovals = 1\napprover_roles = [\"sre-lead\"]\nexpires_after = \"10m\"\n", "");
    let flaky =
        "#!/bin/sh\n[ -f fixed ] || { echo broken; exit 3; }\necho \"$1 $2\" >> restore.log\n";
    let app = TestApp::builder()
        .config(&people())
        .command("restore.toml", &file)
        .script("prepare.sh", PREPARE)
        .script("restore.sh", flaky)
        .script("rollback.sh", ROLLBACK)
        .spawn()
        .await;
    app.reply("alice", "/restore api").await;
    let early = app.reply("alice", "/retry 1").await;
    assert!(early.contains("request #1 is still pending"), "{early}");
    let failed = app.reply("bob", "/approve 1").await;
    assert!(
        failed.contains("❌ #1 /restore service=api failed at step restore"),
        "{failed}"
    );

    let wrong = app.reply("alice", "/retry 1 from nope").await;
    assert!(
        wrong.contains("\"nope\" is not a step of /restore"),
        "{wrong}"
    );
    std::fs::write(app.dir.path().join("fixed"), "").unwrap();
    let asked = app.reply("alice", "/retry 1").await;
    assert!(
        asked.starts_with("Retry of #1 from step 2 (restore) is #2."),
        "{asked}"
    );
    assert!(asked.contains("needs 1 approval(s)"), "{asked}");
    assert!(
        asked.contains("2. restore: ./restore.sh api b-42"),
        "{asked}"
    );
    assert!(
        !asked.contains("1. prepare"),
        "only the steps it runs: {asked}"
    );
    let ran = app.reply("bob", "/approve 2").await;
    assert!(
        ran.contains("✅ #2 /restore service=api succeeded"),
        "{ran}"
    );
    for line in ["✅ prepare (", "✅ restore ("] {
        assert!(ran.contains(line), "{line:?} in {ran}");
    }
    assert_eq!(
        read(&app, "prepare.log"),
        "prepared\n",
        "the steps before it ran once"
    );
    assert_eq!(read(&app, "restore.log"), "api b-42\n");
    let run = app.store.run(RunId(2)).await.unwrap().unwrap();
    let retry = run.retry.unwrap();
    assert_eq!((retry.of, retry.from), (RunId(1), 1));
    let steps = app.store.run_steps(RunId(2)).await.unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["prepare", "restore"]);
    let audit = app.store.recent_audit(30).await.unwrap();
    assert!(
        audit.iter().any(|r| r.entry.command == "retry"
            && r.entry.detail.contains("retry of #1 from step 2 as #2")),
        "{:?}",
        audit.iter().map(|r| &r.entry.detail).collect::<Vec<_>>()
    );
}

/// On Slack, a run of steps that needs no approval answers at once with its steps; once that
/// answer is bound as its message, the steps' progress is edited into it, and the result is
/// posted in reply.
#[tokio::test]
async fn on_slack_a_run_needing_no_approval_shows_its_progress_in_its_answer() {
    let chat = Arc::new(RecordingOutbound::default());
    let file = r#"
name = "hold"
summary = "Hold, then say so"
roles = ["deployer"]
[[steps]]
name = "hold"
kind = "exec"
argv = ["./hold.sh"]
timeout = "30s"
[[steps]]
name = "done"
kind = "message"
text = "held"
"#;
    let app = TestApp::builder()
        .config(&support::deployer_and_lead("slack:UALICE", "slack:UBOB"))
        .command("hold.toml", file)
        .script(
            "hold.sh",
            "#!/bin/sh\nwhile [ ! -f go ]; do sleep 0.01; done\n",
        )
        .outbound(chat.clone())
        .spawn()
        .await;
    let ev = slack("UALICE", EventPayload::Command("/hold".into()));
    let response = app.router.handle(&ev).await;
    assert_eq!(response.progress_run, Some(RunId(1)));
    let answer = response.reply.map(|r| r.text).unwrap_or_default();
    assert!(
        answer.starts_with(
            "Request #1: /hold requested by alice — running; the result will be posted in reply."
        ),
        "{answer}"
    );
    assert!(answer.contains("▫️ done"), "{answer}");
    app.router.bind_progress(RunId(1), "1700.5").await.unwrap();
    std::fs::write(app.dir.path().join("go"), "").unwrap();
    let result =
        |m: &Outbound| matches!(m, Outbound::Post { text, .. } if text.contains("succeeded in"));
    chat.wait_until("the result", |log| log.iter().any(result))
        .await;
    app.wait_idle().await;
    let edited = |log: &[Outbound]| {
        log.iter().any(|m| {
            matches!(m, Outbound::Edit { id, text, .. }
            if id == "1700.5" && text.contains("✅ hold (") && text.contains("✅ done ("))
        })
    };
    chat.wait_until("the last progress edit", edited).await;
    assert_eq!(
        app.store.run(RunId(1)).await.unwrap().unwrap().state,
        RunState::Succeeded
    );
}

/// `/retry` is a new request of the command, so the command file's own limits hold for it:
/// a person who used up `/flaky`'s allowance cannot get round it by retrying.
#[tokio::test]
async fn retry_counts_against_the_commands_own_limits() {
    let file = "name = \"flaky\"\nsummary = \"x\"\nroles = [\"deployer\"]\n\
                [rate_limit]\nper_user = \"1/min\"\n\
                [[steps]]\nname = \"try\"\nkind = \"exec\"\nargv = [\"./fail.sh\"]\ntimeout = \"5s\"\n";
    let app = TestApp::builder()
        .config(&people())
        .command("flaky.toml", file)
        .script("fail.sh", "#!/bin/sh\necho broken\nexit 3\n")
        .spawn()
        .await;
    let failed = app.reply("alice", "/flaky").await;
    assert!(
        failed.contains("❌ #1 /flaky failed at step try"),
        "{failed}"
    );
    let retried = app.reply("alice", "/retry 1").await;
    assert!(
        retried.contains("Slow down: limit for /flaky per person reached"),
        "{retried}"
    );
    assert!(
        app.store
            .run(opsbot::domain::RunId(2))
            .await
            .unwrap()
            .is_none()
    );
}
