//! How `foreman serve` writes its log: why a module of its own is that the choice of
//! format and colour depends on where stderr goes, and the start line must list the
//! settings that matter without ever showing a secret.
//!
//! Text (the default) is for people: colour only when stderr is a terminal and
//! `NO_COLOR` is unset or empty (<https://no-color.org>), so a journal or a file gets
//! no escape codes. `FOREMAN_LOG_FORMAT=json` writes one JSON object per line, the
//! event's fields at the top level beside `timestamp`, `level`, `target` and
//! `message`, for log shippers.

use std::io::IsTerminal as _;

use crate::config::Config;

/// The log's format (`FOREMAN_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    Text,
    /// One JSON object per line.
    Json,
}

/// Whether text lines get ANSI colours: only on a terminal, and never with `NO_COLOR`.
pub fn colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|value| value.is_empty())
}

/// Installs the process's subscriber: `filter` (checked by the settings) and `format`,
/// to stderr.
pub fn init(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::new(filter);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(colour(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR").as_deref(),
            ))
            .init(),
        // Events are flattened, so the module path would be a second `target` key
        // beside the field that names the Ollama server a job ran on.
        LogFormat::Json => builder
            .json()
            .with_target(false)
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

/// The one start line: the settings an operator checks first. The token is reported
/// as on or off, target URLs are shown (this is the operator's own log), and
/// nothing secret is.
pub fn log_start(config: &Config, database: &str) {
    let targets = config
        .targets
        .iter()
        .map(|target| {
            format!(
                "{} ({}, slots={}, places={})",
                target.name, target.url, target.slots, target.places
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    tracing::info!(
        addr = %config.addr,
        database,
        data_dir = %std::path::absolute(&config.data_dir)
            .unwrap_or_else(|_| config.data_dir.clone())
            .display(),
        targets,
        auth = if config.token.is_some() { "on" } else { "off" },
        webhooks = if config.webhook_key.is_some() { "on" } else { "off" },
        model_management = if config.allow_model_management { "on" } else { "off" },
        max_wait = %humantime::format_duration(config.max_wait),
        fair_share = if config.fair_share { "on" } else { "off" },
        protect_window = %humantime::format_duration(config.protect_window),
        max_queue = config.max_queue,
        shutdown_grace = %humantime::format_duration(config.shutdown_grace),
        "foreman serving"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(
            colour(true, Some(OsStr::new(""))),
            "an empty NO_COLOR is unset"
        );
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(
            !colour(false, None),
            "a pipe or a file gets no escape codes"
        );
    }
}
