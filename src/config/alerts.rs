//! `[alerts]`: intake secrets, limits and where alert groups go. Route matchers are parsed
//! here, so a bad one stops startup with its line and the router gets `Matcher`s.

use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

use crate::domain::{HumanDuration, Matcher, Platform};

/// Alert intake and routing.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// Bearer token Alertmanager sends (`http_config.authorization.credentials`). Without it,
    /// `/hooks/alertmanager` answers 404.
    pub alertmanager_token: Option<SecretString>,
    /// HMAC-SHA256 key for `/hooks/alert`. Without it, that endpoint answers 404.
    pub webhook_secret: Option<SecretString>,
    /// Largest accepted webhook body. One Alertmanager group of 5,000 alerts is about 2 MB;
    /// set `max_alerts` in the Alertmanager receiver to stay well below.
    pub max_body_bytes: usize,
    /// Alerts listed in full in a group message; the rest are summarised.
    pub max_listed: usize,
    /// Where groups go that match no route (and the policy they escalate through).
    pub default_route: Option<DefaultRoute>,
    /// Alertmanager's base URL; when set, silences made from chat are written back there.
    pub alertmanager_url: Option<String>,
    /// Signed notification webhooks told about every changed alert group.
    pub webhooks: Vec<NotifyWebhookConfig>,
    /// Re-announce unacknowledged critical alerts this often (e.g. "15m"); unset: never.
    pub remind_every: Option<HumanDuration>,
    /// Role named in those reminders when no schedule is set.
    pub oncall_role: Option<String>,
    /// Schedule whose primary on-call those reminders mention (pinged on each platform).
    pub oncall_schedule: Option<String>,
    pub routes: Vec<AlertRouteConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            alertmanager_token: None,
            webhook_secret: None,
            max_body_bytes: 8 * 1024 * 1024,
            max_listed: 20,
            default_route: None,
            alertmanager_url: None,
            webhooks: Vec::new(),
            remind_every: None,
            oncall_role: None,
            oncall_schedule: None,
            routes: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyWebhookConfig {
    pub url: SecretString,
    /// HMAC-SHA256 key receivers verify `X-Opsbot-Signature` with.
    pub secret: SecretString,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTarget {
    pub platform: Platform,
    pub channel: String,
}

/// `default_route`: a channel, and optionally the escalation policy of what goes there.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultRoute {
    pub platform: Platform,
    pub channel: String,
    /// An `[[escalation.policies]]` name: groups routed here with a firing, unacknowledged
    /// alert escalate through it.
    pub escalation: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRouteConfig {
    /// `label=value` or `label=~regex`; all must match the group's common labels.
    #[serde(deserialize_with = "matchers")]
    pub matchers: Vec<Matcher>,
    pub platform: Platform,
    pub channel: String,
    /// Keep evaluating later routes after this one matched.
    #[serde(default, rename = "continue")]
    pub continue_matching: bool,
    /// An `[[escalation.policies]]` name: groups this route matches (the first such route)
    /// escalate through it while an alert in them is firing and unacknowledged.
    pub escalation: Option<String>,
}

fn matchers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Matcher>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|m| m.parse().map_err(serde::de::Error::custom))
        .collect()
}
