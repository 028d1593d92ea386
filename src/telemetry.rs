//! Logging setup: `tracing` to stderr, human-readable or JSON, filtered by the config's level.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `level_override` (for `chat`) replaces the configured level.
pub fn init(log: &LogConfig, level_override: Option<&str>) -> Result<(), String> {
    let level = level_override.unwrap_or(&log.level);
    let filter = EnvFilter::try_new(level)
        .map_err(|e| format!("log.level {level:?} is not a valid filter: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // Already installed (tests, repeated calls) is fine.
    let _ = result;
    Ok(())
}
