//! Logging setup: one global `tracing` subscriber for the whole process.
//!
//! Desktop: human-readable lines on stderr. Platform sinks (os_log on Apple, logcat on Android)
//! are added as extra layers in [`init_logging`] behind `cfg(target_os = ...)` when they land.

use std::fmt;
use std::io::IsTerminal;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How much to log, from the most verbose to the least.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Everything, including per-read details.
    Trace,
    /// Per-connection events (connection finished, dial attempts).
    Debug,
    /// Service events and connection errors. The default.
    #[default]
    Info,
    /// Problems that do not stop the service.
    Warn,
    /// Only failures.
    Error,
}

impl LogLevel {
    /// Every level's name, as accepted by [`LogLevel::from_str`] and the config file.
    pub const NAMES: [&'static str; 5] = ["trace", "debug", "info", "warn", "error"];

    /// The level's name in lowercase ("info").
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }

    fn filter(self) -> LevelFilter {
        match self {
            LogLevel::Trace => LevelFilter::TRACE,
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Error => LevelFilter::ERROR,
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A log level name that is not one of trace, debug, info, warn, error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log level {0:?} (expected one of trace, debug, info, warn, error)")]
pub struct UnknownLogLevel(pub String);

impl FromStr for LogLevel {
    type Err = UnknownLogLevel;

    /// Parses a level name, ignoring ASCII case ("INFO" = "info").
    fn from_str(text: &str) -> Result<LogLevel, UnknownLogLevel> {
        match text.to_ascii_lowercase().as_str() {
            "trace" => Ok(LogLevel::Trace),
            "debug" => Ok(LogLevel::Debug),
            "info" => Ok(LogLevel::Info),
            "warn" => Ok(LogLevel::Warn),
            "error" => Ok(LogLevel::Error),
            _ => Err(UnknownLogLevel(text.to_string())),
        }
    }
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// Another global `tracing` subscriber (or `log` logger) was installed by someone else.
    #[error("cannot install the log subscriber: {0}")]
    AlreadyInstalled(#[source] tracing_subscriber::util::TryInitError),
}

/// Whether [`init_logging`] already installed the subscriber.
static INSTALLED: Mutex<bool> = Mutex::new(false);

/// Installs the process-wide log subscriber at `level`: on desktop, formatted lines on stderr
/// (colours only when stderr is a terminal).
///
/// Idempotent: once it succeeded, later calls do nothing and return `Ok` (the first level
/// stays). Fails only when a different global subscriber was installed by someone else.
pub fn init_logging(level: LogLevel) -> Result<(), LoggingError> {
    let mut installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    if *installed {
        return Ok(());
    }
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    tracing_subscriber::registry()
        .with(level.filter())
        .with(stderr)
        .try_init()
        .map_err(LoggingError::AlreadyInstalled)?;
    *installed = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_level_name_case_insensitively() {
        for name in LogLevel::NAMES {
            let level: LogLevel = name.parse().unwrap();
            assert_eq!(level.as_str(), name);
            assert_eq!(name.to_uppercase().parse::<LogLevel>().unwrap(), level);
        }
        assert_eq!(LogLevel::default(), LogLevel::Info);
    }

    #[test]
    fn rejects_an_unknown_level_and_names_it() {
        let error = "verbose".parse::<LogLevel>().unwrap_err();
        assert!(error.to_string().contains("\"verbose\""), "{error}");
    }

    #[test]
    fn second_init_is_a_no_op() {
        init_logging(LogLevel::Warn).unwrap();
        init_logging(LogLevel::Debug).unwrap();
        assert!(*INSTALLED.lock().unwrap());
    }
}
