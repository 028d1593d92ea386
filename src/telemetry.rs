//! Logging setup: `tracing` to stderr, human-readable or JSON, filtered by the config's level,
//! with the platform crates whose debug output carries credentials held back.

use tracing_subscriber::EnvFilter;

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
    let mut filter = EnvFilter::try_new(level)
        .map_err(|e| format!("log.level {level:?} is not a valid filter: {e}"))?;
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

/// Installs the global subscriber. `level_override` (for `chat`) replaces the configured level.
pub fn init(log: &LogConfig, level_override: Option<&str>) -> Result<(), String> {
    let level = level_override.unwrap_or(&log.level);
    // Colour codes only for a person at a terminal: in journald, a container log or a file
    // they are noise around every field.
    let colours = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(level)?)
        .with_ansi(colours)
        .with_writer(std::io::stderr);
    let result = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // Already installed (tests, repeated calls) is fine.
    let _ = result;
    Ok(())
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
}
