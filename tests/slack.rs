//! The Slack adapter through slack-morphism against a local fake Slack Web API, with real
//! v0 request signatures: slash commands, reactions, retries and refusals.

#[path = "support/slack.rs"]
mod slack_support;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use opsbot::domain::AlertId;
use sha2::Sha256;
use slack_support::{
    Seen, count_texts, runs, slash, succeeded_in_thread, wait_for, wait_for_binding,
};
use support::TestApp;

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

async fn fake_slack() -> (String, Seen) {
    let seen: Seen = Arc::default();
    (slack_support::fake_web_api(None, seen.clone()).await, seen)
}

async fn app(base: &str) -> TestApp {
    slack_support::app_with_slack(&format!(
        "signing_secret = \"{SECRET}\"\nbot_token = \"xoxb-test-token\"\napi_url = \"{base}/api/\"\n"
    ))
    .await
}

fn sign(ts: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

async fn send(
    app: &TestApp,
    path: &str,
    body: &str,
    ts: i64,
    signature: &str,
    content_type: &str,
) -> reqwest::Response {
    reqwest::Client::new()
        .post(app.url(path))
        .header("content-type", content_type)
        .header("x-slack-request-timestamp", ts.to_string())
        .header("x-slack-signature", signature)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

/// Sends `body` to `path` correctly signed for now, as Slack would.
async fn signed(app: &TestApp, path: &str, body: &str) -> reqwest::Response {
    let content_type = if path == "/slack/commands" || path == "/slack/interactivity" {
        "application/x-www-form-urlencoded"
    } else {
        "application/json"
    };
    let ts = now();
    send(app, path, body, ts, &sign(ts, body), content_type).await
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test]
async fn a_signed_slash_command_is_acked_at_once_and_answered_through_response_url() {
    let (base, seen) = fake_slack().await;
    let app = app(&base).await;
    let body = slash(&base, "UALICE", "/status", "", 1);
    let started = Instant::now();
    let resp = signed(&app, "/slack/commands", &body).await;
    assert_eq!(resp.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(3));
    slack_support::assert_status_answered(&app, &seen, "1").await;
}

#[tokio::test]
async fn a_signed_slash_command_replayed_within_the_signature_window_runs_once() {
    let (base, seen) = fake_slack().await;
    let app = app(&base).await;
    let body = slash(&base, "UALICE", "/status", "", 1);
    let ts = now();
    let signature = sign(ts, &body);
    let form = "application/x-www-form-urlencoded";
    for _ in 0..5 {
        let resp = send(&app, "/slack/commands", &body, ts, &signature, form).await;
        assert_eq!(
            resp.status(),
            200,
            "a replay is acknowledged like the original"
        );
    }
    slack_support::assert_status_answered(&app, &seen, "1").await;
    app.wait_idle().await;
    assert_eq!(app.store.recent_audit(10).await.unwrap().len(), 1);
    assert_eq!(slack_support::count_calls(&seen, "response_url/1"), 1);
}

#[tokio::test]
async fn bad_signatures_and_replayed_timestamps_are_refused_and_change_nothing() {
    let (base, seen) = fake_slack().await;
    let app = app(&base).await;
    let body = slash(&base, "UALICE", "/rollback", "api", 1);
    assert_eq!(
        send(
            &app,
            "/slack/commands",
            &body,
            now(),
            "v0=deadbeef",
            "application/x-www-form-urlencoded"
        )
        .await
        .status(),
        401
    );
    let old = now() - 600;
    assert_eq!(
        send(
            &app,
            "/slack/commands",
            &body,
            old,
            &sign(old, &body),
            "application/x-www-form-urlencoded"
        )
        .await
        .status(),
        401
    );
    let tampered = body.replace("api", "web");
    assert_eq!(
        send(
            &app,
            "/slack/commands",
            &tampered,
            now(),
            &sign(now(), &body),
            "application/x-www-form-urlencoded"
        )
        .await
        .status(),
        401
    );

    // Slack's documented signing example is valid but from 2018: it must be refused as stale.
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/slack_v0.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let ts: i64 = fixture["timestamp"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        sign(ts, fixture["body"].as_str().unwrap()),
        fixture["expected_signature"].as_str().unwrap(),
        "our test signer matches Slack's example"
    );
    let r = send(
        &app,
        "/slack/commands",
        fixture["body"].as_str().unwrap(),
        ts,
        fixture["expected_signature"].as_str().unwrap(),
        "application/x-www-form-urlencoded",
    )
    .await;
    assert_eq!(r.status(), 401);

    assert!(
        app.store.recent_audit(10).await.unwrap().is_empty(),
        "nothing reached the router"
    );
    assert!(seen.lock().unwrap().is_empty());
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"opsbot_webhook_refused_total{endpoint="slack",reason="signature"} 4"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn url_verification_echoes_the_challenge() {
    let (base, _seen) = fake_slack().await;
    let app = app(&base).await;
    let body = r#"{"token":"x","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let resp = signed(&app, "/slack/events", body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.text().await.unwrap(),
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
}

/// Alice asks for `/rollback api` by slash command; returns the approval request the bot posted.
async fn request_rollback(app: &TestApp, base: &str, seen: &Seen) -> serde_json::Value {
    requested(app, base, seen, "/rollback", "api").await
}

/// Alice asks for `command text` by slash command; returns the approval request the bot posted.
async fn requested(
    app: &TestApp,
    base: &str,
    seen: &Seen,
    command: &str,
    text: &str,
) -> serde_json::Value {
    let body = slash(base, "UALICE", command, text, 1);
    assert_eq!(signed(app, "/slack/commands", &body).await.status(), 200);
    let log = wait_for(seen, "the approval request", |l| {
        l.iter().any(|(p, _)| p == "chat.postMessage")
    })
    .await;
    let (_, request) = log
        .into_iter()
        .find(|(p, _)| p == "chat.postMessage")
        .unwrap();
    request
}

fn reaction_event(event_id: &str, user: &str, ts: &str) -> String {
    slack_support::reaction_callback(event_id, user, ts).to_string()
}

#[tokio::test]
async fn rollback_approved_by_reaction_runs_once_and_answers_in_the_thread() {
    let (base, seen) = fake_slack().await;
    let app = app(&base).await;
    let request = &request_rollback(&app, &base, &seen).await;
    assert_eq!(request["channel"], "COPS");
    assert!(
        request["text"]
            .as_str()
            .unwrap()
            .contains("Request #1: /rollback service=api requested by alice")
    );
    let ts = "1700000000.000001";
    // The binding of the message to the request happens right after the post.
    wait_for_binding(&app, ts).await;

    // The requester's own reaction does not approve.
    let own = reaction_event("Ev1", "UALICE", ts);
    assert_eq!(signed(&app, "/slack/events", &own).await.status(), 200);
    wait_for(&seen, "refusal", |l| {
        l.iter().any(|(_, v)| {
            v["text"]
                .as_str()
                .is_some_and(|t| t.contains("needs one of the roles sre-lead"))
        })
    })
    .await;

    let approve = reaction_event("Ev2", "UBOB", ts);
    assert_eq!(signed(&app, "/slack/events", &approve).await.status(), 200);
    // Slack retries the same event (same id): ignored.
    assert_eq!(signed(&app, "/slack/events", &approve).await.status(), 200);
    let result = succeeded_in_thread(&seen).await;
    assert_eq!(result["thread_ts"], ts);
    assert!(result["text"].as_str().unwrap().contains("rolled back api"));
    assert_eq!(runs(&app), 1, "ran exactly once");
    app.wait_idle().await;
    assert_eq!(
        count_texts(&seen, "Approved by bob"),
        1,
        "the redelivered event caused nothing"
    );
    // The approver is told it started; the result is posted once, by the outbox.
    assert_eq!(count_texts(&seen, "rolled back api"), 1, "{seen:?}");
}

/// A Block Kit button press as Slack posts it to the interactivity URL.
fn button_press(user: &str, ts: &str, value: &str) -> String {
    let payload = serde_json::json!({
        "type": "block_actions",
        "team": { "id": "T1", "domain": "acme" },
        "user": { "id": user, "username": user, "team_id": "T1" },
        "api_app_id": "A1",
        "token": "x",
        "container": { "type": "message", "message_ts": ts, "channel_id": "COPS", "is_ephemeral": false },
        "trigger_id": "1.2.3",
        "channel": { "id": "COPS", "name": "ops" },
        "message": { "type": "message", "ts": ts, "text": "Request #1", "user": "UOPSBOT" },
        "actions": [{
            "type": "button", "action_id": "opsbot_command_0", "block_id": "b1",
            "text": { "type": "plain_text", "text": "Approve" },
            "value": value, "action_ts": "1700000002.000100",
        }],
    });
    serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap()
}

#[tokio::test]
async fn approval_requests_carry_buttons_and_a_press_approves_as_the_presser() {
    let (base, seen) = fake_slack().await;
    let app = app(&base).await;
    let request = &request_rollback(&app, &base, &seen).await;
    let buttons = &request["blocks"][1]["elements"];
    assert_eq!(buttons[0]["value"], "/approve 1", "{request:#}");
    assert_eq!(buttons[1]["value"], "/deny 1");
    assert_eq!(buttons[1]["style"], "danger");
    let ts = "1700000000.000001";

    // Unsigned presses are refused; the requester's press is refused by the router.
    let press = button_press("UALICE", ts, "/approve 1");
    let unsigned = send(
        &app,
        "/slack/interactivity",
        &press,
        now(),
        "v0=00",
        "application/x-www-form-urlencoded",
    )
    .await;
    assert_eq!(unsigned.status(), 401);
    assert_eq!(
        signed(&app, "/slack/interactivity", &press).await.status(),
        200
    );
    wait_for(&seen, "refusal", |l| {
        l.iter().any(|(_, v)| {
            v["text"]
                .as_str()
                .is_some_and(|t| t.contains("needs one of the roles sre-lead"))
        })
    })
    .await;

    let press = button_press("UBOB", ts, "/approve 1");
    assert_eq!(
        signed(&app, "/slack/interactivity", &press).await.status(),
        200
    );
    let result = succeeded_in_thread(&seen).await;
    assert_eq!(result["thread_ts"], ts);
    assert_eq!(runs(&app), 1, "ran exactly once");
    // The request's buttons go: it was decided.
    let text = retired_request(&seen, ts).await;
    assert!(
        text.starts_with(
            "Request #1: /rollback service=api requested by alice — ✅ approved by bob"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn alert_groups_carry_ack_buttons_and_a_press_removes_only_its_own() {
    let (base, seen) = fake_slack().await;
    let app = slack_support::app_with_slack(&format!(
        "signing_secret = \"{SECRET}\"\nbot_token = \"xoxb-test-token\"\napi_url = \"{base}/api/\"\n{}",
        support::alerts_routed_to("slack", "COPS")
    ))
    .await;
    support::fire_alerts(&app.url(""), "03-firing-grouped-3.json").await;
    let alerts = app.store.active_alerts(10).await.unwrap();
    let id = alerts.iter().find(|a| a.is_critical()).unwrap().id;
    let log = wait_for(&seen, "the group message", |l| {
        l.iter().any(|(p, _)| p == "chat.postMessage")
    })
    .await;
    let (_, group) = log.iter().find(|(p, _)| p == "chat.postMessage").unwrap();
    let values = |message: &serde_json::Value| -> Vec<String> {
        message["blocks"][1]["elements"]
            .as_array()
            .map(|b| {
                b.iter()
                    .map(|b| b["value"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let buttons = values(group);
    assert_eq!(buttons.len(), 3, "{group:#}");
    assert_eq!(buttons[0], format!("/ack {id}"), "the critical alert first");
    assert_eq!(
        group["blocks"][1]["elements"][0]["text"]["text"],
        format!("Ack #{id}")
    );
    assert!(
        group["text"].as_str().unwrap().contains("FIRING"),
        "fallback text kept"
    );

    let update = &acked_by_bob(&app, &seen, "1700000000.000001", id).await;
    assert_eq!(
        values(update),
        buttons[1..],
        "the other alerts keep their buttons"
    );
    let acked = app.store.alert(id).await.unwrap().unwrap();
    assert_eq!(
        acked.acked_by.as_deref(),
        Some("bob"),
        "acked as the presser"
    );
}

/// Waits for the request message `ts` to be updated without buttons; returns its new text.
async fn retired_request(seen: &Seen, ts: &str) -> String {
    let log = wait_for(seen, "the request updated", |l| {
        l.iter().any(|(p, v)| p == "chat.update" && v["ts"] == ts)
    })
    .await;
    let (_, update) = log
        .iter()
        .find(|(p, v)| p == "chat.update" && v["ts"] == ts)
        .unwrap();
    assert_eq!(update["blocks"], serde_json::json!([]), "{update:#}");
    update["text"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_denied_request_says_so_and_loses_its_buttons() {
    let (base, seen) = fake_slack().await;
    let app = app(&base).await;
    request_rollback(&app, &base, &seen).await;
    let ts = "1700000000.000001";
    wait_for_binding(&app, ts).await;
    let body = slash(&base, "UBOB", "/deny", "1", 2);
    assert_eq!(signed(&app, "/slack/commands", &body).await.status(), 200);
    let text = retired_request(&seen, ts).await;
    assert!(
        text.starts_with(
            "Request #1: /rollback service=api requested by alice — ❌ denied by bob; nothing ran."
        ) && text.contains("./act.sh api"),
        "says what would have run: {text}"
    );
    assert_eq!(runs(&app), 0);
}

/// A fake Slack Web API whose first `chat.postMessage` gets `status` (with `headers` and
/// `body`) and later ones succeed; returns its base URL, the posts it accepted and how many
/// it was sent.
async fn slack_refusing_the_first_post(
    status: u16,
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
) -> (String, Seen, Arc<std::sync::atomic::AtomicUsize>) {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = Arc::new(AtomicUsize::new(0));
    let seen: Seen = Arc::default();
    let (c, s) = (calls.clone(), seen.clone());
    let api = axum::Router::new().route(
        "/api/chat.postMessage",
        axum::routing::post(move |request: String| {
            let (c, s) = (c.clone(), s.clone());
            async move {
                if c.fetch_add(1, Ordering::SeqCst) == 0 {
                    let mut refusal = (StatusCode::from_u16(status).unwrap(), body).into_response();
                    for (name, value) in headers {
                        refusal.headers_mut().insert(*name, value.parse().unwrap());
                    }
                    return refusal;
                }
                let v: serde_json::Value = serde_json::from_str(&request).unwrap();
                s.lock().unwrap().push(("chat.postMessage".into(), v.clone()));
                axum::Json(serde_json::json!({"ok": true, "channel": v["channel"], "ts": "1.2", "message": {"ts": "1.2", "text": v["text"]}})).into_response()
            }
        }),
    );
    (support::serve_fake(api).await, seen, calls)
}

#[tokio::test]
async fn a_429_with_retry_after_delays_but_does_not_lose_the_alert_message() {
    let (base, seen, calls) = slack_refusing_the_first_post(
        429,
        &[("retry-after", "1"), ("content-type", "application/json")],
        r#"{"ok":false,"error":"ratelimited"}"#,
    )
    .await;
    let config = format!(
        "[slack]\nsigning_secret = \"{SECRET}\"\nbot_token = \"xoxb-t\"\napi_url = \"{base}/api\"\n{}",
        support::alerts_routed_to("slack", "CALERTS")
    );
    let app = TestApp::builder().config(&config).spawn().await;
    support::fire_alerts(&app.url(""), "01-firing-single.json").await;
    let log = wait_for(&seen, "the message after Retry-After", |l| !l.is_empty()).await;
    assert_eq!(log.len(), 1, "delivered once, not duplicated");
    assert_eq!(log[0].1["channel"], "CALERTS");
    assert!(
        calls.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "the first attempt was rate limited"
    );
}

#[tokio::test]
async fn an_approval_request_refused_with_a_503_is_sent_again() {
    let (base, seen, calls) = slack_refusing_the_first_post(
        503,
        &[("content-type", "text/html")],
        "<html>upstream unavailable</html>",
    )
    .await;
    let app = app(&base).await;
    let body = slash(&base, "UALICE", "/rollback", "api", 1);
    assert_eq!(signed(&app, "/slack/commands", &body).await.status(), 200);
    let log = wait_for(&seen, "the request after the 503", |l| !l.is_empty()).await;
    assert!(
        log[0].1["text"].as_str().unwrap().starts_with("Request #1"),
        "{log:#?}"
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    wait_for_binding(&app, "1.2").await;
}

#[tokio::test]
async fn channel_names_are_looked_up_once_for_events_that_carry_only_ids() {
    let (base, seen) = fake_slack().await;
    let api = opsbot::adapters::slack::SlackApi::new(
        &format!("{base}/api/"),
        &secrecy::SecretString::from("xoxb-test-token"),
    )
    .unwrap();
    assert_eq!(api.channel_name("COPS").await.as_deref(), Some("ops"));
    assert_eq!(api.channel_name("COPS").await.as_deref(), Some("ops"));
    assert_eq!(
        slack_support::count_calls(&seen, "conversations.info"),
        1,
        "the second answer came from the cache"
    );
}

/// The markup Slack would read as pings and links, escaped (`&lt;!channel&gt;`).
const INERT: [&str; 4] = [
    "&lt;!channel&gt;",
    "&lt;!here&gt;",
    "&lt;@U1&gt;",
    // The address in Slack's link syntax is code besides: Slack links no URL in code.
    "&lt;`https://evil.example|Approve`&gt;",
];

/// Asserts that a message Slack received shows `INJECTION` literally, in its text and blocks.
fn assert_inert(message: &serde_json::Value) {
    let text = message["text"].as_str().unwrap();
    let blocks = message["blocks"].to_string();
    for raw in ["<!channel>", "<!here>", "<@U1>", "<https://evil.example"] {
        assert!(!text.contains(raw), "{raw} reached Slack: {text}");
        assert!(!blocks.contains(raw), "{raw} reached Slack: {blocks}");
    }
    for inert in INERT {
        assert!(text.contains(inert), "{inert} missing: {text}");
    }
}

/// What `/note TEXT` (alice), a refused `/ack TEXT` (bob) and the alert delivery `alert` put
/// on Slack: the approval request, the refusal through `response_url` and the alert group's
/// message; and the app, with what the fake saw, for more.
async fn note_refusal_and_alert(
    text: &str,
    alert: String,
) -> (TestApp, Seen, [serde_json::Value; 3]) {
    let (base, seen) = fake_slack().await;
    let people = support::deployer_and_lead("slack:UALICE", "slack:UBOB");
    let config = format!(
        "{people}\n[slack]\nsigning_secret = \"{SECRET}\"\nbot_token = \"xoxb-test-token\"\n\
         api_url = \"{base}/api/\"\n{}",
        support::alerts_routed_to("slack", "COPS")
    );
    let app = TestApp::builder()
        .config(&config)
        .command("note.toml", support::NOTE_NEEDING_ONE_LEAD)
        .script("act.sh", support::COUNTING_ACT)
        .spawn()
        .await;

    let text = format!("\"{text}\"");
    let request = requested(&app, &base, &seen, "/note", &text).await;
    assert!(request["blocks"].is_array(), "buttons kept: {request:#}");

    // A refusal answered through response_url quotes what was typed too.
    let refusal = answered(&app, &base, &seen, "UBOB", "/ack", &text, 2).await;
    assert!(
        refusal["text"]
            .as_str()
            .unwrap()
            .contains("is not a number"),
        "{refusal:#}"
    );

    support::deliver_alerts(&app.url(""), alert).await;
    let log = wait_for(&seen, "the group message", |l| {
        l.iter().filter(|(p, _)| p == "chat.postMessage").count() == 2
    })
    .await;
    let (_, group) = log
        .into_iter()
        .rfind(|(p, _)| p == "chat.postMessage")
        .unwrap();
    assert!(
        group["text"].as_str().unwrap().contains("FIRING"),
        "{group:#}"
    );
    (app, seen, [request, refusal, group])
}

#[tokio::test]
async fn mentions_and_links_in_arguments_and_alerts_reach_slack_escaped() {
    let alert = support::alert_carrying(support::INJECTION);
    let (_app, _, sent) = note_refusal_and_alert(support::INJECTION, alert).await;
    for message in &sent {
        assert_inert(message);
    }
}

/// Asserts that a message Slack received shows `LINKS` with every address as code, outside
/// the ``` blocks, and asks Slack not to link or unfurl anything itself.
fn assert_unlinked(message: &serde_json::Value, unfurls: bool) {
    let text = message["text"].as_str().unwrap();
    assert!(text.contains(support::LINKS_AS_CODE), "{text}");
    support::assert_no_bare_link(text);
    assert_eq!(message["parse"], "none", "{message:#}");
    if unfurls {
        assert_eq!(message["unfurl_links"], false, "{message:#}");
        assert_eq!(message["unfurl_media"], false, "{message:#}");
    }
    // An edit that leaves no button sends `blocks: []`.
    if let Some(first) = message["blocks"].as_array().and_then(|b| b.first()) {
        let section = &first["text"];
        assert_eq!(section["type"], "mrkdwn");
        assert_eq!(section["verbatim"], true, "{message:#}");
        assert_eq!(section["text"], text, "the section shows the same text");
    }
}

#[tokio::test]
async fn links_in_arguments_and_alerts_reach_slack_as_code() {
    let alert = support::alert_summarised(support::LINKS);
    let (app, seen, [request, refusal, group]) =
        note_refusal_and_alert(support::LINKS, alert).await;
    assert_unlinked(&request, true);
    // In the ``` block of what will run, the argument is left as typed (code already).
    let fenced = request["text"]
        .as_str()
        .unwrap()
        .split("```")
        .nth(1)
        .unwrap();
    assert!(
        fenced.contains(" https://evil.example/login "),
        "{request:#}"
    );
    assert_unlinked(&refusal, true);
    for address in support::ALERT_ADDRESSES_AS_CODE {
        let text = group["text"].as_str().unwrap();
        assert!(text.contains(address), "{address} missing: {group:#}");
    }
    assert_unlinked(&group, true);

    // Its edit, after an ack by button, is the same.
    let id = app.store.active_alerts(1).await.unwrap()[0].id;
    // The fake numbers `chat.*` calls: the request was the first, the group the second.
    let edit = acked_by_bob(&app, &seen, "1700000000.000002", id).await;
    assert_unlinked(&edit, false);
}

/// Presses the "Ack" button of alert `id` on group message `ts` as bob; returns the edit of
/// that message, which says bob acked it.
async fn acked_by_bob(app: &TestApp, seen: &Seen, ts: &str, id: AlertId) -> serde_json::Value {
    let press = button_press("UBOB", ts, &format!("/ack {id}"));
    assert_eq!(
        signed(app, "/slack/interactivity", &press).await.status(),
        200
    );
    let log = wait_for(seen, "the group message edited", |l| {
        l.iter().any(|(p, _)| p == "chat.update")
    })
    .await;
    let (_, update) = log.into_iter().find(|(p, _)| p == "chat.update").unwrap();
    assert_eq!(update["ts"], ts, "edited in place");
    assert!(
        update["text"].as_str().unwrap().contains("(acked by bob)"),
        "{update:#}"
    );
    update
}

/// Sends slash command `n` and returns the body of its `response_url` answer.
async fn answered(
    app: &TestApp,
    base: &str,
    seen: &Seen,
    user: &str,
    cmd: &str,
    text: &str,
    n: u32,
) -> serde_json::Value {
    let body = slash(base, user, cmd, text, n);
    assert_eq!(signed(app, "/slack/commands", &body).await.status(), 200);
    let at = format!("response_url/{n}");
    let log = wait_for(seen, &at, |l| l.iter().any(|(p, _)| p == &at)).await;
    log.into_iter().find(|(p, _)| p == &at).unwrap().1
}

#[tokio::test]
async fn shared_outcomes_are_posted_in_the_channel_and_private_answers_stay_ephemeral() {
    let (base, seen) = fake_slack().await;
    let app = app(&base).await;
    let cases: &[(&str, &str, &str, &str)] = &[
        // Changes the channel's state: everyone sees it.
        (
            "UBOB",
            "/incident",
            "open P2 \"checkout slow\"",
            "in_channel",
        ),
        // Look-ups, dry runs and refusals: only the person who typed them.
        ("UBOB", "/incident", "status", "ephemeral"),
        ("UALICE", "/help", "", "ephemeral"),
        ("UALICE", "/whoami", "", "ephemeral"),
        ("UALICE", "/status", "", "ephemeral"),
        ("UALICE", "/rollback", "api --dry-run", "ephemeral"),
        ("UALICE", "/ack", "1", "ephemeral"),
        ("UBOB", "/ack", "not-a-number", "ephemeral"),
    ];
    for (n, (user, cmd, text, expected)) in cases.iter().enumerate() {
        let answer = answered(&app, &base, &seen, user, cmd, text, n as u32 + 1).await;
        assert_eq!(
            answer["response_type"], *expected,
            "{cmd} {text}: {answer:#}"
        );
    }
}

/// A fake Slack that refuses every `chat.postMessage` with `error` (the bot is not in the
/// channel) and records `response_url` answers.
async fn slack_refusing_posts(error: &'static str) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let api = axum::Router::new()
        .route(
            "/api/chat.postMessage",
            axum::routing::post(move || async move {
                axum::Json(serde_json::json!({ "ok": false, "error": error }))
            }),
        )
        .route(
            "/respond/{id}",
            axum::routing::post(
                move |axum::extract::Path(id): axum::extract::Path<String>, body: String| {
                    let s = s.clone();
                    async move {
                        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                        s.lock().unwrap().push((format!("response_url/{id}"), v));
                        axum::Json(serde_json::json!({ "ok": true }))
                    }
                },
            ),
        );
    (support::serve_fake(api).await, seen)
}

#[tokio::test]
async fn an_approval_request_slack_refuses_as_not_in_channel_is_cancelled_and_the_requester_told_how_to_invite_opsbot()
 {
    let (base, seen) = slack_refusing_posts("not_in_channel").await;
    let app = app(&base).await;
    let answer = answered(&app, &base, &seen, "UALICE", "/rollback", "api", 1).await;
    let text = answer["text"].as_str().unwrap();
    assert!(
        text.contains("Request #1 was cancelled") && text.contains("/invite @opsbot"),
        "{text}"
    );
    assert_eq!(answer["response_type"], "ephemeral", "{answer:#}");
    support::assert_request_withdrawn_unposted(&app).await;
    assert_eq!(runs(&app), 0);
}

#[tokio::test]
async fn with_a_command_prefix_slash_commands_arrive_under_their_prefixed_names() {
    let (base, seen) = fake_slack().await;
    let app = slack_support::app_with_slack(&format!(
        "signing_secret = \"{SECRET}\"\nbot_token = \"xoxb-test-token\"\napi_url = \"{base}/api/\"\ncommand_prefix = \"ops-\"\n"
    ))
    .await;
    let answer = answered(&app, &base, &seen, "UALICE", "/ops-whoami", "", 1).await;
    let text = answer["text"].as_str().unwrap();
    assert!(text.contains("alice"), "{text}");
    assert_eq!(
        app.store.recent_audit(1).await.unwrap()[0].entry.command,
        "whoami"
    );
}

/// A run of steps that needs no approval, requested by slash command: its answer is posted
/// with chat.postMessage (not through response_url) so that it has a `ts`, becomes the run's
/// progress message (edited with chat.update as the steps move), and the result is posted in
/// its thread.
#[tokio::test]
async fn a_run_of_steps_needing_no_approval_shows_its_progress_in_its_answer() {
    let (base, seen) = fake_slack().await;
    let people = support::deployer_and_lead("slack:UALICE", "slack:UBOB");
    let file = "name = \"hold\"\nsummary = \"Hold, then say so\"\nroles = [\"deployer\"]\n\
        [[steps]]\nname = \"hold\"\nkind = \"exec\"\nargv = [\"./hold.sh\"]\ntimeout = \"30s\"\n\
        [[steps]]\nname = \"done\"\nkind = \"message\"\ntext = \"held\"\n";
    let app = TestApp::builder()
        .config(&format!(
            "{people}\n[slack]\nsigning_secret = \"{SECRET}\"\nbot_token = \"xoxb-test-token\"\napi_url = \"{base}/api/\"\n"
        ))
        .command("hold.toml", file)
        .script("hold.sh", "#!/bin/sh\nwhile [ ! -f go ]; do sleep 0.01; done\n")
        .spawn()
        .await;
    let resp = signed(
        &app,
        "/slack/commands",
        &slash(&base, "UALICE", "/hold", "", 1),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let answered = |l: &[(String, serde_json::Value)]| {
        l.iter().any(|(m, v)| {
            m == "chat.postMessage" && v["text"].as_str().is_some_and(|t| t.contains("— running"))
        })
    };
    let log = wait_for(&seen, "the answer, posted", answered).await;
    // The fake's `ts` numbers its `chat.*` calls.
    let chats: Vec<&(String, serde_json::Value)> =
        log.iter().filter(|(m, _)| m.starts_with("chat.")).collect();
    let nth = chats
        .iter()
        .position(|c| answered(std::slice::from_ref(*c)))
        .unwrap();
    let ts = format!("1700000000.{:06}", nth + 1);
    support::eventually(
        "the answer bound as the run's message",
        support::WAIT,
        async || {
            let run = app
                .store
                .run(opsbot::domain::RunId(1))
                .await
                .unwrap()
                .unwrap();
            run.message_id.as_deref() == Some(ts.as_str())
        },
    )
    .await;
    std::fs::write(app.dir.path().join("go"), "").unwrap();
    let result = succeeded_in_thread(&seen).await;
    assert_eq!(result["thread_ts"], ts.as_str(), "{result}");
    wait_for(&seen, "the progress edited into the answer", |l| {
        l.iter().any(|(m, v)| {
            m == "chat.update"
                && v["ts"] == ts.as_str()
                && v["text"].as_str().is_some_and(|t| t.contains("✅ hold ("))
        })
    })
    .await;
}
