//! What a runbook will do, as values: the arguments bound to its command file and the
//! concrete action (argv or HTTP request) an `ActionRunner` executes. Pure data; rendering
//! lives in `actions::render`, running in the runner.

use std::path::{Path, PathBuf};
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

/// Where an exec action runs and the program it starts: a relative `workdir`, and a program
/// written as a relative path (`./rollback.sh`), are relative to the config's folder `base`,
/// like every path in the config; a bare name (`kubectl`) is left for the PATH search.
pub fn exec_location(program: &str, workdir: Option<&Path>, base: &Path) -> (PathBuf, String) {
    let dir = match workdir {
        Some(d) if d.is_absolute() => d.to_path_buf(),
        Some(d) => base.join(d),
        None => base.to_path_buf(),
    };
    let program = if program.contains('/') && !program.starts_with('/') {
        dir.join(program).to_string_lossy().into_owned()
    } else {
        program.to_owned()
    };
    (dir, program)
}
