//! Slack Socket Mode through the real client against a local fake: `apps.connections.open`
//! (checked for the app-level token) hands out a `ws://` URL on 127.0.0.1, and the fake's
//! WebSocket sends `hello` and envelopes, and records the client's acks.

#[path = "support/slack.rs"]
mod slack_support;
mod support;

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use slack_support::{Connections, Seen, count_texts, runs, wait_for_binding};
use support::TestApp;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const APP_TOKEN: &str = "xapp-1-A1-1234-socketsecret";

/// The fake Slack: its Web API (`seen` also gets `connected` for each WebSocket connection
/// and `ack` for each frame the client sends on it).
struct FakeSlack {
    base: String,
    seen: Seen,
    /// Frames for the client, sent on whichever connection is open.
    to_client: mpsc::UnboundedSender<String>,
}

impl FakeSlack {
    fn send(&self, frame: serde_json::Value) {
        self.to_client.send(frame.to_string()).unwrap();
    }

    fn count(&self, what: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(w, _)| w == what)
            .count()
    }

    async fn wait_for(
        &self,
        what: &str,
        pred: impl Fn(&[(String, serde_json::Value)]) -> bool,
    ) -> Vec<(String, serde_json::Value)> {
        slack_support::wait_for(&self.seen, what, pred).await
    }

    fn count_acks(&self, envelope_id: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(w, v)| w == "ack" && v["envelope_id"] == envelope_id)
            .count()
    }

    async fn wait_for_ack(&self, envelope_id: &str) {
        self.wait_for(&format!("the ack of {envelope_id}"), |l| {
            l.iter()
                .any(|(w, v)| w == "ack" && v["envelope_id"] == envelope_id)
        })
        .await;
    }
}

async fn fake_slack() -> FakeSlack {
    let seen: Seen = Arc::default();
    let ws_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let connections = Connections {
        ws_url: format!("ws://{}/link/", ws_listener.local_addr().unwrap()),
        app_token: APP_TOKEN.into(),
    };
    let base = slack_support::fake_web_api(Some(connections), seen.clone()).await;

    // One connection at a time takes the frames queued for the client.
    let (to_client, frames) = mpsc::unbounded_channel::<String>();
    let frames = Arc::new(tokio::sync::Mutex::new(frames));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = ws_listener.accept().await.unwrap();
            let (frames, log) = (frames.clone(), log.clone());
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                let mut frames = frames.lock().await;
                log.lock()
                    .unwrap()
                    .push(("connected".into(), serde_json::Value::Null));
                let hello = serde_json::json!({
                    "type": "hello",
                    "num_connections": 1,
                    "connection_info": { "app_id": "A1" },
                    "debug_info": { "host": "fake", "approximate_connection_time": 3600 }
                });
                ws.send(Message::Text(hello.to_string())).await.unwrap();
                loop {
                    tokio::select! {
                        frame = frames.recv() => {
                            let Some(frame) = frame else { return };
                            if ws.send(Message::Text(frame)).await.is_err() {
                                return;
                            }
                        }
                        msg = ws.next() => match msg {
                            Some(Ok(Message::Text(text))) => log
                                .lock()
                                .unwrap()
                                .push(("ack".into(), serde_json::from_str(&text).unwrap())),
                            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                            Some(Ok(_)) => {}
                        },
                    }
                }
            });
        }
    });
    FakeSlack {
        base,
        seen,
        to_client,
    }
}

async fn app(fake: &FakeSlack, app_token: &str) -> TestApp {
    slack_support::app_with_slack(&format!(
        "signing_secret = \"8f742231b10e8888abcd99yyyzzz85a5\"\nbot_token = \"xoxb-test-token\"\n\
         api_url = \"{}/api/\"\nsocket_mode = true\napp_token = \"{app_token}\"\n",
        fake.base
    ))
    .await
}

/// A `slash_commands` envelope as Slack sends it over the socket.
fn slash(
    fake: &FakeSlack,
    envelope: &str,
    user: &str,
    command: &str,
    text: &str,
) -> serde_json::Value {
    serde_json::json!({
        "type": "slash_commands",
        "envelope_id": envelope,
        "accepts_response_payload": true,
        "payload": {
            "token": "x",
            "team_id": "T1",
            "team_domain": "acme",
            "channel_id": "COPS",
            "channel_name": "ops",
            "user_id": user,
            "user_name": user,
            "command": command,
            "text": text,
            "api_app_id": "A1",
            "response_url": format!("{}/respond/{envelope}", fake.base),
            "trigger_id": envelope,
        }
    })
}

/// A `reaction_added` Events API envelope.
fn reaction(envelope: &str, event_id: &str, user: &str, ts: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "events_api",
        "envelope_id": envelope,
        "accepts_response_payload": false,
        "retry_attempt": 0,
        "retry_reason": "",
        "payload": slack_support::reaction_callback(event_id, user, ts),
    })
}

#[tokio::test]
async fn a_slash_command_envelope_is_acked_and_answered_through_response_url() {
    let fake = fake_slack().await;
    let app = app(&fake, APP_TOKEN).await;
    app.wait_for_readyz("adapter slack socket: up").await;
    fake.send(slash(&fake, "env-status", "UALICE", "/status", ""));
    fake.wait_for_ack("env-status").await;
    slack_support::assert_status_answered(&app, &fake.seen, "env-status").await;
}

#[tokio::test]
async fn rollback_approved_by_a_reaction_envelope_runs_once_and_a_redelivery_does_nothing() {
    let fake = fake_slack().await;
    let app = app(&fake, APP_TOKEN).await;
    fake.send(slash(&fake, "env-1", "UALICE", "/rollback", "api"));
    fake.wait_for_ack("env-1").await;
    let log = fake
        .wait_for("the approval request", |l| {
            l.iter().any(|(w, _)| w == "chat.postMessage")
        })
        .await;
    let (_, request) = log.iter().find(|(w, _)| w == "chat.postMessage").unwrap();
    assert_eq!(request["channel"], "COPS");
    let ts = "1700000000.000001";
    wait_for_binding(&app, ts).await;

    fake.send(reaction("env-2", "Ev2", "UBOB", ts));
    fake.wait_for_ack("env-2").await;
    let log = fake
        .wait_for("the result in the thread", |l| {
            l.iter()
                .any(|(_, v)| v["text"].as_str().is_some_and(|t| t.contains("succeeded")))
        })
        .await;
    let (method, result) = log
        .iter()
        .find(|(_, v)| v["text"].as_str().is_some_and(|t| t.contains("succeeded")))
        .unwrap();
    assert_eq!(method, "chat.postMessage");
    assert_eq!(result["thread_ts"], ts);
    assert!(result["text"].as_str().unwrap().contains("rolled back api"));

    // Slack redelivers the same event in a new envelope: acked, and nothing else happens.
    fake.send(reaction("env-3", "Ev2", "UBOB", ts));
    fake.wait_for_ack("env-3").await;
    // The reader hands envelopes on in order; by the time a later command has been routed
    // and answered, the redelivery (one store lookup) has long been dealt with.
    fake.send(slash(&fake, "env-4", "UALICE", "/status", ""));
    fake.wait_for("the later answer", |l| {
        l.iter().any(|(w, _)| w == "response_url/env-4")
    })
    .await;
    assert_eq!(runs(&app), 1, "ran exactly once");
    assert_eq!(
        count_texts(&fake.seen, "Approved by bob"),
        1,
        "the redelivered event caused nothing"
    );
}

#[tokio::test]
async fn an_event_whose_id_cannot_be_stored_is_not_acked_and_its_redelivery_counts() {
    let fake = fake_slack().await;
    let app = app(&fake, APP_TOKEN).await;
    fake.send(slash(&fake, "env-1", "UALICE", "/rollback", "api"));
    let ts = "1700000000.000001";
    wait_for_binding(&app, ts).await;

    // The store refuses to record event ids (a full disk, a failed-over database).
    let db = support::sqlite_in(app.dir.path()).await;
    support::exec(&db, "CREATE TRIGGER no_events BEFORE INSERT ON platform_events BEGIN SELECT RAISE(ABORT, 'disk full'); END;").await;
    fake.send(reaction("env-2", "Ev2", "UBOB", ts));
    // A slash command after it is acked and answered: the reader went on.
    fake.send(slash(&fake, "env-3", "UALICE", "/status", ""));
    fake.wait_for("the later answer", |l| {
        l.iter().any(|(w, _)| w == "response_url/env-3")
    })
    .await;
    support::exec(&db, "DROP TRIGGER no_events").await;

    // Not acknowledged, so Slack sends it again: this time it counts.
    fake.send(reaction("env-2-retry", "Ev2", "UBOB", ts));
    fake.wait_for_ack("env-2-retry").await;
    fake.wait_for("the result", |l| {
        l.iter()
            .any(|(_, v)| v["text"].as_str().is_some_and(|t| t.contains("succeeded")))
    })
    .await;
    assert_eq!(runs(&app), 1);
    assert_eq!(
        fake.count_acks("env-2"),
        0,
        "the event whose id could not be stored was never acknowledged"
    );
}

#[tokio::test]
async fn a_disconnect_message_makes_the_client_reconnect() {
    let fake = fake_slack().await;
    let app = app(&fake, APP_TOKEN).await;
    app.wait_for_readyz("adapter slack socket: up").await;
    fake.send(serde_json::json!({
        "type": "disconnect",
        "reason": "refresh_requested",
        "debug_info": { "host": "fake" }
    }));
    fake.wait_for("a second connection", |l| {
        l.iter().filter(|(w, _)| w == "connected").count() == 2
    })
    .await;
    assert_eq!(fake.count("apps.connections.open"), 2);
    // The new connection works.
    fake.send(slash(&fake, "env-after", "UALICE", "/status", ""));
    fake.wait_for("the answer after reconnecting", |l| {
        l.iter().any(|(w, _)| w == "response_url/env-after")
    })
    .await;
    app.wait_for_readyz("adapter slack socket: up").await;
}

#[tokio::test]
async fn a_rejected_app_token_turns_socket_mode_off_without_stopping_opsbot() {
    let fake = fake_slack().await;
    let app = app(&fake, "xapp-1-A1-revoked").await;
    let body = app
        .wait_for_readyz("adapter slack socket: off (apps.connections.open: invalid_auth)")
        .await;
    assert!(body.starts_with("ready"), "{body}");
    assert!(
        !body.contains("revoked"),
        "the token is never shown: {body}"
    );
    // The adapter stopped: it asked once and never connected.
    assert_eq!(fake.count("apps.connections.open"), 1);
    assert_eq!(fake.count("connected"), 0);
}
