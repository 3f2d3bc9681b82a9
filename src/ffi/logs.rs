//! The process-wide log level, changeable at any time, and log records as listeners get them.

use super::types::{LogLevel, LogRecord};
use crate::logging::LogLine;

/// Sets the level of every log destination (logcat, os_log, stderr and every subscription's
/// `on_log`) for the whole process, effective for the next record. Works before the first
/// manager too (that manager's `log_level` then does not change it). Has no effect only when a
/// Rust program embedding netswitch installed its own global `tracing` subscriber.
#[uniffi::export]
pub fn set_log_level(level: LogLevel) {
    if let Err(error) = crate::logging::set_log_level(level.into()) {
        tracing::warn!(%error, "log level not changed");
    }
}

impl From<LogLine> for LogRecord {
    fn from(line: LogLine) -> Self {
        LogRecord {
            level: line.level.into(),
            target: line.target,
            message: line.message,
            timestamp: line.timestamp,
        }
    }
}
