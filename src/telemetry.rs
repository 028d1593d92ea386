//! Logging setup: `tracing` to stderr, human-readable or JSON, filtered by the config's level,
//! with the platform crates whose debug output carries credentials held back.

use std::path::PathBuf;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use crate::config::{LogConfig, LogFormat};

/// Directives added to every filter, for crates whose logs would show a credential: serenity's
/// request span (INFO) holds the route, which for interaction webhooks contains the
/// interaction token, and any event inside it prints that span; Bot API URLs contain the
/// Telegram bot token (`/bot<TOKEN>/`). Skipped for a crate the filter names itself.
const CREDENTIAL_SAFE: [(&str, &str); 3] = [
    ("serenity", "serenity=info"),
    ("serenity", "serenity::http=error"),
    ("teloxide", "teloxide=info"),
];

/// The filter for `level` (an `EnvFilter` string such as `debug` or `opsbot=debug,info`).
pub fn filter(level: &str) -> Result<EnvFilter, String> {
    let mut filter =
        EnvFilter::try_new(level).map_err(|e| format!("{level:?} is not a valid filter: {e}"))?;
    for (krate, directive) in CREDENTIAL_SAFE {
        if !names(level, krate) {
            filter = filter.add_directive(directive.parse().expect("a valid directive"));
        }
    }
    Ok(filter)
}

/// Whether one of `level`'s directives is about `krate` (or one of its modules).
fn names(level: &str, krate: &str) -> bool {
    level.split(',').any(|directive| {
        let target = directive
            .trim()
            .split(['=', '['])
            .next()
            .unwrap_or_default();
        target == krate || target.starts_with(&format!("{krate}::"))
    })
}

/// Where logs go and how much of them, decided once at start from `[log]`, `RUST_LOG` and
/// whether someone else is using the terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The filter, and where it came from (`RUST_LOG`, `log.level`, or the quiet default).
    pub level: String,
    source: &'static str,
    /// Append to this file instead of writing to stderr.
    pub file: Option<PathBuf>,
    /// Only warnings and errors go to stderr, because the terminal is someone's conversation.
    pub quieted: bool,
}

impl Plan {
    /// `RUST_LOG` (`rust_log`, when set and not empty) wins over `log.level` for every
    /// subcommand. Otherwise, when the terminal is a `quiet` one (a console conversation, a
    /// tool's output) and there is no `file` to send logs to, only warnings and errors are
    /// logged, so log lines do not land between replies.
    pub fn new(
        log: &LogConfig,
        file: Option<PathBuf>,
        quiet: bool,
        rust_log: Option<String>,
    ) -> Plan {
        let (level, source, quieted) = match rust_log.filter(|l| !l.trim().is_empty()) {
            Some(level) => (level, "RUST_LOG", false),
            None if quiet && file.is_none() => ("warn".to_owned(), "the default", true),
            None => (log.level.clone(), "log.level", false),
        };
        Plan {
            level,
            source,
            file,
            quieted,
        }
    }

    /// Installs the global subscriber.
    pub fn install(&self, format: LogFormat) -> Result<(), String> {
        let filter = filter(&self.level).map_err(|e| format!("{} {e}", self.source))?;
        let (writer, colours) = match &self.file {
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        format!(
                            "cannot open log.file {}: {e}; check the folder exists and is writable",
                            path.display()
                        )
                    })?;
                (BoxMakeWriter::new(std::sync::Mutex::new(file)), false)
            }
            // Colour codes only for a person at a terminal: in journald, a container log or
            // a file they are noise around every field.
            None => (
                BoxMakeWriter::new(std::io::stderr),
                std::io::IsTerminal::is_terminal(&std::io::stderr()),
            ),
        };
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(colours)
            .with_writer(writer);
        let result = match format {
            LogFormat::Text => builder.try_init(),
            LogFormat::Json => builder.json().flatten_event(true).try_init(),
        };
        // Already installed (tests, repeated calls) is fine.
        let _ = result;
        Ok(())
    }

    /// What a person at the terminal is told once at start when logs are not all shown there.
    pub fn notice(&self) -> Option<String> {
        if let Some(file) = &self.file {
            return Some(format!(
                "opsbot: the console is interactive; logs go to {}",
                file.display()
            ));
        }
        self.quieted.then(|| {
            "opsbot: the console is interactive; only warnings and errors are logged here (set log.file to keep every log line, or RUST_LOG to choose)".to_owned()
        })
    }
}

/// `RUST_LOG` from the environment.
pub fn rust_log() -> Option<String> {
    std::env::var("RUST_LOG").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_that_names_a_crate_keeps_its_own_level_for_it() {
        assert!(names("info,serenity=debug", "serenity"));
        assert!(names("serenity::http=trace", "serenity"));
        assert!(!names("debug", "serenity"));
        assert!(!names("opsbot=debug,serenity_extra=debug", "serenity"));
    }

    #[test]
    fn rust_log_wins_and_a_conversation_gets_only_warnings_unless_logs_go_to_a_file() {
        let log = LogConfig {
            level: "debug".into(),
            ..LogConfig::default()
        };
        let env = Some("opsbot=trace".to_owned());
        assert_eq!(
            Plan::new(&log, None, false, env.clone()).level,
            "opsbot=trace"
        );
        assert_eq!(Plan::new(&log, None, true, env).level, "opsbot=trace");
        assert_eq!(
            Plan::new(&log, None, false, Some(" ".into())).level,
            "debug"
        );
        let quiet = Plan::new(&log, None, true, None);
        assert_eq!((quiet.level.as_str(), quiet.quieted), ("warn", true));
        let to_file = Plan::new(&log, Some("opsbot.log".into()), true, None);
        assert_eq!((to_file.level.as_str(), to_file.quieted), ("debug", false));
    }
}
