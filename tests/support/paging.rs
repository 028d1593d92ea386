//! Fake paging services on 127.0.0.1:0 speaking the real APIs' request and response shapes:
//! PagerDuty's Events API v2 (`POST /v2/enqueue`, 202 `{"status":"success",…}`, 400
//! `{"status":"invalid event",…}` for an event it would refuse) and ntfy (`POST /TOPIC`, the
//! published message as JSON, 401 `{"code":40101,…}` without the topic's token). Each records
//! what it received and can be told to answer some requests with an error status first.
//! Included with `#[path]` by the paging tests.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::support::{WAIT, eventually, satisfies};

/// One request a fake received.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

/// A fake's state: what it received, and statuses to answer the next requests with.
#[derive(Clone, Default)]
pub struct Fake {
    seen: Arc<Mutex<Vec<Received>>>,
    failures: Arc<Mutex<VecDeque<u16>>>,
    /// ntfy: the bearer token the topic needs, if any.
    token: Option<String>,
}

impl Fake {
    /// A fake whose topic (ntfy) needs `Authorization: Bearer {token}`.
    pub fn with_token(token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            ..Self::default()
        }
    }

    /// The next requests are answered with these statuses, in order, then normally.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.failures.lock().unwrap().extend(statuses);
    }

    pub fn seen(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until the fake has received `n` requests; returns them.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        eventually(&format!("{n} request(s) at the fake"), WAIT, async || {
            satisfies(self.seen(), |s| s.len() >= n)
        })
        .await
    }

    /// Records the request; `Some(status)` when it is to be answered with a scripted error.
    fn receive(&self, path: String, headers: HeaderMap, body: String) -> Option<StatusCode> {
        self.seen.lock().unwrap().push(Received {
            path,
            headers,
            body,
        });
        let status = self.failures.lock().unwrap().pop_front()?;
        Some(StatusCode::from_u16(status).expect("a valid status"))
    }
}

/// A fake PagerDuty Events API v2; returns its base URL (a service's `url`).
pub async fn pagerduty(fake: Fake) -> String {
    async fn enqueue(
        axum::extract::State(fake): axum::extract::State<Fake>,
        headers: HeaderMap,
        body: String,
    ) -> Response {
        if let Some(status) = fake.receive("/v2/enqueue".into(), headers, body.clone()) {
            return pagerduty_error(status);
        }
        let event: Value = match serde_json::from_str(&body) {
            Ok(v) => v,
            Err(_) => return invalid_event("Event object is invalid"),
        };
        if let Some(problem) = pagerduty_problem(&event) {
            return invalid_event(&problem);
        }
        let dedup = event["dedup_key"].clone();
        (
            StatusCode::ACCEPTED,
            axum::Json(
                json!({"status": "success", "message": "Event processed", "dedup_key": dedup}),
            ),
        )
            .into_response()
    }
    let app = axum::Router::new()
        .route("/v2/enqueue", axum::routing::post(enqueue))
        .with_state(fake);
    crate::support::serve_fake(app).await
}

/// What PagerDuty would refuse in an event, as its `errors` entry.
fn pagerduty_problem(event: &Value) -> Option<String> {
    let key = event["routing_key"].as_str().unwrap_or_default();
    if key.len() != 32 {
        return Some("Length of 'routing_key' is incorrect (should be 32 characters)".into());
    }
    let action = event["event_action"].as_str().unwrap_or_default();
    if !["trigger", "acknowledge", "resolve"].contains(&action) {
        return Some("'event_action' is invalid".into());
    }
    if action != "trigger" {
        return event["dedup_key"]
            .as_str()
            .is_none()
            .then(|| "'dedup_key' is missing".into());
    }
    let payload = &event["payload"];
    for field in ["summary", "source", "severity"] {
        if payload[field].as_str().is_none_or(str::is_empty) {
            return Some(format!("'payload.{field}' is missing or blank"));
        }
    }
    let severity = payload["severity"].as_str().unwrap_or_default();
    (!["critical", "error", "warning", "info"].contains(&severity))
        .then(|| "'payload.severity' is invalid".into())
}

fn invalid_event(error: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"status": "invalid event", "message": "Event object is invalid", "errors": [error]})),
    )
        .into_response()
}

fn pagerduty_error(status: StatusCode) -> Response {
    match status {
        StatusCode::BAD_REQUEST => invalid_event("scripted by the test"),
        StatusCode::TOO_MANY_REQUESTS => (
            status,
            axum::Json(json!({"status": "throttle exceeded", "message": "Requests for this service are arriving too quickly. Please retry later."})),
        )
            .into_response(),
        _ => (status, "").into_response(),
    }
}

/// A fake ntfy server; returns its base URL (topics are `{base}/{topic}`).
pub async fn ntfy(fake: Fake) -> String {
    async fn publish(
        axum::extract::State(fake): axum::extract::State<Fake>,
        axum::extract::Path(topic): axum::extract::Path<String>,
        headers: HeaderMap,
        body: String,
    ) -> Response {
        let authorized = fake.token.as_ref().is_none_or(|token| {
            headers.get("authorization").and_then(|v| v.to_str().ok())
                == Some(&format!("Bearer {token}"))
        });
        let message = published(&topic, &headers, &body);
        if let Some(status) = fake.receive(format!("/{topic}"), headers, body) {
            return ntfy_error(status, "scripted by the test");
        }
        if !authorized {
            return ntfy_error(StatusCode::UNAUTHORIZED, "unauthorized");
        }
        axum::Json(message).into_response()
    }
    let app = axum::Router::new()
        .route("/{topic}", axum::routing::post(publish))
        .with_state(fake);
    crate::support::serve_fake(app).await
}

/// The message ntfy answers a publish with.
fn published(topic: &str, headers: &HeaderMap, body: &str) -> Value {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let priority: u8 = header("priority").and_then(|p| p.parse().ok()).unwrap_or(3);
    let tags: Vec<&str> = header("tags").map_or(Vec::new(), |t| t.split(',').collect());
    json!({
        "id": "sPs71M8A2T",
        "time": 1_764_583_200,
        "expires": 1_764_626_400,
        "event": "message",
        "topic": topic,
        "title": header("title"),
        "message": body,
        "priority": priority,
        "tags": tags,
    })
}

fn ntfy_error(status: StatusCode, error: &str) -> Response {
    let code = u32::from(status.as_u16()) * 100 + 1;
    (
        status,
        axum::Json(json!({"code": code, "http": status.as_u16(), "error": error, "link": "https://ntfy.sh/docs/publish/"})),
    )
        .into_response()
}
