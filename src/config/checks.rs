//! `[[checks]]`: one health check each, parsed into the probe it configures. The TOML stays
//! flat (`kind` plus that kind's fields); what the program gets is a [`CheckProbe`] variant
//! that holds exactly the fields its kind needs.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::domain::HumanDuration;

/// A configured health check.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawCheck")]
pub struct CheckConfig {
    /// Non-empty, without spaces, unique among the checks.
    pub name: String,
    /// More than zero.
    pub timeout: HumanDuration,
    pub probe: CheckProbe,
}

/// What a check probes, by `kind`.
#[derive(Debug)]
pub enum CheckProbe {
    /// GET `url` (a valid URL); up on `expect_status`, or any 2xx when unset.
    Http {
        url: SecretString,
        expect_status: Option<u16>,
    },
    /// Connect to `host:port`.
    Tcp { address: String },
    /// Connect and `SELECT 1`. Secret: the URL may hold a password.
    Postgres { url: SecretString },
    /// Connect and `PING`. Secret: the URL may hold a password.
    Redis { url: SecretString },
    /// Run the program (non-empty argv) without a shell; exit status 0 is up.
    Exec { argv: Vec<String> },
}

impl CheckProbe {
    pub fn kind(&self) -> &'static str {
        match self {
            CheckProbe::Http { .. } => "http",
            CheckProbe::Tcp { .. } => "tcp",
            CheckProbe::Postgres { .. } => "postgres",
            CheckProbe::Redis { .. } => "redis",
            CheckProbe::Exec { .. } => "exec",
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum CheckKind {
    Http,
    Tcp,
    Postgres,
    Redis,
    Exec,
}

/// `[[checks]]` as written: every kind's fields, each optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    name: String,
    kind: CheckKind,
    #[serde(default = "default_check_timeout")]
    timeout: HumanDuration,
    /// http: the URL to GET. postgres/redis: connection URL (secret: may hold a password).
    url: Option<SecretString>,
    /// http: the status that counts as up (default: any 2xx).
    expect_status: Option<u16>,
    /// tcp: `host:port`.
    address: Option<String>,
    /// exec: program and arguments.
    argv: Option<Vec<String>>,
}

fn default_check_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(5))
}

impl TryFrom<RawCheck> for CheckConfig {
    type Error = String;
    fn try_from(mut raw: RawCheck) -> Result<Self, String> {
        let at = format!("check {:?}", raw.name);
        if raw.name.is_empty() || raw.name.contains(char::is_whitespace) {
            return Err(format!("{at}: name must be non-empty without spaces"));
        }
        if raw.timeout.0.is_zero() {
            return Err(format!("{at}: timeout must be more than 0"));
        }
        let kind = format!("{:?}", raw.kind).to_ascii_lowercase();
        let needs = |key: &str| format!("{at}: kind {kind} needs {key}");
        let probe = match raw.kind {
            CheckKind::Http => {
                let url = raw.url.take().ok_or_else(|| needs("url"))?;
                reqwest::Url::parse(url.expose_secret())
                    .map_err(|e| format!("{at}: url is not valid: {e}"))?;
                CheckProbe::Http {
                    url,
                    expect_status: raw.expect_status.take(),
                }
            }
            CheckKind::Tcp => CheckProbe::Tcp {
                address: raw.address.take().ok_or_else(|| needs("address"))?,
            },
            CheckKind::Postgres => CheckProbe::Postgres {
                url: raw.url.take().ok_or_else(|| needs("url"))?,
            },
            CheckKind::Redis => CheckProbe::Redis {
                url: raw.url.take().ok_or_else(|| needs("url"))?,
            },
            CheckKind::Exec => CheckProbe::Exec {
                argv: (raw.argv.take())
                    .filter(|a| !a.is_empty())
                    .ok_or_else(|| needs("argv"))?,
            },
        };
        // Whatever the kind did not take is a key that does not apply to it.
        let left = [
            ("url", raw.url.is_some()),
            ("address", raw.address.is_some()),
            ("argv", raw.argv.is_some()),
            ("expect_status", raw.expect_status.is_some()),
        ];
        if let Some((key, _)) = left.iter().find(|(_, set)| *set) {
            return Err(format!("{at}: {key} does not apply to kind {kind}"));
        }
        Ok(CheckConfig {
            name: raw.name,
            timeout: raw.timeout,
            probe,
        })
    }
}
