//! `[[paging.services]]`: where pages go (PagerDuty Events v2, an ntfy topic, a signed
//! webhook), parsed into one [`PagingKind`] per service so a missing key or a bad URL stops
//! startup with its line. Secrets (routing keys, tokens, topic and webhook URLs) stay
//! `SecretString`s and never print; whether the names people use exist is checked by
//! `Config::validate`.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// PagerDuty's Events API host; `url` overrides it (a local fake in tests, the EU region).
pub const PAGERDUTY_URL: &str = "https://events.pagerduty.com";

/// The paging services.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PagingConfig {
    pub services: Vec<PagingServiceConfig>,
}

impl PagingConfig {
    pub fn service(&self, name: &str) -> Option<&PagingServiceConfig> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// One paging service, by name.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "RawService")]
pub struct PagingServiceConfig {
    pub name: String,
    pub kind: PagingKind,
}

/// How a service is reached; each variant holds exactly what its API needs.
#[derive(Clone, Debug)]
pub enum PagingKind {
    /// `POST {url}/v2/enqueue` with the integration's routing key in the body.
    PagerDuty {
        routing_key: SecretString,
        url: String,
    },
    /// `POST` of the text to the topic URL; the topic name is as good as a password.
    Ntfy {
        topic_url: SecretString,
        token: Option<SecretString>,
    },
    /// Signed JSON, like `[[alerts.webhooks]]`.
    Webhook {
        url: SecretString,
        secret: SecretString,
    },
}

impl PagingKind {
    /// The `kind` word, for logs and `/readyz`.
    pub fn as_str(&self) -> &'static str {
        match self {
            PagingKind::PagerDuty { .. } => "pagerduty",
            PagingKind::Ntfy { .. } => "ntfy",
            PagingKind::Webhook { .. } => "webhook",
        }
    }

    /// The secrets `Config::validate` holds to the minimum length, by key.
    pub fn secrets(&self) -> Vec<(&'static str, &SecretString)> {
        match self {
            PagingKind::PagerDuty { routing_key, .. } => vec![("routing_key", routing_key)],
            PagingKind::Ntfy { token, .. } => token.iter().map(|t| ("token", t)).collect(),
            PagingKind::Webhook { secret, .. } => vec![("secret", secret)],
        }
    }
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    PagerDuty,
    Ntfy,
    Webhook,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    kind: Kind,
    url: Option<SecretString>,
    routing_key: Option<SecretString>,
    token: Option<SecretString>,
    secret: Option<SecretString>,
}

impl TryFrom<RawService> for PagingServiceConfig {
    type Error = String;

    fn try_from(raw: RawService) -> Result<Self, String> {
        let name = raw.name.clone();
        super::plain_name(&name, "paging service")?;
        let kind = kind(raw).map_err(|e| format!("paging service {name}: {e}"))?;
        Ok(Self { name, kind })
    }
}

fn kind(raw: RawService) -> Result<PagingKind, String> {
    let refuse = |key: &str, present: bool, kind: &str| {
        if present {
            Err(format!("{key} is not used by kind = \"{kind}\""))
        } else {
            Ok(())
        }
    };
    match raw.kind {
        Kind::PagerDuty => {
            refuse("token", raw.token.is_some(), "pagerduty")?;
            refuse("secret", raw.secret.is_some(), "pagerduty")?;
            let url = raw.url.map_or_else(
                || PAGERDUTY_URL.to_owned(),
                |u| u.expose_secret().trim_end_matches('/').to_owned(),
            );
            http_url(&url, "url")?;
            Ok(PagingKind::PagerDuty {
                routing_key: raw
                    .routing_key
                    .ok_or("kind = \"pagerduty\" needs routing_key")?,
                url,
            })
        }
        Kind::Ntfy => {
            refuse("routing_key", raw.routing_key.is_some(), "ntfy")?;
            refuse("secret", raw.secret.is_some(), "ntfy")?;
            let topic_url = raw.url.ok_or(
                "kind = \"ntfy\" needs url, the topic's URL (https://ntfy.example.com/TOPIC)",
            )?;
            let parsed = http_url(topic_url.expose_secret(), "url")?;
            if parsed.path().trim_matches('/').is_empty() {
                return Err("url must name the topic (https://ntfy.example.com/TOPIC)".into());
            }
            Ok(PagingKind::Ntfy {
                topic_url,
                token: raw.token,
            })
        }
        Kind::Webhook => {
            refuse("routing_key", raw.routing_key.is_some(), "webhook")?;
            refuse("token", raw.token.is_some(), "webhook")?;
            let url = raw.url.ok_or("kind = \"webhook\" needs url")?;
            http_url(url.expose_secret(), "url")?;
            Ok(PagingKind::Webhook {
                url,
                secret: raw.secret.ok_or("kind = \"webhook\" needs secret")?,
            })
        }
    }
}

/// An http(s) URL; the error never quotes it (it may carry a topic or a token).
fn http_url(raw: &str, key: &str) -> Result<url::Url, String> {
    url::Url::parse(raw)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| format!("{key} must be an http:// or https:// URL"))
}
