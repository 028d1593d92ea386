//! Typed configuration: one TOML file, overridden by `OPSBOT_SECTION__KEY` environment
//! variables, parsed once into the types the program uses (the people [`Directory`], alert
//! routes with parsed `Matcher`s, health checks by kind). Unknown keys are rejected, every
//! error names the file and line (or the variable), and secret values never print.

mod alerts;
mod checks;
mod escalation;
mod incidents;
mod oncall;
mod paging;
mod people;
mod platforms;
mod report;
mod sections;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::domain::{Directory, line_col};

pub use alerts::{AlertRouteConfig, AlertsConfig, DefaultRoute, NotifyWebhookConfig, RouteTarget};
pub use checks::{CheckConfig, CheckProbe};
pub use escalation::{EscalationConfig, PolicyConfig};
pub use incidents::IncidentsConfig;
pub use oncall::{OncallConfig, ScheduleConfig};
pub use paging::{PAGERDUTY_URL, PagingConfig, PagingKind, PagingServiceConfig};
pub use platforms::{DiscordConfig, SlackConfig, SlackReceive, TelegramConfig, TelegramDelivery};
pub use report::{REPORT_SCHEDULE, ReportConfig};
pub use sections::{
    ApprovalsConfig, BotConfig, BuiltinsConfig, CatalogConfig, ClusterConfig, ConsoleConfig,
    HealthConfig, LimiterBackend, LimitsConfig, LogConfig, LogFormat, ServerConfig, StoreConfig,
};

/// Shortest accepted shared secret (tokens, HMAC keys).
pub const MIN_SECRET_LEN: usize = 12;

/// Prefix of environment overrides; `OPSBOT_STORE__DATABASE_URL` sets `store.database_url`.
pub const ENV_PREFIX: &str = "OPSBOT_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `reason` says what to do: the I/O error is shown once, not again as a source.
    #[error("{path}: cannot read config: {reason}")]
    Read { path: PathBuf, reason: String },
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

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub bot: BotConfig,
    pub server: ServerConfig,
    pub log: LogConfig,
    pub store: StoreConfig,
    pub limits: LimitsConfig,
    pub catalog: CatalogConfig,
    pub console: ConsoleConfig,
    pub builtins: BuiltinsConfig,
    pub approvals: ApprovalsConfig,
    pub alerts: AlertsConfig,
    pub incidents: IncidentsConfig,
    pub health: HealthConfig,
    pub cluster: ClusterConfig,
    /// On-call schedules (`[[oncall.schedules]]`).
    pub oncall: OncallConfig,
    /// Paging services (`[[paging.services]]`).
    pub paging: PagingConfig,
    /// Escalation policies (`[[escalation.policies]]`) and Slack user groups for roles.
    pub escalation: EscalationConfig,
    /// The daily report (`[report]`); absent = none.
    pub report: Option<ReportConfig>,
    /// Telegram bot credentials; absent = no Telegram adapter.
    pub telegram: Option<TelegramConfig>,
    /// Slack app credentials; absent = no Slack adapter.
    pub slack: Option<SlackConfig>,
    /// Discord bot credentials; absent = no Discord adapter.
    pub discord: Option<DiscordConfig>,
    /// The people and identities from `[[people]]`.
    #[serde(rename = "people", deserialize_with = "people::directory")]
    pub directory: Directory,
    /// `[[checks]]`, names unique.
    pub checks: Vec<CheckConfig>,
    /// Directory of the config file; relative paths in the config resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

impl Config {
    /// Reads `path`, applies environment overrides and validates the result.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_owned(),
            reason: read_failure(&e),
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
        let overrides: Vec<&(String, String)> = env
            .iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k.contains("__"))
            .collect();
        let mut config = if overrides.is_empty() {
            toml::from_str::<Config>(src).map_err(|e| syntax_error(path, src, &e))?
        } else {
            with_overrides(path, src, &overrides)?
        };
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        config.base_dir = std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf());
        if let Some(url) = beside(config.store.database_url.expose_secret(), &config.base_dir) {
            config.store.database_url = SecretString::from(url);
        }
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        let at_line = |(message, needle): (String, String)| located(path, src, message, &needle);
        config.incidents.resolve().map_err(at_line)?;
        config.validate_escalation().map_err(at_line)?;
        Ok(config)
    }

    /// What the parsed types cannot say alone: secrets long enough, names unique.
    fn validate(&self) -> Result<(), String> {
        let url = self.store.database_url.expose_secret();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err("store.database_url must start with sqlite: or postgres://".into());
        }
        self.server.validate()?;
        self.cluster.validate()?;
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
            secrets.push(("slack.signing_secret", &slack.signing_secret));
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
        self.validate_oncall()?;
        self.validate_paging()?;
        let mut names = BTreeSet::new();
        for (i, check) in self.checks.iter().enumerate() {
            if !names.insert(check.name.as_str()) {
                return Err(format!(
                    "checks[{i}] ({:?}): check name is used twice",
                    check.name
                ));
            }
        }
        Ok(())
    }

    /// Schedules named once, and every person they list known in `[[people]]`.
    fn validate_oncall(&self) -> Result<(), String> {
        let mut names = BTreeSet::new();
        for s in &self.oncall.schedules {
            let s = &s.schedule;
            if !names.insert(s.name.as_str()) {
                return Err(format!("oncall: schedule {} is defined twice", s.name));
            }
            for layer in &s.layers {
                if let Some(who) = layer
                    .people
                    .iter()
                    .find(|p| self.directory.person(p).is_none())
                {
                    return Err(format!(
                        "oncall: schedule {} layer {} names {who:?}, who is not in [[people]]",
                        s.name, layer.name
                    ));
                }
            }
        }
        if let Some(name) = &self.alerts.oncall_schedule
            && !names.contains(name.as_str())
        {
            return Err(format!(
                "alerts.oncall_schedule names {name:?}, which is not in [[oncall.schedules]]"
            ));
        }
        Ok(())
    }

    /// Services named once, and every person's `page` one of them.
    fn validate_paging(&self) -> Result<(), String> {
        let mut names = BTreeSet::new();
        for s in &self.paging.services {
            if !names.insert(s.name.as_str()) {
                return Err(format!("paging: service {} is defined twice", s.name));
            }
            if let Some((key, _)) = (s.kind.secrets().into_iter())
                .find(|(_, v)| v.expose_secret().trim().len() < MIN_SECRET_LEN)
            {
                return Err(format!(
                    "paging service {}: {key} must be at least {MIN_SECRET_LEN} characters",
                    s.name
                ));
            }
        }
        let mut people: Vec<_> = self.directory.people().collect();
        people.sort_by(|a, b| a.name.cmp(&b.name));
        for p in people {
            if let Some(page) = &p.page
                && !names.contains(page.as_str())
            {
                return Err(format!(
                    "people: {}'s page = {page:?} is not in [[paging.services]]",
                    p.name
                ));
            }
        }
        Ok(())
    }

    /// Where the store is, for people to read (start-up log, `check-config`): a SQLite file's
    /// path, or a Postgres server and database without credentials or options.
    pub fn store_location(&self) -> String {
        let url = self.store.database_url.expose_secret();
        let url = url.split_once('?').map_or(url, |(before, _)| before);
        match url.split_once("://") {
            Some(("sqlite", path)) => format!("SQLite file {path}"),
            Some((scheme, rest)) => {
                let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
                format!("{scheme}://{host}")
            }
            None => url.to_owned(),
        }
    }

    pub fn catalog_dir(&self) -> PathBuf {
        self.base_dir.join(&self.catalog.dir)
    }

    /// `log.file` resolved against the config file's folder.
    pub fn log_file(&self) -> Option<PathBuf> {
        self.log.file.as_ref().map(|f| self.base_dir.join(f))
    }
}

/// A name chat commands, metric labels and environment variables carry as typed: letters,
/// digits, `-` and `_` (`what` says whose, for the error).
fn plain_name(name: &str, what: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
    {
        return Err(format!(
            "{what} name {name:?} must be letters, digits, - or _"
        ));
    }
    Ok(())
}

/// An error about a name the config gives, at the first line holding `needle` (the quoted
/// value), or without a line when the file has no such text (an environment override).
fn located(path: &Path, src: &str, message: String, needle: &str) -> ConfigError {
    match src.find(needle).filter(|_| !needle.is_empty()) {
        Some(offset) => {
            let (line, column) = line_col(src, offset);
            ConfigError::Syntax {
                path: path.to_owned(),
                line,
                column,
                message,
            }
        }
        None => ConfigError::Invalid {
            path: path.to_owned(),
            message,
        },
    }
}

/// Why the config file could not be read, with the fix for the common case: no file there.
fn read_failure(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "there is no such file; copy config.example.toml there \
             and edit it, or pass --config FILE (or set OPSBOT_CONFIG)"
            .into(),
        _ => e.to_string(),
    }
}

/// Parses the file with the environment overrides applied. The merged result decides (so a
/// variable may supply a key the file leaves out); an error the file alone shows too is
/// reported at its line, any other names the variables.
fn with_overrides(
    path: &Path,
    src: &str,
    overrides: &[&(String, String)],
) -> Result<Config, ConfigError> {
    let mut table: toml::Table = toml::from_str(src).map_err(|e| syntax_error(path, src, &e))?;
    for (var, value) in overrides {
        apply_override(&mut table, var, value)?;
    }
    Config::deserialize(table).map_err(|merged| match toml::from_str::<Config>(src) {
        Err(own) if own.message() == merged.message() => syntax_error(path, src, &own),
        _ => ConfigError::Env {
            var: overrides
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            message: merged.message().to_owned(),
        },
    })
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
    let secret_like = ["token", "secret", "password", "url", "key"]
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
    let mut keys = parents.iter();
    while let Some(key) = keys.next() {
        let entry = cur
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match entry {
            toml::Value::Table(t) => t,
            // `[[paging.services]]` and the like: the next word names an entry.
            toml::Value::Array(entries) => {
                let name = keys.next().ok_or_else(|| {
                    err(format!(
                        "{key} is a list: name one of its entries, as in OPSBOT_PAGING__SERVICES__NAME__KEY"
                    ))
                })?;
                list_entry(entries, name)
                    .ok_or_else(|| err(format!("{key} has no entry named {name}")))?
            }
            _ => return Err(err(format!("{key} is not a section"))),
        };
    }
    cur.insert(last.clone(), value);
    Ok(())
}

/// The entry of a list of tables whose `name` is `word` as an environment variable spells it
/// (any case, `_` for `-`).
fn list_entry<'a>(entries: &'a mut [toml::Value], word: &str) -> Option<&'a mut toml::Table> {
    let spelled = |name: &str| name.to_ascii_lowercase().replace('-', "_");
    entries
        .iter_mut()
        .filter_map(toml::Value::as_table_mut)
        .find(|t| {
            t.get("name")
                .and_then(toml::Value::as_str)
                .is_some_and(|n| spelled(n) == word)
        })
}

/// `sqlite://opsbot.db` (or `sqlite:opsbot.db`) names a file beside the config, like every
/// other relative path in it, and not one in whatever directory opsbot was started from: from
/// another folder, or under a service manager, that was a new, empty database. `None` when the
/// URL is not a relative SQLite path (absolute, in memory, Postgres).
fn beside(url: &str, base: &Path) -> Option<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, format!("?{query}")),
        None => (rest, String::new()),
    };
    if path.is_empty() || path.starts_with(':') || Path::new(path).is_absolute() {
        return None;
    }
    Some(format!("sqlite://{}{query}", base.join(path).display()))
}
