//! The chat platform sections (`[telegram]`, `[slack]`, `[discord]`): credentials, API
//! base URLs and the checks that catch a mis-pasted token at start instead of at first use.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::MIN_SECRET_LEN;
use crate::domain::HumanDuration;

/// How Telegram delivers updates.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TelegramMode {
    /// `getUpdates` long polling: needs no public endpoint (one replica only: Telegram
    /// refuses concurrent pollers of one bot).
    #[default]
    Polling,
    /// Telegram POSTs updates to `webhook_url` (served at `/telegram/webhook`).
    Webhook,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    /// Token from @BotFather (`123456:ABC...`).
    pub bot_token: SecretString,
    #[serde(default)]
    pub mode: TelegramMode,
    /// Public HTTPS URL Telegram posts to, ending in `/telegram/webhook` (webhook mode).
    pub webhook_url: Option<String>,
    /// Sent by Telegram in `X-Telegram-Bot-Api-Secret-Token` (webhook mode); 12-256 of
    /// `A-Z a-z 0-9 _ -`.
    pub webhook_secret: Option<SecretString>,
    /// Bot API base URL; only tests point it elsewhere.
    #[serde(default = "default_telegram_api")]
    pub api_url: String,
    /// Least time between two messages to one chat (Telegram allows about 20 per minute in
    /// a group; a bot that only talks in private chats may lower it to 1s).
    #[serde(default = "default_telegram_interval")]
    pub send_interval: HumanDuration,
}

fn default_telegram_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(3))
}

fn default_telegram_api() -> String {
    "https://api.telegram.org".into()
}

impl TelegramConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        let token = self.bot_token.expose_secret();
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
        if self.mode == TelegramMode::Webhook {
            let url = self.webhook_url.as_deref().unwrap_or_default();
            if !url.starts_with("https://") {
                return Err(
                    "telegram.mode = \"webhook\" needs telegram.webhook_url (https://...)".into(),
                );
            }
            let secret = self
                .webhook_secret
                .as_ref()
                .map(|s| s.expose_secret())
                .unwrap_or_default();
            let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
            if secret.len() < MIN_SECRET_LEN || secret.len() > 256 || !secret.chars().all(allowed) {
                return Err(format!(
                    "telegram.webhook_secret must be {MIN_SECRET_LEN}-256 characters of A-Z a-z 0-9 _ -"
                ));
            }
        }
        reqwest::Url::parse(&self.api_url)
            .map_err(|e| format!("telegram.api_url is not a URL: {e}"))?;
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// "Signing Secret" from the app's Basic Information page.
    pub signing_secret: SecretString,
    /// Bot User OAuth Token (`xoxb-...`).
    pub bot_token: SecretString,
    /// Web API base URL; only tests point it elsewhere.
    #[serde(default = "default_slack_api")]
    pub api_url: String,
    /// Receive over Socket Mode (an outgoing WebSocket) instead of needing a public HTTP
    /// endpoint; the HTTP routes stay mounted either way.
    #[serde(default)]
    pub socket_mode: bool,
    /// App-level token (`xapp-...`, scope `connections:write`); required by `socket_mode`.
    pub app_token: Option<SecretString>,
}

impl SlackConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        match &self.app_token {
            None if self.socket_mode => Err("slack.socket_mode = true needs slack.app_token \
                 (an app-level token, xapp-..., with the connections:write scope)"
                .into()),
            Some(t) if !t.expose_secret().starts_with("xapp-") => Err("slack.app_token must be \
                 an app-level token (xapp-...; Basic Information → App-Level Tokens), not the \
                 bot token"
                .into()),
            _ => Ok(()),
        }
    }
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
