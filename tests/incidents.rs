//! Incidents end to end: open, lead, update, linked alerts, commands on the timeline,
//! resolve, response-target reminders, alert escalation and the postmortem draft.

mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use opsbot::ports::{Clock, FakeClock};
use support::{Outbound, RecordingOutbound, TestApp, am_fixture, person};

/// alice and bob (sre, on call) and carol (viewer); alerts go to #incident-1.
fn config() -> String {
    let people = [
        person("alice", &["sre"], &["console:alice"]),
        person("bob", &["sre"], &["console:bob"]),
        person("carol", &["viewer"], &["console:carol"]),
    ];
    format!("{}{}", people.concat(), ALERTS)
}

const ALERTS: &str = r#"
[builtins]
status_roles = ["sre"]
alerts_roles = ["sre", "viewer"]
responder_roles = ["sre"]

[alerts]
alertmanager_token = "am-token-abc123"
remind_every = "10m"
oncall_role = "sre"
default_route = { platform = "console", channel = "incident-1" }
"#;

const FLUSH: &str = r#"
name = "flush"
summary = "Flush the cache"
roles = ["sre"]
[action]
kind = "exec"
argv = ["true"]
timeout = "10s"
"#;

async fn app(clock: Arc<FakeClock>) -> (TestApp, Arc<RecordingOutbound>) {
    let chat = Arc::new(RecordingOutbound::default());
    let app = TestApp::builder()
        .config(&config())
        .command("flush.toml", FLUSH)
        .clock(clock)
        .outbound(chat.clone())
        .spawn()
        .await;
    (app, chat)
}

async fn say(app: &TestApp, who: &str, text: &str) -> String {
    app.say_in(who, "incident-1", text)
        .await
        .reply
        .map(|r| r.text)
        .unwrap_or_default()
}

async fn fire(app: &TestApp) {
    let resp = reqwest::Client::new()
        .post(app.url("/hooks/alertmanager"))
        .bearer_auth("am-token-abc123")
        .body(am_fixture("01-firing-single.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn incident_from_open_to_postmortem() {
    let clock = Arc::new(FakeClock::new(Utc::now()));
    let (app, chat) = app(clock.clone()).await;
    fire(&app).await;
    chat.wait_until("alert posted", |m| !m.is_empty()).await;
    let alert = app.store.active_alerts(1).await.unwrap()[0].id;

    clock.advance(Duration::from_secs(120));
    let opened = say(&app, "alice", "/incident open P1 checkout failing").await;
    assert!(
        opened.starts_with("🚨 Incident #1 opened: P1 \"checkout failing\". Commander: alice."),
        "{opened}"
    );
    assert!(
        say(&app, "bob", "/incident open P2 another")
            .await
            .contains("already has open incident #1")
    );
    assert!(
        say(&app, "carol", "/incident update hi")
            .await
            .contains("needs one of the roles sre")
    );

    clock.advance(Duration::from_secs(180));
    assert_eq!(
        say(&app, "bob", "/incident lead bob").await,
        "bob now leads incident #1."
    );
    assert!(
        say(&app, "bob", "/incident lead nobody")
            .await
            .contains("no person named")
    );
    // Acking an alert in the incident channel links it.
    assert!(
        say(&app, "bob", &format!("/ack {alert}"))
            .await
            .contains("acknowledged by bob")
    );
    clock.advance(Duration::from_secs(60));
    let update = say(
        &app,
        "bob",
        "/incident update \"rolled back api, error rate falling\"",
    )
    .await;
    assert_eq!(
        update,
        "📣 Incident #1 update from bob: rolled back api, error rate falling"
    );
    // A runbook run lands on the timeline.
    assert!(say(&app, "alice", "/flush").await.contains("succeeded"));

    let status = say(&app, "carol", "/incident status").await;
    assert!(
        status.contains("needs one of the roles"),
        "viewers cannot run /incident: {status}"
    );
    let status = say(&app, "alice", "/incident status").await;
    assert!(status.starts_with("Incident #1 P1 \"checkout failing\" — open for 4m, commander bob. Acknowledged after 3m."), "{status}");
    assert!(
        status.contains("1 linked alert(s), 1 firing.") && status.contains("Last update"),
        "{status}"
    );

    let timeline = say(&app, "alice", "/incident timeline").await;
    for expected in [
        "opened · alice: P1 \"checkout failing\" opened",
        "lead · bob: bob is now commander",
        "alert · bob: alert #1 HighCPU acknowledged",
        "update · bob: rolled back api",
        "command · alice: /flush",
    ] {
        assert!(
            timeline.contains(expected),
            "missing {expected:?} in:\n{timeline}"
        );
    }

    clock.advance(Duration::from_secs(600));
    let resolved = say(&app, "bob", "/incident resolve").await;
    assert!(
        resolved.starts_with("✅ Incident #1 resolved by bob after 14m (acknowledged after 3m)."),
        "{resolved}"
    );
    assert!(
        say(&app, "bob", "/incident status")
            .await
            .contains("no open incident")
    );

    let pm = say(&app, "carol", "/postmortem 1").await;
    assert!(
        pm.starts_with("# Postmortem: checkout failing (incident #1, P1)"),
        "{pm}"
    );
    for expected in [
        "| Time to acknowledge | 3m |",
        "| Time to resolve | 14m |",
        "## Timeline",
        "## Actions taken",
        "/flush",
        // What the runbook did, not only that it was run.
        ": succeeded (exit 0) after ",
        "## Root cause",
        "## Follow-ups",
        "#1 HighCPU [critical]",
    ] {
        assert!(pm.contains(expected), "missing {expected:?} in:\n{pm}");
    }
    assert!(
        pm.contains("| Time to detect (first alert → incident opened) |"),
        "{pm}"
    );
}

#[tokio::test]
async fn unacknowledged_incidents_and_critical_alerts_are_reminded_once_per_interval() {
    let clock = Arc::new(FakeClock::new(Utc::now()));
    let (app, chat) = app(clock.clone()).await;
    say(&app, "alice", "/incident open P1 db down").await;
    fire(&app).await;
    chat.wait_until("alert posted", |m| !m.is_empty()).await;

    clock.advance(Duration::from_secs(14 * 60));
    assert!(app.router.sweep().await.unwrap().is_empty());
    clock.advance(Duration::from_secs(2 * 60));
    let notices = app.router.sweep().await.unwrap();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0]
            .text
            .starts_with("⏰ Incident #1 (P1 \"db down\") passed its acknowledgement target"),
        "{}",
        notices[0].text
    );
    assert!(
        app.router.sweep().await.unwrap().is_empty(),
        "reminded once"
    );
    // Queued with the reminder's claim, then posted by the outbox's deliverer, urgent (P1).
    let overdue = |m: &[Outbound]| {
        m.iter()
            .filter(
                |x| matches!(x, Outbound::Post { text, .. } if text.starts_with("⏰ Incident #1")),
            )
            .count()
    };
    chat.wait_until("the overdue notice posted", |m| overdue(m) == 1)
        .await;
    assert!(
        chat.urgent
            .lock()
            .unwrap()
            .iter()
            .any(|t| t.starts_with("⏰ Incident #1"))
    );

    // The critical alert was re-announced with the on-call mention, once per interval.
    let reminders = |m: &[Outbound]| {
        m.iter()
            .filter(|x| matches!(x, Outbound::Post { text, .. } if text.starts_with("⏰ Reminder")))
            .count()
    };
    let msgs = chat.wait_until("a reminder", |m| reminders(m) == 1).await;
    assert!(msgs.iter().any(|m| matches!(m, Outbound::Post { text, .. } if text.contains("@sre:") && text.contains("/ack 1"))));
    app.router.sweep().await.unwrap();
    assert_eq!(reminders(&chat.messages()), 1);
    clock.advance(Duration::from_secs(11 * 60));
    app.router.sweep().await.unwrap();
    // Queued with its claim; the deliverer posts it in the background.
    chat.wait_until("the second reminder", |m| reminders(m) == 2)
        .await;
    // Acknowledging stops them.
    say(&app, "bob", "/ack 1").await;
    clock.advance(Duration::from_secs(11 * 60));
    app.router.sweep().await.unwrap();
    assert_eq!(reminders(&chat.messages()), 2);
    assert_eq!(
        overdue(&chat.messages()),
        1,
        "the overdue notice was posted once"
    );
}

/// The incident service's own reminder pass (what the sweep posts for incidents): only
/// incidents past their target, each once, and none once acknowledged.
#[tokio::test]
async fn overdue_incidents_are_reminded_once_until_acknowledged() {
    let clock = Arc::new(FakeClock::new(Utc::now()));
    let (app, _chat) = app(clock.clone()).await;
    let incidents = app.router.incidents();
    say(&app, "alice", "/incident open P1 db down").await;
    let opened = app
        .say_in("bob", "incident-2", "/incident open P2 slow search")
        .await;
    assert!(
        opened
            .reply
            .unwrap()
            .text
            .starts_with("🚨 Incident #2 opened"),
        "the P2 is open in its own channel"
    );

    clock.advance(Duration::from_secs(14 * 60));
    assert!(incidents.overdue(clock.now()).await.unwrap().is_empty());
    clock.advance(Duration::from_secs(2 * 60));
    let notices = incidents.overdue(clock.now()).await.unwrap();
    assert_eq!(notices.len(), 1, "{notices:?}");
    let n = &notices[0];
    assert_eq!(n.channel_id, "incident-1");
    assert_eq!(n.thread, None);
    assert!(n.urgent, "a P1 overtakes routine messages");
    assert!(
        n.text
            .starts_with("⏰ Incident #1 (P1 \"db down\") passed its acknowledgement target at "),
        "{}",
        n.text
    );
    assert!(
        n.text
            .ends_with("UTC without an update. alice: /incident update \"...\" to acknowledge."),
        "{}",
        n.text
    );
    assert!(
        incidents.overdue(clock.now()).await.unwrap().is_empty(),
        "reminded once"
    );

    // The P2 (one hour) is acknowledged in time and never reminded.
    let update = app
        .say_in("bob", "incident-2", "/incident update \"looking\"")
        .await;
    assert!(
        update
            .reply
            .unwrap()
            .text
            .starts_with("📣 Incident #2 update")
    );
    clock.advance(Duration::from_secs(2 * 3600));
    assert!(incidents.overdue(clock.now()).await.unwrap().is_empty());
}

#[tokio::test]
async fn postmortem_from_the_command_line() {
    let clock = Arc::new(FakeClock::new(Utc::now()));
    let (app, _chat) = app(clock.clone()).await;
    say(&app, "alice", "/incident open P3 slow search").await;
    say(&app, "alice", "/incident resolve").await;
    let config = app.dir.path().join("config.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_opsbot"))
        .args(["postmortem", "1", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = String::from_utf8(out.stdout).unwrap();
    assert!(
        md.starts_with("# Postmortem: slow search (incident #1, P3)"),
        "{md}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_opsbot"))
        .args(["postmortem", "9", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test]
async fn alerts_routed_to_an_incident_channel_are_linked_automatically() {
    let clock = Arc::new(FakeClock::new(Utc::now()));
    let (app, chat) = app(clock.clone()).await;
    say(&app, "alice", "/incident open P2 api errors").await;
    fire(&app).await;
    chat.wait_until("alert posted", |m| !m.is_empty()).await;
    let status = say(&app, "alice", "/incident status").await;
    assert!(status.contains("1 linked alert(s), 1 firing."), "{status}");
    let timeline = say(&app, "alice", "/incident timeline").await;
    assert!(
        timeline.contains("alert · opsbot: alert #1 HighCPU [critical] firing"),
        "{timeline}"
    );
    // Its resolution lands on the timeline too.
    let resp = reqwest::Client::new()
        .post(app.url("/hooks/alertmanager"))
        .bearer_auth("am-token-abc123")
        .body(am_fixture("02-resolved-single.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    chat.wait_until("the resolved edit", |m| {
        m.iter()
            .any(|x| matches!(x, Outbound::Edit { text, .. } if text.starts_with("✅ RESOLVED")))
    })
    .await;
    let timeline = say(&app, "alice", "/incident timeline").await;
    assert!(
        timeline.contains("alert · opsbot: alert #1 HighCPU resolved"),
        "{timeline}"
    );
}

/// A reminder is queued with its claim: the chat platform failing when it is decided (before,
/// the claim was stored and the post lost) only delays it, and it is posted once.
#[tokio::test]
async fn an_alert_reminder_claimed_while_chat_fails_is_posted_once_chat_recovers() {
    let clock = Arc::new(FakeClock::new(Utc::now()));
    let (app, chat) = app(clock.clone()).await;
    fire(&app).await;
    chat.wait_until("alert posted", |m| !m.is_empty()).await;
    *chat.fail_with_retry_after.lock().unwrap() = Some(Duration::from_secs(1));
    clock.advance(Duration::from_secs(11 * 60));
    app.sweeper.sweep_once().await.unwrap();
    let urgent = |chat: &RecordingOutbound| {
        let urgent = chat.urgent.lock().unwrap();
        urgent
            .iter()
            .filter(|t| t.starts_with("⏰ Reminder 1:"))
            .count()
    };
    support::eventually("a delivery attempt", support::WAIT, async || {
        (urgent(&chat) > 0).then_some(())
    })
    .await;
    assert_eq!(app.store.outbox_depth().await.unwrap().pending, 1);
    app.sweeper.sweep_once().await.unwrap();
    assert_eq!(
        app.store.outbox_depth().await.unwrap().pending,
        1,
        "claimed once"
    );

    *chat.fail_with_retry_after.lock().unwrap() = None;
    clock.advance(Duration::from_secs(2));
    let reminders = |m: &[Outbound]| {
        m.iter()
            .filter(
                |x| matches!(x, Outbound::Post { text, .. } if text.starts_with("⏰ Reminder 1:")),
            )
            .count()
    };
    chat.wait_until("the reminder posted", |m| reminders(m) == 1)
        .await;
    support::eventually("the outbox drained", support::WAIT, async || {
        (app.store.outbox_depth().await.unwrap().pending == 0).then_some(())
    })
    .await;
    assert_eq!(reminders(&chat.messages()), 1);
}
