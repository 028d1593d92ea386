//! The sweep has one home: its notices reach the platform of the channel they concern, even
//! when a console is reading commands in the same process (`serve` with the console enabled).

#[path = "support/slack.rs"]
mod slack_support;
mod support;

use std::sync::Arc;

use chrono::Utc;
use opsbot::adapters::console::Console;
use opsbot::adapters::inbound::Inbound;
use opsbot::domain::{ChannelRef, EventPayload, InboundEvent, Platform, RunState, UserRef};
use slack_support::{Seen, wait_for};

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

/// alice's `/rollback api` typed in Slack channel COPS, as the Slack adapter hands it over.
fn slack_rollback() -> InboundEvent {
    InboundEvent::new(
        UserRef::new(Platform::Slack, "UALICE"),
        ChannelRef::named("COPS", Some("ops".into())),
        EventPayload::Command("/rollback api".into()),
    )
    .with_display_name("alice")
}

#[tokio::test]
async fn an_interrupted_slack_run_is_announced_in_slack_while_the_console_reads_commands() {
    let seen: Seen = Arc::default();
    let base = slack_support::fake_web_api(None, seen.clone()).await;
    let app = slack_support::app_with_slack(&format!(
        "signing_secret = \"{SECRET}\"\nbot_token = \"xoxb-test-token\"\napi_url = \"{base}/api/\"\n"
    ))
    .await;
    let id = app
        .router
        .handle(&slack_rollback())
        .await
        .pending_run
        .expect("an approval request");
    // Approved and started by a process that then died: its lease has already lapsed.
    let now = Utc::now();
    let lapsed = now - chrono::Duration::seconds(1);
    for (from, to) in [
        (RunState::Pending, RunState::Approved),
        (RunState::Approved, RunState::Running),
    ] {
        assert!(
            app.store
                .transition(id, from, to, now, Some(lapsed))
                .await
                .unwrap()
        );
    }

    // Someone types at the console of the same process meanwhile.
    let inbound = Inbound::new(app.router.clone(), app.store.clone());
    let console = Console::new(inbound, "alice", "ops");
    let mut output = Vec::new();
    console.run(&b"/whoami\n"[..], &mut output).await.unwrap();
    assert!(String::from_utf8_lossy(&output).contains("You are"));

    assert_eq!(app.sweeper.sweep_once().await.unwrap(), 1);
    let log = wait_for(&seen, "the interrupted-run notice in Slack", |l| {
        l.iter().any(|(m, v)| {
            m == "chat.postMessage"
                && v["text"].as_str().is_some_and(|t| {
                    t.contains(&format!("Request #{id}")) && t.contains("interrupted")
                })
        })
    })
    .await;
    let (_, notice) = log
        .iter()
        .find(|(m, v)| {
            m == "chat.postMessage" && v["text"].as_str().unwrap_or("").contains("interrupted")
        })
        .unwrap();
    assert_eq!(notice["channel"], "COPS");
    assert_eq!(
        app.store.run(id).await.unwrap().unwrap().state,
        RunState::Interrupted
    );
}
