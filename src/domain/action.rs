//! What a runbook will do, as values: the arguments bound to its command file and the
//! concrete action (argv or HTTP request) an `ActionRunner` executes. Pure data; rendering
//! lives in `actions::render`, running in the runner.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

/// Argument values in declaration order; optional ones that were not given are absent.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BoundArgs(pub Vec<(String, String)>);

impl BoundArgs {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `service=api to=v1.4.2`, for replies and audit.
    pub fn display(&self) -> String {
        self.0
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The concrete action, ready for an `ActionRunner`.
#[derive(Debug, Clone)]
pub enum ActionKind {
    Exec {
        argv: Vec<String>,
        workdir: Option<PathBuf>,
        /// Environment for the process (everything else is cleared); secret values included.
        env: Vec<(String, SecretString)>,
        timeout: Duration,
    },
    Http {
        method: String,
        url: SecretString,
        headers: Vec<(String, SecretString)>,
        body: Option<SecretString>,
        timeout: Duration,
        expect_status: Option<u16>,
    },
}

impl ActionKind {
    pub fn timeout(&self) -> Duration {
        match self {
            ActionKind::Exec { timeout, .. } | ActionKind::Http { timeout, .. } => *timeout,
        }
    }
}
