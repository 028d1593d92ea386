//! On-call through the router: `/oncall` answers who is on call across a DST change, and an
//! override from chat is role-gated, audited, stored, wins for its duration, then expires;
//! reminders of critical alerts ping the primary on-call natively on Slack and nobody else.

#[path = "support/slack.rs"]
mod slack_support;
mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use opsbot::ports::FakeClock;
use support::{TestApp, person};

const ONCALL: &str = r#"
[builtins]
alerts_roles = ["sre", "viewer"]
oncall_roles = ["sre-lead"]

[[oncall.schedules]]
name = "sre"
time_zone = "Europe/Berlin"
[[oncall.schedules.layers]]
name = "primary"
people = ["alice", "bob"]
shift = "weekly"
handoff = "09:00"
start = "2026-03-16"
[[oncall.schedules.layers]]
name = "secondary"
people = ["bob", "alice"]
shift = "weekly"
handoff = "09:00"
start = "2026-03-16"
"#;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

async fn app(clock: Arc<FakeClock>) -> TestApp {
    let people = [
        person("alice", &["sre"], &["console:alice"]),
        person("bob", &["sre", "sre-lead"], &["console:bob"]),
        person("carol", &["viewer"], &["console:carol"]),
    ];
    TestApp::builder()
        .config(&format!("{}{ONCALL}", people.concat()))
        .clock(clock)
        .spawn()
        .await
}

#[tokio::test]
async fn oncall_shows_the_rotation_and_the_next_handoff_in_local_time_across_dst() {
    // Tuesday 24 March 2026, CET: bob's week (alice had the first one from 16 March).
    let clock = Arc::new(FakeClock::new(at("2026-03-24T12:00:00Z")));
    let app = app(clock).await;
    let text = app.reply("carol", "/oncall").await;
    assert!(text.contains("📟 sre (Europe/Berlin)"), "{text}");
    assert!(text.contains("primary: bob\n"), "{text}");
    assert!(text.contains("secondary: alice\n"), "{text}");
    // The next handoff is Monday 30 March at 09:00 local, already summer time (CEST).
    assert!(
        text.contains("next: Mon 30 Mar 09:00 CEST primary bob → alice"),
        "{text}"
    );
}

#[tokio::test]
async fn an_override_is_role_gated_audited_and_wins_until_it_expires() {
    let clock = Arc::new(FakeClock::new(at("2026-03-24T12:00:00Z")));
    let app = app(clock.clone()).await;

    let denied = app
        .reply("alice", "/oncall override sre carol 2h dentist")
        .await;
    assert!(
        denied.contains("needs one of the roles sre-lead"),
        "{denied}"
    );
    let unknown = app.reply("bob", "/oncall override sre mallory 2h").await;
    assert!(
        unknown.contains("\"mallory\" is not in opsbot's directory"),
        "{unknown}"
    );
    let too_long = app.reply("bob", "/oncall override sre carol 30d").await;
    assert!(
        too_long.contains("an override lasts from 1 minute to"),
        "{too_long}"
    );

    let ok = app
        .reply("bob", "/oncall override sre carol 2h covering for bob")
        .await;
    assert!(
        ok.starts_with("Override #1: carol is sre on-call primary until Tue 24 Mar 15:00 CET"),
        "{ok}"
    );
    let during = app.reply("carol", "/oncall").await;
    assert!(during.contains("primary: carol (override)"), "{during}");

    let audit = app.store.recent_audit(10).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|r| r.entry.command == "oncall" && r.entry.actor == "console:bob"),
        "the override is in the audit log: {audit:?}"
    );

    clock.advance(Duration::from_secs(2 * 3600));
    let after = app.reply("carol", "/oncall").await;
    assert!(after.contains("primary: bob\n"), "{after}");
}

#[tokio::test]
async fn a_reminder_pings_the_primary_on_call_on_slack_and_nobody_else() {
    let clock = Arc::new(FakeClock::new(at("2026-03-24T12:00:00Z")));
    let seen = slack_support::Seen::default();
    let base = slack_support::fake_web_api(None, seen.clone()).await;
    let people = [
        person("alice", &["sre"], &["console:alice", "slack:UALICE01"]),
        person(
            "bob",
            &["sre", "sre-lead"],
            &["console:bob", "slack:UBOB01"],
        ),
        // No Slack identity: named in plain text there, and counted.
        person("carol", &["viewer"], &["console:carol"]),
    ];
    let config = format!(
        "{}{ONCALL}\n[slack]\nsigning_secret = \"slack-signing-secret-0123\"\n\
         bot_token = \"xoxb-test-token\"\napi_url = \"{base}/api/\"\n{}\
         remind_every = \"10m\"\noncall_role = \"sre\"\noncall_schedule = \"sre\"\n",
        people.concat(),
        support::alerts_routed_to("slack", "COPS"),
    );
    let app = TestApp::builder()
        .config(&config)
        .clock(clock.clone())
        .spawn()
        .await;
    support::deliver_alerts(&app.url(""), support::alert_carrying(support::INJECTION)).await;
    slack_support::wait_for(&seen, "the group message", |l| !l.is_empty()).await;

    let reminders = |l: &[(String, serde_json::Value)]| -> Vec<String> {
        l.iter()
            .filter(|(p, b)| {
                p == "chat.postMessage" && b["text"].as_str().unwrap().contains("Reminder")
            })
            .map(|(_, b)| b["text"].as_str().unwrap().to_owned())
            .collect()
    };
    clock.advance(Duration::from_secs(11 * 60));
    app.router.sweep().await.unwrap();
    let log = slack_support::wait_for(&seen, "a reminder", |l| reminders(l).len() == 1).await;
    let text = &reminders(&log)[0];
    assert!(
        text.starts_with("⏰ Reminder 1: <@UBOB01>: alert #1"),
        "{text}"
    );
    for raw in ["<!channel>", "<!here>", "<@U1>", "<https://evil.example"] {
        assert!(!text.contains(raw), "{raw} reached Slack: {text}");
    }
    assert_eq!(
        text.matches("<@").count(),
        1,
        "only the on-call is pinged: {text}"
    );

    // carol stands in: she has no Slack identity, so she is named, not pinged.
    let ok = app.reply("bob", "/oncall override sre carol 1h").await;
    assert!(ok.starts_with("Override #1"), "{ok}");
    clock.advance(Duration::from_secs(11 * 60));
    app.router.sweep().await.unwrap();
    let log =
        slack_support::wait_for(&seen, "a second reminder", |l| reminders(l).len() == 2).await;
    let text = &reminders(&log)[1];
    assert!(
        text.starts_with("⏰ Reminder 2: @carol: alert #1"),
        "{text}"
    );
    assert!(!text.contains("<@"), "{text}");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("opsbot_mentions_unreachable_total{platform=\"slack\"} 1"),
        "{metrics}"
    );
}

/// An app at Monday 30 March 2026, a minute before the 09:00 CEST (07:00 UTC) handoff, that
/// announces the `sre` schedule's handoffs in Slack channel COPS (the Slack fake).
async fn announcing_in_slack(people: &[String]) -> (TestApp, Arc<FakeClock>, slack_support::Seen) {
    let clock = Arc::new(FakeClock::new(at("2026-03-30T06:59:00Z")));
    let seen = slack_support::Seen::default();
    let base = slack_support::fake_web_api(None, seen.clone()).await;
    let schedules = ONCALL.replace(
        "time_zone = \"Europe/Berlin\"\n",
        "time_zone = \"Europe/Berlin\"\nannounce = { platform = \"slack\", channel = \"COPS\" }\n",
    );
    let config = format!(
        "{}{schedules}\n[slack]\nsigning_secret = \"slack-signing-secret-0123\"\n\
         bot_token = \"xoxb-test-token\"\napi_url = \"{base}/api/\"\n",
        people.concat(),
    );
    let app = TestApp::builder()
        .config(&config)
        .clock(clock.clone())
        .spawn()
        .await;
    (app, clock, seen)
}

fn slack_posts(l: &[(String, serde_json::Value)]) -> Vec<String> {
    l.iter()
        .filter(|(p, _)| p == "chat.postMessage")
        .map(|(_, b)| b["text"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_handoff_is_announced_once_mentioning_who_takes_over() {
    let people = [
        person("alice", &["sre"], &["console:alice", "slack:UALICE01"]),
        person(
            "bob",
            &["sre", "sre-lead"],
            &["console:bob", "slack:UBOB01"],
        ),
    ];
    let (app, clock, seen) = announcing_in_slack(&people).await;
    app.router.sweep().await.unwrap();
    clock.advance(Duration::from_secs(60));
    app.router.sweep().await.unwrap();
    let log = slack_support::wait_for(&seen, "both handoffs", |l| slack_posts(l).len() == 2).await;
    let mut texts = slack_posts(&log);
    texts.sort();
    assert_eq!(
        texts,
        [
            "📟 sre primary: <@UALICE01> is on call now, taking over from bob.",
            "📟 sre secondary: <@UBOB01> is on call now, taking over from alice.",
        ]
    );
    // Later sweeps (on any replica, after a restart) find them announced.
    clock.advance(Duration::from_secs(60));
    app.router.sweep().await.unwrap();
    app.wait_idle().await;
    assert_eq!(slack_posts(&seen.lock().unwrap()).len(), 2);
}

#[tokio::test]
async fn a_handoff_to_someone_without_an_identity_there_is_counted_unreachable_once() {
    let people = [
        person("alice", &["sre"], &["console:alice"]),
        person(
            "bob",
            &["sre", "sre-lead"],
            &["console:bob", "slack:UBOB01"],
        ),
    ];
    let (app, clock, seen) = announcing_in_slack(&people).await;
    clock.advance(Duration::from_secs(60));
    for _ in 0..3 {
        app.router.sweep().await.unwrap();
        clock.advance(Duration::from_secs(30));
    }
    let log = slack_support::wait_for(&seen, "both handoffs", |l| slack_posts(l).len() == 2).await;
    assert!(
        slack_posts(&log)
            .contains(&"📟 sre primary: @alice is on call now, taking over from bob.".to_owned()),
        "{log:?}"
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("opsbot_mentions_unreachable_total{platform=\"slack\"} 1"),
        "announced once, counted once, however many sweeps built it: {metrics}"
    );
}

#[tokio::test]
async fn a_handoff_an_override_covers_pings_nobody() {
    let clock = Arc::new(FakeClock::new(at("2026-03-30T06:59:00Z")));
    let chat = Arc::new(support::RecordingOutbound::default());
    let people = [
        person("alice", &["sre"], &["console:alice"]),
        person("bob", &["sre", "sre-lead"], &["console:bob"]),
        person("carol", &["viewer"], &["console:carol"]),
    ];
    let schedules = ONCALL.replace(
        "time_zone = \"Europe/Berlin\"\n",
        "time_zone = \"Europe/Berlin\"\nannounce = { platform = \"console\", channel = \"ops\" }\n",
    );
    let app = TestApp::builder()
        .config(&format!("{}{schedules}", people.concat()))
        .clock(clock.clone())
        .outbound(chat.clone())
        .spawn()
        .await;
    // bob stays primary over the handoff to alice: only the secondary changes hands.
    let ok = app.reply("bob", "/oncall override sre bob 2h").await;
    assert!(ok.starts_with("Override #1"), "{ok}");
    clock.advance(Duration::from_secs(60));
    app.router.sweep().await.unwrap();
    let announced = |m: &[support::Outbound]| {
        m.iter()
            .filter_map(|x| match x {
                support::Outbound::Post { text, .. } if text.starts_with("📟") => {
                    Some(text.clone())
                }
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let msgs = chat
        .wait_until("the secondary handoff", |m| announced(m).len() == 1)
        .await;
    assert_eq!(
        announced(&msgs),
        ["📟 sre secondary: @bob is on call now, taking over from alice."]
    );
    app.wait_idle().await;
    assert_eq!(
        announced(&chat.messages()).len(),
        1,
        "the overridden primary handoff is not announced"
    );
}
