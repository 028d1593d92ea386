//! Typed configuration: one TOML file, overridden by `OPSBOT_SECTION__KEY` environment
//! variables. Unknown keys are rejected, every error names the file and line (or the
//! variable), and secret values are wrapped so they never print.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::domain::{Directory, HumanDuration, Person, RateQuota, Role, UserRef};

/// Shortest accepted shared secret (tokens, HMAC keys).
pub const MIN_SECRET_LEN: usize = 12;

/// Prefix of environment overrides; `OPSBOT_STORE__DATABASE_URL` sets `store.database_url`.
pub const ENV_PREFIX: &str = "OPSBOT_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("environment override {var}: {message}")]
    Env { var: String, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub bot: BotConfig,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub catalog: CatalogConfig,
    #[serde(default)]
    pub console: ConsoleConfig,
    #[serde(default)]
    pub builtins: BuiltinsConfig,
    #[serde(default)]
    pub approvals: ApprovalsConfig,
    #[serde(default)]
    pub alerts: AlertsConfig,
    #[serde(default)]
    pub incidents: IncidentsConfig,
    #[serde(default)]
    pub health: HealthConfig,
    /// Telegram bot credentials; absent = no Telegram adapter.
    pub telegram: Option<TelegramConfig>,
    /// Slack app credentials; absent = no Slack adapter.
    pub slack: Option<SlackConfig>,
    /// Discord bot credentials; absent = no Discord adapter.
    pub discord: Option<DiscordConfig>,
    #[serde(default)]
    pub people: Vec<PersonConfig>,
    #[serde(default)]
    pub checks: Vec<CheckConfig>,
    /// Directory of the config file; relative paths in the config resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotConfig {
    /// The bot's own name, so `/status@opsbot` in group chats is understood.
    #[serde(default = "default_bot_name")]
    pub name: String,
}

impl Default for BotConfig {
    fn default() -> Self {
        Self {
            name: default_bot_name(),
        }
    }
}

fn default_bot_name() -> String {
    "opsbot".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// How long shutdown waits for in-flight work.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: HumanDuration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            shutdown_grace: default_shutdown_grace(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_shutdown_grace() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `opsbot=debug,sqlx=warn`.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: default_log_level(),
        }
    }
}

fn default_log_level() -> String {
    "info".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://opsbot.db` (default) or `postgres://user:pass@host/db`. Secret: may hold a password.
    #[serde(default = "default_database_url")]
    pub database_url: SecretString,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            database_url: default_database_url(),
            max_connections: default_max_connections(),
        }
    }
}

fn default_database_url() -> SecretString {
    SecretString::from("sqlite://opsbot.db")
}

fn default_max_connections() -> u32 {
    8
}

#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LimiterBackend {
    #[default]
    Memory,
    Redis,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default)]
    pub backend: LimiterBackend,
    /// Required when `backend = "redis"`. Secret: may hold a password.
    pub redis_url: Option<SecretString>,
    /// Across everyone and everything.
    pub global: Option<RateQuota>,
    /// Per person, across commands.
    pub per_user: Option<RateQuota>,
    /// Per channel, across commands.
    pub per_channel: Option<RateQuota>,
    /// Per command name, across people (a command file may set stricter per-user/channel limits).
    pub per_command: Option<RateQuota>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            backend: LimiterBackend::Memory,
            redis_url: None,
            global: Some(RateQuota {
                count: std::num::NonZeroU32::new(50).expect("non-zero"),
                per: Duration::from_secs(1),
            }),
            per_user: Some(RateQuota {
                count: std::num::NonZeroU32::new(30).expect("non-zero"),
                per: Duration::from_secs(60),
            }),
            per_channel: None,
            per_command: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    /// Folder of `*.toml` command files, relative to the config file.
    #[serde(default = "default_catalog_dir")]
    pub dir: PathBuf,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            dir: default_catalog_dir(),
        }
    }
}

fn default_catalog_dir() -> PathBuf {
    PathBuf::from("commands")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Whether `serve` reads commands from stdin.
    #[serde(default)]
    pub enabled: bool,
    /// Console identity `serve` uses (`opsbot chat --as NAME` overrides it).
    pub user: Option<String>,
    /// Channel name console commands run in (channel allow-lists match it).
    #[serde(default = "default_console_channel")]
    pub channel: String,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            user: None,
            channel: default_console_channel(),
        }
    }
}

fn default_console_channel() -> String {
    "console".into()
}

/// Who may run the built-in commands beyond `help` and `whoami` (which anyone may run).
/// An empty list means nobody: access is denied unless granted.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuiltinsConfig {
    #[serde(default)]
    pub status_roles: Vec<Role>,
    #[serde(default)]
    pub audit_roles: Vec<Role>,
    /// May list alerts (`/alerts`).
    #[serde(default)]
    pub alerts_roles: Vec<Role>,
    /// May act on alerts (`/ack`, `/silence`, `/unsilence`, `/resolve`).
    #[serde(default)]
    pub responder_roles: Vec<Role>,
}

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
    fn validate(&self) -> Result<(), String> {
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
    fn validate(&self) -> Result<(), String> {
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
    fn validate(&self) -> Result<(), String> {
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

/// Scheduled health checks and the bot's own dead-man's switch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Run every `[[checks]]` this often and raise alerts on state changes; unset: only `/status`.
    pub every: Option<HumanDuration>,
    /// Consecutive failures before a check's alert fires (flap damping).
    #[serde(default = "default_fail_after")]
    pub fail_after: u32,
    /// `severity` label of health-check alerts.
    #[serde(default = "default_check_severity")]
    pub severity: String,
    /// Pinged (GET) on an interval so an external monitor notices when opsbot stops.
    pub heartbeat_url: Option<SecretString>,
    #[serde(default = "default_heartbeat_every")]
    pub heartbeat_every: HumanDuration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            every: None,
            fail_after: default_fail_after(),
            severity: default_check_severity(),
            heartbeat_url: None,
            heartbeat_every: default_heartbeat_every(),
        }
    }
}

fn default_fail_after() -> u32 {
    3
}

fn default_check_severity() -> String {
    "critical".into()
}

fn default_heartbeat_every() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

/// Acknowledgement targets per incident severity (P4: 09:00 UTC on the next working day).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentsConfig {
    #[serde(default = "default_p1")]
    pub p1_ack_within: HumanDuration,
    #[serde(default = "default_p2")]
    pub p2_ack_within: HumanDuration,
    #[serde(default = "default_p3")]
    pub p3_ack_within: HumanDuration,
}

impl Default for IncidentsConfig {
    fn default() -> Self {
        Self {
            p1_ack_within: default_p1(),
            p2_ack_within: default_p2(),
            p3_ack_within: default_p3(),
        }
    }
}

fn default_p1() -> HumanDuration {
    HumanDuration(Duration::from_secs(15 * 60))
}

fn default_p2() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}

fn default_p3() -> HumanDuration {
    HumanDuration(Duration::from_secs(4 * 3600))
}

/// Alert intake and routing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Bearer token Alertmanager sends (`http_config.authorization.credentials`). Without it,
    /// `/hooks/alertmanager` answers 404.
    pub alertmanager_token: Option<SecretString>,
    /// HMAC-SHA256 key for `/hooks/alert`. Without it, that endpoint answers 404.
    pub webhook_secret: Option<SecretString>,
    /// Largest accepted webhook body. One Alertmanager group of 5,000 alerts is about 2 MB;
    /// set `max_alerts` in the Alertmanager receiver to stay well below.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Alerts listed in full in a group message; the rest are summarised.
    #[serde(default = "default_max_listed")]
    pub max_listed: usize,
    /// Where groups go that match no route.
    pub default_route: Option<RouteTarget>,
    /// Alertmanager's base URL; when set, silences made from chat are written back there.
    pub alertmanager_url: Option<String>,
    /// Signed notification webhooks told about every changed alert group.
    #[serde(default)]
    pub webhooks: Vec<NotifyWebhookConfig>,
    /// Re-announce unacknowledged critical alerts this often (e.g. "15m"); unset: never.
    pub remind_every: Option<HumanDuration>,
    /// Role mentioned in those reminders (the on-call rotation).
    pub oncall_role: Option<String>,
    #[serde(default)]
    pub routes: Vec<AlertRouteConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            alertmanager_token: None,
            webhook_secret: None,
            max_body_bytes: default_max_body(),
            max_listed: default_max_listed(),
            default_route: None,
            alertmanager_url: None,
            webhooks: Vec::new(),
            remind_every: None,
            oncall_role: None,
            routes: Vec::new(),
        }
    }
}

fn default_max_body() -> usize {
    8 * 1024 * 1024
}

fn default_max_listed() -> usize {
    20
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
    pub platform: crate::domain::Platform,
    pub channel: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRouteConfig {
    /// `label=value` or `label=~regex`; all must match the group's common labels.
    pub matchers: Vec<String>,
    pub platform: crate::domain::Platform,
    pub channel: String,
    /// Keep evaluating later routes after this one matched.
    #[serde(default, rename = "continue")]
    pub continue_matching: bool,
}

/// How approvals are given by reaction, and who may break glass.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// Reactions that approve (aliases and skin tones count as the same emoji).
    #[serde(default = "default_approve_emoji")]
    pub approve_emoji: Vec<String>,
    /// Reactions that deny.
    #[serde(default = "default_deny_emoji")]
    pub deny_emoji: Vec<String>,
    /// Roles that may run an approval-gated command at once with `--break-glass "reason"`.
    #[serde(default)]
    pub break_glass_roles: Vec<Role>,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        Self {
            approve_emoji: default_approve_emoji(),
            deny_emoji: default_deny_emoji(),
            break_glass_roles: Vec::new(),
        }
    }
}

fn default_approve_emoji() -> Vec<String> {
    vec!["✅".into(), "👍".into()]
}

fn default_deny_emoji() -> Vec<String> {
    vec!["❌".into(), "👎".into()]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonConfig {
    pub name: String,
    #[serde(default)]
    pub roles: Vec<Role>,
    /// `console:alice`, `slack:U0123ABCD`, `discord:80351110224678912`, `telegram:123456789`.
    pub identities: Vec<UserRef>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    Http,
    Tcp,
    Postgres,
    Redis,
    Exec,
}

impl CheckKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Http => "http",
            CheckKind::Tcp => "tcp",
            CheckKind::Postgres => "postgres",
            CheckKind::Redis => "redis",
            CheckKind::Exec => "exec",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    pub name: String,
    pub kind: CheckKind,
    #[serde(default = "default_check_timeout")]
    pub timeout: HumanDuration,
    /// http: the URL to GET. postgres/redis: connection URL (secret: may hold a password).
    pub url: Option<SecretString>,
    /// http: the status that counts as up (default: any 2xx).
    pub expect_status: Option<u16>,
    /// tcp: `host:port`.
    pub address: Option<String>,
    /// exec: program and arguments, run without a shell; exit status 0 is up.
    pub argv: Option<Vec<String>>,
}

fn default_check_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

impl Config {
    /// Reads `path`, applies environment overrides and validates the result.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::from_toml(path, &src, &env)
    }

    /// Parses config text; `env` is the environment to take `OPSBOT_*__*` overrides from.
    pub fn from_toml(
        path: &Path,
        src: &str,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        // Parse the file alone first so syntax and type errors carry its line numbers.
        let mut config: Config = toml::from_str(src).map_err(|e| syntax_error(path, src, &e))?;
        let overrides: Vec<&(String, String)> = env
            .iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k.contains("__"))
            .collect();
        if !overrides.is_empty() {
            let mut table: toml::Table =
                toml::from_str(src).map_err(|e| syntax_error(path, src, &e))?;
            for (var, value) in &overrides {
                apply_override(&mut table, var, value)?;
            }
            let names: Vec<&str> = overrides.iter().map(|(k, _)| k.as_str()).collect();
            config = Config::deserialize(table).map_err(|e| ConfigError::Env {
                var: names.join(", "),
                message: e.message().to_owned(),
            })?;
        }
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        config.base_dir = std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf());
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        self.directory()?;
        if self.limits.backend == LimiterBackend::Redis && self.limits.redis_url.is_none() {
            return Err("limits.backend = \"redis\" needs limits.redis_url".into());
        }
        let url = self.store.database_url.expose_secret();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err("store.database_url must start with sqlite: or postgres://".into());
        }
        // An empty or trivial shared secret authenticates anyone (a missing Kubernetes secret
        // key becomes an empty variable): refuse to start instead.
        let mut secrets: Vec<(&str, &SecretString)> = Vec::new();
        if let Some(t) = &self.alerts.alertmanager_token {
            secrets.push(("alerts.alertmanager_token", t));
        }
        if let Some(t) = &self.alerts.webhook_secret {
            secrets.push(("alerts.webhook_secret", t));
        }
        for w in &self.alerts.webhooks {
            secrets.push(("alerts.webhooks.secret", &w.secret));
        }
        if let Some(slack) = &self.slack {
            slack.validate()?;
            secrets.push(("slack.signing_secret", &slack.signing_secret));
        }
        if let Some(telegram) = &self.telegram {
            telegram.validate()?;
        }
        if let Some(discord) = &self.discord {
            discord.validate()?;
            secrets.push(("discord.bot_token", &discord.bot_token));
        }
        for (key, value) in secrets {
            if value.expose_secret().trim().len() < MIN_SECRET_LEN {
                return Err(format!(
                    "{key} must be at least {MIN_SECRET_LEN} characters"
                ));
            }
        }
        for (i, r) in self.alerts.routes.iter().enumerate() {
            for m in &r.matchers {
                m.parse::<crate::domain::Matcher>()
                    .map_err(|e| format!("alerts.routes[{i}]: {e}"))?;
            }
        }
        let mut names = BTreeSet::new();
        for (i, check) in self.checks.iter().enumerate() {
            let at = format!("checks[{i}] ({:?})", check.name);
            if !names.insert(check.name.as_str()) {
                return Err(format!("{at}: check name is used twice"));
            }
            if check.name.is_empty() || check.name.contains(char::is_whitespace) {
                return Err(format!("{at}: name must be non-empty without spaces"));
            }
            if check.timeout.0.is_zero() {
                return Err(format!("{at}: timeout must be more than 0"));
            }
            let (needs, present): (&str, bool) = match check.kind {
                CheckKind::Http | CheckKind::Postgres | CheckKind::Redis => {
                    ("url", check.url.is_some())
                }
                CheckKind::Tcp => ("address", check.address.is_some()),
                CheckKind::Exec => ("argv", check.argv.as_ref().is_some_and(|a| !a.is_empty())),
            };
            if !present {
                return Err(format!("{at}: kind {} needs {needs}", check.kind.as_str()));
            }
            let extra = [
                ("url", check.url.is_some() && needs != "url"),
                ("address", check.address.is_some() && needs != "address"),
                ("argv", check.argv.is_some() && needs != "argv"),
                (
                    "expect_status",
                    check.expect_status.is_some() && check.kind != CheckKind::Http,
                ),
            ];
            if let Some((key, _)) = extra.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "{at}: {key} does not apply to kind {}",
                    check.kind.as_str()
                ));
            }
        }
        Ok(())
    }

    /// The people and identities from `[[people]]`.
    pub fn directory(&self) -> Result<Directory, String> {
        let mut dir = Directory::default();
        for p in &self.people {
            if p.name.is_empty() {
                return Err("people: a person has an empty name".into());
            }
            let person = Person {
                name: p.name.clone(),
                roles: p.roles.iter().cloned().collect(),
            };
            dir.insert(person, &p.identities)
                .map_err(|e| format!("people: {e}"))?;
        }
        Ok(dir)
    }

    pub fn catalog_dir(&self) -> PathBuf {
        self.base_dir.join(&self.catalog.dir)
    }
}

fn syntax_error(path: &Path, src: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column) = e
        .span()
        .map(|span| line_col(src, span.start))
        .unwrap_or((1, 1));
    ConfigError::Syntax {
        path: path.to_owned(),
        line,
        column,
        message: e.message().to_owned(),
    }
}

/// 1-based line and column of byte `offset` in `src`.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}

fn apply_override(table: &mut toml::Table, var: &str, raw: &str) -> Result<(), ConfigError> {
    let err = |message: String| ConfigError::Env {
        var: var.to_owned(),
        message,
    };
    let path: Vec<String> = var[ENV_PREFIX.len()..]
        .split("__")
        .map(str::to_ascii_lowercase)
        .collect();
    if path.iter().any(String::is_empty) {
        return Err(err("expected OPSBOT_SECTION__KEY".into()));
    }
    // A value that reads as TOML (numbers, booleans, arrays) keeps its type; anything else is a
    // string. Secret-looking keys always stay strings, so a numeric token is never re-typed
    // (and then quoted back in an error message).
    let last_key = path.last().map(String::as_str).unwrap_or_default();
    let secret_like = ["token", "secret", "password", "url"]
        .iter()
        .any(|w| last_key.contains(w));
    let value = if secret_like {
        toml::Value::String(raw.to_owned())
    } else {
        toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
    };
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut cur = table;
    for key in parents {
        let entry = cur
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| err(format!("{key} is not a section")))?;
    }
    cur.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(src: &str) -> Result<Config, ConfigError> {
        Config::from_toml(Path::new("opsbot.toml"), src, &[])
    }

    #[test]
    fn empty_config_uses_safe_defaults() {
        let c = load("").unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert!(c.directory().unwrap().is_empty());
        assert!(c.builtins.status_roles.is_empty());
    }

    #[test]
    fn unknown_key_names_file_and_line() {
        let err = load("[server]\nlisten = \"127.0.0.1:1\"\nlistn = 3\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("opsbot.toml:3:"), "{msg}");
        assert!(msg.contains("listn"), "{msg}");
    }

    #[test]
    fn bad_values_are_explained() {
        let msg = load("[limits]\nper_user = \"lots\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("opsbot.toml:2") && msg.contains("rate"),
            "{msg}"
        );
        let msg = load("[[people]]\nname = \"a\"\nidentities = [\"U1\"]\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("platform:user_id"), "{msg}");
        let msg = load("[[checks]]\nname = \"x\"\nkind = \"tcp\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("needs address"), "{msg}");
    }

    #[test]
    fn env_overrides_win_and_keep_types() {
        let env = vec![
            (
                "OPSBOT_SERVER__LISTEN".to_owned(),
                "127.0.0.1:9999".to_owned(),
            ),
            ("OPSBOT_STORE__MAX_CONNECTIONS".to_owned(), "3".to_owned()),
            ("OPSBOT_UNRELATED".to_owned(), "x".to_owned()),
        ];
        let c = Config::from_toml(
            Path::new("c.toml"),
            "[server]\nlisten = \"127.0.0.1:1\"\n",
            &env,
        )
        .unwrap();
        assert_eq!(c.server.listen.port(), 9999);
        assert_eq!(c.store.max_connections, 3);
        let env = vec![("OPSBOT_SERVER__NOPE".to_owned(), "1".to_owned())];
        let msg = Config::from_toml(Path::new("c.toml"), "", &env)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("OPSBOT_SERVER__NOPE") && msg.contains("nope"),
            "{msg}"
        );
    }

    #[test]
    fn empty_or_short_shared_secrets_are_refused() {
        let msg = load("[alerts]\nalertmanager_token = \"\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("alerts.alertmanager_token must be at least"),
            "{msg}"
        );
        assert!(load("[alerts]\nwebhook_secret = \"short\"\n").is_err());
        // A numeric secret from the environment stays a string and is never echoed.
        let env = vec![(
            "OPSBOT_ALERTS__WEBHOOK_SECRET".to_owned(),
            "847362519934".to_owned(),
        )];
        let c = Config::from_toml(Path::new("c.toml"), "", &env).unwrap();
        assert!(c.alerts.webhook_secret.is_some());
    }

    #[test]
    fn slack_socket_mode_needs_an_app_level_token() {
        let slack = "[slack]\nsigning_secret = \"8f742231b10e8888abcd\"\nbot_token = \"xoxb-1\"\n";
        let msg = load(&format!("{slack}socket_mode = true\n"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("needs slack.app_token"), "{msg}");
        let msg = load(&format!(
            "{slack}socket_mode = true\napp_token = \"xoxb-secret-9\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(msg.contains("xapp-") && !msg.contains("secret-9"), "{msg}");
        let c = load(&format!(
            "{slack}socket_mode = true\napp_token = \"xapp-1-A1-secret\"\n"
        ))
        .unwrap();
        assert!(!format!("{c:?}").contains("xapp-1"));
    }

    #[test]
    fn secrets_never_print() {
        let c = load("[store]\ndatabase_url = \"postgres://u:hunter2@db/ops\"\n").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
