//! The chat platform sections (`[telegram]`, `[slack]`, `[discord]`): credentials, API
//! base URLs and the checks that catch a mis-pasted token at start instead of at first use.
//! How a platform reaches opsbot (Telegram polling or webhook, Slack HTTP or Socket Mode) is
//! written as flat keys and parsed into an enum whose variant holds what that way needs.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::MIN_SECRET_LEN;
use crate::domain::HumanDuration;

/// How Telegram delivers updates, with what that way needs.
#[derive(Debug, Clone)]
pub enum TelegramDelivery {
    /// `getUpdates` long polling: needs no public endpoint (one replica only: Telegram
    /// refuses concurrent pollers of one bot).
    Polling,
    /// Telegram POSTs updates to `url` (served at `/telegram/webhook`), sending `secret` in
    /// `X-Telegram-Bot-Api-Secret-Token`.
    Webhook {
        /// An `https://` URL.
        url: reqwest::Url,
        /// 12-256 of `A-Z a-z 0-9 _ -`.
        secret: SecretString,
    },
}

#[derive(Debug, Deserialize)]
#[serde(try_from = "RawTelegram")]
pub struct TelegramConfig {
    /// Token from @BotFather (`123456:ABC...`), without whitespace.
    pub bot_token: SecretString,
    pub delivery: TelegramDelivery,
    /// Bot API base URL (a valid URL); only tests point it elsewhere.
    pub api_url: String,
    /// Least time between two messages to one chat (Telegram allows about 20 per minute in
    /// a group; a bot that only talks in private chats may lower it to 1s).
    pub send_interval: HumanDuration,
}

/// `mode` as written in `[telegram]`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum TelegramMode {
    #[default]
    Polling,
    Webhook,
}

/// `[telegram]` as written: the webhook keys are flat and optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTelegram {
    bot_token: SecretString,
    #[serde(default)]
    mode: TelegramMode,
    /// Public HTTPS URL Telegram posts to, ending in `/telegram/webhook` (webhook mode).
    webhook_url: Option<String>,
    webhook_secret: Option<SecretString>,
    #[serde(default = "default_telegram_api")]
    api_url: String,
    #[serde(default = "default_telegram_interval")]
    send_interval: HumanDuration,
}

fn default_telegram_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(3))
}

fn default_telegram_api() -> String {
    "https://api.telegram.org".into()
}

impl TryFrom<RawTelegram> for TelegramConfig {
    type Error = String;
    fn try_from(raw: RawTelegram) -> Result<Self, String> {
        let token = raw.bot_token.expose_secret();
        if token.trim() != token || token.contains(char::is_whitespace) {
            return Err(
                "telegram.bot_token contains whitespace (a trailing newline from a secret file?)"
                    .into(),
            );
        }
        if !token.contains(':') {
            return Err(
                "telegram.bot_token does not look like a BotFather token (id:secret)".into(),
            );
        }
        let delivery = match raw.mode {
            TelegramMode::Polling => TelegramDelivery::Polling,
            TelegramMode::Webhook => webhook(raw.webhook_url, raw.webhook_secret)?,
        };
        reqwest::Url::parse(&raw.api_url)
            .map_err(|e| format!("telegram.api_url is not a URL: {e}"))?;
        Ok(TelegramConfig {
            bot_token: raw.bot_token,
            delivery,
            api_url: raw.api_url,
            send_interval: raw.send_interval,
        })
    }
}

fn webhook(url: Option<String>, secret: Option<SecretString>) -> Result<TelegramDelivery, String> {
    let url = url.unwrap_or_default();
    if !url.starts_with("https://") {
        return Err("telegram.mode = \"webhook\" needs telegram.webhook_url (https://...)".into());
    }
    let url =
        reqwest::Url::parse(&url).map_err(|e| format!("telegram.webhook_url is not a URL: {e}"))?;
    let secret = secret.unwrap_or_else(|| SecretString::from(""));
    let s = secret.expose_secret();
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if s.len() < MIN_SECRET_LEN || s.len() > 256 || !s.chars().all(allowed) {
        return Err(format!(
            "telegram.webhook_secret must be {MIN_SECRET_LEN}-256 characters of A-Z a-z 0-9 _ -"
        ));
    }
    Ok(TelegramDelivery::Webhook { url, secret })
}

/// How Slack reaches opsbot. The HTTP routes stay mounted either way.
#[derive(Debug, Clone)]
pub enum SlackReceive {
    /// Slack POSTs to opsbot's public HTTP endpoints.
    Http,
    /// Over Socket Mode (an outgoing WebSocket), needing no public endpoint.
    SocketMode {
        /// App-level token (`xapp-...`, scope `connections:write`).
        app_token: SecretString,
    },
}

#[derive(Debug, Deserialize)]
#[serde(try_from = "RawSlack")]
pub struct SlackConfig {
    /// "Signing Secret" from the app's Basic Information page.
    pub signing_secret: SecretString,
    /// Bot User OAuth Token (`xoxb-...`).
    pub bot_token: SecretString,
    /// Web API base URL; only tests point it elsewhere.
    pub api_url: String,
    pub receive: SlackReceive,
    /// Put before every slash command's name in Slack (`ops-` makes `/status` `/ops-status`),
    /// so opsbot's commands do not collide with other apps'; empty by default.
    pub command_prefix: String,
}

/// `[slack]` as written: `socket_mode` and the `app_token` it needs are separate keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlack {
    signing_secret: SecretString,
    #[serde(deserialize_with = "slack_bot_token")]
    bot_token: SecretString,
    #[serde(default = "default_slack_api")]
    api_url: String,
    #[serde(default)]
    socket_mode: bool,
    app_token: Option<SecretString>,
    #[serde(default)]
    command_prefix: String,
}

impl TryFrom<RawSlack> for SlackConfig {
    type Error = String;
    fn try_from(raw: RawSlack) -> Result<Self, String> {
        let receive = match raw.app_token {
            None if raw.socket_mode => {
                return Err("slack.socket_mode = true needs slack.app_token \
                 (an app-level token, xapp-..., with the connections:write scope)"
                    .into());
            }
            Some(t) if t.expose_secret().starts_with("xoxb-") => {
                return Err("slack.app_token is a bot token (xoxb-...), which goes in \
                 slack.bot_token; app_token takes the app-level token (xapp-...; Basic \
                 Information → App-Level Tokens)"
                    .into());
            }
            Some(t) if !t.expose_secret().starts_with("xapp-") => {
                return Err("slack.app_token must be \
                 an app-level token (xapp-...; Basic Information → App-Level Tokens), not the \
                 bot token"
                    .into());
            }
            Some(app_token) if raw.socket_mode => SlackReceive::SocketMode { app_token },
            _ => SlackReceive::Http,
        };
        let prefix = &raw.command_prefix;
        if !prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return Err(format!(
                "slack.command_prefix {prefix:?} may hold only lowercase letters, digits, - and _ (Slack's rule for command names), e.g. \"ops-\""
            ));
        }
        Ok(SlackConfig {
            signing_secret: raw.signing_secret,
            bot_token: raw.bot_token,
            api_url: raw.api_url,
            receive,
            command_prefix: raw.command_prefix,
        })
    }
}

/// An app-level token pasted as the bot token fails only at the first message (Slack answers
/// `not_allowed_token_type`); say at start which token goes where.
fn slack_bot_token<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
    let token = SecretString::deserialize(d)?;
    if token.expose_secret().starts_with("xapp-") {
        return Err(serde::de::Error::custom(
            "slack.bot_token is an app-level token (xapp-...), which goes in slack.app_token \
             (Socket Mode); bot_token takes the Bot User OAuth Token (xoxb-..., OAuth & \
             Permissions)",
        ));
    }
    Ok(token)
}

fn default_slack_api() -> String {
    "https://slack.com/api".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordConfig {
    /// Bot token (Developer Portal → Bot → Reset Token).
    pub bot_token: SecretString,
    /// Application ID (General Information); slash commands are registered under it.
    pub application_id: u64,
    /// Public key (hex, General Information). Needed only for the HTTP interactions endpoint
    /// (`POST /discord/interactions`); without it that route does not exist.
    pub public_key: Option<String>,
    /// Register slash commands in this guild only (instant, for development); absent: globally.
    pub guild_id: Option<u64>,
    /// REST base URL; only tests (or an API proxy) point it elsewhere.
    #[serde(default = "default_discord_api")]
    pub api_url: String,
    /// Connect to the gateway (reactions, and commands when no interactions URL is set).
    #[serde(default = "default_true")]
    pub gateway: bool,
}

fn default_discord_api() -> String {
    "https://discord.com".into()
}

fn default_true() -> bool {
    true
}

impl DiscordConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.application_id == 0 {
            return Err("discord.application_id must be the application's id (not 0)".into());
        }
        if self.guild_id == Some(0) {
            return Err("discord.guild_id must be a guild id (not 0); remove it to register commands globally".into());
        }
        if let Some(key) = &self.public_key
            && (key.len() != 64 || !key.chars().all(|c| c.is_ascii_hexdigit()))
        {
            return Err("discord.public_key must be the 64 hex digits shown as \"Public Key\" in the Developer Portal".into());
        }
        if !(self.api_url.starts_with("https://") || self.api_url.starts_with("http://")) {
            return Err("discord.api_url must start with https:// or http://".into());
        }
        Ok(())
    }
}
