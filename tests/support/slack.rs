//! What the Slack tests share (HTTP in tests/slack.rs, Socket Mode in tests/slack_socket.rs,
//! two replicas in tests/result_failover.rs): a fake Slack Web API, the rollback runbook and
//! its people, and polling with a deadline. Included with `#[path]` by those only.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use crate::support::{TestApp, WAIT, eventually, satisfies};

/// What the fake Slack received: (method or `response_url/N`, JSON body).
pub type Seen = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

/// Socket Mode: the URL `apps.connections.open` hands out (with `?ticket=N` appended), to
/// callers with this app token.
#[derive(Clone)]
pub struct Connections {
    pub ws_url: String,
    pub app_token: String,
}

#[derive(Clone)]
struct Fake {
    seen: Seen,
    connections: Option<Connections>,
}

/// A fake Slack Web API (`/api/{method}`) and `response_url` target (`/respond/{id}`) on
/// 127.0.0.1:0; returns its base URL and what it saw. Posts get `ts` 1700000000.00000N for
/// the Nth `chat.*` call.
pub async fn fake_web_api(connections: Option<Connections>, seen: Seen) -> String {
    use axum::extract::{Path, State};
    use axum::http::HeaderMap;
    use axum::routing::post;
    async fn api(
        State(fake): State<Fake>,
        Path(method): Path<String>,
        headers: HeaderMap,
        body: String,
    ) -> axum::Json<serde_json::Value> {
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
        let mut log = fake.seen.lock().unwrap();
        log.push((method.clone(), v.clone()));
        if let (Some(c), "apps.connections.open") = (&fake.connections, method.as_str()) {
            let auth = headers.get("authorization").and_then(|a| a.to_str().ok());
            if auth != Some(&format!("Bearer {}", c.app_token)) {
                return axum::Json(serde_json::json!({ "ok": false, "error": "invalid_auth" }));
            }
            let n = log.iter().filter(|(m, _)| m == &method).count();
            return axum::Json(serde_json::json!({
                "ok": true,
                "url": format!("{}?ticket={n}", c.ws_url),
            }));
        }
        let posts = log.iter().filter(|(m, _)| m.starts_with("chat.")).count();
        let ts = format!("1700000000.{posts:06}");
        axum::Json(serde_json::json!({
            "ok": true,
            "channel": v["channel"],
            "ts": ts,
            "message": { "ts": ts, "text": v["text"] },
        }))
    }
    async fn respond(
        State(fake): State<Fake>,
        Path(id): Path<String>,
        body: String,
    ) -> axum::Json<serde_json::Value> {
        fake.seen.lock().unwrap().push((
            format!("response_url/{id}"),
            serde_json::from_str(&body).unwrap(),
        ));
        axum::Json(serde_json::json!({ "ok": true }))
    }
    async fn channel_info(
        State(fake): State<Fake>,
        axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
    ) -> axum::Json<serde_json::Value> {
        let id = q.get("channel").cloned().unwrap_or_default();
        fake.seen.lock().unwrap().push((
            "conversations.info".into(),
            serde_json::json!({ "channel": id }),
        ));
        let name = if id == "COPS" { "ops" } else { "elsewhere" };
        axum::Json(serde_json::json!({
            "ok": true,
            "channel": { "id": id, "name": name, "created": 1_700_000_000, "is_channel": true },
        }))
    }
    let app = axum::Router::new()
        .route("/api/conversations.info", axum::routing::get(channel_info))
        .route("/api/{method}", post(api))
        .route("/respond/{id}", post(respond))
        .with_state(Fake { seen, connections });
    crate::support::serve_fake(app).await
}

/// The app with `slack` (the `[slack]` table's keys, optionally followed by more tables),
/// alice (deployer, may request /rollback) and bob (sre-lead, may approve and ack alerts);
/// `act.sh` appends to `runs.log`.
pub async fn app_with_slack(slack: &str) -> TestApp {
    let people = crate::support::deployer_and_lead("slack:UALICE", "slack:UBOB");
    let config = format!("{people}\n[slack]\n{slack}\n");
    TestApp::builder()
        .config(&config)
        .command("rollback.toml", crate::support::ROLLBACK_NEEDING_ONE_LEAD)
        .script("act.sh", crate::support::COUNTING_ACT)
        .spawn()
        .await
}

/// Waits until `pred` holds for what the fake saw.
pub async fn wait_for(
    seen: &Seen,
    what: &str,
    pred: impl Fn(&[(String, serde_json::Value)]) -> bool,
) -> Vec<(String, serde_json::Value)> {
    eventually(what, WAIT, async || {
        satisfies(seen.lock().unwrap().clone(), |l| pred(l))
    })
    .await
}

/// Waits for the runbook's "succeeded" result and returns that Slack call's body.
pub async fn succeeded_in_thread(seen: &Seen) -> serde_json::Value {
    let succeeded =
        |v: &serde_json::Value| v["text"].as_str().is_some_and(|t| t.contains("succeeded"));
    let log = wait_for(seen, "the result in the thread", |l| {
        l.iter().any(|(_, v)| succeeded(v))
    })
    .await;
    log.into_iter()
        .map(|(_, v)| v)
        .find(succeeded)
        .expect("the result wait_for saw")
}

/// Waits until `ts` is bound to a runbook request (right after the approval request is posted).
pub async fn wait_for_binding(app: &TestApp, ts: &str) {
    eventually("the approval message to be bound", WAIT, async || {
        let store = &app.store;
        let bound = store.run_by_message(opsbot::domain::Platform::Slack, "COPS", ts);
        bound.await.unwrap().is_some()
    })
    .await
}

/// The runbook's runs so far.
pub fn runs(app: &TestApp) -> usize {
    std::fs::read_to_string(app.dir.path().join("runs.log"))
        .unwrap_or_default()
        .lines()
        .count()
}

/// How many calls of `what` (a method, or `response_url/N`) the fake saw.
pub fn count_calls(seen: &Seen, what: &str) -> usize {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(w, _)| w == what)
        .count()
}

/// How many messages the fake saw whose text contains `needle`.
pub fn count_texts(seen: &Seen, needle: &str) -> usize {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(_, v)| v["text"].as_str().is_some_and(|t| t.contains(needle)))
        .count()
}

/// Waits for the `/status` answer alice's command got at `response_url/{id}`, and checks it
/// and its audit record.
pub async fn assert_status_answered(app: &TestApp, seen: &Seen, id: &str) {
    let at = format!("response_url/{id}");
    let log = wait_for(seen, "the response_url answer", |l| {
        l.iter().any(|(p, _)| p == &at)
    })
    .await;
    let (_, answer) = log.iter().find(|(p, _)| p == &at).unwrap();
    assert!(
        answer["text"]
            .as_str()
            .unwrap()
            .contains("No health checks are configured."),
        "{answer}"
    );
    let audit = app.store.recent_audit(1).await.unwrap();
    assert_eq!(audit[0].entry.actor, "slack:UALICE");
    assert_eq!(audit[0].entry.channel, "slack:COPS");
}

/// An Events API `reaction_added` callback: `user` reacted ✅ to message `ts` in COPS.
pub fn reaction_callback(event_id: &str, user: &str, ts: &str) -> serde_json::Value {
    serde_json::json!({
        "token": "x",
        "team_id": "T1",
        "api_app_id": "A1",
        "type": "event_callback",
        "event_id": event_id,
        "event_time": 1700000000,
        "event": {
            "type": "reaction_added",
            "user": user,
            "reaction": "white_check_mark",
            "item_user": "UOPSBOT",
            "item": { "type": "message", "channel": "COPS", "ts": ts },
            "event_ts": "1700000001.000200"
        }
    })
}

/// A slash command's form as Slack posts it: `user` typed `command text` in COPS (#ops); its
/// `response_url` is the fake's `/respond/{n}` at `base`.
pub fn slash(base: &str, user: &str, command: &str, text: &str, n: u32) -> String {
    serde_urlencoded::to_string([
        ("token", "x"),
        ("team_id", "T1"),
        ("team_domain", "acme"),
        ("channel_id", "COPS"),
        ("channel_name", "ops"),
        ("user_id", user),
        ("user_name", user),
        ("command", command),
        ("text", text),
        ("response_url", &format!("{base}/respond/{n}")),
        ("trigger_id", &format!("{n}.{command}")),
    ])
    .unwrap()
}

/// POSTs `body` to `url` signed with `secret` as Slack signs it; the HTTP status answered.
pub async fn signed_with(secret: &str, url: String, body: &str, content_type: &str) -> u16 {
    use hmac::{Hmac, Mac};
    let ts = chrono::Utc::now().timestamp().to_string();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    let signature = format!("v0={}", hex::encode(mac.finalize().into_bytes()));
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .header("x-slack-request-timestamp", ts)
        .header("x-slack-signature", signature)
        .body(body.to_owned())
        .send()
        .await
        .expect("POST to opsbot");
    response.status().as_u16()
}
