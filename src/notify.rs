//! Outbound HTTP integrations at the edge: signed notification webhooks for alert groups
//! (`[[alerts.webhooks]]`) and silence write-back to Alertmanager's v2 API; the one
//! [`deliver`] (timeout, status → `OutboundError`) and [`signed`] request every outbound
//! integration, paging included (`paging.rs`), goes through.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::domain::{Alert, Matcher, Silence};
use crate::ports::{GroupNotifier, OutboundError, SilenceSync};

fn http_error(e: reqwest::Error) -> OutboundError {
    OutboundError::Failed(e.without_url().to_string())
}

fn status_error(resp: &reqwest::Response) -> OutboundError {
    let status = resp.status();
    if status.as_u16() == 429 || status.is_server_error() {
        let retry = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(Duration::from_secs(5), Duration::from_secs);
        OutboundError::RetryAfter(retry)
    } else {
        OutboundError::Undeliverable(format!("answered HTTP {}", status.as_u16()))
    }
}

/// Sends `req` with the one timeout every integration uses; any answer but a success is an
/// error: `RetryAfter` for 429 and 5xx, `Failed` for transport errors (both worth another
/// try), `Undeliverable` for any other status.
pub(crate) async fn deliver(
    req: reqwest::RequestBuilder,
) -> Result<reqwest::Response, OutboundError> {
    let resp = req
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(http_error)?;
    if resp.status().is_success() {
        Ok(resp)
    } else {
        Err(status_error(&resp))
    }
}

/// POSTs each changed alert group as JSON, signed like inbound webhooks ([`signed`]).
pub struct SignedWebhook {
    client: reqwest::Client,
    url: SecretString,
    secret: SecretString,
}

impl SignedWebhook {
    pub fn new(url: SecretString, secret: SecretString) -> Self {
        Self {
            client: reqwest::Client::new(),
            url,
            secret,
        }
    }
}

#[async_trait]
impl GroupNotifier for SignedWebhook {
    async fn group_changed(&self, group_key: &str, alerts: &[Alert]) -> Result<(), OutboundError> {
        let body = json!({
            "group_key": group_key,
            "firing": alerts.iter().filter(|a| a.incoming.status == crate::domain::AlertStatus::Firing).count(),
            "alerts": alerts.iter().map(|a| json!({
                "id": a.id.0,
                "fingerprint": a.incoming.fingerprint,
                "status": a.incoming.status.as_str(),
                "labels": a.incoming.labels,
                "annotations": a.incoming.annotations,
                "starts_at": a.incoming.starts_at.to_rfc3339(),
                "acked_by": a.acked_by,
            })).collect::<Vec<_>>(),
        })
        .to_string();
        deliver(signed(&self.client, &self.url, &self.secret, body))
            .await
            .map(drop)
    }
}

/// A POST of the JSON `body` to `url`, signed for receivers to verify:
/// `X-Opsbot-Timestamp` and `X-Opsbot-Signature: v1=hex(HMAC-SHA256(secret, "{ts}.{body}"))`.
pub(crate) fn signed(
    client: &reqwest::Client,
    url: &SecretString,
    secret: &SecretString,
    body: String,
) -> reqwest::RequestBuilder {
    let ts = chrono::Utc::now().timestamp();
    let signature = crate::hooks::sign(secret.expose_secret().as_bytes(), ts, body.as_bytes());
    client
        .post(url.expose_secret())
        .header("content-type", "application/json")
        .header("x-opsbot-timestamp", ts.to_string())
        .header("x-opsbot-signature", signature)
        .body(body)
}

/// Alertmanager's `/api/v2/silences`.
pub struct AlertmanagerSilences {
    client: reqwest::Client,
    base: String,
}

impl AlertmanagerSilences {
    pub fn new(base_url: &str) -> Self {
        Self {
            client: reqwest::Client::new(),
            base: base_url.trim_end_matches('/').to_owned(),
        }
    }
}

#[async_trait]
impl SilenceSync for AlertmanagerSilences {
    async fn create(&self, s: &Silence) -> Result<String, OutboundError> {
        let matchers: Vec<_> = s
            .matchers
            .iter()
            .map(|m| match m {
                Matcher::Equal(name, value) => {
                    json!({"name": name, "value": value, "isRegex": false, "isEqual": true})
                }
                Matcher::Regex(name, _) => {
                    let text = m.to_string();
                    let value = text.split_once("=~").map_or("", |(_, v)| v).to_owned();
                    json!({"name": name, "value": value, "isRegex": true, "isEqual": true})
                }
            })
            .collect();
        let body = json!({
            "matchers": matchers,
            "startsAt": s.starts_at.to_rfc3339(),
            "endsAt": s.ends_at.to_rfc3339(),
            "createdBy": format!("opsbot:{}", s.created_by),
            "comment": if s.reason.is_empty() { format!("silenced from chat by {}", s.created_by) } else { s.reason.clone() },
        });
        let url = format!("{}/api/v2/silences", self.base);
        let resp = deliver(self.client.post(url).json(&body)).await?;
        let v: serde_json::Value = resp.json().await.map_err(http_error)?;
        v["silenceID"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| OutboundError::Failed("Alertmanager did not return a silenceID".into()))
    }

    async fn expire(&self, upstream_id: &str) -> Result<(), OutboundError> {
        let url = format!("{}/api/v2/silence/{upstream_id}", self.base);
        deliver(self.client.delete(url)).await.map(drop)
    }
}
