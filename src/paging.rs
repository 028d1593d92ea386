//! The [`Pager`] port at the edge: pages to the `[[paging.services]]` over PagerDuty's Events
//! API v2, an ntfy topic or a signed webhook, through the outbound HTTP code of `notify.rs`.
//! What may succeed later (429, 5xx, transport errors) is tried again with exponential
//! backoff on tokio's clock, a bounded number of times; what the service refused (400) never
//! is. Each page is counted in `opsbot_pages_total` and its service's last result shown in
//! `/readyz`. Routing keys, tokens and topic URLs are never logged.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::ExposeSecret;
use serde_json::json;
use tracing::{debug, info, warn};

use crate::config::{PagingKind, PagingServiceConfig};
use crate::domain::clip;
use crate::liveness::Liveness;
use crate::metrics::{Metrics, PageOutcome};
use crate::notify::{deliver, signed};
use crate::ports::{Clock, OutboundError, Page, PageAction, PageSeverity, Pager};

/// Tries per page: the first and four more, waiting [`FIRST_BACKOFF`] doubled each time
/// (0.5 + 1 + 2 + 4 s), so a page still failing is reported within seconds, not minutes.
pub const ATTEMPTS: u32 = 5;
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Longest summary sent: PagerDuty's `payload.summary` takes 1024 characters, and ntfy
/// turns a body over 4096 bytes into an attachment.
const SUMMARY_CHARS: usize = 1024;

/// Pages to the configured services over HTTP.
pub struct HttpPager {
    client: reqwest::Client,
    services: Vec<PagingServiceConfig>,
    metrics: Arc<Metrics>,
    liveness: Arc<Liveness>,
    clock: Arc<dyn Clock>,
}

impl HttpPager {
    /// Registers every service with the metrics (at zero) and `/readyz`.
    pub fn new(
        services: Vec<PagingServiceConfig>,
        metrics: Arc<Metrics>,
        liveness: Arc<Liveness>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        metrics.known_pagers(services.iter().map(|s| s.name.as_str()));
        for s in &services {
            liveness.known_pager(&s.name);
        }
        Self {
            client: reqwest::Client::new(),
            services,
            metrics,
            liveness,
            clock,
        }
    }

    /// One request for `page` to `kind`, ready to send (again).
    fn request(
        &self,
        kind: &PagingKind,
        action: PageAction,
        page: &Page,
    ) -> reqwest::RequestBuilder {
        let summary = clip(&page.summary, SUMMARY_CHARS);
        match kind {
            PagingKind::PagerDuty { routing_key, url } => {
                let mut event = json!({
                    "routing_key": routing_key.expose_secret(),
                    "event_action": action_word(action),
                    "dedup_key": page.dedup_key,
                });
                // Only a trigger carries (and must carry) a payload.
                if action == PageAction::Trigger {
                    event["client"] = json!("opsbot");
                    event["payload"] = json!({
                        "summary": summary,
                        "source": page.source,
                        "severity": page.severity.as_str(),
                    });
                }
                self.client.post(format!("{url}/v2/enqueue")).json(&event)
            }
            PagingKind::Ntfy { topic_url, token } => {
                let (title, tags, body) = ntfy_text(action, &summary);
                let request = (self.client.post(topic_url.expose_secret()))
                    .header("Title", title)
                    .header("Priority", ntfy_priority(action, page.severity))
                    .header("Tags", tags)
                    .header("content-type", "text/plain; charset=utf-8")
                    .body(body);
                match token {
                    Some(token) => request.bearer_auth(token.expose_secret()),
                    None => request,
                }
            }
            PagingKind::Webhook { url, secret } => {
                let body = json!({
                    "action": action_word(action),
                    "dedup_key": page.dedup_key,
                    "summary": summary,
                    "source": page.source,
                    "severity": page.severity.as_str(),
                })
                .to_string();
                signed(&self.client, url, secret, body)
            }
        }
    }

    /// Sends until the service takes it, refuses it for good, or the attempts run out.
    async fn send(
        &self,
        service: &PagingServiceConfig,
        action: PageAction,
        page: &Page,
    ) -> Result<(), OutboundError> {
        let mut wait = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let request = self.request(&service.kind, action, page);
            match deliver(request).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_permanent() || attempt == ATTEMPTS => return Err(e),
                Err(e) => {
                    debug!(service = %service.name, attempt, error = %e, "page not taken; trying again");
                    self.metrics.page_retry(&service.name);
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                    attempt += 1;
                }
            }
        }
    }
}

#[async_trait]
impl Pager for HttpPager {
    async fn page(
        &self,
        service: &str,
        action: PageAction,
        page: &Page,
    ) -> Result<(), OutboundError> {
        let Some(s) = self.services.iter().find(|s| s.name == service) else {
            warn!(%service, "page to a paging service that is not configured");
            return Err(OutboundError::Undeliverable(format!(
                "no paging service named {service:?}"
            )));
        };
        let result = self.send(s, action, page).await;
        let (outcome, state) = match &result {
            Ok(()) => {
                info!(%service, kind = s.kind.as_str(), action = action_word(action), dedup_key = %page.dedup_key, "page sent");
                (PageOutcome::Sent, Ok(()))
            }
            Err(e) => {
                warn!(%service, kind = s.kind.as_str(), action = action_word(action), dedup_key = %page.dedup_key, error = %e, "page failed");
                let outcome = if e.is_permanent() {
                    PageOutcome::Rejected
                } else {
                    PageOutcome::Failed
                };
                (outcome, Err(e.to_string()))
            }
        };
        self.metrics.page(service, action_word(action), outcome);
        self.liveness.pager_result(service, self.clock.now(), state);
        result
    }
}

/// PagerDuty's `event_action` (and the webhook's `action`).
fn action_word(action: PageAction) -> &'static str {
    match action {
        PageAction::Trigger => "trigger",
        PageAction::Acknowledge => "acknowledge",
        PageAction::Resolve => "resolve",
    }
}

/// ntfy's 1 (min) to 5 (max, breaks through do-not-disturb). An acknowledgement or
/// resolution is news, not an alarm: it arrives at 2, without sound, whatever the severity.
fn ntfy_priority(action: PageAction, severity: PageSeverity) -> &'static str {
    match (action, severity) {
        (PageAction::Acknowledge | PageAction::Resolve, _) => "2",
        (PageAction::Trigger, PageSeverity::Critical) => "5",
        (PageAction::Trigger, PageSeverity::Error) => "4",
        (PageAction::Trigger, PageSeverity::Warning) => "3",
        (PageAction::Trigger, PageSeverity::Info) => "2",
    }
}

/// Title, tags (ntfy shows known tags as emoji) and body. ntfy keeps no state per page, so
/// an acknowledgement or resolution is a notification of its own saying so, which tells
/// the phone's owner to stand down. Titles are ASCII: header values carry no UTF-8.
fn ntfy_text(action: PageAction, summary: &str) -> (&'static str, &'static str, String) {
    match action {
        PageAction::Trigger => ("opsbot page", "rotating_light", summary.to_owned()),
        PageAction::Acknowledge => (
            "opsbot page acknowledged",
            "white_check_mark",
            format!("Acknowledged: {summary}"),
        ),
        PageAction::Resolve => (
            "opsbot page resolved",
            "white_check_mark",
            format!("Resolved: {summary}"),
        ),
    }
}
