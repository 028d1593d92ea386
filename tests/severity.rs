//! A configured severity scheme end to end (SEV1-SEV4 instead of P1-P4): `/incident open`
//! takes only its names (an unknown one is answered with the list), SEV1's response target
//! drives the reminder and its escalation policy, SEV1 takes the urgent lane, and the
//! postmortem shows the target. An incident stored under a name the scheme no longer has is
//! shown as stored and never reminded.

mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use opsbot::ports::FakeClock;
use support::{Outbound, RecordingOutbound, TestApp, person};

const SCHEME: &str = r#"
[builtins]
alerts_roles = ["sre"]
responder_roles = ["sre"]

[incidents]
severities = [
  { name = "SEV1", ack_within = "5m" },
  { name = "SEV2", ack_within = "30m" },
  { name = "SEV3", ack_within = "4h" },
  { name = "SEV4", ack_within = "next working day" },
]
escalation = { SEV1 = "sev1" }

[[escalation.policies]]
name = "sev1"
steps = [{ after = "0m", notify = "person:alice" }, { after = "10m", notify = "role:sre" }]
"#;

fn people() -> String {
    [
        person("alice", &["sre"], &["console:alice"]),
        person("bob", &["sre"], &["console:bob"]),
    ]
    .concat()
}

async fn app(clock: &Arc<FakeClock>, chat: &Arc<RecordingOutbound>, config: &str) -> TestApp {
    TestApp::builder()
        .config(&format!("{}{config}", people()))
        .clock(clock.clone())
        .outbound(chat.clone())
        .spawn()
        .await
}

async fn say(app: &TestApp, who: &str, text: &str) -> String {
    app.say_in(who, "incident-1", text)
        .await
        .reply
        .map(|r| r.text)
        .unwrap_or_default()
}

fn posts_starting(m: &[Outbound], prefix: &str) -> Vec<String> {
    m.iter()
        .filter_map(|x| match x {
            Outbound::Post { text, .. } if text.starts_with(prefix) => Some(text.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_sev1_incident_is_reminded_at_its_target_and_escalates_through_its_policy() {
    let clock = Arc::new(FakeClock::new(Utc::now()));
    let chat = Arc::new(RecordingOutbound::default());
    let app = app(&clock, &chat, SCHEME).await;

    let unknown = say(&app, "alice", "/incident open P1 \"db down\"").await;
    assert!(
        unknown.contains(
            "unknown severity \"P1\"; the severities here are SEV1, SEV2, SEV3, SEV4 (most severe first)"
        ),
        "{unknown}"
    );
    let none = say(&app, "alice", "/incident status").await;
    assert!(none.contains("/incident open SEV1..SEV4"), "{none}");
    let help = say(&app, "alice", "/help incident").await;
    assert!(
        help.contains("SEV1 — acknowledge within 5m")
            && help.contains("SEV4 — acknowledge by 09:00 UTC on the next working day"),
        "{help}"
    );

    let opened = say(&app, "alice", "/incident open sev1 \"db down\"").await;
    assert!(
        opened.starts_with("🚨 Incident #1 opened: SEV1 \"db down\"."),
        "{opened}"
    );
    // Not before SEV1's 5 minutes (P1's were 15).
    clock.advance(Duration::from_secs(4 * 60));
    assert!(app.router.sweep().await.unwrap().is_empty());
    clock.advance(Duration::from_secs(60));
    let notices = app.router.sweep().await.unwrap();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0]
            .text
            .starts_with("⏰ Incident #1 (SEV1 \"db down\") passed its acknowledgement target"),
        "{}",
        notices[0].text
    );
    // The most severe level takes the urgent lane, as P1 did.
    let m = chat
        .wait_until("the reminder and the first step", |m| {
            !posts_starting(m, "⏰ Incident #1").is_empty()
                && !posts_starting(m, "🚨 Escalation").is_empty()
        })
        .await;
    assert!(
        chat.urgent
            .lock()
            .unwrap()
            .iter()
            .any(|t| t.starts_with("⏰ Incident #1"))
    );
    assert_eq!(
        posts_starting(&m, "🚨 Escalation"),
        [
            "🚨 Escalation 1/2 (sev1): incident #1 (SEV1 \"db down\") is not acknowledged; \
          /incident update \"...\" to acknowledge. @alice"
        ]
    );

    clock.advance(Duration::from_secs(60));
    let ok = say(&app, "bob", "/incident update \"failing over\"").await;
    assert!(ok.contains("update from bob"), "{ok}");
    clock.advance(Duration::from_secs(3600));
    app.router.sweep().await.unwrap();
    app.wait_idle().await;
    assert_eq!(posts_starting(&chat.messages(), "🚨 Escalation").len(), 1);

    clock.advance(Duration::from_secs(60));
    say(&app, "bob", "/incident resolve").await;
    let pm = say(&app, "bob", "/postmortem 1").await;
    assert!(
        pm.starts_with("# Postmortem: db down (incident #1, SEV1)"),
        "{pm}"
    );
    assert!(
        pm.contains("- Severity: SEV1 (acknowledge within 5m)"),
        "{pm}"
    );
    assert!(
        pm.contains("| Acknowledgement target | within 5m: missed by 1m |"),
        "{pm}"
    );
}

#[tokio::test]
async fn a_sev2_incident_is_not_escalated_by_the_sev1_policy_nor_urgent() {
    let clock = Arc::new(FakeClock::new(Utc::now()));
    let chat = Arc::new(RecordingOutbound::default());
    let app = app(&clock, &chat, SCHEME).await;
    say(&app, "alice", "/incident open SEV2 \"slow search\"").await;
    clock.advance(Duration::from_secs(29 * 60));
    assert!(app.router.sweep().await.unwrap().is_empty());
    clock.advance(Duration::from_secs(60));
    assert_eq!(app.router.sweep().await.unwrap().len(), 1);
    chat.wait_until("the reminder", |m| {
        !posts_starting(m, "⏰ Incident #1").is_empty()
    })
    .await;
    app.wait_idle().await;
    assert!(posts_starting(&chat.messages(), "🚨 Escalation").is_empty());
    assert!(
        !chat
            .urgent
            .lock()
            .unwrap()
            .iter()
            .any(|t| t.starts_with("⏰ Incident #1")),
        "only the most severe level is urgent"
    );
}

#[tokio::test]
async fn an_incident_stored_under_a_severity_no_longer_configured_is_shown_as_stored() {
    let clock = Arc::new(FakeClock::new(Utc::now()));
    let chat = Arc::new(RecordingOutbound::default());
    // Opened under the default P1-P4 scheme...
    let before = app(
        &clock,
        &chat,
        "[builtins]\nalerts_roles = [\"sre\"]\nresponder_roles = [\"sre\"]\n",
    )
    .await;
    let opened = say(&before, "alice", "/incident open P1 \"db down\"").await;
    assert!(opened.contains("Incident #1"), "{opened}");
    // ...then read by an app whose scheme is SEV1-SEV4, on the same store.
    let after = TestApp::builder()
        .config(&format!("{}{SCHEME}", people()))
        .store(before.store.clone())
        .clock(clock.clone())
        .outbound(chat.clone())
        .spawn()
        .await;
    let status = say(&after, "alice", "/incident status").await;
    assert!(status.starts_with("Incident #1 P1 \"db down\""), "{status}");
    assert!(
        status.contains("P1 is no longer a configured severity: no target"),
        "{status}"
    );
    // Never overdue without a target, and the sweep goes on.
    clock.advance(Duration::from_secs(7 * 86_400));
    assert!(after.router.sweep().await.unwrap().is_empty());
    let pm = say(&after, "alice", "/postmortem").await;
    assert!(pm.contains("- Severity: P1 (no longer configured)"), "{pm}");
    let resolved = say(&after, "alice", "/incident resolve").await;
    assert!(
        resolved.starts_with("✅ Incident #1 resolved"),
        "{resolved}"
    );
}
