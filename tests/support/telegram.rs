//! The fake Telegram Bot API the Telegram tests talk to through teloxide: queued updates for
//! `getUpdates` (ending the older of two concurrent polls with 409, as Telegram does), every
//! call recorded with the replica that made it, and the updates a test sends. Included with
//! `#[path]` by tests/telegram.rs and tests/telegram_replicas.rs.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support;

pub const TOKEN: &str = "123456:TEST-token-abcdef";
pub const CHAT: i64 = -1001234567890;
pub const ALICE: u64 = 111;
pub const BOB: u64 = 222;
pub const MALLORY: u64 = 999;
pub const WEBHOOK_SECRET: &str = "tg-webhook-secret_0123";

/// The fake Bot API: queued updates for `getUpdates`, and every call it received.
#[derive(Default)]
pub struct Fake {
    pub updates: Mutex<VecDeque<Value>>,
    pub arrived: tokio::sync::Notify,
    pub calls: Mutex<Vec<(String, Value)>>,
    pub next_message_id: Mutex<i64>,
    /// This many sends are answered with 429 "retry after 1" first.
    pub rate_limited: Mutex<usize>,
    /// Messages sent as files: they have a caption, not text.
    pub documents: Mutex<Vec<i64>>,
    /// While set, `getMe` fails as an unreachable Bot API would (502 through a proxy).
    pub me_unavailable: std::sync::atomic::AtomicBool,
    /// While set, sends are refused as for a chat the bot is not (or no longer) in.
    pub chat_not_found: std::sync::atomic::AtomicBool,
    /// Who called `getUpdates`, in order: the name of the address each replica was given
    /// (see [`fake_telegram_for`]).
    pub pollers: Mutex<Vec<&'static str>>,
    /// Numbers each `getUpdates`; a poll still waiting when a newer one arrives is ended with
    /// 409, as Telegram ends the older of two concurrent polls.
    pub polls_started: std::sync::atomic::AtomicU64,
    /// How many polls were ended that way.
    pub conflicts: std::sync::atomic::AtomicUsize,
    /// Who pinged `GET /heartbeat` (a replica's `health.heartbeat_url`), in order.
    pub heartbeats: Mutex<Vec<&'static str>>,
    /// Who called `setWebhook`, in order.
    pub webhook_setters: Mutex<Vec<&'static str>>,
}

impl Fake {
    pub fn push(&self, update: Value) {
        self.updates.lock().unwrap().push_back(update);
        self.arrived.notify_waiters();
    }

    /// Calls of `method` so far (method names compared case-insensitively).
    pub fn calls(&self, method: &str) -> Vec<Value> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, _)| m.eq_ignore_ascii_case(method))
            .map(|(_, body)| body.clone())
            .collect()
    }

    /// Texts the bot sent to the chat.
    pub fn sent_texts(&self) -> Vec<String> {
        self.calls("sendMessage")
            .iter()
            .map(|b| b["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    pub async fn wait_until<T>(&self, what: &str, mut check: impl FnMut(&Fake) -> Option<T>) -> T {
        support::eventually(what, support::WAIT, async || {
            check(self).ok_or_else(|| self.calls.lock().unwrap().clone())
        })
        .await
    }

    /// Waits until the bot has sent a text containing `needle`; returns that text.
    pub async fn wait_for_text(&self, what: &str, needle: &str) -> String {
        self.wait_until(what, |f| {
            f.sent_texts().into_iter().find(|t| t.contains(needle))
        })
        .await
    }

    pub fn message(&self, body: &Value) -> Value {
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

pub async fn bot_api(
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
        "setwebhook" => {
            fake.webhook_setters.lock().unwrap().push(caller);
            ok(json!(true))
        }
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

pub async fn fake_telegram() -> (String, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    (fake_telegram_for(&fake, "").await, fake)
}

/// Another address for the same fake Bot API, whose callers it records as `caller`.
pub async fn fake_telegram_for(fake: &Arc<Fake>, caller: &'static str) -> String {
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

pub fn config(base: &str, extra: &str) -> String {
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

/// The `[telegram]` lines for webhook mode with [`WEBHOOK_SECRET`].
pub fn webhook_mode() -> String {
    format!(
        "mode = \"webhook\"\nwebhook_url = \"https://opsbot.example.com/telegram/webhook\"\nwebhook_secret = \"{WEBHOOK_SECRET}\""
    )
}

pub fn person(id: u64) -> Value {
    json!({ "id": id, "is_bot": false, "first_name": format!("user{id}") })
}

pub fn chat() -> Value {
    json!({ "id": CHAT, "type": "supergroup", "title": "ops" })
}

/// A message update whose text starts with a `bot_command` entity, as Telegram sends it.
pub fn command(update_id: i64, from: u64, text: &str) -> Value {
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

pub fn reaction(update_id: i64, from: u64, message_id: i64, old: &[&str], new: &[&str]) -> Value {
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
pub fn button_press(update_id: i64, from: u64, message_id: i64, data: &str) -> Value {
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
