//! Alert intake over real HTTP with recorded Alertmanager deliveries: authentication,
//! idempotent storage, 503 on store failure, and one chat message per group, edited in place.

mod support;

use std::sync::Arc;

use opsbot::domain::AlertStatus;
use support::{
    Outbound, RecordingOutbound, TestApp, WAIT, am_fixture, eventually, person, satisfies,
};

const TOKEN: &str = "opsbot-am-token-123";

fn config() -> String {
    let alice = person("alice", &["sre"], &["console:alice"]);
    let carol = person("carol", &["viewer"], &["console:carol"]);
    format!(
        r#"
[builtins]
alerts_roles = ["sre", "viewer"]
responder_roles = ["sre"]
{alice}{carol}
[alerts]
alertmanager_token = "{TOKEN}"
webhook_secret = "hook-secret-abc123"
max_listed = 2
default_route = {{ platform = "console", channel = "ops" }}

[[alerts.routes]]
matchers = ["severity=critical"]
platform = "console"
channel = "incidents"
continue = true

[[alerts.routes]]
matchers = ["alertname=~Disk.*"]
platform = "console"
channel = "storage"
"#
    )
}

async fn app() -> (TestApp, Arc<RecordingOutbound>) {
    app_with(&config()).await
}

/// The app with `config`, its alert groups going to the returned recorder.
async fn app_with(config: &str) -> (TestApp, Arc<RecordingOutbound>) {
    let chat = Arc::new(RecordingOutbound::default());
    let app = TestApp::builder()
        .config(config)
        .outbound(chat.clone())
        .spawn()
        .await;
    (app, chat)
}

async fn post(app: &TestApp, token: Option<&str>, body: String) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .post(app.url("/hooks/alertmanager"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn firing_then_resolved_updates_one_message() {
    let (app, chat) = app().await;
    let (status, body) = post(&app, Some(TOKEN), am_fixture("01-firing-single.json")).await;
    assert_eq!((status, body["accepted"].as_u64()), (200, Some(1)));
    let alerts = app.store.active_alerts(10).await.unwrap();
    assert_eq!(alerts.len(), 1, "stored before the 2xx");
    let id = alerts[0].id;
    // Critical goes to #incidents (continue) and, as no later route matches HighCPU, only there.
    let msgs = chat
        .wait_until("the group message", |m| !m.is_empty())
        .await;
    let Outbound::Post {
        channel,
        id: msg,
        text,
    } = &msgs[0]
    else {
        panic!("{msgs:?}")
    };
    assert_eq!(channel, "incidents");
    assert!(
        text.starts_with("🔥 FIRING 1 · resolved 0 · HighCPU"),
        "{text}"
    );
    assert_eq!(
        chat.urgent.lock().unwrap().as_slice(),
        std::slice::from_ref(text),
        "a firing critical alert overtakes routine messages"
    );
    assert!(
        text.contains(&format!(
            "🔴 #{id} [critical] HighCPU web-1:9100: CPU above 90% on web-1"
        )),
        "{text}"
    );
    assert!(
        text.contains("runbook: https://runbooks.example/cpu"),
        "{text}"
    );

    let (status, _) = post(&app, Some(TOKEN), am_fixture("02-resolved-single.json")).await;
    assert_eq!(status, 200);
    let msgs = chat.wait_until("the edit", |m| m.len() == 2).await;
    let Outbound::Edit {
        id: edited, text, ..
    } = &msgs[1]
    else {
        panic!("{msgs:?}")
    };
    assert_eq!(edited, msg, "edited in place, not re-posted");
    assert!(text.starts_with("✅ RESOLVED · HighCPU"), "{text}");
    let stored = app.store.alert(id).await.unwrap().unwrap();
    assert_eq!(stored.incoming.status, AlertStatus::Resolved);
    assert!(stored.resolved_at.is_some());
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("opsbot_alerts_received_total 2"),
        "{metrics}"
    );
    assert!(metrics.contains("opsbot_alert_backlog_groups"), "{metrics}");
}

#[tokio::test]
async fn retried_deliveries_are_idempotent() {
    let (app, chat) = app().await;
    for _ in 0..3 {
        assert_eq!(
            post(&app, Some(TOKEN), am_fixture("03-firing-grouped-3.json"))
                .await
                .0,
            200
        );
    }
    let alerts = app.store.active_alerts(100).await.unwrap();
    assert_eq!(alerts.len(), 3, "no duplicates from redelivery");
    let msgs = chat.wait_until("one message", |m| !m.is_empty()).await;
    // Identical redeliveries change nothing visible: no further posts or edits.
    assert_eq!(app.store.active_alerts(100).await.unwrap(), alerts);
    assert_eq!(
        msgs.iter()
            .filter(|m| matches!(m, Outbound::Post { .. }))
            .count(),
        1,
        "{msgs:#?}"
    );
}

#[tokio::test]
async fn each_alert_status_is_read_on_its_own_and_big_groups_are_summarised() {
    let (app, chat) = app().await;
    assert_eq!(
        post(
            &app,
            Some(TOKEN),
            am_fixture("04-grouped-mixed-firing-resolved.json")
        )
        .await
        .0,
        200
    );
    let firing = app.store.active_alerts(100).await.unwrap();
    assert_eq!(
        firing.len(),
        2,
        "the top-level status says firing, but one alert is resolved"
    );
    let msgs = chat.wait_until("message", |m| !m.is_empty()).await;
    let text = match &msgs[0] {
        Outbound::Post { text, .. } => text.clone(),
        other => panic!("{other:?}"),
    };
    assert!(
        text.starts_with("🔥 FIRING 2 · resolved 1 · DiskFull"),
        "{text}"
    );
    // max_listed = 2: the third alert is summarised rather than listed.
    assert!(text.contains("…and 1 more:"), "{text}");
}

#[tokio::test]
async fn wrong_tokens_and_bad_json_change_nothing() {
    let (app, chat) = app().await;
    assert_eq!(
        post(&app, None, am_fixture("01-firing-single.json"))
            .await
            .0,
        401
    );
    assert_eq!(
        post(&app, Some("wrong"), am_fixture("01-firing-single.json"))
            .await
            .0,
        401
    );
    let (status, body) = post(&app, Some(TOKEN), "{\"alerts\": [".into()).await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not an Alertmanager webhook payload")
    );
    let (status, _) = post(
        &app,
        Some(TOKEN),
        am_fixture("01-firing-single.json").replace("\"version\": \"4\"", "\"version\": \"3\""),
    )
    .await;
    assert_eq!(status, 400);
    assert!(app.store.active_alerts(10).await.unwrap().is_empty());
    assert!(chat.messages().is_empty());
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let cfg = config().replace("max_listed = 2", "max_listed = 2\nmax_body_bytes = 1024");
    let (app, _chat) = app_with(&cfg).await;
    let (status, body) = post(&app, Some(TOKEN), am_fixture("03-firing-grouped-3.json")).await;
    assert_eq!(status, 413);
    // JSON like every other answer from the hooks, so a sender's log shows the reason.
    assert_eq!(body["status"], 413, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("length limit")),
        "{body}"
    );
    assert!(app.store.active_alerts(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_empty_delivery_is_accepted_and_changes_nothing() {
    let (app, chat) = app().await;
    let empty = r#"{"version": "4", "groupKey": "{}:{alertname=\"Nothing\"}", "status": "resolved", "alerts": []}"#;
    let (status, body) = post(&app, Some(TOKEN), empty.to_owned()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 0, "{body}");
    assert!(app.store.active_alerts(10).await.unwrap().is_empty());
    app.wait_idle().await;
    assert!(chat.messages().is_empty());
}

#[tokio::test]
async fn store_failure_is_503_so_alertmanager_retries() {
    let (app, _chat) = app().await;
    let pool = support::sqlite_in(app.dir.path()).await;
    support::exec(&pool, "CREATE TRIGGER no_alerts BEFORE INSERT ON alerts BEGIN SELECT RAISE(ABORT, 'disk full'); END;").await;
    let (status, body) = post(&app, Some(TOKEN), am_fixture("01-firing-single.json")).await;
    assert_eq!(status, 503);
    assert!(
        !body["message"].as_str().unwrap().contains("disk full"),
        "internal errors stay in the log"
    );
    support::exec(&pool, "DROP TRIGGER no_alerts").await;
    // The retry Alertmanager sends succeeds.
    assert_eq!(
        post(&app, Some(TOKEN), am_fixture("01-firing-single.json"))
            .await
            .0,
        200
    );
    assert_eq!(app.store.active_alerts(10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn signed_generic_alerts_are_verified() {
    let (app, chat) = app().await;
    let body = r#"{"key": "backup-nightly", "status": "firing", "labels": {"severity": "warning"}, "annotations": {"summary": "backup failed"}}"#;
    let now = chrono::Utc::now().timestamp();
    let send = |ts: i64, sig: String| {
        reqwest::Client::new()
            .post(app.url("/hooks/alert"))
            .header("x-opsbot-timestamp", ts.to_string())
            .header("x-opsbot-signature", sig)
            .body(body)
            .send()
    };
    assert_eq!(send(now, "v1=00".into()).await.unwrap().status(), 401);
    let stale = now - 600;
    assert_eq!(
        send(
            stale,
            opsbot::hooks::sign(b"hook-secret-abc123", stale, body.as_bytes())
        )
        .await
        .unwrap()
        .status(),
        401
    );
    assert!(app.store.active_alerts(10).await.unwrap().is_empty());
    let ok = send(
        now,
        opsbot::hooks::sign(b"hook-secret-abc123", now, body.as_bytes()),
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    let alerts = app.store.active_alerts(10).await.unwrap();
    assert_eq!(alerts[0].incoming.alertname(), "backup-nightly");
    let msgs = chat.wait_until("message in #ops", |m| !m.is_empty()).await;
    assert!(
        matches!(&msgs[0], Outbound::Post { channel, text, .. } if channel == "ops" && text.contains("backup failed"))
    );
}

#[tokio::test]
async fn a_platform_asking_to_slow_down_delays_but_does_not_lose_the_message() {
    let (app, chat) = app().await;
    *chat.fail_with_retry_after.lock().unwrap() = Some(std::time::Duration::from_millis(50));
    assert_eq!(
        post(&app, Some(TOKEN), am_fixture("01-firing-single.json"))
            .await
            .0,
        200
    );
    tokio::task::yield_now().await;
    assert!(chat.messages().is_empty());
    // While it waits, the group is counted as backlog (what /readyz watches).
    eventually("the group to enter the backlog", WAIT, async || {
        app.alerts.backlog().0 != 0
    })
    .await;
    *chat.fail_with_retry_after.lock().unwrap() = None;
    let msgs = chat
        .wait_until("delivery after Retry-After", |m| !m.is_empty())
        .await;
    assert_eq!(msgs.len(), 1);
    eventually("the backlog to drain", WAIT, async || {
        app.alerts.backlog().0 == 0
    })
    .await;
}

#[tokio::test]
async fn alerts_are_listed_acked_silenced_and_resolved_from_chat() {
    let (app, chat) = app().await;
    assert_eq!(app.reply("carol", "/alerts").await, "No alerts are firing.");
    post(&app, Some(TOKEN), am_fixture("03-firing-grouped-3.json")).await;
    let msgs = chat.wait_until("group message", |m| !m.is_empty()).await;
    let Outbound::Post { id: group_msg, .. } = &msgs[0] else {
        panic!("{msgs:?}")
    };
    let list = app.reply("carol", "/alerts").await;
    assert!(
        list.starts_with("3 firing (newest first):") && list.contains("not acked"),
        "{list}"
    );
    // The critical one is listed in full in the group message (max_listed = 2).
    let first = app
        .store
        .active_alerts(10)
        .await
        .unwrap()
        .iter()
        .find(|a| a.is_critical())
        .unwrap()
        .id;
    // One Ack button per alert listed in full that still needs someone.
    let buttons = chat.buttons_on(group_msg);
    assert_eq!(buttons.len(), 2, "{buttons:?}");
    assert_eq!(buttons[0], format!("/ack {first}"), "critical first");

    // Viewers may look but not act.
    assert!(
        app.reply("carol", &format!("/ack {first}"))
            .await
            .contains("needs one of the roles sre")
    );
    let reply = app.reply("alice", &format!("/ack {first}")).await;
    assert!(
        reply.starts_with(&format!("Alert #{first} ("))
            && reply.ends_with("acknowledged by alice."),
        "{reply}"
    );
    assert!(
        app.reply("alice", &format!("/ack {first}"))
            .await
            .contains("already acknowledged by alice")
    );
    let msgs = chat
        .wait_until("ack shown on the message", |m| {
            m.iter().any(
                |x| matches!(x, Outbound::Edit { text, .. } if text.contains("(acked by alice)")),
            )
        })
        .await;
    assert!(
        msgs.iter()
            .all(|m| !matches!(m, Outbound::Post { .. }) || m == &msgs[0]),
        "edited, not re-posted"
    );
    assert_eq!(
        chat.buttons_on(group_msg),
        buttons[1..],
        "the acked alert's button is gone"
    );

    // A silence marks the group's alerts as silenced.
    let sil = app
        .reply("alice", "/silence alertname=~.+ 2h maintenance window")
        .await;
    assert!(
        sil.starts_with("Silence #1 for alertname=~.+ until")
            && sil.ends_with("3 firing alert(s) now silenced."),
        "{sil}"
    );
    chat.wait_until("silenced shown", |m| {
        m.iter()
            .any(|x| matches!(x, Outbound::Edit { text, .. } if text.contains("(silenced)")))
    })
    .await;
    assert!(
        chat.buttons_on(group_msg).is_empty(),
        "silenced alerts need no ack"
    );
    assert!(
        app.reply("alice", "/silence 2h")
            .await
            .contains("silence what?")
    );
    assert!(
        app.reply("alice", "/silence alertname=X")
            .await
            .contains("how long?")
    );
    assert!(
        app.reply("alice", "/unsilence 1")
            .await
            .starts_with("Silence #1 ended by alice.")
    );
    assert!(
        app.reply("alice", "/unsilence 1")
            .await
            .contains("no active silence #1")
    );

    // Alertmanager alerts are resolved by Alertmanager, not by hand.
    assert!(
        app.reply("alice", &format!("/resolve {first}"))
            .await
            .contains("comes from Alertmanager")
    );
    let audit = app.store.recent_audit(20).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|r| r.entry.command == "ack" && r.entry.detail == format!("acked alert #{first}"))
    );
}

#[tokio::test]
async fn an_approving_reaction_on_the_group_message_acks_it() {
    let (app, chat) = app().await;
    post(&app, Some(TOKEN), am_fixture("01-firing-single.json")).await;
    let msgs = chat.wait_until("group message", |m| !m.is_empty()).await;
    let Outbound::Post { channel, id, .. } = &msgs[0] else {
        panic!()
    };
    // The message is recorded for its group right after it is posted.
    eventually("the group message to be recorded", WAIT, async || {
        let group = app
            .store
            .group_by_message(opsbot::domain::Platform::Console, channel, id);
        group.await.unwrap()
    })
    .await;
    let react = |who: &str| {
        support::event(
            who,
            channel,
            opsbot::domain::EventPayload::Reaction {
                emoji: "eyes".into(),
                message_id: id.clone(),
                added: true,
            },
        )
    };
    // 👀 is not an ack emoji; ✅ is.
    assert_eq!(app.router.handle(&react("alice")).await.outcome, None);
    let ack = |who: &str| {
        support::event(
            who,
            channel,
            opsbot::domain::EventPayload::Reaction {
                emoji: "white_check_mark".into(),
                message_id: id.clone(),
                added: true,
            },
        )
    };
    let r = app.router.handle(&ack("carol")).await;
    assert_eq!(r.outcome, Some(opsbot::domain::Outcome::Denied));
    let r = app.router.handle(&ack("alice")).await;
    assert!(r.reply.unwrap().text.starts_with("alice acknowledged #"));
    assert!(
        app.store.active_alerts(1).await.unwrap()[0]
            .acked_by
            .as_deref()
            == Some("alice")
    );
}

#[tokio::test]
async fn webhook_alerts_can_be_resolved_by_hand() {
    let (app, chat) = app().await;
    let body = r#"{"key": "cron-x", "status": "firing", "labels": {"severity": "warning"}}"#;
    let now = chrono::Utc::now().timestamp();
    let resp = reqwest::Client::new()
        .post(app.url("/hooks/alert"))
        .header("x-opsbot-timestamp", now.to_string())
        .header(
            "x-opsbot-signature",
            opsbot::hooks::sign(b"hook-secret-abc123", now, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    chat.wait_until("message", |m| !m.is_empty()).await;
    let id = app.store.active_alerts(1).await.unwrap()[0].id;
    assert_eq!(
        app.reply("alice", &format!("/resolve {id}")).await,
        format!("Alert #{id} (cron-x) resolved by alice.")
    );
    assert!(app.store.active_alerts(1).await.unwrap().is_empty());
    chat.wait_until("resolved shown", |m| {
        m.iter()
            .any(|x| matches!(x, Outbound::Edit { text, .. } if text.starts_with("✅ RESOLVED")))
    })
    .await;
}

/// A fake Alertmanager v2 API and a fake webhook receiver, recording what they got.
async fn fake_upstreams() -> (
    String,
    Arc<std::sync::Mutex<Vec<(String, String, axum::http::HeaderMap)>>>,
) {
    use axum::routing::{delete, post};
    let seen: Arc<std::sync::Mutex<Vec<(String, String, axum::http::HeaderMap)>>> = Arc::default();
    let (s1, s2, s3) = (seen.clone(), seen.clone(), seen.clone());
    let app = axum::Router::new()
        .route(
            "/api/v2/silences",
            post(move |body: String| async move {
                s1.lock()
                    .unwrap()
                    .push(("create".into(), body, Default::default()));
                axum::Json(serde_json::json!({ "silenceID": "am-silence-1" }))
            }),
        )
        .route(
            "/api/v2/silence/{id}",
            delete(
                move |axum::extract::Path(id): axum::extract::Path<String>| async move {
                    s2.lock()
                        .unwrap()
                        .push(("expire".into(), id, Default::default()));
                    "ok"
                },
            ),
        )
        .route(
            "/notify",
            post(
                move |headers: axum::http::HeaderMap, body: String| async move {
                    s3.lock().unwrap().push(("notify".into(), body, headers));
                    "ok"
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, seen)
}

#[tokio::test]
async fn silences_are_written_back_and_groups_sent_to_signed_webhooks() {
    let (base, seen) = fake_upstreams().await;
    let cfg = config().replace(
        "max_listed = 2",
        &format!("max_listed = 2\nalertmanager_url = \"{base}\"\nwebhooks = [{{ url = \"{base}/notify\", secret = \"out-secret-abc123\" }}]"),
    );
    let (app, chat) = app_with(&cfg).await;
    post(&app, Some(TOKEN), am_fixture("01-firing-single.json")).await;
    chat.wait_until("group message", |m| !m.is_empty()).await;

    // The notification webhook got the group, signed so the receiver can verify it.
    let (_, body, headers) = eventually("the webhook to be called", WAIT, async || {
        let seen = seen.lock().unwrap();
        seen.iter().find(|(k, ..)| k == "notify").cloned()
    })
    .await;
    let ts: i64 = headers["x-opsbot-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        headers["x-opsbot-signature"].to_str().unwrap(),
        opsbot::hooks::sign(b"out-secret-abc123", ts, body.as_bytes())
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["firing"], 1);
    assert_eq!(v["alerts"][0]["labels"]["alertname"], "HighCPU");

    let reply = app
        .reply(
            "alice",
            "/silence alertname=HighCPU instance=~web-.* 1h noisy",
        )
        .await;
    assert!(
        reply.ends_with("Also silenced in Alertmanager (am-silence-1)."),
        "{reply}"
    );
    let created = seen
        .lock()
        .unwrap()
        .iter()
        .find(|(k, ..)| k == "create")
        .cloned()
        .unwrap()
        .1;
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    assert_eq!(
        created["matchers"][0],
        serde_json::json!({"name": "alertname", "value": "HighCPU", "isRegex": false, "isEqual": true})
    );
    assert_eq!(
        created["matchers"][1],
        serde_json::json!({"name": "instance", "value": "web-.*", "isRegex": true, "isEqual": true})
    );
    assert_eq!(created["comment"], "noisy");
    app.reply("alice", "/unsilence 1").await;
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|(k, id, _)| k == "expire" && id == "am-silence-1")
    );
}

#[tokio::test]
async fn a_failing_notification_webhook_does_not_keep_alerts_out_of_chat() {
    let (base, _seen) = fake_upstreams().await;
    // /missing answers 404 (a misconfigured receiver): chat must still get the group.
    let cfg = config().replace(
        "max_listed = 2",
        &format!("max_listed = 2\nwebhooks = [{{ url = \"{base}/missing\", secret = \"out-secret-abc123\" }}]"),
    );
    let (app, chat) = app_with(&cfg).await;
    assert_eq!(
        post(&app, Some(TOKEN), am_fixture("01-firing-single.json"))
            .await
            .0,
        200
    );
    chat.wait_until("the group message despite the webhook", |m| !m.is_empty())
        .await;
}

#[tokio::test]
async fn postgres_intake_is_idempotent_and_tracks_resolution_too() {
    let Some(schema) = support::fresh_postgres_schema().await else {
        return;
    };
    let chat = Arc::new(RecordingOutbound::default());
    let app = TestApp::builder()
        .config(&config())
        .database(&support::postgres_schema_url(&schema))
        .outbound(chat.clone())
        .spawn()
        .await;
    for _ in 0..2 {
        assert_eq!(
            post(&app, Some(TOKEN), am_fixture("03-firing-grouped-3.json"))
                .await
                .0,
            200
        );
    }
    assert_eq!(
        post(&app, Some(TOKEN), am_fixture("01-firing-single.json"))
            .await
            .0,
        200
    );
    assert_eq!(app.store.active_alerts(100).await.unwrap().len(), 4);
    assert_eq!(
        post(&app, Some(TOKEN), am_fixture("02-resolved-single.json"))
            .await
            .0,
        200
    );
    assert_eq!(app.store.active_alerts(100).await.unwrap().len(), 3);
    let first = app.store.active_alerts(1).await.unwrap()[0].id;
    assert!(
        app.reply("alice", &format!("/ack {first}"))
            .await
            .contains("acknowledged by alice")
    );
    // HighCPU fired and resolved before the notifier looked: nothing to announce for it.
    chat.wait_until("the DiskFull group posted", |m| {
        m.iter()
            .any(|x| matches!(x, Outbound::Post { text, .. } if text.contains("DiskFull")))
    })
    .await;
}

/// An Alertmanager delivery of `alerts` (each `(fingerprint, labels, annotations, startsAt)`)
/// in one group.
fn delivery(alerts: &[(String, serde_json::Value, serde_json::Value, String)]) -> String {
    let alerts: Vec<serde_json::Value> = alerts
        .iter()
        .map(|(fingerprint, labels, annotations, starts_at)| {
            serde_json::json!({
                "status": "firing",
                "labels": labels,
                "annotations": annotations,
                "startsAt": starts_at,
                "endsAt": "0001-01-01T00:00:00Z",
                "fingerprint": fingerprint,
            })
        })
        .collect();
    serde_json::json!({
        "receiver": "opsbot",
        "status": "firing",
        "alerts": alerts,
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "version": "4",
        "groupKey": "{}:{alertname=\"Many\"}",
        "truncatedAlerts": 0
    })
    .to_string()
}

#[tokio::test]
async fn megabyte_labels_are_clipped_in_chat_and_kept_whole_in_the_store() {
    let (app, chat) = app().await;
    let huge = "x".repeat(1 << 20);
    let (status, _) = post(&app, Some(TOKEN), support::alert_carrying(&huge)).await;
    assert_eq!(status, 200);
    let msgs = chat.wait_until("group message", |m| !m.is_empty()).await;
    let Outbound::Post { text, .. } = &msgs[0] else {
        panic!("{msgs:?}")
    };
    assert!(text.starts_with("🔥 FIRING 1"), "{}", &text[..200]);
    assert!(text.contains("xxx…"), "the cut is marked");
    assert!(text.chars().count() < 2_000, "{} characters", text.len());

    let list = app.reply("carol", "/alerts").await;
    assert!(list.starts_with("1 firing"), "{}", &list[..200]);
    assert!(list.chars().count() < 1_000, "{} characters", list.len());

    let stored = &app.store.active_alerts(1).await.unwrap()[0];
    assert_eq!(stored.incoming.labels["instance"], huge);
    assert_eq!(stored.summary(), huge);
}

#[tokio::test]
async fn alerts_counts_every_firing_alert_and_summarises_those_not_listed() {
    let (app, _chat) = app().await;
    // 20 critical alerts started earlier than 10 warnings: the newest 25 listed are the 10
    // warnings and 15 critical ones.
    let alerts: Vec<_> = (0..30)
        .map(|i| {
            let severity = if i < 20 { "critical" } else { "warning" };
            (
                format!("f{i:02}"),
                serde_json::json!({ "alertname": format!("A{i}"), "severity": severity }),
                serde_json::json!({}),
                format!("2026-11-23T10:{i:02}:00Z"),
            )
        })
        .collect();
    assert_eq!(post(&app, Some(TOKEN), delivery(&alerts)).await.0, 200);
    let list = app.reply("carol", "/alerts").await;
    assert!(list.starts_with("30 firing (newest 25 listed):"), "{list}");
    assert_eq!(list.lines().filter(|l| l.contains(" · for ")).count(), 25);
    assert!(list.ends_with("\n…and 5 more: 5 critical"), "{list}");
    assert!(
        !list.contains("s ·"),
        "ages in days, hours and minutes: {list}"
    );
    assert!(list.contains("d ") || list.contains("d ·"), "{list}");
}

#[tokio::test]
async fn a_group_message_names_the_group_by_its_labels_not_the_raw_key() {
    let (app, chat) = app().await;
    let (status, _) = post(&app, Some(TOKEN), am_fixture("03-firing-grouped-3.json")).await;
    assert_eq!(status, 200);
    let msgs = chat
        .wait_until("the group message", |m| !m.is_empty())
        .await;
    let Outbound::Post { text, .. } = &msgs[0] else {
        panic!("{msgs:?}")
    };
    assert!(
        text.contains("\nGroup alertname=DiskFull. /ack ID"),
        "{text}"
    );
    assert!(!text.contains("{}:{"), "no raw group key: {text}");
    let stored = app.store.active_alerts(10).await.unwrap();
    assert_eq!(
        stored[0].incoming.group_key, r#"{}:{alertname="DiskFull"}"#,
        "the key itself is kept"
    );
}

/// A chat platform whose first post waits until `release` is notified: a replica caught in
/// the middle of posting a group's first message.
#[derive(Default)]
struct SlowPosts {
    posts: std::sync::atomic::AtomicUsize,
    release: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl opsbot::ports::ChatOutbound for SlowPosts {
    async fn send(
        &self,
        _: &opsbot::ports::OutboundTarget,
        _: &opsbot::ports::OutboundMessage,
    ) -> opsbot::ports::Sent {
        let n = self.posts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n == 0 {
            self.release.notified().await;
        }
        Ok(format!("m{n}"))
    }

    async fn edit(
        &self,
        _: &opsbot::ports::OutboundTarget,
        _: &str,
        _: &opsbot::ports::OutboundMessage,
    ) -> opsbot::ports::Sent<()> {
        Ok(())
    }
}

/// Two replicas refreshing one new group at once (a leadership handover: the old leader
/// still posting, the new one starting): the claim on the first post lets one post, the
/// other tries again later and then edits that message.
#[tokio::test]
async fn two_refreshers_of_a_new_group_post_it_once() {
    use opsbot::actions::alerts::{AlertRouting, AlertService, RefreshError, console_target};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("opsbot.db").display());
    let store = opsbot::store::connect(&url.into(), 4, opsbot::store::Access::Exclusive)
        .await
        .unwrap();
    let chat = Arc::new(SlowPosts::default());
    let replica = |name: &str| {
        AlertService::start(
            store.clone(),
            Arc::new(opsbot::metrics::Metrics::new()),
            chat.clone(),
            Vec::new(),
            Arc::new(opsbot::ports::SystemClock),
            AlertRouting {
                default: Some(console_target("ops")),
                max_listed: 10,
                ..AlertRouting::default()
            },
            name,
        )
    };
    let (old_leader, new_leader) = (replica("host:1:a"), replica("host:2:b"));
    let alert = opsbot::domain::IncomingAlert {
        source: opsbot::domain::AlertSource::Webhook,
        fingerprint: "f1".into(),
        group_key: "g".into(),
        status: AlertStatus::Firing,
        labels: [("alertname".to_owned(), "DiskFull".to_owned())].into(),
        annotations: Default::default(),
        starts_at: chrono::Utc::now(),
        ends_at: None,
        generator_url: None,
    };
    old_leader.ingest(vec![alert]).await.unwrap();
    let posting = tokio::spawn({
        let old_leader = old_leader.clone();
        async move { old_leader.refresh_group("g").await }
    });
    let posts = || chat.posts.load(std::sync::atomic::Ordering::SeqCst);
    eventually("the old leader to be posting", WAIT, async || {
        satisfies(posts(), |n| *n == 1)
    })
    .await;
    let second = new_leader.refresh_group("g").await;
    assert!(
        matches!(second, Err(RefreshError::Claimed(_))),
        "{second:?}"
    );
    chat.release.notify_one();
    posting.await.unwrap().unwrap();
    assert_eq!(posts(), 1);
    assert_eq!(
        store
            .group_message("g", opsbot::domain::Platform::Console, "ops")
            .await
            .unwrap()
            .map(|(id, _)| id),
        Some("m0".to_owned())
    );
    new_leader.refresh_group("g").await.unwrap();
    assert_eq!(posts(), 1, "the new leader found the message to edit");
}
