//! Logging: to `logFile` when configured, else to stderr, at `logLevel`. Never to stdout,
//! which carries only the result or the error.

use std::fs::OpenOptions;
use std::sync::Arc;

use tracing::Dispatch;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use crate::config::{IpamConfig, LogLevel};

/// Where logs go when no `logFile` is configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultSink {
    /// The plugin's stderr (what the runtime logs).
    Stderr,
    /// Nowhere (unit tests).
    Discard,
}

fn level_filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Off => LevelFilter::OFF,
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    }
}

fn default_writer(sink: DefaultSink) -> BoxMakeWriter {
    match sink {
        DefaultSink::Stderr => BoxMakeWriter::new(std::io::stderr),
        DefaultSink::Discard => BoxMakeWriter::new(std::io::sink),
    }
}

/// The log dispatcher for one invocation. If `logFile` cannot be opened, logs go to the
/// default sink and the first line says why.
pub fn dispatch(ipam: &IpamConfig, sink: DefaultSink) -> Dispatch {
    let mut open_error = None;
    let writer = match &ipam.log_file {
        None => default_writer(sink),
        Some(path) => match OpenOptions::new().create(true).append(true).open(path) {
            Ok(file) => BoxMakeWriter::new(Arc::new(file)),
            Err(e) => {
                open_error = Some(format!("cannot open logFile {}: {e}", path.display()));
                default_writer(sink)
            }
        },
    };
    let subscriber = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_max_level(level_filter(ipam.log_level))
        .with_ansi(false)
        .with_target(false)
        // A log line that cannot be written is dropped; reporting that on stderr could fail too.
        .log_internal_errors(false)
        .finish();
    let d = Dispatch::new(subscriber);
    if let Some(msg) = open_error {
        tracing::dispatcher::with_default(&d, || tracing::warn!("{msg}; logging to stderr"));
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_to_log_file_at_level() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pinip.log");
        let ipam = IpamConfig {
            log_file: Some(path.clone()),
            log_level: LogLevel::Info,
            ..IpamConfig::default()
        };
        let d = dispatch(&ipam, DefaultSink::Discard);
        tracing::dispatcher::with_default(&d, || {
            tracing::info!("hello info");
            tracing::debug!("hidden debug");
        });
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("hello info"), "{text}");
        assert!(!text.contains("hidden debug"), "{text}");
    }

    #[test]
    fn unopenable_log_file_falls_back() {
        let ipam = IpamConfig {
            log_file: Some("/nonexistent-dir/pinip.log".into()),
            ..IpamConfig::default()
        };
        // Must not panic; logs go to the default sink.
        let d = dispatch(&ipam, DefaultSink::Discard);
        tracing::dispatcher::with_default(&d, || tracing::error!("still fine"));
    }
}
