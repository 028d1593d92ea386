//! Alert intake over HTTP (the edge): `POST /hooks/alertmanager` (Alertmanager's webhook,
//! version 4, bearer token) and `POST /hooks/alert` (a generic alert signed with
//! HMAC-SHA256). Both parse untrusted JSON into `IncomingAlert`s and answer 2xx only after
//! the alerts are committed; a store failure is 503 so the sender retries, and anything that
//! can never succeed (bad token, bad signature, bad JSON) is 4xx and changes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::actions::alerts::AlertService;
use crate::domain::{AlertSource, AlertStatus, IncomingAlert};
use crate::ports::Clock;

/// How far a signed webhook's timestamp may be from now (replay window).
pub const SIGNATURE_WINDOW_SECS: i64 = 300;

#[derive(Clone)]
pub struct HookState {
    pub alerts: Arc<AlertService>,
    pub alertmanager_token: Option<SecretString>,
    pub webhook_secret: Option<SecretString>,
    pub clock: Arc<dyn Clock>,
}

/// Alertmanager's webhook payload (version 4). Unknown fields are ignored: Alertmanager
/// adds fields over time and a receiver must not reject them.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmPayload {
    version: String,
    group_key: String,
    // The top-level `status` is ignored on purpose: each alert carries its own (fixture 04).
    alerts: Vec<AmAlert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmAlert {
    status: String,
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    starts_at: DateTime<Utc>,
    ends_at: Option<DateTime<Utc>>,
    #[serde(rename = "generatorURL", default)]
    generator_url: Option<String>,
    #[serde(default)]
    fingerprint: Option<String>,
}

/// The JSON every answer from here (and any timeout) has: `{"status": …, "message": …}`.
pub(crate) fn reply(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(serde_json::json!({ "status": status.as_u16(), "message": message.into() })),
    )
        .into_response()
}

/// A request header as text; `None` when absent or not visible ASCII. Signature and token
/// checks all read their headers this way.
pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Constant-time comparison, so a token cannot be guessed byte by byte from timings.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fingerprint from the labels when the sender did not give one.
fn label_fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (k, v) in labels {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..8])
}

/// The body of a request already authorised as far as its headers allow: read only now, so
/// that no one without the token makes opsbot buffer anything. Within the route's
/// `DefaultBodyLimit`; a refusal (too large, cut off) is JSON like every answer here.
async fn read_body(request: Request) -> Result<Bytes, Response> {
    Bytes::from_request(request, &())
        .await
        .map_err(|rejection| reply(rejection.status(), rejection.body_text()))
}

pub async fn alertmanager(State(state): State<HookState>, request: Request) -> Response {
    let Some(token) = &state.alertmanager_token else {
        return reply(
            StatusCode::NOT_FOUND,
            "alertmanager intake is not configured (alerts.alertmanager_token)",
        );
    };
    let presented = header(request.headers(), "authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !same(presented.as_bytes(), token.expose_secret().as_bytes()) {
        return reply(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    let body = match read_body(request).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let payload: AmPayload = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return reply(
                StatusCode::BAD_REQUEST,
                format!("not an Alertmanager webhook payload: {e}"),
            );
        }
    };
    if payload.version != "4" {
        return reply(
            StatusCode::BAD_REQUEST,
            format!(
                "unsupported payload version {:?}; expected \"4\"",
                payload.version
            ),
        );
    }
    let mut alerts = Vec::with_capacity(payload.alerts.len());
    for a in payload.alerts {
        let status = match a.status.parse::<AlertStatus>() {
            Ok(s) => s,
            Err(e) => return reply(StatusCode::BAD_REQUEST, e),
        };
        let fingerprint = a
            .fingerprint
            .filter(|f| !f.is_empty())
            .unwrap_or_else(|| label_fingerprint(&a.labels));
        alerts.push(IncomingAlert {
            source: AlertSource::Alertmanager,
            fingerprint: format!("am:{fingerprint}"),
            group_key: payload.group_key.clone(),
            status,
            labels: a.labels,
            annotations: a.annotations,
            starts_at: a.starts_at,
            // Alertmanager sends year 1 for "not ended".
            ends_at: a.ends_at.filter(|t| t.timestamp() > 0),
            generator_url: a.generator_url.filter(|u| !u.is_empty()),
        });
    }
    ingest(&state, alerts).await
}

async fn ingest(state: &HookState, alerts: Vec<IncomingAlert>) -> Response {
    match state.alerts.ingest(alerts).await {
        Ok(n) => (
            StatusCode::OK,
            Json(serde_json::json!({ "status": 200, "accepted": n })),
        )
            .into_response(),
        Err(e) => {
            // 5xx makes the sender retry the identical payload; ingest is idempotent.
            tracing::error!(
                error = format!("{:#}", anyhow::Error::new(e)),
                "storing alerts failed"
            );
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "alerts could not be stored; retry",
            )
        }
    }
}

/// The generic alert format for `/hooks/alert`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenericAlert {
    /// Stable identity of the alert in the sender; repeats update the same alert.
    key: String,
    status: AlertStatus,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    /// Alerts with the same group share one chat message (default: the alertname label).
    group: Option<String>,
    source_url: Option<String>,
}

type HmacSha256 = Hmac<Sha256>;

/// `v1=` + hex HMAC-SHA256 of `{timestamp}.{body}` with `secret`: what senders compute for
/// `X-Opsbot-Signature` (and what opsbot puts on its own outbound webhooks).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

pub async fn generic(State(state): State<HookState>, request: Request) -> Response {
    let Some(secret) = &state.webhook_secret else {
        return reply(
            StatusCode::NOT_FOUND,
            "webhook intake is not configured (alerts.webhook_secret)",
        );
    };
    // What the headers alone can refuse is refused before the body is read.
    let headers = request.headers().clone();
    let header = |name: &str| header(&headers, name).unwrap_or("");
    let Ok(timestamp) = header("x-opsbot-timestamp").parse::<i64>() else {
        return reply(StatusCode::UNAUTHORIZED, "missing X-Opsbot-Timestamp");
    };
    if state.clock.now().timestamp().abs_diff(timestamp) > SIGNATURE_WINDOW_SECS.unsigned_abs() {
        return reply(
            StatusCode::UNAUTHORIZED,
            "timestamp outside the 5-minute window",
        );
    }
    let body = match read_body(request).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let expected = sign(secret.expose_secret().as_bytes(), timestamp, &body);
    if !same(header("x-opsbot-signature").as_bytes(), expected.as_bytes()) {
        return reply(StatusCode::UNAUTHORIZED, "bad signature");
    }
    let alert: GenericAlert = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => return reply(StatusCode::BAD_REQUEST, format!("not a valid alert: {e}")),
    };
    if alert.key.trim().is_empty() || alert.key.len() > 256 {
        return reply(StatusCode::BAD_REQUEST, "key must be 1-256 characters");
    }
    let mut labels = alert.labels;
    labels
        .entry("alertname".into())
        .or_insert_with(|| alert.key.clone());
    let group = alert.group.unwrap_or_else(|| {
        format!(
            "hook:{}",
            labels.get("alertname").cloned().unwrap_or_default()
        )
    });
    let now = state.clock.now();
    let incoming = IncomingAlert {
        source: AlertSource::Webhook,
        fingerprint: format!("hook:{}", alert.key),
        group_key: group,
        status: alert.status,
        labels,
        annotations: alert.annotations,
        starts_at: now,
        ends_at: (alert.status == AlertStatus::Resolved).then_some(now),
        generator_url: alert.source_url,
    };
    ingest(&state, vec![incoming]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
