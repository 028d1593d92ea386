//! The fake Discord the Discord tests talk to through serenity: a REST API that records
//! every call, a WebSocket gateway that sends what a test pushes, and helpers to wait for
//! what the bot did. Included with `#[path]` by tests/discord.rs only.
#![allow(dead_code)]

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message as Ws;

pub const APP_ID: &str = "1000000000000000001";
pub const GUILD: &str = "2000000000000000002";
pub const CHANNEL: &str = "3000000000000000003";
pub const BOT: &str = "4000000000000000004";
pub const ALICE: &str = "5000000000000000005";
pub const BOB: &str = "6000000000000000006";
pub const STRANGER: &str = "7000000000000000007";

/// One REST call the fake received, and the message id it answered with (if any).
#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub body: Value,
    /// Attached files: (file name, content).
    pub files: Vec<(String, String)>,
    pub answered_id: Option<String>,
}

#[derive(Default)]
pub struct FakeState {
    pub calls: Mutex<Vec<Call>>,
    pub ws_url: Mutex<String>,
    /// Channel posts still to refuse with 429.
    pub rate_limit_posts: AtomicUsize,
    /// Edits of an interaction's original response still to refuse with 404, as Discord does
    /// before it has processed the deferral.
    pub unknown_webhook: AtomicUsize,
    /// Refuse every edit of an interaction's response with 403 Missing Access (50001).
    pub missing_access: std::sync::atomic::AtomicBool,
    pub next_id: AtomicU64,
    /// IDENTIFY payloads received on the gateway.
    pub identified: Mutex<Vec<Value>>,
    /// READYs sent.
    pub ready: AtomicUsize,
    /// Close every session with 4004 (authentication failed) at IDENTIFY.
    pub reject_token: std::sync::atomic::AtomicBool,
    pub dispatch: Mutex<Option<broadcast::Sender<(String, Value)>>>,
}

pub struct FakeDiscord {
    pub base: String,
    pub state: Arc<FakeState>,
    pub dispatch: broadcast::Sender<(String, Value)>,
}

pub fn user(id: &str, name: &str) -> Value {
    json!({ "id": id, "username": name, "global_name": name, "avatar": null, "bot": id == BOT })
}

pub fn member(id: &str, name: &str) -> Value {
    json!({ "user": user(id, name), "roles": [], "joined_at": "2024-01-01T00:00:00.000000+00:00",
            "deaf": false, "mute": false, "flags": 0 })
}

pub fn message(id: &str, channel: &str, content: &str) -> Value {
    json!({
        "id": id, "channel_id": channel, "author": user(BOT, "opsbot"), "content": content,
        "timestamp": "2024-01-01T00:00:00.000000+00:00", "edited_timestamp": null, "tts": false,
        "mention_everyone": false, "mentions": [], "mention_roles": [], "attachments": [],
        "embeds": [], "pinned": false, "type": 0
    })
}

/// Splits a `multipart/form-data` body into its `payload_json` and its files.
pub fn multipart(content_type: &str, body: &[u8]) -> (Value, Vec<(String, String)>) {
    let boundary = content_type.split("boundary=").nth(1).unwrap_or_default();
    let text = String::from_utf8_lossy(body);
    let mut payload = Value::Null;
    let mut files = Vec::new();
    for part in text.split(&format!("--{boundary}")) {
        let Some((head, content)) = part.split_once("\r\n\r\n") else {
            continue;
        };
        let content = content.strip_suffix("\r\n").unwrap_or(content);
        if head.contains("name=\"payload_json\"") {
            payload = serde_json::from_str(content).unwrap();
        } else if let Some(name) = head.split("filename=\"").nth(1) {
            let name = name.split('"').next().unwrap().to_owned();
            files.push((name, content.to_owned()));
        }
    }
    (payload, files)
}

pub async fn rest(
    State(fake): State<Arc<FakeState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (body, files) = if content_type.starts_with("multipart/") {
        multipart(content_type, &body)
    } else {
        (serde_json::from_slice(&body).unwrap_or(Value::Null), vec![])
    };
    let parts: Vec<&str> = path.trim_start_matches("/api/v10/").split('/').collect();
    let new_id =
        || (9_000_000_000_000_000_000 + fake.next_id.fetch_add(1, Ordering::SeqCst)).to_string();
    let mut answered_id = None;
    let response = match (method.as_str(), parts.as_slice()) {
        ("GET", ["gateway"]) => {
            axum::Json(json!({ "url": *fake.ws_url.lock().unwrap() })).into_response()
        }
        ("GET", ["gateway", "bot"]) => axum::Json(json!({
            "url": *fake.ws_url.lock().unwrap(), "shards": 1,
            "session_start_limit": { "total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1 }
        }))
        .into_response(),
        ("GET", ["users", "@me"]) => axum::Json(user(BOT, "opsbot")).into_response(),
        ("PUT", ["applications", _, .., "commands"]) => axum::Json(json!([])).into_response(),
        ("POST", ["interactions", _, _, "callback"]) => StatusCode::NO_CONTENT.into_response(),
        ("PATCH", ["webhooks", _, _, "messages", "@original"])
            if fake
                .unknown_webhook
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok() =>
        {
            (
                StatusCode::NOT_FOUND,
                axum::Json(json!({ "code": 10015, "message": "Unknown Webhook" })),
            )
                .into_response()
        }
        ("PATCH", ["webhooks", _, _, "messages", "@original"])
            if fake.missing_access.load(Ordering::SeqCst) =>
        {
            (
                StatusCode::FORBIDDEN,
                axum::Json(json!({ "code": 50001, "message": "Missing Access" })),
            )
                .into_response()
        }
        ("PATCH", ["webhooks", _, _, "messages", "@original"]) => {
            let id = new_id();
            answered_id = Some(id.clone());
            let content = body["content"].as_str().unwrap_or_default();
            axum::Json(message(&id, CHANNEL, content)).into_response()
        }
        ("DELETE", ["webhooks", ..]) => StatusCode::NO_CONTENT.into_response(),
        ("POST", ["channels", channel, "messages"]) => {
            let limited = fake
                .rate_limit_posts
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if limited {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "1"), ("content-type", "application/json")],
                    r#"{"message": "You are being rate limited.", "retry_after": 1.0, "global": false}"#,
                )
                    .into_response()
            } else {
                let id = new_id();
                answered_id = Some(id.clone());
                let content = body["content"].as_str().unwrap_or_default();
                axum::Json(message(&id, channel, content)).into_response()
            }
        }
        ("PATCH", ["channels", channel, "messages", id]) => {
            let content = body["content"].as_str().unwrap_or_default();
            axum::Json(message(id, channel, content)).into_response()
        }
        ("PUT", ["channels", _, "messages", _, "reactions", _, "@me"]) => {
            StatusCode::NO_CONTENT.into_response()
        }
        _ => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "code": 0, "message": "404: Not Found" })),
        )
            .into_response(),
    };
    fake.calls.lock().unwrap().push(Call {
        method: method.to_string(),
        path,
        body,
        files,
        answered_id,
    });
    response
}

/// One gateway session: HELLO, IDENTIFY -> READY, heartbeats acknowledged, pushed dispatches.
pub async fn gateway_session(fake: Arc<FakeState>, stream: tokio::net::TcpStream) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let mut pushed = fake.dispatch.lock().unwrap().as_ref().unwrap().subscribe();
    let hello = json!({ "op": 10, "d": { "heartbeat_interval": 45000 } });
    if ws.send(Ws::Text(hello.to_string())).await.is_err() {
        return;
    }
    let mut seq = 0u64;
    loop {
        tokio::select! {
            incoming = ws.next() => {
                let Some(Ok(Ws::Text(text))) = incoming else { return };
                let frame: Value = serde_json::from_str(&text).unwrap();
                match frame["op"].as_u64() {
                    Some(1) => {
                        let _ = ws.send(Ws::Text(json!({ "op": 11 }).to_string())).await;
                    }
                    Some(2) => {
                        fake.identified.lock().unwrap().push(frame["d"].clone());
                        if fake.reject_token.load(Ordering::SeqCst) {
                            let close = tokio_tungstenite::tungstenite::protocol::CloseFrame {
                                code: 4004.into(),
                                reason: "Authentication failed.".into(),
                            };
                            let _ = ws.send(Ws::Close(Some(close))).await;
                            return;
                        }
                        seq += 1;
                        let ready = json!({ "op": 0, "s": seq, "t": "READY", "d": {
                            "v": 10, "user": user(BOT, "opsbot"), "guilds": [],
                            "session_id": "session-1",
                            "resume_gateway_url": *fake.ws_url.lock().unwrap(),
                            "application": { "id": APP_ID, "flags": 0 }
                        }});
                        if ws.send(Ws::Text(ready.to_string())).await.is_err() {
                            return;
                        }
                        fake.ready.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => {}
                }
            }
            Ok((kind, d)) = pushed.recv() => {
                seq += 1;
                let frame = json!({ "op": 0, "s": seq, "t": kind, "d": d });
                if ws.send(Ws::Text(frame.to_string())).await.is_err() {
                    return;
                }
            }
        }
    }
}

pub async fn fake_discord() -> FakeDiscord {
    let state = Arc::new(FakeState::default());
    let (dispatch, _) = broadcast::channel(64);
    *state.dispatch.lock().unwrap() = Some(dispatch.clone());
    let ws_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    *state.ws_url.lock().unwrap() = format!("ws://{}", ws_listener.local_addr().unwrap());
    let s = state.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = ws_listener.accept().await {
            tokio::spawn(gateway_session(s.clone(), stream));
        }
    });
    let app = axum::Router::new().fallback(rest).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    FakeDiscord {
        base,
        state,
        dispatch,
    }
}

impl FakeDiscord {
    pub fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().unwrap().clone()
    }

    /// Polls (with a deadline) until some recorded call satisfies `pred`, and returns it.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&Call) -> bool) -> Call {
        wait(what, || self.calls().into_iter().find(|c| pred(c))).await
    }

    /// Pushes a dispatch to every connected gateway session.
    pub fn push(&self, kind: &str, d: Value) {
        self.dispatch.send((kind.to_owned(), d)).unwrap();
    }

    pub async fn wait_ready(&self) {
        wait("the gateway READY", || {
            (self.state.ready.load(Ordering::SeqCst) > 0).then_some(())
        })
        .await;
    }

    /// Channel posts whose text contains `needle`.
    pub fn posts_containing(&self, needle: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == "POST" && c.path.ends_with("/messages"))
            .filter(|c| {
                c.body["content"]
                    .as_str()
                    .is_some_and(|t| t.contains(needle))
            })
            .collect()
    }
}

/// How long a wait may take here: serenity's gateway start is the slowest thing in the tests.
pub const SLOW: Duration = Duration::from_secs(15);

pub async fn wait<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    crate::support::eventually(what, SLOW, async || probe()).await
}

pub fn content_of(c: &Call) -> &str {
    c.body["content"].as_str().unwrap_or_default()
}
