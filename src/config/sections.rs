//! The plain settings sections (`[bot]`, `[server]`, `[log]`, `[store]`, `[limits]`,
//! `[catalog]`, `[console]`, `[builtins]`, `[health]`, `[approvals]`,
//! `[cluster]`): each
//! is a struct whose `Default` is the documented default, so an omitted key or section
//! takes it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::domain::{HumanDuration, RateQuota, Role};

fn secs(n: u64) -> HumanDuration {
    HumanDuration(Duration::from_secs(n))
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BotConfig {
    /// The bot's own name, so `/status@opsbot` in group chats is understood.
    pub name: String,
}

impl Default for BotConfig {
    fn default() -> Self {
        Self {
            name: "opsbot".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// How long shutdown waits for in-flight work.
    pub shutdown_grace: HumanDuration,
    /// How long a connection may take to send a request's headers (also how long an idle
    /// keep-alive connection stays open); then it is closed.
    pub header_read_timeout: HumanDuration,
    /// How long a request may take from its headers to its answer, body included; then it
    /// is answered 408.
    pub request_timeout: HumanDuration,
    /// Connections served at once; one more is answered 503 and closed.
    pub max_connections: usize,
    /// Serve `/metrics` on this address instead of `listen` (so the public listener carrying
    /// the webhooks does not expose it).
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shutdown_grace: secs(10),
            header_read_timeout: secs(10),
            request_timeout: secs(30),
            max_connections: 512,
            metrics_listen: None,
        }
    }
}

impl ServerConfig {
    /// A zero limit would refuse every request (or, for a timeout, every connection).
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0 {
            return Err("server.max_connections must be at least 1".into());
        }
        for (key, d) in [
            ("header_read_timeout", &self.header_read_timeout),
            ("request_timeout", &self.request_timeout),
        ] {
            if d.0.is_zero() {
                return Err(format!("server.{key} must be longer than 0s"));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `opsbot=debug,sqlx=warn`; checked when read, so a
    /// filter `serve` would refuse (or one that silently logs nothing) stops every command.
    /// `RUST_LOG` overrides it.
    #[serde(deserialize_with = "log_level")]
    pub level: String,
    /// Append logs to this file (relative to the config file) instead of stderr.
    pub file: Option<PathBuf>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
            file: None,
        }
    }
}

fn log_level<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let level = String::deserialize(d)?;
    check_log_level(&level).map_err(serde::de::Error::custom)?;
    Ok(level)
}

/// Refuses what `tracing` would refuse, and a level's common misspelling (`warning`), which
/// `tracing` reads as the name of a module: opsbot would run logging nothing at all.
fn check_log_level(level: &str) -> Result<(), String> {
    crate::telemetry::filter(level)?;
    let misspelt = level
        .split(',')
        .map(str::trim)
        .filter(|d| !d.contains(['=', '[', ':']))
        .filter(|d| d.parse::<tracing::level_filters::LevelFilter>().is_err())
        .find_map(|d| level_meant(d).map(|meant| (d, meant)));
    match misspelt {
        Some((word, meant)) => Err(format!(
            "log.level {level:?}: {word:?} is not a tracing level (trace, debug, info, warn, \
             error, off) but would be read as a module name, logging nothing else; write {meant:?}"
        )),
        None => Ok(()),
    }
}

/// The level a word from another logging system means.
fn level_meant(word: &str) -> Option<&'static str> {
    Some(match word.to_ascii_lowercase().as_str() {
        "warning" | "warnings" => "warn",
        "information" | "informational" | "notice" => "info",
        "err" | "errors" | "critical" | "crit" | "fatal" | "panic" | "alert" | "emerg" => "error",
        "verbose" | "all" | "debug2" => "trace",
        "none" | "quiet" | "silent" => "off",
        _ => return None,
    })
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://opsbot.db` (default) or `postgres://user:pass@host/db`. Secret: may hold a password.
    pub database_url: SecretString,
    pub max_connections: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            database_url: SecretString::from("sqlite://opsbot.db"),
            max_connections: 8,
        }
    }
}

/// Which rate limiter holds the counters; Redis carries its URL, so it cannot be missing.
#[derive(Debug, Default)]
pub enum LimiterBackend {
    /// In this process (one replica).
    #[default]
    Memory,
    /// Shared by replicas. Secret: the URL may hold a password.
    Redis { url: SecretString },
}

#[derive(Debug, Deserialize)]
#[serde(try_from = "RawLimits")]
pub struct LimitsConfig {
    /// From `backend` (`memory` or `redis`) and `redis_url`.
    pub backend: LimiterBackend,
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
        let quota = |count, per| RateQuota {
            count: std::num::NonZeroU32::new(count).expect("non-zero"),
            per: Duration::from_secs(per),
        };
        Self {
            backend: LimiterBackend::Memory,
            global: Some(quota(50, 1)),
            per_user: Some(quota(30, 60)),
            per_channel: None,
            per_command: None,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum BackendName {
    #[default]
    Memory,
    Redis,
}

/// `[limits]` as written. A quota left out of a written `[limits]` section is off (unlike
/// an omitted section, which takes the defaults).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default)]
    backend: BackendName,
    redis_url: Option<SecretString>,
    global: Option<RateQuota>,
    per_user: Option<RateQuota>,
    per_channel: Option<RateQuota>,
    per_command: Option<RateQuota>,
}

impl TryFrom<RawLimits> for LimitsConfig {
    type Error = String;
    fn try_from(raw: RawLimits) -> Result<Self, String> {
        let backend = match (raw.backend, raw.redis_url) {
            (BackendName::Memory, _) => LimiterBackend::Memory,
            (BackendName::Redis, Some(url)) => LimiterBackend::Redis { url },
            (BackendName::Redis, None) => {
                return Err("limits.backend = \"redis\" needs limits.redis_url".into());
            }
        };
        Ok(Self {
            backend,
            global: raw.global,
            per_user: raw.per_user,
            per_channel: raw.per_channel,
            per_command: raw.per_command,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogConfig {
    /// Folder of `*.toml` command files, relative to the config file.
    pub dir: PathBuf,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("commands"),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Whether `serve` reads commands from stdin.
    pub enabled: bool,
    /// Console identity `serve` uses (`opsbot chat --as NAME` overrides it).
    pub user: Option<String>,
    /// Channel name console commands run in (channel allow-lists match it).
    pub channel: String,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            user: None,
            channel: "console".into(),
        }
    }
}

/// Who may run the built-in commands beyond `help` and `whoami` (which anyone may run).
/// An empty list means nobody: access is denied unless granted.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BuiltinsConfig {
    pub status_roles: Vec<Role>,
    pub audit_roles: Vec<Role>,
    /// May list alerts (`/alerts`).
    pub alerts_roles: Vec<Role>,
    /// May act on alerts (`/ack`, `/silence`, `/unsilence`, `/resolve`).
    pub responder_roles: Vec<Role>,
    /// May stand someone in on a schedule (`/oncall override`).
    pub oncall_roles: Vec<Role>,
    /// May pull someone in with `/page` (a mention, and their paging service).
    pub page_roles: Vec<Role>,
    /// May pause and resume scheduled runs (`/schedule pause|resume NAME`).
    pub schedule_roles: Vec<Role>,
}

/// Scheduled health checks and the bot's own dead-man's switch.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Run every `[[checks]]` this often and raise alerts on state changes; unset: only `/status`.
    pub every: Option<HumanDuration>,
    /// Consecutive failures before a check's alert fires (flap damping).
    pub fail_after: u32,
    /// `severity` label of health-check alerts.
    pub severity: String,
    /// Pinged (GET) on an interval so an external monitor notices when opsbot stops.
    pub heartbeat_url: Option<SecretString>,
    pub heartbeat_every: HumanDuration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            every: None,
            fail_after: 3,
            severity: "critical".into(),
            heartbeat_url: None,
            heartbeat_every: secs(60),
        }
    }
}

/// Replicas on one Postgres: how the one that does the once-per-cluster work is chosen.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// How long the leader's lease lasts (renewed every third of it): when the leader dies,
    /// another replica takes over polling, scheduled checks and sweeps within about this long.
    pub lease_secs: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self { lease_secs: 10 }
    }
}

impl ClusterConfig {
    /// Shortest and longest lease accepted: under 2 s a renewal every third of it leaves no
    /// room for a slow store; over 10 minutes a dead leader's work waits too long.
    const LEASE_SECS: std::ops::RangeInclusive<u64> = 2..=600;

    pub(super) fn validate(&self) -> Result<(), String> {
        if Self::LEASE_SECS.contains(&self.lease_secs) {
            return Ok(());
        }
        Err(format!(
            "cluster.lease_secs must be between {} and {} (seconds); it is {}",
            Self::LEASE_SECS.start(),
            Self::LEASE_SECS.end(),
            self.lease_secs
        ))
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }
}

/// How approvals are given by reaction, and who may break glass.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// Reactions that approve (aliases and skin tones count as the same emoji).
    pub approve_emoji: Vec<String>,
    /// Reactions that deny.
    pub deny_emoji: Vec<String>,
    /// Roles that may run an approval-gated command at once with `--break-glass "reason"`.
    pub break_glass_roles: Vec<Role>,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        Self {
            approve_emoji: vec!["✅".into(), "👍".into()],
            deny_emoji: vec!["❌".into(), "👎".into()],
            break_glass_roles: Vec::new(),
        }
    }
}
