//! The Telegram adapter through teloxide against a local fake Bot API: long polling with
//! explicit `allowed_updates`, `bot_command` entities (`/cmd@bot` in groups), approvals by
//! `message_reaction` and by inline-keyboard buttons, webhook mode with the secret token,
//! duplicate updates, 429s and long output.

mod support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opsbot::ports::{Clock, FakeClock};
use serde_json::{Value, json};
use support::TestApp;

const TOKEN: &str = "123456:TEST-token-abcdef";
const CHAT: i64 = -1001234567890;
const ALICE: u64 = 111;
const BOB: u64 = 222;
const MALLORY: u64 = 999;
const WEBHOOK_SECRET: &str = "tg-webhook-secret_0123";

/// The fake Bot API: queued updates for `getUpdates`, and every call it received.
#[derive(Default)]
struct Fake {
    updates: Mutex<VecDeque<Value>>,
    arrived: tokio::sync::Notify,
    calls: Mutex<Vec<(String, Value)>>,
    next_message_id: Mutex<i64>,
    /// This many sends are answered with 429 "retry after 1" first.
    rate_limited: Mutex<usize>,
    /// Messages sent as files: they have a caption, not text.
    documents: Mutex<Vec<i64>>,
    /// While set, `getMe` fails as an unreachable Bot API would (502 through a proxy).
    me_unavailable: std::sync::atomic::AtomicBool,
    /// While set, sends are refused as for a chat the bot is not (or no longer) in.
    chat_not_found: std::sync::atomic::AtomicBool,
    /// Who called `getUpdates`, in order: the name of the address each replica was given
    /// (see [`fake_telegram_for`]).
    pollers: Mutex<Vec<&'static str>>,
    /// Numbers each `getUpdates`; a poll still waiting when a newer one arrives is ended with
    /// 409, as Telegram ends the older of two concurrent polls.
    polls_started: std::sync::atomic::AtomicU64,
    /// How many polls were ended that way.
    conflicts: std::sync::atomic::AtomicUsize,
    /// Who pinged `GET /heartbeat` (a replica's `health.heartbeat_url`), in order.
    heartbeats: Mutex<Vec<&'static str>>,
}

impl Fake {
    fn push(&self, update: Value) {
        self.updates.lock().unwrap().push_back(update);
        self.arrived.notify_waiters();
    }

    /// Calls of `method` so far (method names compared case-insensitively).
    fn calls(&self, method: &str) -> Vec<Value> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, _)| m.eq_ignore_ascii_case(method))
            .map(|(_, body)| body.clone())
            .collect()
    }

    /// Texts the bot sent to the chat.
    fn sent_texts(&self) -> Vec<String> {
        self.calls("sendMessage")
            .iter()
            .map(|b| b["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    async fn wait_until<T>(&self, what: &str, mut check: impl FnMut(&Fake) -> Option<T>) -> T {
        support::eventually(what, support::WAIT, async || {
            check(self).ok_or_else(|| self.calls.lock().unwrap().clone())
        })
        .await
    }

    /// Waits until the bot has sent a text containing `needle`; returns that text.
    async fn wait_for_text(&self, what: &str, needle: &str) -> String {
        self.wait_until(what, |f| {
            f.sent_texts().into_iter().find(|t| t.contains(needle))
        })
        .await
    }

    fn message(&self, body: &Value) -> Value {
        let mut next = self.next_message_id.lock().unwrap();
        *next += 1;
        json!({
            "message_id": 1000 + *next,
            "date": 1_700_000_000,
            "chat": { "id": body["chat_id"].as_i64().unwrap_or(CHAT), "type": "supergroup", "title": "ops" },
            "from": { "id": 42, "is_bot": true, "first_name": "opsbot", "username": "opsbot_test" },
            "text": body["text"].as_str().unwrap_or("document"),
        })
    }
}

async fn bot_api(
    axum::extract::State((fake, caller)): axum::extract::State<(Arc<Fake>, &'static str)>,
    axum::extract::Path((bot, method)): axum::extract::Path<(String, String)>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::Json<Value> {
    if bot != format!("bot{TOKEN}") {
        // What Telegram answers for a revoked or mistyped token.
        return axum::Json(
            json!({ "ok": false, "error_code": 401, "description": "Unauthorized" }),
        );
    }
    let is_json = headers
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap_or_default().contains("json"));
    let body: Value = if is_json {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    } else {
        // Multipart (sendDocument): keep what the assertions need.
        let text = String::from_utf8_lossy(&body).into_owned();
        json!({ "multipart": text, "chat_id": CHAT })
    };
    fake.calls
        .lock()
        .unwrap()
        .push((method.clone(), body.clone()));
    let ok = |result: Value| axum::Json(json!({ "ok": true, "result": result }));
    match method.to_ascii_lowercase().as_str() {
        "getme"
            if fake
                .me_unavailable
                .load(std::sync::atomic::Ordering::SeqCst) =>
        {
            axum::Json(json!({ "ok": false, "error_code": 502, "description": "Bad Gateway" }))
        }
        "getme" => ok(json!({
            "id": 42, "is_bot": true, "first_name": "opsbot", "username": "opsbot_test",
            "can_join_groups": true, "can_read_all_group_messages": false,
            "supports_inline_queries": false, "has_main_web_app": false,
        })),
        "getupdates" => {
            use std::sync::atomic::Ordering::SeqCst;
            fake.pollers.lock().unwrap().push(caller);
            let mine = fake.polls_started.fetch_add(1, SeqCst) + 1;
            let offset = body["offset"].as_i64().unwrap_or(0);
            let take = |fake: &Fake| {
                let mut q = fake.updates.lock().unwrap();
                q.retain(|u| u["update_id"].as_i64().unwrap() >= offset);
                q.iter().cloned().collect::<Vec<_>>()
            };
            let mut updates = take(&fake);
            if updates.is_empty() {
                let _ =
                    tokio::time::timeout(Duration::from_millis(500), fake.arrived.notified()).await;
                updates = take(&fake);
            }
            if fake.polls_started.load(SeqCst) != mine {
                fake.conflicts.fetch_add(1, SeqCst);
                return axum::Json(json!({
                    "ok": false, "error_code": 409,
                    "description": "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
                }));
            }
            ok(Value::Array(updates))
        }
        "sendmessage" | "senddocument"
            if fake
                .chat_not_found
                .load(std::sync::atomic::Ordering::SeqCst) =>
        {
            axum::Json(json!({
                "ok": false, "error_code": 400, "description": "Bad Request: chat not found",
            }))
        }
        "sendmessage" | "senddocument" => {
            {
                let mut limited = fake.rate_limited.lock().unwrap();
                if *limited > 0 {
                    *limited -= 1;
                    return axum::Json(json!({
                        "ok": false, "error_code": 429,
                        "description": "Too Many Requests: retry after 1",
                        "parameters": { "retry_after": 1 },
                    }));
                }
            }
            let message = fake.message(&body);
            if method.eq_ignore_ascii_case("senddocument") {
                let id = message["message_id"].as_i64().unwrap();
                fake.documents.lock().unwrap().push(id);
            }
            ok(message)
        }
        "editmessagetext"
            if body["message_id"]
                .as_i64()
                .is_some_and(|id| fake.documents.lock().unwrap().contains(&id)) =>
        {
            axum::Json(json!({
                "ok": false, "error_code": 400,
                "description": "Bad Request: there is no text in the message to edit",
            }))
        }
        "editmessagetext" | "editmessagecaption" => ok(fake.message(&body)),
        _ => ok(json!(true)),
    }
}

async fn fake_telegram() -> (String, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    (fake_telegram_for(&fake, "").await, fake)
}

/// Another address for the same fake Bot API, whose callers it records as `caller`.
async fn fake_telegram_for(fake: &Arc<Fake>, caller: &'static str) -> String {
    let heartbeat = |axum::extract::State((fake, caller)): axum::extract::State<(
        Arc<Fake>,
        &'static str,
    )>| async move {
        fake.heartbeats.lock().unwrap().push(caller);
    };
    let app = axum::Router::new()
        .route("/{bot}/{method}", axum::routing::post(bot_api))
        .route("/heartbeat", axum::routing::get(heartbeat))
        .with_state((fake.clone(), caller));
    support::serve_fake(app).await
}

fn config(base: &str, extra: &str) -> String {
    let people =
        support::deployer_and_lead(&format!("telegram:{ALICE}"), &format!("telegram:{BOB}"));
    format!(
        r#"{people}
[telegram]
bot_token = "{TOKEN}"
api_url = "{base}"
send_interval = "50ms"
{extra}
"#
    )
}

async fn app_with(extra: &str) -> (TestApp, Arc<Fake>) {
    app_with_clock(extra, None).await
}

async fn app_with_clock(extra: &str, clock: Option<Arc<FakeClock>>) -> (TestApp, Arc<Fake>) {
    let (base, fake) = fake_telegram().await;
    (app_against(&base, extra, clock).await, fake)
}

async fn app_against(base: &str, extra: &str, clock: Option<Arc<FakeClock>>) -> TestApp {
    TestApp::builder()
        .config(&config(base, extra))
        .command("rollback.toml", support::ROLLBACK_NEEDING_ONE_LEAD)
        .command("note.toml", support::NOTE_NEEDING_ONE_LEAD)
        .script("act.sh", support::COUNTING_ACT)
        .clock(clock)
        .spawn()
        .await
}

fn person(id: u64) -> Value {
    json!({ "id": id, "is_bot": false, "first_name": format!("user{id}") })
}

fn chat() -> Value {
    json!({ "id": CHAT, "type": "supergroup", "title": "ops" })
}

/// A message update whose text starts with a `bot_command` entity, as Telegram sends it.
fn command(update_id: i64, from: u64, text: &str) -> Value {
    let command_len = text
        .split_whitespace()
        .next()
        .unwrap()
        .encode_utf16()
        .count();
    json!({
        "update_id": update_id,
        "message": {
            "message_id": update_id + 10,
            "date": 1_700_000_000,
            "chat": chat(),
            "from": person(from),
            "text": text,
            "entities": [{ "type": "bot_command", "offset": 0, "length": command_len }],
        }
    })
}

fn reaction(update_id: i64, from: u64, message_id: i64, old: &[&str], new: &[&str]) -> Value {
    let list = |emoji: &[&str]| -> Vec<Value> {
        emoji
            .iter()
            .map(|e| json!({ "type": "emoji", "emoji": e }))
            .collect()
    };
    json!({
        "update_id": update_id,
        "message_reaction": {
            "chat": chat(),
            "message_id": message_id,
            "user": person(from),
            "date": 1_700_000_000,
            "old_reaction": list(old),
            "new_reaction": list(new),
        }
    })
}

/// A press of the inline-keyboard button carrying `data` under message `message_id`.
fn button_press(update_id: i64, from: u64, message_id: i64, data: &str) -> Value {
    json!({
        "update_id": update_id,
        "callback_query": {
            "id": format!("cb{update_id}"),
            "from": person(from),
            "message": {
                "message_id": message_id, "date": 1_700_000_000, "chat": chat(),
                "text": "a message with buttons",
            },
            "chat_instance": "ci",
            "data": data,
        }
    })
}

/// Waits for the approval request `request` to be edited without its keyboard, saying `what`.
async fn assert_retired(fake: &Fake, request: i64, what: &str) {
    let retired = fake
        .wait_until("the request edited", |f| {
            f.calls("editMessageText").into_iter().next()
        })
        .await;
    assert_eq!(retired["message_id"], request);
    assert!(retired.get("reply_markup").is_none(), "{retired:#}");
    let text = retired["text"].as_str().unwrap();
    assert!(text.contains(what), "{text}");
}

fn runs(app: &TestApp) -> usize {
    std::fs::read_to_string(app.dir.path().join("runs.log"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Waits for the approval request, and for it to be bound to its message (a reaction on a
/// message not bound yet finds no request), and returns its message id and inline keyboard.
async fn approval_request(app: &TestApp, fake: &Fake) -> (i64, Value) {
    let request = fake
        .wait_until("the approval request", |f| {
            // The fake numbers the messages it sends 1001, 1002, ... in order.
            let calls = f.calls.lock().unwrap();
            let sends = calls.iter().filter(|(m, _)| {
                ["sendMessage", "sendDocument", "editMessageText"]
                    .iter()
                    .any(|s| m.eq_ignore_ascii_case(s))
            });
            sends.enumerate().find_map(|(i, (_, body))| {
                let text = body["text"].as_str().unwrap_or_default();
                text.contains("approval(s) from")
                    .then(|| (1001 + i as i64, body["reply_markup"].clone()))
            })
        })
        .await;
    let pool = support::sqlite_in(app.dir.path()).await;
    support::eventually(
        "the request bound to its message",
        support::WAIT,
        async || {
            let bound: Option<i64> =
                sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE message_id = $1")
                    .bind(request.0.to_string())
                    .fetch_optional(&pool)
                    .await
                    .unwrap();
            support::satisfies(bound, |n| *n == Some(1))
        },
    )
    .await;
    request
}

#[tokio::test]
async fn polls_with_explicit_allowed_updates_and_answers_a_command_in_its_thread() {
    let (app, fake) = app_with("").await;
    fake.push(command(1, ALICE, "/help"));
    let reply = fake
        .wait_until("the /help answer", |f| {
            f.calls("sendMessage").into_iter().next()
        })
        .await;
    assert_eq!(reply["chat_id"], json!(CHAT));
    assert_eq!(
        reply["reply_parameters"]["message_id"],
        json!(11),
        "answered in reply"
    );
    assert!(reply["text"].as_str().unwrap().contains("rollback"));
    let polls = fake.calls("getUpdates");
    let allowed = &polls[0]["allowed_updates"];
    assert_eq!(
        allowed,
        &json!(["message", "callback_query", "message_reaction"]),
        "message_reaction must be asked for explicitly"
    );
    assert!(
        !fake.calls("deleteWebhook").is_empty(),
        "polling removes a stale webhook"
    );
    let ready = reqwest::get(app.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let body = ready.text().await.unwrap();
    assert!(body.contains("adapter telegram: up"), "{body}");
}

#[tokio::test]
async fn a_rejected_token_turns_the_adapter_off_without_stopping_opsbot() {
    let (base, fake) = fake_telegram().await;
    let revoked = config(&base, "").replace(TOKEN, "654321:revoked-token-xyz");
    let app = TestApp::builder().config(&revoked).spawn().await;
    let body = app
        .wait_for_readyz("adapter telegram: off (bot token rejected)")
        .await;
    assert!(body.starts_with("ready"), "{body}");
    assert!(
        fake.calls("getUpdates").is_empty(),
        "no polling with a rejected token"
    );
}

#[tokio::test]
async fn rollback_approved_by_a_reaction_runs_once_and_posts_its_output() {
    let (app, fake) = app_with("").await;
    fake.push(command(1, ALICE, "/rollback@opsbot_test api"));
    let (request, keyboard) = approval_request(&app, &fake).await;
    assert_eq!(
        keyboard["inline_keyboard"][0][0]["callback_data"],
        json!("/approve 1"),
        "an Approve button"
    );
    // The requester's own 👍 and a stranger's do not count.
    fake.push(reaction(2, ALICE, request, &[], &["👍"]));
    fake.push(reaction(3, MALLORY, request, &[], &["👍"]));
    fake.wait_until("two refusals", |f| {
        (f.sent_texts().len() >= 3).then_some(())
    })
    .await;
    assert_eq!(runs(&app), 0);
    // The approver's 👍 runs it; redelivering that update changes nothing.
    fake.push(reaction(4, BOB, request, &[], &["👍"]));
    fake.push(reaction(4, BOB, request, &[], &["👍"]));
    let output = fake
        .wait_for_text("the run's output", "rolled back api")
        .await;
    assert!(
        output.contains("#1 /rollback service=api succeeded"),
        "{output}"
    );
    fake.wait_for_text(
        "the approval's acknowledgement",
        "Approved by bob (1/1), running /rollback service=api; the result will be posted in reply to request #1.",
    )
    .await;
    assert_eq!(runs(&app), 1, "exactly once");
    let reply = fake
        .calls("sendMessage")
        .into_iter()
        .find(|b| b["text"].as_str().unwrap().contains("rolled back api"))
        .unwrap();
    assert_eq!(
        reply["reply_parameters"]["message_id"],
        json!(request),
        "in the approval's thread"
    );
}

#[tokio::test]
async fn the_approve_button_works_like_the_command_for_the_presser() {
    let (app, fake) = app_with("").await;
    fake.push(command(1, ALICE, "/rollback api"));
    let (request, _) = approval_request(&app, &fake).await;
    let press = |update_id: i64, from: u64| button_press(update_id, from, request, "/approve 1");
    fake.push(press(2, ALICE));
    fake.wait_for_text(
        "the requester's refusal",
        "approving #1 needs one of the roles sre-lead",
    )
    .await;
    fake.push(press(3, BOB));
    fake.wait_for_text("the run's output", "rolled back api")
        .await;
    assert_eq!(runs(&app), 1);
    assert_retired(&fake, request, "approved by bob").await;
    assert_eq!(
        fake.calls("answerCallbackQuery").len(),
        2,
        "each press answered"
    );
}

#[tokio::test]
async fn alert_groups_carry_ack_buttons_that_go_away_once_pressed() {
    let (app, fake) = app_with(&support::alerts_routed_to("telegram", &CHAT.to_string())).await;
    support::fire_alerts(&app.url(""), "01-firing-single.json").await;
    let id = app.store.active_alerts(1).await.unwrap()[0].id;
    let group = fake
        .wait_until("the group message", |f| {
            f.calls("sendMessage").into_iter().next()
        })
        .await;
    assert!(
        group["text"].as_str().unwrap().contains("FIRING"),
        "{group:#}"
    );
    let button = &group["reply_markup"]["inline_keyboard"][0][0];
    assert_eq!(button["text"], format!("Ack #{id}"), "{group:#}");
    assert_eq!(button["callback_data"], format!("/ack {id}"));

    // The fake numbers messages from 1001; the group message is the first.
    fake.push(button_press(1, BOB, 1001, &format!("/ack {id}")));
    let edit = fake
        .wait_until("the group message edited", |f| {
            f.calls("editMessageText").into_iter().next()
        })
        .await;
    assert_eq!(edit["message_id"], 1001, "edited in place");
    assert!(
        edit["text"].as_str().unwrap().contains("(acked by bob)"),
        "{edit:#}"
    );
    assert!(
        edit.get("reply_markup").is_none(),
        "no keyboard, so Telegram removes the old one: {edit:#}"
    );
    let acked = app.store.alert(id).await.unwrap().unwrap();
    assert_eq!(
        acked.acked_by.as_deref(),
        Some("bob"),
        "acked as the presser"
    );
}

#[tokio::test]
async fn an_expired_request_says_so_and_loses_its_keyboard() {
    let clock = Arc::new(FakeClock::new(chrono::Utc::now()));
    let (app, fake) = app_with_clock("", Some(clock.clone())).await;
    fake.push(command(1, ALICE, "/rollback api"));
    let (request, keyboard) = approval_request(&app, &fake).await;
    assert!(!keyboard.is_null(), "Approve / Deny to begin with");
    support::wait_for_run_message(&app, 1).await;
    clock.advance(Duration::from_secs(11 * 60));
    let notices = app.router.sweep().await.unwrap();
    assert_eq!(notices.len(), 1, "the expiry is announced");
    assert_retired(
        &fake,
        request,
        "expired without enough approvals; nothing ran.",
    )
    .await;
    assert_eq!(runs(&app), 0);
}

#[tokio::test]
async fn a_request_too_long_for_a_message_is_a_file_whose_caption_and_keyboard_are_updated() {
    let (base, fake) = fake_telegram().await;
    let long = "x".repeat(5000);
    let runbook = support::ROLLBACK_NEEDING_ONE_LEAD.replace(
        r#"argv = ["./act.sh", "{service}"]"#,
        &format!(r#"argv = ["./act.sh", "{{service}}", "{long}"]"#),
    );
    let app = TestApp::builder()
        .config(&config(&base, ""))
        .command("rollback.toml", &runbook)
        .script("act.sh", "#!/bin/sh\necho rolled back $1\n")
        .spawn()
        .await;
    fake.push(command(1, ALICE, "/rollback api"));
    let request = fake
        .wait_until("the request as a file", |f| {
            f.calls("sendDocument").into_iter().next()
        })
        .await;
    let multipart = request["multipart"].as_str().unwrap();
    assert!(multipart.contains("/approve 1"), "the keyboard comes along");
    support::wait_for_run_message(&app, 1).await;

    fake.push(button_press(2, BOB, 1001, "/approve 1"));
    let caption = fake
        .wait_until("the caption updated", |f| {
            f.calls("editMessageCaption").into_iter().next()
        })
        .await;
    assert_eq!(caption["message_id"], 1001);
    assert!(caption.get("reply_markup").is_none(), "{caption:#}");
    let text = caption["caption"].as_str().unwrap();
    assert!(text.contains("approved by bob"), "{text}");
    assert!(text.encode_utf16().count() <= 1024, "a caption's limit");
}

#[tokio::test]
async fn commands_for_another_bot_and_plain_messages_are_ignored() {
    let (_app, fake) = app_with("").await;
    fake.push(command(1, ALICE, "/help@some_other_bot"));
    fake.push(json!({
        "update_id": 2,
        "message": { "message_id": 5, "date": 1_700_000_000, "chat": chat(), "from": person(ALICE), "text": "just chatting" }
    }));
    fake.push(command(3, ALICE, "/whoami@OpsBot_Test"));
    let replies = fake
        .wait_until("the /whoami answer", |f| {
            let texts = f.sent_texts();
            (!texts.is_empty()).then_some(texts)
        })
        .await;
    assert_eq!(
        replies.len(),
        1,
        "only /whoami@ours was answered: {replies:?}"
    );
    assert!(replies[0].contains("alice"), "{replies:?}");
}

#[tokio::test]
async fn a_429_delays_the_reply_but_does_not_lose_it() {
    let (_app, fake) = app_with("").await;
    *fake.rate_limited.lock().unwrap() = 1;
    fake.push(command(1, ALICE, "/help"));
    let started = std::time::Instant::now();
    fake.wait_until("the reply sent again after Retry-After", |f| {
        (f.calls("sendMessage").len() == 2).then_some(())
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );
    let texts = fake.sent_texts();
    assert_eq!(
        texts[0], texts[1],
        "the same reply, refused once, then sent"
    );
}

async fn webhook(app: &TestApp, secret: &str, update: &Value) -> reqwest::StatusCode {
    reqwest::Client::new()
        .post(app.url("/telegram/webhook"))
        .header("x-telegram-bot-api-secret-token", secret)
        .json(update)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn webhook_mode_checks_the_secret_token_and_ignores_duplicates() {
    let (app, fake) = app_with(&format!(
        "mode = \"webhook\"\nwebhook_url = \"https://opsbot.example.com/telegram/webhook\"\nwebhook_secret = \"{WEBHOOK_SECRET}\""
    ))
    .await;
    let registered = fake
        .wait_until("setWebhook", |f| f.calls("setWebhook").into_iter().next())
        .await;
    // teloxide sends setWebhook as multipart (it may carry a certificate).
    let form = registered["multipart"].as_str().unwrap();
    assert!(form.contains(WEBHOOK_SECRET), "{form}");
    assert!(
        form.contains(r#"["message","callback_query","message_reaction"]"#),
        "{form}"
    );
    assert!(
        fake.calls("getUpdates").is_empty(),
        "no polling in webhook mode"
    );

    let rollback = command(7, ALICE, "/rollback api");
    assert_eq!(webhook(&app, "wrong-secret-0000", &rollback).await, 401);
    assert_eq!(webhook(&app, "", &rollback).await, 401);
    assert_eq!(webhook(&app, WEBHOOK_SECRET, &rollback).await, 200);
    assert_eq!(
        webhook(&app, WEBHOOK_SECRET, &rollback).await,
        200,
        "a retry is acked"
    );
    let (request, _) = approval_request(&app, &fake).await;
    let approve = reaction(8, BOB, request, &[], &["👍"]);
    assert_eq!(webhook(&app, "nope-nope-nope-nope", &approve).await, 401);
    assert_eq!(webhook(&app, WEBHOOK_SECRET, &approve).await, 200);
    fake.wait_for_text("the run's output", "rolled back api")
        .await;
    assert_eq!(runs(&app), 1);
    let requests = fake
        .sent_texts()
        .iter()
        .filter(|t| t.contains("approval(s) from"))
        .count();
    assert_eq!(requests, 1, "the redelivered update made no second request");
}

fn webhook_mode() -> String {
    format!(
        "mode = \"webhook\"\nwebhook_url = \"https://opsbot.example.com/telegram/webhook\"\nwebhook_secret = \"{WEBHOOK_SECRET}\""
    )
}

#[tokio::test]
async fn a_command_for_the_bot_by_name_waits_until_the_bot_knows_its_name() {
    let (base, fake) = fake_telegram().await;
    fake.me_unavailable
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let app = app_against(&base, &webhook_mode(), None).await;
    fake.wait_until("a failed getMe", |f| f.calls("getMe").into_iter().next())
        .await;
    let status = command(31, ALICE, "/status@opsbot_test");
    assert_eq!(
        webhook(&app, WEBHOOK_SECRET, &status).await,
        503,
        "not taken: Telegram is to deliver it again"
    );
    // Commands without a bot's name do not depend on it.
    let plain = command(32, ALICE, "/whoami");
    assert_eq!(webhook(&app, WEBHOOK_SECRET, &plain).await, 200);

    fake.me_unavailable
        .store(false, std::sync::atomic::Ordering::SeqCst);
    // Telegram's redelivery of the same update.
    support::eventually("the redelivery to be taken", support::WAIT, async || {
        support::satisfies(webhook(&app, WEBHOOK_SECRET, &status).await, |s| *s == 200)
    })
    .await;
    fake.wait_for_text("the answer to /status", "No health checks are configured.")
        .await;
}

#[tokio::test]
async fn debug_logs_never_show_the_bot_token() {
    let (logs, _capturing) = support::Captured::start("debug");
    let (_app, fake) = app_with("").await;
    fake.push(command(41, ALICE, "/status"));
    fake.wait_for_text("the answer to /status", "No health checks are configured.")
        .await;
    let text = logs.text();
    assert!(text.contains("DEBUG"), "debug logs were captured: {text}");
    assert!(!text.contains(TOKEN), "{text}");
}

#[tokio::test]
async fn long_output_is_sent_as_a_file() {
    let (app, fake) = app_with("").await;
    support::write_executable(
        app.dir.path(),
        "act.sh",
        "#!/bin/sh\ni=0\nwhile [ $i -lt 400 ]; do echo \"line $i of a long rollback log\"; i=$((i+1)); done\n",
    );
    fake.push(command(1, ALICE, "/rollback api"));
    let (request, _) = approval_request(&app, &fake).await;
    fake.push(reaction(2, BOB, request, &[], &["👍"]));
    let document = fake
        .wait_until("the document", |f| {
            f.calls("sendDocument").into_iter().next()
        })
        .await;
    let multipart = document["multipart"].as_str().unwrap();
    assert!(multipart.contains("output.txt"), "sent as a file");
    assert!(multipart.contains("(full text attached)"), "with a caption");
}

/// Asserts that a message the bot sent is plain text quoting `INJECTION`: no parse mode and
/// no entities, so nothing in it is a mention or a link; each `@` is followed by a word
/// joiner, so Telegram does not read `@everyone` as a username either.
fn assert_plain(sent: &Value) {
    let quoted = support::INJECTION.replace('@', "@\u{2060}");
    assert!(sent["text"].as_str().unwrap().contains(&quoted), "{sent:#}");
    assert!(sent.get("parse_mode").is_none(), "{sent:#}");
    assert!(sent.get("entities").is_none(), "{sent:#}");
}

#[tokio::test]
async fn mentions_and_links_in_arguments_and_alerts_stay_plain_text() {
    let (app, fake) = app_with(&support::alerts_routed_to("telegram", &CHAT.to_string())).await;
    fake.push(command(
        1,
        ALICE,
        &format!("/note \"{}\"", support::INJECTION),
    ));
    let request = fake
        .wait_until("the approval request", |f| {
            f.calls("sendMessage").into_iter().next()
        })
        .await;
    assert!(
        request["text"].as_str().unwrap().contains("Request #1"),
        "{request:#}"
    );
    assert_plain(&request);

    support::deliver_alerts(&app.url(""), support::alert_carrying(support::INJECTION)).await;
    let group = fake
        .wait_until("the group message", |f| {
            f.calls("sendMessage").into_iter().nth(1)
        })
        .await;
    assert_plain(&group);
}

#[tokio::test]
async fn an_approval_request_telegram_refuses_as_chat_not_found_is_cancelled_and_logged() {
    let (logs, _capturing) = support::Captured::start("warn");
    let (app, fake) = app_with("").await;
    fake.chat_not_found
        .store(true, std::sync::atomic::Ordering::SeqCst);
    fake.push(command(1, ALICE, "/rollback@opsbot_test api"));
    let request_id = support::assert_request_withdrawn_unposted(&app).await;
    support::assert_warned(&logs.text(), &request_id, "Add opsbot to this chat again");
    assert_eq!(runs(&app), 0);
}

/// Two `opsbot serve` replicas on one fresh Postgres schema polling one fake bot, once one
/// of them (the leader) polls.
struct Replicas {
    fake: Arc<Fake>,
    leader: support::Serve,
    /// The other replica, and the name the fake knows its calls by.
    follower: (&'static str, support::Serve),
    schema: String,
    _dir: tempfile::TempDir,
}

impl Replicas {
    /// `None` (after saying why) without Postgres, outside CI.
    async fn start(lease_secs: u64) -> Option<Replicas> {
        let schema = support::fresh_postgres_schema().await?;
        let fake = Arc::new(Fake::default());
        let dir = tempfile::tempdir().unwrap();
        let mut replicas = Vec::new();
        for name in ["a", "b"] {
            let base = fake_telegram_for(&fake, name).await;
            let config = replica_config(dir.path(), name, &base, &schema, lease_secs);
            replicas.push((name, support::Serve::start(&config, support::WAIT)));
        }
        let leader = fake
            .wait_until("one replica polling a few times", |f| {
                let pollers = f.pollers.lock().unwrap();
                (pollers.len() >= 3).then(|| pollers[0])
            })
            .await;
        let pollers: std::collections::BTreeSet<_> =
            fake.pollers.lock().unwrap().iter().copied().collect();
        assert_eq!(pollers.len(), 1, "only the leader polls: {pollers:?}");
        let i = replicas
            .iter()
            .position(|(name, _)| *name == leader)
            .unwrap();
        let (_, leader) = replicas.remove(i);
        let follower = replicas.pop().unwrap();
        Some(Replicas {
            fake,
            leader,
            follower,
            schema,
            _dir: dir,
        })
    }

    /// Waits for `replica` to have pinged the heartbeat `n` times; how many times the other
    /// replica has by then.
    async fn heartbeats(&self, replica: &'static str, n: usize) -> usize {
        self.fake
            .wait_until("heartbeat pings", |f| {
                let pings = f.heartbeats.lock().unwrap();
                let mine = pings.iter().filter(|p| **p == replica).count();
                (mine >= n).then_some(pings.len() - mine)
            })
            .await
    }

    /// Waits for the follower to poll; how long that took from `since`.
    async fn follower_polls(&self, since: std::time::Instant) -> Duration {
        let name = self.follower.0;
        self.fake
            .wait_until("the other replica polling", |f| {
                f.pollers.lock().unwrap().contains(&name).then_some(())
            })
            .await;
        since.elapsed()
    }

    async fn cleanup(self) {
        drop((self.leader, self.follower));
        support::drop_postgres_schema(&self.schema).await;
    }
}

/// Two `opsbot serve` replicas on one Postgres schema polling one bot: one replica polls
/// (Telegram would end the other's polls with 409s) and pings the heartbeat; after a kill -9
/// of that leader the other takes over both within the lease time, and a command sent then
/// is answered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_polls_and_another_takes_over_when_it_is_killed() {
    let Some(mut replicas) = Replicas::start(2).await else {
        return;
    };
    let (fake, follower) = (replicas.fake.clone(), &replicas.follower.1);
    assert!(replicas.leader.readyz().await.contains(" leader (epoch 1)"));
    let leader = fake.pollers.lock().unwrap()[0];
    assert_eq!(
        replicas.heartbeats(leader, 3).await,
        0,
        "the leader pings alone"
    );
    let standby = follower.readyz().await;
    assert!(
        standby.starts_with("ready\n")
            && standby.contains(" follower\n")
            && standby.contains("adapter telegram: standby"),
        "{standby}"
    );

    replicas.leader.kill();
    let took = replicas.follower_polls(std::time::Instant::now()).await;
    assert!(
        took < Duration::from_secs(6),
        "taken over after {took:?} (lease 2 s)"
    );
    let follower = &replicas.follower.1;
    let ready = follower.readyz().await;
    assert!(
        ready.contains(" leader (epoch 2)\nleading for: "),
        "{ready}"
    );
    replicas.heartbeats(replicas.follower.0, 1).await;
    let metrics = reqwest::get(follower.url("/metrics")).await.unwrap();
    assert!(metrics.text().await.unwrap().contains("opsbot_leader 1\n"));

    fake.push(command(1, ALICE, "/whoami"));
    fake.wait_for_text("the answer after failover", "You are alice")
        .await;
    // Polled twice more since: the update was confirmed, and nobody answered it again.
    let polls = fake.pollers.lock().unwrap().len();
    fake.wait_until("two more polls", |f| {
        (f.pollers.lock().unwrap().len() >= polls + 2).then_some(())
    })
    .await;
    let answers = fake.sent_texts();
    assert_eq!(answers.len(), 1, "answered once: {answers:?}");
    let conflicts = fake.conflicts.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(conflicts, 0, "no poll was ended by another");
    replicas.cleanup().await;
}

/// A notice queued (decided) while the leader could not post it (frozen, then killed with
/// -9) is posted once, by the replica that takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_decided_before_the_leader_is_killed_is_posted_once_by_the_next() {
    use opsbot::ports::{OutboundMessage, OutboundTarget, OutboxStore, Queued};
    let Some(mut replicas) = Replicas::start(2).await else {
        return;
    };
    let url = support::postgres_url();
    let store = opsbot::store::PostgresStore::connect(&url, 2, Some(&replicas.schema))
        .await
        .expect("connect to the replicas' schema");
    replicas.leader.freeze();
    let notice = Queued {
        to: OutboundTarget {
            platform: opsbot::domain::Platform::Telegram,
            channel_id: CHAT.to_string(),
            thread: None,
        },
        message: OutboundMessage::text("decided before the kill"),
        edit_of: None,
        binds_run: None,
    };
    store.enqueue(&notice, chrono::Utc::now()).await.unwrap();
    replicas.leader.kill();
    let fake = replicas.fake.clone();
    fake.wait_for_text("the notice, from the new leader", "decided before the kill")
        .await;
    support::eventually(
        "the post recorded as delivered",
        support::WAIT,
        async || store.outbox_depth().await.unwrap().pending == 0,
    )
    .await;
    let ready = replicas.follower.1.readyz().await;
    assert!(
        ready.contains(" leader (epoch 2)") && ready.contains("outbox: 0 pending"),
        "{ready}"
    );
    let posts = fake.sent_texts();
    assert_eq!(posts, ["decided before the kill"], "posted once");
    store.pool().close().await;
    replicas.cleanup().await;
}

/// A leader stopped with SIGTERM releases its lease: another replica polls within a third
/// of the lease (its next attempt), not after the whole lease has lapsed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_gracefully_hands_over_before_its_lease_lapses() {
    let Some(replicas) = Replicas::start(12).await else {
        return;
    };
    replicas.leader.terminate();
    let took = replicas.follower_polls(std::time::Instant::now()).await;
    assert!(
        took < Duration::from_secs(8),
        "taken over after {took:?} (lease 12 s)"
    );
    let ready = replicas.follower.1.readyz().await;
    assert!(ready.contains(" leader (epoch 2)"), "{ready}");
    replicas.cleanup().await;
}

/// A replica `name`'s config in its own folder under `dir`: Telegram polling and the
/// heartbeat at `base`, the store in Postgres `schema`, a `lease_secs` leader lease.
fn replica_config(
    dir: &std::path::Path,
    name: &str,
    base: &str,
    schema: &str,
    lease_secs: u64,
) -> std::path::PathBuf {
    let folder = dir.join(name);
    std::fs::create_dir_all(folder.join("commands")).unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[store]\ndatabase_url = \"{}\"\n\
         [catalog]\ndir = \"commands\"\n[cluster]\nlease_secs = {lease_secs}\n\
         [health]\nheartbeat_url = \"{base}/heartbeat\"\nheartbeat_every = \"200ms\"\n{}",
        support::postgres_schema_url(schema),
        config(base, "")
    );
    let path = folder.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn an_escalation_step_mentions_the_person_at_the_utf16_offset_after_the_emoji() {
    let clock = Arc::new(FakeClock::new(chrono::Utc::now()));
    let routed = format!(
        "[alerts]\nalertmanager_token = \"am-token-abc123\"\n\
         default_route = {{ platform = \"telegram\", channel = \"{CHAT}\", escalation = \"tg\" }}\n\
         [[escalation.policies]]\nname = \"tg\"\n\
         steps = [{{ after = \"0m\", notify = \"person:bob\" }}, {{ after = \"5m\", notify = \"person:alice\" }}]\n"
    );
    let (app, fake) = app_with_clock(&routed, Some(clock.clone())).await;
    support::fire_alerts(&app.url(""), "01-firing-single.json").await;
    let escalations = |f: &Fake| -> Vec<Value> {
        (f.calls("sendMessage").into_iter())
            .filter(|b| b["text"].as_str().unwrap_or_default().starts_with("🚨"))
            .collect()
    };
    // The escalation starts once the group's message is posted; sweep until its first step.
    let step = support::eventually("the first step", support::WAIT, async || {
        app.router.sweep().await.unwrap();
        escalations(&fake).into_iter().next().ok_or(())
    })
    .await;
    let text = step["text"].as_str().unwrap();
    assert!(text.ends_with(" @bob"), "{text}");
    let entities = step["entities"].as_array().expect("entities");
    assert_eq!(entities.len(), 1, "only bob: {step:#}");
    let e = &entities[0];
    assert_eq!(e["type"], "text_mention");
    assert_eq!(e["user"]["id"], BOB);
    let at = text.rfind("@bob").unwrap();
    // 🚨 is one char but two UTF-16 units: the offset counts units.
    assert_eq!(e["offset"], text[..at].encode_utf16().count());
    assert_eq!(e["length"], 4);

    // bob presses the step's Ack button: no second step.
    let button = &step["reply_markup"]["inline_keyboard"][0][0];
    let data = button["callback_data"].as_str().unwrap().to_owned();
    assert!(data.starts_with("/ack "), "{step:#}");
    fake.push(button_press(1, BOB, 1002, &data));
    fake.wait_until("the ack", |f| {
        (f.sent_texts().into_iter()).find(|t| t.contains("acknowledged by bob"))
    })
    .await;
    support::eventually("the escalation to stop", support::WAIT, async || {
        let stopped = app
            .store
            .due_escalations(clock.now() + chrono::Duration::hours(1), 10);
        stopped.await.unwrap().is_empty()
    })
    .await;
    clock.advance(Duration::from_secs(10 * 60));
    app.router.sweep().await.unwrap();
    app.wait_idle().await;
    assert_eq!(escalations(&fake).len(), 1, "no step after the ack");
}
