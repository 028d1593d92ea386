//! Health probe implementations (the edge behind `ports::Probe`): HTTP via reqwest, TCP via
//! tokio, Postgres via sqlx, Redis via redis-rs, and exec (a program without a shell).
//! Details shown in chat never contain a configured URL or password.

use std::process::Stdio;
use std::sync::Arc;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use sqlx::Connection;

use crate::actions::health::HealthCheck;
use crate::config::{CheckConfig, CheckProbe};
use crate::ports::{Probe, ProbeReport};

/// Builds the configured checks; the config already holds each kind's (valid) fields.
pub fn build_checks(configs: &[CheckConfig]) -> Result<Vec<HealthCheck>, String> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(3))
        .user_agent(concat!("opsbot/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build HTTP client: {e}"))?;
    let checks = configs.iter().map(|c| {
        let probe: Arc<dyn Probe> = match &c.probe {
            CheckProbe::Http { url, expect_status } => Arc::new(HttpProbe {
                client: client.clone(),
                url: url.clone(),
                expect_status: *expect_status,
            }),
            CheckProbe::Tcp { address } => Arc::new(TcpProbe {
                address: address.clone(),
            }),
            CheckProbe::Postgres { url } => Arc::new(PostgresProbe { url: url.clone() }),
            CheckProbe::Redis { url } => Arc::new(RedisProbe { url: url.clone() }),
            CheckProbe::Exec { argv } => Arc::new(ExecProbe { argv: argv.clone() }),
        };
        HealthCheck {
            name: c.name.clone(),
            kind: c.probe.kind(),
            timeout: c.timeout.0,
            probe,
        }
    });
    Ok(checks.collect())
}

/// Removes the URL and its password from a message that may quote them.
fn scrub(message: &str, url: &SecretString) -> String {
    let url = url.expose_secret();
    let mut out = message.replace(url, "<url>");
    if let Ok(parsed) = reqwest::Url::parse(url)
        && let Some(pw) = parsed.password()
        && !pw.is_empty()
    {
        out = out.replace(pw, "<redacted>");
    }
    out
}

/// The report on a round trip to the server at `url`: `answer` judges what came back; a
/// failure is down, with the URL and its password scrubbed from the error.
fn judge<T, E: std::fmt::Display>(
    result: Result<T, E>,
    url: &SecretString,
    answer: impl FnOnce(T) -> ProbeReport,
) -> ProbeReport {
    match result {
        Ok(value) => answer(value),
        Err(e) => ProbeReport::down(scrub(&e.to_string(), url)),
    }
}

pub struct HttpProbe {
    client: reqwest::Client,
    url: SecretString,
    expect_status: Option<u16>,
}

#[async_trait]
impl Probe for HttpProbe {
    async fn probe(&self) -> ProbeReport {
        match self.client.get(self.url.expose_secret()).send().await {
            Ok(resp) => {
                let status = resp.status();
                let up = match self.expect_status {
                    Some(want) => status.as_u16() == want,
                    None => status.is_success(),
                };
                let detail = format!("HTTP {}", status.as_u16());
                if up {
                    ProbeReport::up(detail)
                } else {
                    ProbeReport::down(detail)
                }
            }
            Err(e) => {
                let kind = if e.is_connect() {
                    "connection failed"
                } else if e.is_timeout() {
                    "timed out"
                } else {
                    "request failed"
                };
                // The innermost cause says why ("Connection refused"); the outer ones
                // only say where ("client error (Connect)").
                let cause = std::iter::successors(std::error::Error::source(&e), |s| s.source())
                    .last()
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                ProbeReport::down(scrub(&format!("{kind}: {cause}"), &self.url))
            }
        }
    }
}

pub struct TcpProbe {
    address: String,
}

#[async_trait]
impl Probe for TcpProbe {
    async fn probe(&self) -> ProbeReport {
        match tokio::net::TcpStream::connect(&self.address).await {
            Ok(_) => ProbeReport::up(format!("connected to {}", self.address)),
            Err(e) => ProbeReport::down(format!("{}: {e}", self.address)),
        }
    }
}

pub struct PostgresProbe {
    url: SecretString,
}

#[async_trait]
impl Probe for PostgresProbe {
    async fn probe(&self) -> ProbeReport {
        let result = async {
            let mut conn = sqlx::PgConnection::connect(self.url.expose_secret()).await?;
            let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await?;
            conn.close().await?;
            Ok::<_, sqlx::Error>(one)
        }
        .await;
        judge(result, &self.url, |one| match one {
            1 => ProbeReport::up("SELECT 1 ok"),
            other => ProbeReport::down(format!("SELECT 1 returned {other}")),
        })
    }
}

pub struct RedisProbe {
    url: SecretString,
}

#[async_trait]
impl Probe for RedisProbe {
    async fn probe(&self) -> ProbeReport {
        let result = async {
            let client = redis::Client::open(self.url.expose_secret())?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
            Ok::<_, redis::RedisError>(pong)
        }
        .await;
        judge(result, &self.url, |pong| match pong.as_str() {
            "PONG" => ProbeReport::up("PING ok"),
            other => ProbeReport::down(format!("PING answered {other:?}")),
        })
    }
}

pub struct ExecProbe {
    argv: Vec<String>,
}

/// Output kept from a check program; the table shows only its first line anyway.
const EXEC_OUTPUT_LIMIT: usize = 4096;

#[async_trait]
impl Probe for ExecProbe {
    async fn probe(&self) -> ProbeReport {
        let mut cmd = tokio::process::Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // The health runner drops this future on timeout; dropping must kill the child.
            .kill_on_drop(true);
        match cmd.output().await {
            Ok(out) => {
                let text = if out.stdout.is_empty() {
                    &out.stderr
                } else {
                    &out.stdout
                };
                let text = String::from_utf8_lossy(&text[..text.len().min(EXEC_OUTPUT_LIMIT)]);
                let first = text.lines().next().unwrap_or("").trim();
                let code = out
                    .status
                    .code()
                    .map_or("killed by signal".to_owned(), |c| format!("exit {c}"));
                let detail = if first.is_empty() {
                    code
                } else {
                    format!("{code}: {first}")
                };
                if out.status.success() {
                    ProbeReport::up(detail)
                } else {
                    ProbeReport::down(detail)
                }
            }
            Err(e) => ProbeReport::down(format!("cannot run {}: {e}", self.argv[0])),
        }
    }
}
